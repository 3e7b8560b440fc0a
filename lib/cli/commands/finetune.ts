/**
 * `finetune`: LoRA fine-tuning of a converted model (SPEC sec. 4/5: hybrid LoRA, SSD schedule,
 * early stopping, the HedgeCATs gap guard), via lib/recipes' loraFinetune. Adapters from an
 * earlier round are merged first. Ctrl-C writes a checkpoint (exit 130); --resume continues.
 */
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { SSD_GRANULARITIES } from '../../model/convert.js';
import { HYBRID_MODES, type HybridMode } from '../../ops/hybrid-attention.js';
import { loraFinetune, type FinetuneOptions } from '../../recipes/finetune.js';
import { isConvertedModelDir, loadConvertedModel, mergeAndRemoveLora, saveConvertedModel, type ConversionInfo } from '../../recipes/io.js';
import { FINETUNE_STATE, type RecipeResult } from '../../recipes/methods.js';
import { hybridKernels } from '../../recipes/transfer.js';
import type { BatchSource } from '../../recipes/data.js';
import { UsageError, bool, choice, num, str } from '../args.js';
import { EXIT, type CliCommand } from '../context.js';
import { TRAIN_DATA_OPTIONS, dataFromFlags, recipeProgress, ssdWindowsFromFlags, writeRecipeCurves } from './convert.js';
import { runtimeFromFlags } from '../common.js';
import type { Device } from '../../device.js';
import type { ModelDType } from '../../model/model-dtype.js';

export interface FinetuneRequest {
  /** Converted model directory. */
  model: string;
  out: string;
  data: BatchSource;
  options: FinetuneOptions;
  tokenizer?: string;
  merge?: boolean;
  dtype?: ModelDType;
  device?: Device;
}

/** The back-end of `finetune`. */
export async function runFinetuneRecipe(req: FinetuneRequest): Promise<{ interrupted: boolean; result: RecipeResult['finetune']; seconds: number }> {
  const { model, info } = await loadConvertedModel(req.model, { ...(req.dtype ? { dtype: req.dtype } : {}), ...(req.device ? { device: req.device } : {}) });
  try {
    if (!info) throw new UsageError(`${req.model} is not a converted model (no conversion.json): run convert first`);
    mergeAndRemoveLora(model);
    const r = await loraFinetune(model, req.data, { ...req.options, checkpoint: join(req.out, FINETUNE_STATE) });
    const summary = { steps: r.state.step, ...(r.state.stopReason ? { stopReason: r.state.stopReason } : {}), seconds: r.seconds, curve: r.state.curve, val: r.state.val, ...(r.bestStep !== undefined ? { bestStep: r.bestStep } : {}) };
    await writeFile(join(req.out, 'result.json'), JSON.stringify({ method: info.method, finetune: summary, interrupted: r.interrupted }, null, 1) + '\n');
    if (!r.interrupted) {
      hybridKernels(model).forEach(({ kernel }) => kernel.setMode(info.layer.mode));
      const lora = r.lora ? { rank: r.lora.options.rank, alpha: r.lora.options.alpha, dropout: r.lora.options.dropout, targets: [...r.lora.options.targets], merged: false } : undefined;
      const next: ConversionInfo = { ...info, ...(lora ? { lora } : {}), notes: { ...(info.notes ?? {}), finetunedFrom: req.model } };
      if (!lora) delete next.lora;
      const cfg = await readFile(join(req.model, 'config.json'), 'utf8');
      await saveConvertedModel(req.out, model, next, { merge: req.merge ?? false, configJson: cfg, ...(req.tokenizer ? { tokenizer: req.tokenizer } : {}) });
    }
    return { interrupted: r.interrupted, result: summary, seconds: r.seconds };
  } finally {
    model.dispose();
  }
}

export const finetuneCommand: CliCommand = {
  spec: {
    name: 'finetune',
    summary: 'LoRA fine-tuning of a converted model (hybrid, optional SSD schedule, early stopping, gap guard).',
    positionals: [{ name: '<checkpoint-dir>', description: 'converted model directory (from convert)' }],
    options: {
      out: { type: 'string', short: 'o', value: 'DIR', description: 'output directory' },
      ...TRAIN_DATA_OPTIONS,
      rank: { type: 'string', short: 'r', value: 'R', description: 'LoRA rank', default: '8' },
      alpha: { type: 'string', value: 'A', description: 'LoRA alpha', default: '16' },
      lr: { type: 'string', value: 'LR', description: 'learning rate', default: '1e-4' },
      steps: { type: 'string', value: 'N', description: 'optimizer steps', default: '100' },
      mode: { type: 'string', value: 'MODE', description: 'attention mode while training (hybrid; la-full for linear-only)', default: 'hybrid' },
      'train-phi': { type: 'boolean', description: 'also train the feature maps' },
      'train-gamma': { type: 'boolean', description: 'also train the gammas' },
      patience: { type: 'string', value: 'N', description: 'early-stopping patience (evaluations; 0: off)', default: '3' },
      'gap-guard': { type: 'string', value: 'N', description: 'stop when the (swa - hybrid) validation gap has not improved for N evaluations (0: off)', default: '0' },
      ssd: { type: 'boolean', description: 'scheduled sliding-window dropout (0.9 -> 0.75 -> 0.5)' },
      'ssd-granularity': { type: 'string', value: SSD_GRANULARITIES.join('|'), description: 'one draw per layer, head, sample, sample-head', default: 'layer' },
      'ssd-windows': { type: 'string', value: 'LIST', description: 'window schedule, e.g. 16,32,64' },
      merge: { type: 'boolean', description: 'merge LoRA into the saved base weights' },
    },
    notes: ['Ctrl-C stops after the current step and writes a checkpoint (exit code 130); rerun with --resume to continue.'],
  },
  async run({ values, positionals }, ctx) {
    const outArg = str(values, 'out');
    if (!outArg) throw new UsageError('--out DIR is required');
    const modelDir = resolve(ctx.cwd, positionals[0]!);
    if (!isConvertedModelDir(modelDir)) throw new UsageError(`${positionals[0]} is not a converted model (no conversion.json): run convert first`);
    const out = resolve(ctx.cwd, outArg);
    const steps = num(values, 'steps', { int: true, min: 1 })!;
    const patience = num(values, 'patience', { int: true, min: 0 })!;
    const gap = num(values, 'gap-guard', { int: true, min: 0 })!;
    const evalEvery = num(values, 'eval-every', { int: true, min: 1 });
    const saveEvery = num(values, 'save-every', { int: true, min: 0 })!;
    const seed = num(values, 'seed', { int: true })!;
    const mode = choice(values, 'mode', HYBRID_MODES)! as HybridMode;
    const granularity = choice(values, 'ssd-granularity', SSD_GRANULARITIES)!;
    const { device, dtype } = runtimeFromFlags(values, ctx);
    const windowStages = ssdWindowsFromFlags(values);
    const resume = bool(values, 'resume');
    const state = join(out, FINETUNE_STATE);
    if (resume && !existsSync(state)) throw new UsageError(`--resume: no checkpoint at ${state}`);
    if (!resume && existsSync(state)) throw new UsageError(`${state} exists: pass --resume to continue it, or choose another --out`);
    const { data, tokenizerPath } = await dataFromFlags(values, ctx, modelDir);
    await mkdir(out, { recursive: true });
    const prog = recipeProgress(ctx, out, 'finetune');
    const r = await runFinetuneRecipe({
      model: modelDir,
      out,
      data,
      dtype,
      device,
      merge: bool(values, 'merge'),
      ...(tokenizerPath ? { tokenizer: tokenizerPath } : {}),
      options: {
        steps,
        lr: num(values, 'lr', { positive: true })!,
        lora: { rank: num(values, 'rank', { int: true, min: 1 })!, alpha: num(values, 'alpha', { positive: true })!, seed },
        mode,
        trainFeatureMaps: bool(values, 'train-phi'),
        trainGamma: bool(values, 'train-gamma'),
        earlyStopping: patience > 0 ? { patience } : false,
        gapGuard: gap > 0 ? { patience: gap } : false,
        saveEvery,
        resume,
        signal: ctx.signal,
        onProgress: prog.onProgress,
        ...(evalEvery ? { evalEvery } : {}),
        ...(bool(values, 'ssd') ? { ssd: { granularity, seed, ...(windowStages ? { windowStages } : {}) } } : {}),
      },
    });
    await writeRecipeCurves(out, { method: 'lolcats', conversion: undefined as never, interrupted: r.interrupted, seconds: r.seconds, ...(r.result ? { finetune: r.result } : {}) });
    if (r.interrupted) {
      prog.finish(`finetune interrupted; checkpoint ${state}; continue with --resume`);
      ctx.json.emit('interrupted', { command: 'finetune', checkpoint: state });
      return EXIT.interrupted;
    }
    prog.finish();
    const last = r.result?.curve.at(-1)?.loss;
    ctx.json.emit('result', { command: 'finetune', out, loss: last, stop: r.result?.stopReason, steps: r.result?.steps });
    if (!ctx.json.enabled) ctx.stdout.write(`fine-tuned ${r.result?.steps} steps (loss ${last?.toFixed(4) ?? '-'}${r.result?.stopReason ? `, ${r.result.stopReason}` : ''}); model written to ${out}\n`);
    return EXIT.ok;
  },
};
