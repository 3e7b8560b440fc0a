/**
 * Stage 2, fine-tuning (SPEC sec. 4, 5): LoRA (default q, k, v, o; r = 8, alpha = 16, dropout 0,
 * lr 1e-4) with next-token cross-entropy; feature maps and gammas frozen by default. Options:
 * - early stopping on validation loss (patience in evaluations), restoring the best adapters;
 * - the HedgeCATs guard: stop when the validation gap (loss_swa - loss_hybrid, > 0 when LA
 *   helps) has not improved for `patience` evaluations;
 * - SSD: each step draws keep masks m ~ Bernoulli(1 - p_t) per layer (or per head / sample) with
 *   p_t from ssdSchedule (0.9 -> 0.75 -> 0.5 over equal thirds), optional window schedule;
 *   evaluation uses p = 0 and the target window.
 */
import { InvalidArgumentError } from '../errors.js';
import { Tensor } from '../tensor.js';
import { copyInto, scale } from '../ops/elementwise.js';
import { HYBRID_MODES, type HybridMode } from '../ops/hybrid-attention.js';
import { applyLora, LoraRng, type LoraHandle, type LoraOptions } from '../model/lora.js';
import { drawSsdKeep, paramGroup, ssdSchedule, SSD_GRANULARITIES, type SsdGranularity } from '../model/convert.js';
import { AdamWOptimizer } from '../model/optimizer.js';
import { loadTrainingState, saveTrainingState } from '../model/checkpoint.js';
import type { LlamaModel } from '../model/llama.js';
import type { BatchSource, TokenBatch } from './data.js';
import { collectBatches } from './data.js';
import { stageLoopSettings, trainLoop, type LoopResult, type StageLoopOptions, type ValPoint } from './loop.js';
import { hybridKernels } from './transfer.js';

export interface SsdOptions {
  /** Drop probabilities p of the SWA branch over equal parts of training (default [0.9, 0.75, 0.5]). */
  stages?: readonly number[];
  /** One draw per layer (default), per head, per sample, per sample and head. */
  granularity?: SsdGranularity;
  /** Window schedule with the same staging (e.g. [16, 32, 64]); default: the layers' window throughout. */
  windowStages?: readonly number[];
  /** Seed of the mask draws (default 0). */
  seed?: number;
}

export interface EarlyStoppingOptions {
  /** Evaluations without improvement before stopping (default 3). */
  patience?: number;
  /** Minimum improvement (default 0). */
  minDelta?: number;
}

export interface FinetuneOptions extends StageLoopOptions {
  /** LoRA adapters (default r 8, alpha 16, dropout 0, q k v o); false: none (train only what trainFeatureMaps / trainGamma allow). */
  lora?: LoraOptions | false;
  /** Also train the feature maps (default false). */
  trainFeatureMaps?: boolean;
  /** Also train the gammas (default false). */
  trainGamma?: boolean;
  /** Attention mode while training (default 'hybrid'; 'la-full' for linear-only). */
  mode?: HybridMode;
  /** Attention mode of the validation loss (default: mode). */
  evalMode?: HybridMode;
  /** Early stopping on validation loss (default on with patience 3 when validation data exist); false: off. */
  earlyStopping?: EarlyStoppingOptions | false;
  /** Stop when the (swa - hybrid) validation-loss gap stops improving (HedgeCATs); default off. */
  gapGuard?: EarlyStoppingOptions | false;
  /** At the end, put back the adapters of the best validation loss (default true with early stopping). */
  restoreBest?: boolean;
  /** Scheduled sliding-window dropout. */
  ssd?: SsdOptions | false;
  /** Validation batches used per evaluation (default 4). */
  validationBatches?: number;
}

export interface FinetuneResult extends LoopResult {
  lora?: LoraHandle;
  /** Step whose adapters the model holds at the end (best validation), when restored. */
  bestStep?: number;
}

async function meanLoss(model: LlamaModel, batches: readonly TokenBatch[]): Promise<number> {
  let s = 0;
  for (const b of batches) {
    s += await model.loss(b);
    model.clearPending();
  }
  return batches.length ? s / batches.length : Number.NaN;
}

/** Validation loss of `model` in `mode` (every hybrid layer), restoring the modes after. */
export async function validationLoss(model: LlamaModel, batches: readonly TokenBatch[], mode: HybridMode): Promise<number> {
  const layers = hybridKernels(model);
  const before = layers.map((l) => l.kernel.mode);
  layers.forEach((l) => l.kernel.setMode(mode));
  try {
    return await meanLoss(model, batches);
  } finally {
    layers.forEach((l, i) => l.kernel.setMode(before[i]!));
  }
}

export async function loraFinetune(model: LlamaModel, data: BatchSource, o: FinetuneOptions = {}): Promise<FinetuneResult> {
  const layers = hybridKernels(model);
  const mode = o.mode ?? 'hybrid';
  if (!(HYBRID_MODES as readonly string[]).includes(mode)) throw new InvalidArgumentError(`mode must be one of ${HYBRID_MODES.join(', ')}`, 'mode');
  const evalMode = o.evalMode ?? mode;
  const steps = o.steps ?? 100;
  const ssd = o.ssd || undefined;
  if (ssd) {
    if (layers.length === 0) throw new InvalidArgumentError('SSD needs hybrid layers', 'ssd');
    for (const p of ssd.stages ?? []) if (!(p >= 0 && p <= 1)) throw new InvalidArgumentError('ssd.stages must be probabilities in [0, 1]', 'ssd.stages');
    if (ssd.granularity && !(SSD_GRANULARITIES as readonly string[]).includes(ssd.granularity))
      throw new InvalidArgumentError(`ssd.granularity must be one of ${SSD_GRANULARITIES.join(', ')}`, 'ssd.granularity');
    for (const w of ssd.windowStages ?? []) if (!Number.isInteger(w) || w < 1) throw new InvalidArgumentError('ssd.windowStages must be integers >= 1', 'ssd.windowStages');
  }
  const lora = o.lora === false ? undefined : applyLora(model, o.lora ?? {});
  const names = [...(lora?.names ?? [])];
  for (const n of model.params.keys()) {
    const g = paramGroup(n);
    if ((g === 'feature_map' && o.trainFeatureMaps) || (g === 'gamma' && o.trainGamma)) names.push(n);
  }
  if (names.length === 0) throw new InvalidArgumentError('nothing to train (lora: false and feature maps / gammas frozen)', 'lora');

  const val = data.validation ? (await collectBatches(data.validation(o.signal ? { signal: o.signal } : {}))).slice(0, o.validationBatches ?? 4) : [];
  const es = o.earlyStopping === false || val.length === 0 ? undefined : (o.earlyStopping ?? {});
  const guard = o.gapGuard === false || o.gapGuard === undefined || val.length === 0 ? undefined : o.gapGuard;
  const restoreBest = (o.restoreBest ?? es !== undefined) && val.length > 0;
  const evalEvery = o.evalEvery ?? (val.length > 0 ? Math.max(1, Math.floor(steps / 10)) : 0);
  const targetWindows = layers.map((l) => l.kernel.window);
  const rng = new LoraRng(((ssd?.seed ?? 0) ^ 0x55d) >>> 0);
  const setWindows = (w: number | undefined) => layers.forEach((l, i) => (l.kernel.window = w ?? targetWindows[i]!));
  const setModes = (m: HybridMode) => layers.forEach((l) => l.kernel.setMode(m));
  const bestPath = o.checkpoint ? o.checkpoint.replace(/(\.safetensors)?$/, '-best.safetensors') : undefined;
  let bestMemory: Map<string, Tensor> | undefined;
  const modesBefore = layers.map((l) => l.kernel.mode);

  setModes(mode);
  let result: LoopResult;
  try {
    result = await trainLoop({
      stage: 'finetune',
      model,
      names,
      data,
      steps,
      lr: o.lr ?? 1e-4,
      evalEvery,
      ...stageLoopSettings(o),
      extra: {
        get: () => ({ ssdRng: rng.state, loraRng: lora?.rng.state ?? 0 }),
        set: (x) => {
          rng.state = Number(x.ssdRng ?? rng.state) >>> 0;
          if (lora) lora.rng.state = Number(x.loraRng ?? lora.rng.state) >>> 0;
        },
      },
      step: async (batch, step) => {
        const extra: Record<string, number> = {};
        let keep: Float64Array[] | undefined;
        if (ssd) {
          const p = ssdSchedule(step, steps, ssd.stages ?? [0.9, 0.75, 0.5]);
          keep = drawSsdKeep({ layers: model.blocks.length, batch: batch.batch, heads: model.config.numHeads, p, granularity: ssd.granularity ?? 'layer', random: () => rng.next() });
          extra.ssd_p = p;
          extra.ssd_kept = keep.reduce((s, m) => s + m.reduce((a, b) => a + b, 0), 0) / keep.reduce((s, m) => s + m.length, 0);
          if (ssd.windowStages && ssd.windowStages.length > 0) {
            const w = ssdSchedule(step, steps, ssd.windowStages);
            setWindows(w);
            extra.window = w;
          }
        }
        const loss = await model.loss(batch, keep ? { keep } : {});
        model.backward();
        return { loss, extra };
      },
      ...(val.length > 0
        ? {
            validate: async (step, state) => {
              setWindows(undefined);
              const loss = await validationLoss(model, val, evalMode);
              const point: ValPoint = { step, loss };
              const g = state.guard;
              let stop: string | undefined;
              if (g.bestLoss === undefined || loss < g.bestLoss - (es?.minDelta ?? 0)) {
                g.bestLoss = loss;
                g.bestStep = step;
                g.bad = 0;
              } else g.bad = (g.bad ?? 0) + 1;
              if (es && g.bad! >= (es.patience ?? 3)) stop = `early stopping: validation loss did not improve for ${g.bad} evaluations`;
              if (guard) {
                const swa = await validationLoss(model, val, 'swa');
                const hyb = evalMode === 'hybrid' ? loss : await validationLoss(model, val, 'hybrid');
                point.swaLoss = swa;
                point.gap = swa - hyb;
                if (g.bestGap === undefined || point.gap > g.bestGap + (guard.minDelta ?? 0)) {
                  g.bestGap = point.gap;
                  g.gapBad = 0;
                } else g.gapBad = (g.gapBad ?? 0) + 1;
                if (!stop && g.gapBad! >= (guard.patience ?? 2)) stop = `gap guard: the (swa - hybrid) validation gap did not improve for ${g.gapBad} evaluations`;
              }
              setModes(mode);
              return { point, ...(stop ? { stop } : {}) };
            },
            onBest: async (_step: number, opt: AdamWOptimizer) => {
              if (!restoreBest) return;
              if (bestPath) await saveTrainingState(bestPath, opt);
              else {
                bestMemory?.forEach((t) => t.dispose());
                bestMemory = new Map(names.map((n) => [n, scale(model.params.get(n)!, 1)]));
              }
            },
          }
        : {}),
    });
  } finally {
    setWindows(undefined);
    layers.forEach((l, i) => l.kernel.setMode(modesBefore[i]!));
  }
  const out: FinetuneResult = { ...result, ...(lora ? { lora } : {}) };
  const bestStep = result.state.guard.bestStep;
  if (restoreBest && !result.interrupted && bestStep !== undefined && bestStep !== result.state.step) {
    if (bestMemory) for (const [n, t] of bestMemory) copyInto(model.params.get(n)!, t);
    else if (bestPath) {
      const tmp = new AdamWOptimizer(model.params, names, { lr: 1 });
      try {
        await loadTrainingState(bestPath, tmp);
      } finally {
        tmp.dispose();
      }
    }
    out.bestStep = bestStep;
  }
  bestMemory?.forEach((t) => t.dispose());
  return out;
}
