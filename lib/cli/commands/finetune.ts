/**
 * `finetune`: LoRA fine-tuning of a converted model (SPEC sec. 4/5: hybrid LoRA, SSD schedule,
 * early stopping). The recipe back-end is being written; runFinetuneRecipe throws until then.
 */
import { resolve } from 'node:path';
import { NotImplementedError } from '../../errors.js';
import { UsageError, num, str, strs } from '../args.js';
import { DATA_OPTIONS } from '../common.js';
import { EXIT, type CliCommand } from '../context.js';

export interface FinetuneRequest {
  model: string;
  out: string;
  data: string[];
  rank?: number;
  alpha?: number;
  lr?: number;
  steps?: number;
  ssd?: boolean;
  signal?: AbortSignal;
  resume?: boolean;
}

/** The back-end of `finetune`: not implemented yet. */
export async function runFinetuneRecipe(req: FinetuneRequest): Promise<never> {
  throw new NotImplementedError(`LoRA fine-tuning of converted models (hybrid / SSD recipes) is not implemented yet; requested for ${req.model}`);
}

export const finetuneCommand: CliCommand = {
  spec: {
    name: 'finetune',
    summary: 'LoRA fine-tuning of a converted model (hybrid, optional SSD schedule, early stopping). Not implemented yet.',
    positionals: [{ name: '<checkpoint-dir>', description: 'converted model directory' }],
    options: {
      out: { type: 'string', short: 'o', value: 'DIR', description: 'output directory' },
      ...DATA_OPTIONS,
      rank: { type: 'string', short: 'r', value: 'R', description: 'LoRA rank', default: '8' },
      alpha: { type: 'string', value: 'A', description: 'LoRA alpha', default: '16' },
      lr: { type: 'string', value: 'LR', description: 'learning rate', default: '1e-4' },
      steps: { type: 'string', value: 'N', description: 'optimizer steps' },
      ssd: { type: 'boolean', description: 'scheduled sliding-window dropout (0.9 -> 0.75 -> 0.5)' },
      resume: { type: 'boolean', description: 'continue from the checkpoint in --out' },
    },
  },
  async run({ values, positionals }, ctx) {
    const out = str(values, 'out');
    if (!out) throw new UsageError('--out DIR is required');
    const steps = num(values, 'steps', { int: true, min: 1 });
    await runFinetuneRecipe({
      model: resolve(ctx.cwd, positionals[0]!),
      out: resolve(ctx.cwd, out),
      data: strs(values, 'data'),
      rank: num(values, 'rank', { int: true, min: 1 })!,
      alpha: num(values, 'alpha', { positive: true })!,
      lr: num(values, 'lr', { positive: true })!,
      ssd: values.ssd === true,
      resume: values.resume === true,
      signal: ctx.signal,
      ...(steps !== undefined ? { steps } : {}),
    });
    return EXIT.ok;
  },
};
