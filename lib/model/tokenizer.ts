// Tokenizer over a Hugging Face tokenizer.json, backed by @huggingface/tokenizers (pure JS, no
// network): it reproduces HF tokenizers' byte-level BPE ids exactly on the golden fixtures.
// This wrapper pins the defaults to those of the Rust library / transformers (no clean-up of
// spaces, special tokens kept on decode) and makes unknown ids an error instead of dropping them.
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { InvalidArgumentError } from '../errors.js';

export interface EncodeOptions {
  /** Apply the tokenizer's post_processor (e.g. prepend BOS). Default true, as in HF tokenizers. */
  addSpecialTokens?: boolean;
}

export interface DecodeOptions {
  /** Drop special tokens from the text. Default false, as transformers' decode. */
  skipSpecialTokens?: boolean;
}

export interface TokenizerOptions {
  /**
   * tokenizer_config.json contents. Default: the file beside tokenizer.json if there is one.
   * Used for bos_token / eos_token and clean_up_tokenization_spaces.
   */
  config?: Record<string, unknown>;
}

type Json = Record<string, unknown>;

// Names tried for BOS/EOS when tokenizer_config.json does not say (Llama 2, Llama 3, GPT-2 style).
const BOS_NAMES = ['<s>', '<|begin_of_text|>', '<|endoftext|>'];
const EOS_NAMES = ['</s>', '<|end_of_text|>', '<|endoftext|>'];

function tokenContent(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (typeof v === 'object' && v !== null && typeof (v as Json).content === 'string') return (v as Json).content as string;
  return undefined;
}

function parseJson(text: string, path: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new InvalidArgumentError(`${path}: not valid JSON (${(e as Error).message})`, 'path');
  }
}

export class Tokenizer {
  readonly vocabSize: number;
  readonly bosId: number | null;
  readonly eosId: number | null;
  private readonly hf: HfTokenizer;

  private constructor(tokenizerJson: Json, config: Json) {
    if ((tokenizerJson.model as Json | undefined)?.type === undefined) {
      throw new InvalidArgumentError('tokenizer.json has no model section', 'tokenizerJson');
    }
    // HF tokenizers (Rust) never cleans up spaces on decode; transformers only when configured.
    this.hf = new HfTokenizer(tokenizerJson, { ...config, clean_up_tokenization_spaces: config.clean_up_tokenization_spaces ?? false });
    this.vocabSize = this.hf.get_vocab(true).size;
    this.bosId = this.special(tokenContent(config.bos_token), BOS_NAMES);
    this.eosId = this.special(tokenContent(config.eos_token), EOS_NAMES);
  }

  private special(named: string | undefined, fallbacks: string[]): number | null {
    if (named !== undefined) return this.hf.token_to_id(named) ?? null;
    for (const name of fallbacks) {
      const id = this.hf.token_to_id(name);
      if (id !== undefined) return id;
    }
    return null;
  }

  /** Builds from parsed tokenizer.json (and optional tokenizer_config.json) objects. */
  static fromJson(tokenizerJson: unknown, config: Record<string, unknown> = {}): Tokenizer {
    if (typeof tokenizerJson !== 'object' || tokenizerJson === null) throw new InvalidArgumentError('tokenizer.json is not an object', 'tokenizerJson');
    return new Tokenizer(tokenizerJson as Json, config);
  }

  /** Loads tokenizer.json; picks up tokenizer_config.json from the same directory if present. */
  static async fromFile(path: string, opts: TokenizerOptions = {}): Promise<Tokenizer> {
    const json = parseJson(await readFile(path, 'utf8'), path);
    let config = opts.config;
    if (!config) {
      const cfgPath = join(dirname(path), 'tokenizer_config.json');
      const text = await readFile(cfgPath, 'utf8').catch(() => null);
      config = text === null ? {} : (parseJson(text, cfgPath) as Json);
    }
    return Tokenizer.fromJson(json, config);
  }

  encode(text: string, opts: EncodeOptions = {}): number[] {
    return this.hf.encode(text, { add_special_tokens: opts.addSpecialTokens ?? true }).ids;
  }

  decode(ids: readonly number[], opts: DecodeOptions = {}): string {
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || this.hf.id_to_token(id) === undefined) {
        throw new InvalidArgumentError(`decode: token id ${id} is not in the vocabulary (size ${this.vocabSize})`, 'ids');
      }
    }
    if (ids.length === 0) return ''; // the underlying library rejects an empty list
    return this.hf.decode([...ids], { skip_special_tokens: opts.skipSpecialTokens ?? false });
  }

  /** Token string for an id (byte-level form, e.g. 'Ġthe'), or undefined. */
  idToToken(id: number): string | undefined {
    return this.hf.id_to_token(id);
  }

  tokenToId(token: string): number | undefined {
    return this.hf.token_to_id(token);
  }
}
