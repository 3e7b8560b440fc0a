/**
 * `convert`: turn a pretrained softmax checkpoint into a hybrid / linear-attention model with one
 * of the SPEC sec. 5 recipes. The recipes live in lib/model (being written); until then the
 * command parses its full surface and runs into runConversionRecipe, which throws.
 */
import { resolve } from 'node:path';
import { NotImplementedError } from '../../errors.js';
import { UsageError, choice, num, str, strs } from '../args.js';
import { DATA_OPTIONS } from '../common.js';
import { EXIT, type CliCommand } from '../context.js';

export const CONVERSION_METHODS = ['lolcats', 'linear-only', 'hedgecats', 'ssd'] as const;
export type ConversionMethod = (typeof CONVERSION_METHODS)[number];

export interface ConversionRequest {
  method: ConversionMethod;
  model: string;
  out: string;
  data: string[];
  window?: number;
  featureDim?: number;
  steps?: number;
  lr?: number;
  signal?: AbortSignal;
  resume?: boolean;
}

/** The back-end of `convert`: not implemented yet. */
export async function runConversionRecipe(req: ConversionRequest): Promise<never> {
  throw new NotImplementedError(`the '${req.method}' conversion recipe is not implemented yet (attention transfer + LoRA recipes of SPEC sec. 5 are being written in lib/model)`);
}

export const convertCommand: CliCommand = {
  spec: {
    name: 'convert',
    summary: 'Convert a pretrained softmax Transformer to hybrid / linear attention (lolcats, linear-only, hedgecats, ssd). Not implemented yet.',
    positionals: [{ name: '<checkpoint-dir>', description: 'pretrained model directory' }],
    options: {
      method: { type: 'string', short: 'm', value: CONVERSION_METHODS.join('|'), description: 'recipe (SPEC sec. 5)', default: 'hedgecats' },
      out: { type: 'string', short: 'o', value: 'DIR', description: 'output directory' },
      ...DATA_OPTIONS,
      window: { type: 'string', short: 'w', value: 'W', description: 'sliding window', default: '64' },
      'feature-dim': { type: 'string', value: 'F', description: 'feature map size per head' },
      steps: { type: 'string', value: 'N', description: 'attention-transfer steps' },
      lr: { type: 'string', value: 'LR', description: 'learning rate' },
      resume: { type: 'boolean', description: 'continue from the checkpoint in --out' },
    },
  },
  async run({ values, positionals }, ctx) {
    const method = choice(values, 'method', CONVERSION_METHODS)!;
    const out = str(values, 'out');
    if (!out) throw new UsageError('--out DIR is required');
    const window = num(values, 'window', { int: true, min: 1 });
    const featureDim = num(values, 'feature-dim', { int: true, min: 1 });
    const steps = num(values, 'steps', { int: true, min: 1 });
    const lr = num(values, 'lr', { positive: true });
    await runConversionRecipe({
      method,
      model: resolve(ctx.cwd, positionals[0]!),
      out: resolve(ctx.cwd, out),
      data: strs(values, 'data'),
      signal: ctx.signal,
      resume: values.resume === true,
      ...(window !== undefined ? { window } : {}),
      ...(featureDim !== undefined ? { featureDim } : {}),
      ...(steps !== undefined ? { steps } : {}),
      ...(lr !== undefined ? { lr } : {}),
    });
    return EXIT.ok;
  },
};
