/** `inspect <dir>`: config, parameter counts by group and storage dtypes of a checkpoint directory. */
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { InvalidArgumentError } from '../../errors.js';
import { loadConfig, type LlamaConfig } from '../../model/config.js';
import { parameterSpecs } from '../../model/weights.js';
import { openCheckpoint, openSafetensors, numel } from '../../io/safetensors.js';
import type { CliCommand } from '../context.js';
import { EXIT } from '../context.js';

export interface CheckpointSummary {
  path: string;
  config: LlamaConfig;
  files: number;
  tensors: number;
  /** Storage dtype -> number of tensors. */
  dtypes: Record<string, number>;
  /** Storage dtype -> number of elements. */
  dtypeParams: Record<string, number>;
  parameters: { total: number; embeddings: number; attention: number; mlp: number; norms: number; lmHead: number; other: number };
  bytes: number;
  /** Tensors LlamaModel expects that the checkpoint lacks, and ones it does not use (feature maps, gammas, LoRA). */
  missing: string[];
  extra: string[];
  training?: Record<string, string>;
}

function group(name: string): keyof CheckpointSummary['parameters'] {
  if (name === 'model.embed_tokens.weight') return 'embeddings';
  if (name === 'lm_head.weight') return 'lmHead';
  if (/^model\.layers\.\d+\.self_attn\.(q|k|v|o)_proj\.(weight|bias)$/.test(name)) return 'attention';
  if (/^model\.layers\.\d+\.mlp\./.test(name)) return 'mlp';
  if (/(layernorm|norm)\.weight$/.test(name)) return 'norms';
  return 'other';
}

export async function inspectCheckpoint(dir: string): Promise<CheckpointSummary> {
  if (!existsSync(join(dir, 'config.json'))) throw new InvalidArgumentError(`not a checkpoint directory: no config.json in ${dir}`, 'dir');
  const config = await loadConfig(join(dir, 'config.json'));
  const reader = await openCheckpoint(dir);
  try {
    const parameters = { total: 0, embeddings: 0, attention: 0, mlp: 0, norms: 0, lmHead: 0, other: 0 };
    const dtypes: Record<string, number> = {};
    const dtypeParams: Record<string, number> = {};
    let bytes = 0;
    const files = new Set<string>();
    for (const t of reader.tensors) {
      const n = numel(t.shape);
      parameters.total += n;
      parameters[group(t.name)] += n;
      dtypes[t.dtype] = (dtypes[t.dtype] ?? 0) + 1;
      dtypeParams[t.dtype] = (dtypeParams[t.dtype] ?? 0) + n;
      bytes += t.byteLength;
      files.add(t.file);
    }
    const expected = new Set(parameterSpecs(config).map((s) => s.name));
    const present = new Set(reader.names);
    const summary: CheckpointSummary = {
      path: dir,
      config,
      files: files.size,
      tensors: reader.tensors.length,
      dtypes,
      dtypeParams,
      parameters,
      bytes,
      missing: [...expected].filter((n) => !present.has(n)),
      extra: [...present].filter((n) => !expected.has(n) && !(config.tieWordEmbeddings && n === 'lm_head.weight')),
    };
    const state = join(dir, 'train-state.safetensors');
    if (existsSync(state)) {
      const f = await openSafetensors(state);
      try {
        const meta = (f.metadata ?? {}) as Record<string, string>;
        summary.training = Object.fromEntries(Object.entries(meta).filter(([k]) => k !== 'options' && k !== 'args'));
      } finally {
        await f.close();
      }
    }
    return summary;
  } finally {
    await reader.close();
  }
}

const fmtInt = (n: number) => n.toLocaleString('en-US');

export function formatSummary(s: CheckpointSummary): string {
  const c = s.config;
  const pct = (n: number) => (s.parameters.total ? ((100 * n) / s.parameters.total).toFixed(1) : '0.0');
  const lines = [
    `checkpoint    ${s.path}`,
    `architecture  ${c.architecture}`,
    `layers        ${c.numLayers}`,
    `hidden        ${c.hiddenSize} (ffn ${c.intermediateSize}, ${c.hiddenAct})`,
    `heads         ${c.numHeads} query, ${c.numKvHeads} key/value, head_dim ${c.headDim}`,
    `vocab         ${c.vocabSize}${c.tieWordEmbeddings ? ' (tied embeddings)' : ''}`,
    `rope          ${c.rope.type}, theta ${c.rope.theta}${c.rope.factor ? `, factor ${c.rope.factor}` : ''}; max positions ${c.maxPositionEmbeddings}`,
    `norm eps      ${c.rmsNormEps}`,
    ...(c.slidingWindow ? [`sliding window ${c.slidingWindow}`] : []),
    `config dtype  ${c.torchDtype ?? 'unspecified'}`,
    `storage dtype ${Object.entries(s.dtypeParams).map(([d, n]) => `${d} (${s.dtypes[d]} tensors, ${fmtInt(n)} values)`).join(', ')}`,
    `tensors       ${s.tensors} in ${s.files} file(s), ${(s.bytes / 2 ** 20).toFixed(2)} MiB`,
    `parameters    ${fmtInt(s.parameters.total)}`,
    ...(['embeddings', 'attention', 'mlp', 'norms', 'lmHead', 'other'] as const)
      .filter((k) => s.parameters[k] > 0 || k !== 'other')
      .map((k) => `  ${(k === 'lmHead' ? 'lm_head' : k).padEnd(12)}${fmtInt(s.parameters[k]).padStart(16)}  ${pct(s.parameters[k]).padStart(5)}%`),
  ];
  if (s.missing.length) lines.push(`missing       ${s.missing.length}: ${s.missing.slice(0, 5).join(', ')}${s.missing.length > 5 ? ', ...' : ''}`);
  if (s.extra.length) lines.push(`extra         ${s.extra.length}: ${s.extra.slice(0, 5).join(', ')}${s.extra.length > 5 ? ', ...' : ''}`);
  if (s.training) lines.push(`training      ${Object.entries(s.training).map(([k, v]) => `${k}=${v}`).join(' ')}`);
  return lines.join('\n') + '\n';
}

export const inspectCommand: CliCommand = {
  spec: {
    name: 'inspect',
    summary: 'Print the config, parameter counts and dtypes of a checkpoint directory (config.json + model.safetensors[.index.json]).',
    positionals: [{ name: '<checkpoint-dir>', description: 'directory holding config.json and the safetensors weights' }],
    options: { json: { type: 'boolean', description: 'print the summary as JSON' } },
  },
  async run({ values, positionals }, ctx) {
    const dir = resolve(ctx.cwd, positionals[0]!);
    const s = await inspectCheckpoint(dir);
    if (values.json) ctx.stdout.write(JSON.stringify(s, null, 2) + '\n');
    else if (ctx.json.enabled) ctx.json.emit('result', { command: 'inspect', ...s });
    else ctx.stdout.write(formatSummary(s));
    return EXIT.ok;
  },
};
