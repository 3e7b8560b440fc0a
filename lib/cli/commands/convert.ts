/**
 * `convert`: turn a pretrained softmax checkpoint into a hybrid / linear-attention model with one
 * of the SPEC sec. 5 recipes (lib/recipes): attention transfer, then LoRA fine-tuning, with
 * progress, --log-json, Ctrl-C (checkpoint + exit 130) and --resume. The output directory holds
 * the converted model (loadConvertedModel / diagnose / generate read it), result.json (loss
 * curves), metrics.jsonl, loss.svg and the stage checkpoints.
 */
import { existsSync } from 'node:fs';
import { appendFile, readFile, writeFile, mkdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { LlamaModel } from '../../model/llama.js';
import { SSD_GRANULARITIES } from '../../model/convert.js';
import type { FeatureMapSpec } from '../../model/hybrid-layer.js';
import { PackedDataset } from '../../data/pack.js';
import { lineChartSvg } from '../../eval/svg.js';
import { datasetSource, type BatchSource } from '../../recipes/data.js';
import { RECIPES, runRecipe, FINETUNE_STATE, TRANSFER_STATE, type RecipeName, type RecipeOptions, type RecipeResult } from '../../recipes/methods.js';
import { saveConvertedModel } from '../../recipes/io.js';
import type { ProgressInfo } from '../../recipes/loop.js';
import { UsageError, bool, choice, num, str, type ParsedValues } from '../args.js';
import { DATA_OPTIONS, RUNTIME_OPTIONS, corpusFromFlags, loadTokenizer, runtimeFromFlags } from '../common.js';
import type { Device } from '../../device.js';
import type { ModelDType } from '../../model/model-dtype.js';
import { EXIT, type CliCommand, type CliContext } from '../context.js';
import { Progress } from '../progress.js';

export const CONVERSION_METHODS = RECIPES;
export type ConversionMethod = RecipeName;

export interface ConversionRequest {
  method: ConversionMethod;
  /** Base (softmax) checkpoint directory. */
  model: string;
  out: string;
  data: BatchSource;
  options: RecipeOptions;
  /** Copied beside the converted model. */
  tokenizer?: string;
  /** Merge LoRA into the saved base weights. */
  merge?: boolean;
  dtype?: ModelDType;
  device?: Device;
}

/** The back-end of `convert`: loads the base model, runs the recipe, saves the converted model (unless interrupted). */
export async function runConversionRecipe(req: ConversionRequest): Promise<RecipeResult> {
  const model = await LlamaModel.load(req.model, { ...(req.dtype ? { dtype: req.dtype } : {}), ...(req.device ? { device: req.device } : {}) });
  try {
    const result = await runRecipe(req.method, model, req.data, { ...req.options, checkpointDir: req.out });
    await writeFile(join(req.out, 'result.json'), JSON.stringify(result, null, 1) + '\n');
    if (!result.interrupted) {
      const cfg = await readFile(join(req.model, 'config.json'), 'utf8');
      await saveConvertedModel(req.out, model, { ...result.conversion, notes: { base: req.model } }, { merge: req.merge ?? false, configJson: cfg, ...(req.tokenizer ? { tokenizer: req.tokenizer } : {}) });
    }
    return result;
  } finally {
    model.dispose();
  }
}

/** --ssd-windows W1,W2,...: the SSD window schedule (integers >= 1), or undefined. */
export function ssdWindowsFromFlags(values: ParsedValues): number[] | undefined {
  const list = str(values, 'ssd-windows');
  const windows = list?.split(',').map((s) => Number(s.trim()));
  if (windows && windows.some((w) => !Number.isInteger(w) || w < 1)) throw new UsageError(`--ssd-windows must be a comma-separated list of integers >= 1, got '${list}'`);
  return windows;
}

export const TRAIN_DATA_OPTIONS = {
  ...DATA_OPTIONS,
  tokenizer: { type: 'string', value: 'PATH', description: 'tokenizer.json (default: <model>/tokenizer.json)' },
  'seq-len': { type: 'string', value: 'T', description: 'tokens per packed sequence', default: '1024' },
  'batch-size': { type: 'string', short: 'b', value: 'B', description: 'sequences per step', default: '8' },
  'val-fraction': { type: 'string', value: 'F', description: 'documents held out for validation (hash split)', default: '0.01' },
  'val-batches': { type: 'string', value: 'N', description: 'validation batches per evaluation (early stopping, gap guard)', default: '4' },
  'eval-every': { type: 'string', value: 'N', description: 'validate every N fine-tuning steps (default: steps / 10)' },
  'save-every': { type: 'string', value: 'N', description: 'checkpoint every N steps (0: when stopped and at the end)', default: '0' },
  seed: { type: 'string', value: 'N', description: 'seed of the split, inits and SSD draws', default: '0' },
  'shuffle-buffer': { type: 'string', value: 'N', description: 'shuffle training sequences through a buffer of N (0: corpus order)', default: '0' },
  ...RUNTIME_OPTIONS,
  resume: { type: 'boolean', description: 'continue from the checkpoints in --out' },
} as const;

export async function dataFromFlags(v: ParsedValues, ctx: CliContext, modelDir: string): Promise<{ data: BatchSource; tokenizerPath?: string; batchSize: number; seqLen: number }> {
  const seqLen = num(v, 'seq-len', { int: true, min: 2 })!;
  const batchSize = num(v, 'batch-size', { int: true, min: 1 })!;
  const valFraction = num(v, 'val-fraction', { min: 0, max: 0.999 })!;
  const valBatches = num(v, 'val-batches', { int: true, min: 0 })!;
  const seed = num(v, 'seed', { int: true })!;
  const shuffle = num(v, 'shuffle-buffer', { int: true, min: 0 })!;
  const corpus = corpusFromFlags(v, ctx.cwd);
  const tokArg = str(v, 'tokenizer');
  const tokenizer = await loadTokenizer(modelDir, tokArg, ctx.cwd);
  const tokenizerPath = tokArg ? resolve(ctx.cwd, tokArg) : existsSync(join(modelDir, 'tokenizer.json')) ? join(modelDir, 'tokenizer.json') : undefined;
  const ds = new PackedDataset(corpus, tokenizer, {
    seqLen,
    split: { validationFraction: valFraction, seed },
    ...(shuffle > 0 ? { shuffleBuffer: shuffle, shuffleSeed: seed } : {}),
  });
  return { data: datasetSource(ds, batchSize, { validationBatches: valFraction > 0 ? valBatches : 0 }), ...(tokenizerPath ? { tokenizerPath } : {}), batchSize, seqLen };
}

/** Progress bar + metrics.jsonl + JSON log events for a recipe run. */
export function recipeProgress(ctx: CliContext, out: string, label: string): { onProgress: (p: ProgressInfo) => void; finish(message?: string): void } {
  let bar: Progress | undefined;
  let stage = '';
  const metrics = join(out, 'metrics.jsonl');
  let chain: Promise<void> = Promise.resolve();
  return {
    onProgress: (p) => {
      if (p.stage !== stage) {
        bar?.finish();
        stage = p.stage;
        bar = new Progress(ctx, { label: `${label} ${p.stage}`, total: p.totalSteps, unit: 'steps', json: ctx.json });
      }
      bar!.update({ done: p.step, tokens: p.tokens, loss: p.loss, ...(p.valLoss !== undefined ? { val_loss: p.valLoss } : {}), ...(p.gap !== undefined ? { gap: p.gap } : {}) });
      const rec = { stage: p.stage, step: p.step, loss: p.loss, lr: p.lr, grad_norm: p.gradNorm, tokens: p.tokens, tokens_per_s: p.tokensPerSec, ...(p.valLoss !== undefined ? { val_loss: p.valLoss } : {}), ...(p.gap !== undefined ? { gap: p.gap } : {}) };
      chain = chain.then(() => appendFile(metrics, JSON.stringify(rec) + '\n')).catch(() => {});
    },
    finish: (message) => bar?.finish(message),
  };
}

export async function writeRecipeCurves(out: string, r: RecipeResult): Promise<void> {
  for (const [name, st] of [['transfer', r.transfer], ['finetune', r.finetune]] as const) {
    if (!st || st.curve.length === 0) continue;
    const series = [{ name: 'train', points: st.curve.map((c) => ({ x: c.step, y: c.loss })) }];
    if (st.val.length) series.push({ name: 'validation', points: st.val.map((c) => ({ x: c.step, y: c.loss })) });
    await writeFile(join(out, `${name}-loss.svg`), lineChartSvg(series, { title: `${r.method} ${name} loss`, xLabel: 'step', yLabel: 'loss' }));
  }
}

export const convertCommand: CliCommand = {
  spec: {
    name: 'convert',
    summary: 'Convert a pretrained softmax Transformer to hybrid / linear attention (lolcats, linear-only, hedgecats, ssd): attention transfer, then LoRA.',
    positionals: [{ name: '<checkpoint-dir>', description: 'pretrained model directory (or --model DIR)', optional: true }],
    options: {
      method: { type: 'string', short: 'm', value: CONVERSION_METHODS.join('|'), description: 'recipe (SPEC sec. 5)', default: 'hedgecats' },
      model: { type: 'string', value: 'DIR', description: 'pretrained model directory' },
      out: { type: 'string', short: 'o', value: 'DIR', description: 'output directory (converted model, checkpoints, result.json)' },
      ...TRAIN_DATA_OPTIONS,
      window: { type: 'string', short: 'w', value: 'W', description: 'sliding window', default: '64' },
      'feature-dim': { type: 'string', value: 'F', description: 'feature dimension F per head (hedgehog f = F/2; default d for lolcats/ssd, 2d otherwise)' },
      'gamma-init': { type: 'string', value: 'G', description: 'initial gamma', default: '0.1' },
      steps: { type: 'string', value: 'N', description: 'attention-transfer steps', default: '100' },
      lr: { type: 'string', value: 'LR', description: 'attention-transfer learning rate', default: '1e-2' },
      'finetune-steps': { type: 'string', value: 'N', description: 'LoRA steps (0: skip; default 100, hedgecats 50, linear-only 0)' },
      'lora-lr': { type: 'string', value: 'LR', description: 'LoRA learning rate', default: '1e-4' },
      rank: { type: 'string', short: 'r', value: 'R', description: 'LoRA rank', default: '8' },
      alpha: { type: 'string', value: 'A', description: 'LoRA alpha', default: '16' },
      patience: { type: 'string', value: 'N', description: 'early-stopping patience (evaluations; 0: off)', default: '3' },
      'ssd-granularity': { type: 'string', value: SSD_GRANULARITIES.join('|'), description: 'ssd: one draw per layer, head, sample, sample-head', default: 'layer' },
      'ssd-windows': { type: 'string', value: 'LIST', description: 'ssd: window schedule, e.g. 16,32,64' },
      gamma: { type: 'string', value: 'G', description: 'linear-only: fixed gamma of the inference-time SWA', default: '1' },
      overlap: { type: 'boolean', description: 'linear-only: overlapping inference-time hybrid (LA over the full prefix)' },
      merge: { type: 'boolean', description: 'merge LoRA into the saved base weights' },
    },
    notes: ['Ctrl-C stops after the current step and writes a checkpoint (exit code 130); rerun with --resume to continue.'],
  },
  async run({ values, positionals }, ctx) {
    const method = choice(values, 'method', CONVERSION_METHODS)!;
    const modelArg = str(values, 'model') ?? positionals[0];
    if (!modelArg) throw new UsageError('give the base model: --model DIR (or a positional checkpoint directory)');
    if (str(values, 'model') && positionals[0]) throw new UsageError('give the base model once: --model DIR or a positional directory');
    const outArg = str(values, 'out');
    if (!outArg) throw new UsageError('--out DIR is required');
    const modelDir = resolve(ctx.cwd, modelArg);
    if (!existsSync(join(modelDir, 'config.json'))) throw new UsageError(`--model ${modelArg}: no config.json there`);
    const out = resolve(ctx.cwd, outArg);
    const window = num(values, 'window', { int: true, min: 1 })!;
    const featureDim = num(values, 'feature-dim', { int: true, min: 2 });
    if (featureDim !== undefined && featureDim % 2 !== 0) throw new UsageError('--feature-dim must be even (hedgehog F = 2f)');
    const gammaInit = num(values, 'gamma-init', { positive: true, max: 0.999 })!;
    const steps = num(values, 'steps', { int: true, min: 0 })!;
    const lr = num(values, 'lr', { positive: true })!;
    const ftSteps = num(values, 'finetune-steps', { int: true, min: 0 });
    const loraLr = num(values, 'lora-lr', { positive: true })!;
    const rank = num(values, 'rank', { int: true, min: 1 })!;
    const alpha = num(values, 'alpha', { positive: true })!;
    const patience = num(values, 'patience', { int: true, min: 0 })!;
    const evalEvery = num(values, 'eval-every', { int: true, min: 1 });
    const saveEvery = num(values, 'save-every', { int: true, min: 0 })!;
    const seed = num(values, 'seed', { int: true })!;
    const gamma = num(values, 'gamma', { positive: true, max: 1 })!;
    const granularity = choice(values, 'ssd-granularity', SSD_GRANULARITIES)!;
    const { device, dtype } = runtimeFromFlags(values, ctx);
    const windowStages = ssdWindowsFromFlags(values);
    const resume = bool(values, 'resume');
    const states = [join(out, TRANSFER_STATE), join(out, FINETUNE_STATE)];
    if (resume && !states.some(existsSync)) throw new UsageError(`--resume: no checkpoint in ${out}`);
    if (!resume && states.some(existsSync)) throw new UsageError(`${out} holds a checkpoint: pass --resume to continue it, or choose another --out`);
    const { data, tokenizerPath } = await dataFromFlags(values, ctx, modelDir);
    await mkdir(out, { recursive: true });
    const featureMap: FeatureMapSpec | undefined = featureDim !== undefined ? { kind: 'hedgehog', act: 'softmax', size: featureDim / 2 } : undefined;
    const defaultFt = method === 'linear-only' ? 0 : method === 'hedgecats' ? 50 : 100;
    const nFt = ftSteps ?? defaultFt;
    const prog = recipeProgress(ctx, out, method);
    const options: RecipeOptions = {
      window,
      gammaInit,
      seed,
      saveEvery,
      resume,
      signal: ctx.signal,
      onProgress: prog.onProgress,
      ...(featureMap ? { featureMap } : {}),
      transfer: steps > 0 ? { steps, lr } : false,
      finetune:
        nFt > 0
          ? {
              steps: nFt,
              lr: loraLr,
              lora: { rank, alpha },
              earlyStopping: patience > 0 ? { patience } : false,
              ...(evalEvery ? { evalEvery } : {}),
              ...(method === 'ssd' ? { ssd: { granularity, ...(windowStages ? { windowStages } : {}) } } : {}),
            }
          : false,
      ...(method === 'linear-only' ? { inference: { gamma, overlap: bool(values, 'overlap') } } : {}),
    };
    if (method !== 'ssd' && (str(values, 'ssd-windows') || values['ssd-granularity'] !== 'layer')) throw new UsageError('--ssd-granularity / --ssd-windows apply to --method ssd only');
    const result = await runConversionRecipe({ method, model: modelDir, out, data, options, dtype, device, merge: bool(values, 'merge'), ...(tokenizerPath ? { tokenizer: tokenizerPath } : {}) });
    await writeRecipeCurves(out, result);
    if (result.interrupted) {
      prog.finish(`convert interrupted; checkpoint in ${out}; continue with --resume`);
      ctx.json.emit('interrupted', { command: 'convert', checkpoint: out });
      return EXIT.interrupted;
    }
    prog.finish();
    const last = (s?: { curve: { loss: number }[] }) => s?.curve.at(-1)?.loss;
    ctx.json.emit('result', { command: 'convert', method, out, transfer_loss: last(result.transfer), finetune_loss: last(result.finetune), finetune_stop: result.finetune?.stopReason, seconds: result.seconds });
    if (!ctx.json.enabled)
      ctx.stdout.write(
        `converted with ${method} in ${result.seconds.toFixed(1)} s: transfer loss ${last(result.transfer)?.toFixed(4) ?? '-'}, ` +
          `fine-tuning loss ${last(result.finetune)?.toFixed(4) ?? '-'}${result.finetune?.stopReason ? ` (${result.finetune.stopReason})` : ''}; model written to ${out}\n`,
      );
    return EXIT.ok;
  },
};

