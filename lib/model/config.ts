// Hugging Face config.json -> typed LlamaConfig for LlamaForCausalLM / MistralForCausalLM.
// A missing key takes the transformers class default (as from_pretrained does); anything this
// library would not reproduce exactly throws ConfigError instead of being approximated.
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { HybridAttentionError } from '../errors.js';

export class ConfigError extends HybridAttentionError {
  /** The unsupported or malformed feature, e.g. 'rope type "yarn"' or 'hidden_act "gelu"'. */
  readonly feature: string;
  constructor(feature: string, detail?: string) {
    super(`unsupported or invalid config: ${feature}${detail ? ` (${detail})` : ''}`);
    this.feature = feature;
  }
}

export type RopeType = 'default' | 'linear' | 'llama3';

export interface RopeConfig {
  type: RopeType;
  theta: number;
  /** linear and llama3 */
  factor?: number;
  /** llama3 */
  lowFreqFactor?: number;
  highFreqFactor?: number;
  originalMaxPositionEmbeddings?: number;
}

export type Architecture = 'LlamaForCausalLM' | 'MistralForCausalLM';

export interface LlamaConfig {
  architecture: Architecture;
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  rmsNormEps: number;
  rope: RopeConfig;
  maxPositionEmbeddings: number;
  tieWordEmbeddings: boolean;
  attentionBias: boolean;
  mlpBias: boolean;
  hiddenAct: 'silu';
  /** `dtype` (transformers 5) or `torch_dtype` (4), e.g. 'bfloat16'; null if absent. */
  torchDtype: string | null;
  bosTokenId: number | null;
  /** eos_token_id may be one id or a list (Llama 3 instruct). */
  eosTokenIds: number[];
  padTokenId: number | null;
  /** Mistral's sliding-window attention width; null = full attention (always null for Llama). */
  slidingWindow: number | null;
}

// transformers 4/5 class defaults for keys a config.json may omit.
const DEFAULTS: Record<Architecture, Record<string, unknown>> = {
  LlamaForCausalLM: {
    vocab_size: 32000, hidden_size: 4096, intermediate_size: 11008, num_hidden_layers: 32,
    num_attention_heads: 32, hidden_act: 'silu', max_position_embeddings: 2048, rms_norm_eps: 1e-6,
    bos_token_id: 1, eos_token_id: 2, pad_token_id: null, tie_word_embeddings: false, rope_theta: 10000,
    attention_bias: false, mlp_bias: false,
  },
  MistralForCausalLM: {
    vocab_size: 32000, hidden_size: 4096, intermediate_size: 14336, num_hidden_layers: 32,
    num_attention_heads: 32, num_key_value_heads: 8, hidden_act: 'silu', max_position_embeddings: 4096 * 32,
    rms_norm_eps: 1e-6, bos_token_id: 1, eos_token_id: 2, pad_token_id: null, tie_word_embeddings: false,
    rope_theta: 10000, sliding_window: 4096,
  },
};

const MODEL_TYPE: Record<Architecture, string> = { LlamaForCausalLM: 'llama', MistralForCausalLM: 'mistral' };

type Json = Record<string, unknown>;
const isObj = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

function architectureOf(cfg: Json): Architecture {
  const archs = cfg.architectures;
  const modelType = cfg.model_type;
  let arch: string | undefined;
  if (Array.isArray(archs) && archs.length > 0) {
    if (archs.length !== 1) throw new ConfigError(`architectures ${JSON.stringify(archs)}`, 'exactly one expected');
    arch = String(archs[0]);
  } else if (modelType === 'llama') arch = 'LlamaForCausalLM';
  else if (modelType === 'mistral') arch = 'MistralForCausalLM';
  if (arch !== 'LlamaForCausalLM' && arch !== 'MistralForCausalLM') {
    throw new ConfigError(`architecture ${JSON.stringify(arch ?? modelType ?? null)}`, 'supported: LlamaForCausalLM, MistralForCausalLM');
  }
  if (modelType !== undefined && modelType !== MODEL_TYPE[arch]) {
    throw new ConfigError(`model_type ${JSON.stringify(modelType)} with architecture ${arch}`);
  }
  return arch;
}

function posInt(key: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value <= 0) {
    throw new ConfigError(key, `expected a positive integer, got ${JSON.stringify(value)}`);
  }
  return value;
}

function posNum(key: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    throw new ConfigError(key, `expected a positive number, got ${JSON.stringify(value)}`);
  }
  return value;
}

function tokenId(key: string, v: unknown): number | null {
  if (v === null || v === undefined) return null;
  if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) return v;
  throw new ConfigError(key, `expected a token id, got ${JSON.stringify(v)}`);
}

function bool(key: string, v: unknown): boolean {
  if (typeof v !== 'boolean') throw new ConfigError(key, `expected a boolean, got ${JSON.stringify(v)}`);
  return v;
}

/** Reads rope settings from transformers 5 `rope_parameters` or transformers 4 `rope_theta` + `rope_scaling`. */
function parseRope(cfg: Json, get: (k: string) => unknown, maxPos: number): RopeConfig {
  const params = cfg.rope_parameters ?? cfg.rope_scaling ?? null;
  if (params !== null && !isObj(params)) throw new ConfigError('rope_parameters/rope_scaling', 'expected an object');
  const p: Json = params ?? {};
  if (Object.values(p).some(isObj)) throw new ConfigError('per-layer rope_parameters');
  const type = p.rope_type ?? p.type ?? 'default';
  if (type !== 'default' && type !== 'linear' && type !== 'llama3') {
    throw new ConfigError(`rope type ${JSON.stringify(type)}`, 'supported: default, linear, llama3');
  }
  const prf = p.partial_rotary_factor ?? cfg.partial_rotary_factor;
  if (prf !== undefined && prf !== null && prf !== 1) throw new ConfigError(`partial_rotary_factor ${JSON.stringify(prf)}`);
  // v5 keeps theta inside rope_parameters; v4 at top level. Same precedence as standardize_rope_params.
  const theta = posNum('rope_theta', p.rope_theta ?? get('rope_theta'));
  const rope: RopeConfig = { type, theta };
  if (type === 'linear' || type === 'llama3') rope.factor = posNum(`rope ${type} factor`, p.factor);
  if (type === 'llama3') {
    rope.lowFreqFactor = posNum('rope low_freq_factor', p.low_freq_factor);
    rope.highFreqFactor = posNum('rope high_freq_factor', p.high_freq_factor);
    if (rope.highFreqFactor <= rope.lowFreqFactor) {
      throw new ConfigError('rope high_freq_factor', 'must exceed low_freq_factor');
    }
    // transformers 5: a top-level original_max_position_embeddings wins, else max_position_embeddings.
    const omp = cfg.original_max_position_embeddings ?? p.original_max_position_embeddings ?? maxPos;
    rope.originalMaxPositionEmbeddings = posNum('rope original_max_position_embeddings', omp);
  }
  return rope;
}

/** Parses a config.json object. Throws ConfigError on anything unsupported or inconsistent. */
export function parseConfig(json: unknown): LlamaConfig {
  if (!isObj(json)) throw new ConfigError('config.json', 'not a JSON object');
  const cfg = json;
  const architecture = architectureOf(cfg);
  const defaults = DEFAULTS[architecture];
  const get = (k: string): unknown => (cfg[k] !== undefined ? cfg[k] : defaults[k]);

  if (cfg.quantization_config !== undefined && cfg.quantization_config !== null) {
    throw new ConfigError('quantization_config', 'quantized checkpoints');
  }
  let act = get('hidden_act');
  if (act === 'swish') act = 'silu'; // transformers maps both names to nn.SiLU
  if (act !== 'silu') throw new ConfigError(`hidden_act ${JSON.stringify(act)}`, 'only silu');

  const hiddenSize = posInt('hidden_size', get('hidden_size'));
  const numHeads = posInt('num_attention_heads', get('num_attention_heads'));
  const numKvHeads = posInt('num_key_value_heads', get('num_key_value_heads') ?? numHeads);
  if (numHeads % numKvHeads !== 0) {
    throw new ConfigError('num_key_value_heads', `${numKvHeads} does not divide num_attention_heads ${numHeads}`);
  }
  let headDim: number;
  if (cfg.head_dim !== undefined && cfg.head_dim !== null) headDim = posInt('head_dim', cfg.head_dim);
  else if (hiddenSize % numHeads !== 0) {
    throw new ConfigError('num_attention_heads', `${numHeads} does not divide hidden_size ${hiddenSize} and no head_dim is given`);
  } else headDim = hiddenSize / numHeads;
  if (headDim % 2 !== 0) throw new ConfigError('head_dim', `rotary embedding needs an even head_dim, got ${headDim}`);

  // Mistral's attention and MLP have no bias in transformers whatever the config says: refuse a
  // config that claims otherwise rather than silently dropping weights.
  const attentionBias = bool('attention_bias', get('attention_bias') ?? false);
  const mlpBias = bool('mlp_bias', get('mlp_bias') ?? false);
  if (architecture === 'MistralForCausalLM' && (attentionBias || mlpBias)) {
    throw new ConfigError(attentionBias ? 'attention_bias for Mistral' : 'mlp_bias for Mistral');
  }

  const maxPositionEmbeddings = posInt('max_position_embeddings', get('max_position_embeddings'));
  const eos = get('eos_token_id');
  const eosTokenIds = eos === null || eos === undefined ? [] : Array.isArray(eos) ? eos.map((e) => tokenId('eos_token_id', e)!) : [tokenId('eos_token_id', eos)!];
  let slidingWindow: number | null = null;
  if (architecture === 'MistralForCausalLM') {
    const sw = get('sliding_window');
    slidingWindow = sw === null || sw === undefined ? null : posInt('sliding_window', sw);
  }
  const dtype = cfg.dtype ?? cfg.torch_dtype ?? null;

  return {
    architecture,
    vocabSize: posInt('vocab_size', get('vocab_size')),
    hiddenSize,
    intermediateSize: posInt('intermediate_size', get('intermediate_size')),
    numLayers: posInt('num_hidden_layers', get('num_hidden_layers')),
    numHeads,
    numKvHeads,
    headDim,
    rmsNormEps: posNum('rms_norm_eps', get('rms_norm_eps')),
    rope: parseRope(cfg, get, maxPositionEmbeddings),
    maxPositionEmbeddings,
    tieWordEmbeddings: bool('tie_word_embeddings', get('tie_word_embeddings')),
    attentionBias,
    mlpBias,
    hiddenAct: 'silu',
    torchDtype: typeof dtype === 'string' ? dtype : null,
    bosTokenId: tokenId('bos_token_id', get('bos_token_id')),
    eosTokenIds,
    padTokenId: tokenId('pad_token_id', get('pad_token_id')),
    slidingWindow,
  };
}

/** Loads config.json from a checkpoint directory or a file path. */
export async function loadConfig(path: string): Promise<LlamaConfig> {
  const file = (await stat(path)).isDirectory() ? join(path, 'config.json') : path;
  let json: unknown;
  try {
    json = JSON.parse(await readFile(file, 'utf8'));
  } catch (e) {
    throw new ConfigError(file, `cannot read config: ${(e as Error).message}`);
  }
  return parseConfig(json);
}

export interface InvFreqOptions {
  /**
   * 'float32' (default) rounds every step to float32 in the order torch evaluates it, which is how
   * transformers builds its inv_freq buffer (its cos/sin then also run in float32).
   * 'float64' evaluates the same formulas in double precision.
   */
  precision?: 'float32' | 'float64';
}

/**
 * Rotary inverse frequencies (head_dim / 2 of them) for default, linear and llama3 rope, as
 * transformers' rope init functions compute them.
 */
export function ropeInvFreq(config: Pick<LlamaConfig, 'headDim' | 'rope'>, opts: InvFreqOptions = {}): Float64Array {
  const r = opts.precision === 'float64' ? (x: number) => x : Math.fround;
  const { headDim: dim, rope } = config;
  const n = dim / 2;
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    // 1.0 / (base ** (arange(0, dim, 2).float() / dim))
    out[i] = r(1 / r(Math.pow(r(rope.theta), r((2 * i) / dim))));
  }
  if (rope.type === 'linear') {
    const f = r(rope.factor!);
    for (let i = 0; i < n; i++) out[i] = r(out[i]! / f);
  } else if (rope.type === 'llama3') {
    const factor = r(rope.factor!);
    const low = rope.lowFreqFactor!;
    const high = rope.highFreqFactor!;
    const old = rope.originalMaxPositionEmbeddings!;
    const lowFreqWavelen = r(old / low);
    const highFreqWavelen = r(old / high);
    const twoPi = r(2 * Math.PI);
    for (let i = 0; i < n; i++) {
      const inv = out[i]!;
      // torch evaluates `scalar / tensor` as reciprocal(tensor) * scalar.
      const wavelen = opts.precision === 'float64' ? (2 * Math.PI) / inv : r(r(1 / inv) * twoPi);
      if (wavelen < highFreqWavelen) continue; // high frequency: unchanged
      if (wavelen > lowFreqWavelen) {
        out[i] = r(inv / factor); // low frequency: divided by factor
        continue;
      }
      // medium: interpolate between inv/factor and inv with smooth in [0, 1]
      const ratio = opts.precision === 'float64' ? old / wavelen : r(r(1 / wavelen) * r(old));
      const smooth = r(r(ratio - r(low)) / r(high - low));
      out[i] = r(r(r(r(1 - smooth) * inv) / factor) + r(smooth * inv));
    }
  }
  return out;
}
