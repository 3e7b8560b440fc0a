/**
 * The four conversion methods of SPEC sec. 5 as ready recipes (every value an option, SPEC
 * defaults):
 * - lolcats:     hybrid-output MSE transfer (hedgehog softmax F = d, gamma init 0.1, w = 64,
 *                lr 1e-2, x1000), then hybrid LoRA with early stopping.
 * - linear-only: attention-weight CE transfer of LA alone (F = 2d), optional LoRA in mode
 *                'la-full' (off by default); then inference-time hybridisation: SWA added with a
 *                fixed gamma (default 1, lambda 'one'), non-overlapping by default.
 * - hedgecats:   attention-weight CE transfer (F = 2d, softmax act), then short hybrid LoRA with
 *                early stopping and the (hybrid - swa) gap guard.
 * - ssd:         stage 1 as lolcats (so a comparison isolates the dropout), then hybrid LoRA with
 *                scheduled sliding-window dropout (0.9 -> 0.75 -> 0.5 per layer), eval at p = 0.
 * Each run: convert -> transfer -> finetune, with progress, AbortSignal, resumable checkpoints
 * under checkpointDir, and a JSON-serialisable result (loss curves, validation points).
 */
import { join } from 'node:path';
import { InvalidArgumentError } from '../errors.js';
import { convertToHybrid } from '../model/convert.js';
import type { FeatureMapPreset, FeatureMapSpec } from '../model/hybrid-layer.js';
import type { LlamaModel } from '../model/llama.js';
import type { LoraTarget } from '../model/lora.js';
import type { LambdaKind, WindowGeometry } from '../ops/hybrid-attention.js';
import type { BatchSource } from './data.js';
import { loraFinetune, type FinetuneOptions } from './finetune.js';
import { CONVERSION_FORMAT, type ConversionInfo } from './io.js';
import type { CurvePoint, ProgressInfo, ValPoint } from './loop.js';
import { attentionTransfer, hybridKernels, type TransferOptions } from './transfer.js';

export const RECIPES = ['lolcats', 'linear-only', 'hedgecats', 'ssd'] as const;
export type RecipeName = (typeof RECIPES)[number];

export interface RecipeOptions {
  /** Sliding window w (default 64). */
  window?: number;
  /** Feature map (default: 'lolcats' F = d for lolcats/ssd, 'hedgecats' F = 2d otherwise). */
  featureMap?: FeatureMapSpec | FeatureMapPreset;
  /** Initial gamma (default 0.1). */
  gammaInit?: number;
  geometry?: WindowGeometry;
  lambda?: LambdaKind;
  /** Layers to convert (default all). */
  layers?: number[];
  /** Seed of the feature-map init, LoRA init and SSD draws (default 0). */
  seed?: number;
  /** Stage 1 options (loss defaults per method); false skips it. */
  transfer?: Partial<TransferOptions> | false;
  /** Stage 2 options; false skips it (linear-only's default). */
  finetune?: FinetuneOptions | false;
  /** linear-only: inference-time hybridisation (default gamma 1, overlap false); false keeps LA-only. */
  inference?: { gamma?: number | number[]; overlap?: boolean } | false;
  /** Stage checkpoints go here (transfer-state.safetensors, finetune-state.safetensors). */
  checkpointDir?: string;
  /** Continue from the checkpoints in checkpointDir. */
  resume?: boolean;
  /** Checkpoint every N steps in both stages (default 0: at the end / when stopped). */
  saveEvery?: number;
  signal?: AbortSignal;
  onProgress?: (p: ProgressInfo) => void;
}

export interface StageSummary {
  steps: number;
  stopReason?: string;
  seconds: number;
  curve: CurvePoint[];
  val: ValPoint[];
  bestStep?: number;
}

export interface RecipeResult {
  method: RecipeName;
  /** How the model was converted (what saveConvertedModel writes). */
  conversion: ConversionInfo;
  transfer?: StageSummary;
  finetune?: StageSummary;
  /** Stopped by the signal; rerun with resume: true. */
  interrupted: boolean;
  seconds: number;
}

export const TRANSFER_STATE = 'transfer-state.safetensors';
export const FINETUNE_STATE = 'finetune-state.safetensors';

interface Defaults {
  featureMap: FeatureMapPreset;
  kind: 'hybrid' | 'linear';
  transferLoss: TransferOptions['loss'];
  finetune: FinetuneOptions | false;
}

function defaultsFor(method: RecipeName): Defaults {
  switch (method) {
    case 'lolcats':
      return { featureMap: 'lolcats', kind: 'hybrid', transferLoss: 'mse-hybrid', finetune: {} };
    case 'linear-only':
      return { featureMap: 'hedgecats', kind: 'linear', transferLoss: 'weight-ce', finetune: false };
    case 'hedgecats':
      return { featureMap: 'hedgecats', kind: 'hybrid', transferLoss: 'weight-ce', finetune: { gapGuard: {}, steps: 50 } };
    case 'ssd':
      return { featureMap: 'lolcats', kind: 'hybrid', transferLoss: 'mse-hybrid', finetune: { ssd: {} } };
  }
}

const summary = (r: { state: { step: number; stopReason?: string; curve: CurvePoint[]; val: ValPoint[] }; seconds: number; bestStep?: number }): StageSummary => ({
  steps: r.state.step,
  ...(r.state.stopReason ? { stopReason: r.state.stopReason } : {}),
  seconds: r.seconds,
  curve: r.state.curve,
  val: r.state.val,
  ...(r.bestStep !== undefined ? { bestStep: r.bestStep } : {}),
});

/**
 * Converts `model` (a loaded softmax Llama; changed in place) with `method` on `data`. The model
 * ends in the recipe's inference mode (hybrid; linear-only: hybrid/overlap with the fixed
 * gamma, or la-full with inference: false).
 */
export async function runRecipe(method: RecipeName, model: LlamaModel, data: BatchSource, o: RecipeOptions = {}): Promise<RecipeResult> {
  if (!(RECIPES as readonly string[]).includes(method)) throw new InvalidArgumentError(`unknown method '${String(method)}' (use ${RECIPES.join(', ')})`, 'method');
  const t0 = Date.now();
  const d = defaultsFor(method);
  const featureMap = o.featureMap ?? d.featureMap;
  const seed = o.seed ?? 0;
  const window = o.window ?? 64;
  if (hybridKernels(model).length > 0) throw new InvalidArgumentError('the model is already converted; recipes start from a softmax model', 'model');
  convertToHybrid(model, {
    kind: d.kind,
    featureMap,
    window,
    gammaInit: o.gammaInit ?? 0.1,
    ...(o.geometry ? { geometry: o.geometry } : {}),
    ...(o.lambda ? { lambda: o.lambda } : {}),
    ...(o.layers ? { layers: o.layers } : {}),
    seed,
  });
  const common = {
    ...(o.signal ? { signal: o.signal } : {}),
    ...(o.onProgress ? { onProgress: o.onProgress } : {}),
    ...(o.resume ? { resume: true } : {}),
    ...(o.saveEvery !== undefined ? { saveEvery: o.saveEvery } : {}),
  };
  const result: RecipeResult = {
    method,
    conversion: undefined as unknown as ConversionInfo,
    interrupted: false,
    seconds: 0,
  };
  if (o.transfer !== false) {
    const t = o.transfer ?? {};
    const r = await attentionTransfer(model, data, {
      loss: d.transferLoss,
      ...common,
      ...(o.checkpointDir ? { checkpoint: join(o.checkpointDir, TRANSFER_STATE) } : {}),
      ...t,
    });
    result.transfer = summary(r);
    if (r.interrupted) {
      result.interrupted = true;
      result.conversion = conversionInfo(method, model, featureMap);
      result.seconds = (Date.now() - t0) / 1000;
      return result;
    }
  }
  const ft = o.finetune === undefined ? d.finetune : o.finetune;
  if (ft !== false) {
    const f: FinetuneOptions = { ...(d.finetune || {}), ...ft };
    if (method === 'linear-only') f.mode ??= 'la-full';
    if (f.ssd) f.ssd = { seed, ...f.ssd };
    const r = await loraFinetune(model, data, {
      ...common,
      ...(o.checkpointDir ? { checkpoint: join(o.checkpointDir, FINETUNE_STATE) } : {}),
      ...f,
      lora: f.lora === false ? false : { seed, ...(f.lora ?? {}) },
    });
    result.finetune = summary(r);
    if (r.interrupted) result.interrupted = true;
  }
  // inference-time hybridisation of linear-only
  let inference: ConversionInfo['inference'];
  if (method === 'linear-only') {
    if (o.inference !== false) {
      const gamma = o.inference?.gamma ?? 1;
      const overlap = o.inference?.overlap ?? false;
      for (const { kernel } of hybridKernels(model)) {
        kernel.setGamma(gamma);
        kernel.setMode(overlap ? 'overlap' : 'hybrid');
      }
      inference = { gamma, overlap };
    } else hybridKernels(model).forEach(({ kernel }) => kernel.setMode('la-full'));
  } else hybridKernels(model).forEach(({ kernel }) => kernel.setMode('hybrid'));
  result.conversion = conversionInfo(method, model, featureMap, inference);
  result.seconds = (Date.now() - t0) / 1000;
  return result;
}

function conversionInfo(method: RecipeName, model: LlamaModel, featureMap: FeatureMapSpec | FeatureMapPreset, inference?: ConversionInfo['inference']): ConversionInfo {
  const ks = hybridKernels(model);
  const k = ks[0]!.kernel;
  const loraA = [...model.params.keys()].filter((n) => n.endsWith('.lora_A.weight'));
  let lora: ConversionInfo['lora'];
  if (loraA.length > 0) {
    const targets = [...new Set(loraA.map((n) => ({ q_proj: 'q', k_proj: 'k', v_proj: 'v', o_proj: 'o', gate_proj: 'gate', up_proj: 'up', down_proj: 'down' })[n.split('.').at(-3)!]!))];
    const a = model.params.get(loraA[0]!)!;
    const proj = model.blocks[0]!.proj as unknown as Record<string, { scaling?: number; dropout?: number }>;
    const p = Object.values(proj).find((x) => x.scaling !== undefined);
    const rank = a.shape[0]!;
    lora = { rank, alpha: (p?.scaling ?? 2) * rank, dropout: p?.dropout ?? 0, targets: targets as LoraTarget[], merged: false };
  }
  return {
    format: CONVERSION_FORMAT,
    method,
    layers: ks.map((x) => x.layer),
    layer: { kind: k.kind, featureMap, window: k.window, geometry: k.geometry, lambda: k.lambda, sinks: k.sinks, mode: k.mode },
    ...(lora ? { lora } : {}),
    ...(inference ? { inference } : {}),
  };
}

export const lolcats = (model: LlamaModel, data: BatchSource, o: RecipeOptions = {}) => runRecipe('lolcats', model, data, o);
export const linearOnly = (model: LlamaModel, data: BatchSource, o: RecipeOptions = {}) => runRecipe('linear-only', model, data, o);
export const hedgecats = (model: LlamaModel, data: BatchSource, o: RecipeOptions = {}) => runRecipe('hedgecats', model, data, o);
export const ssd = (model: LlamaModel, data: BatchSource, o: RecipeOptions = {}) => runRecipe('ssd', model, data, o);
