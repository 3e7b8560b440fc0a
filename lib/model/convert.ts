/**
 * Converting a softmax model into a hybrid (or linear) one, trainable parameter groups
 * (freeze / unfreeze), and SSD keep masks (SPEC sec. 5).
 */
import { InvalidArgumentError } from '../errors.js';
import { expectChoice, expectInteger } from '../ops/validate.js';
import { HybridAttentionKernel, HYBRID_PARAM_NAMES, type HybridLayerOptions } from './hybrid-layer.js';
import { layerPrefix } from './weights.js';
import { fillLike } from '../ops/elementwise.js';
import type { LlamaModel } from './llama.js';

export interface ConvertOptions extends HybridLayerOptions {
  /** Layers to convert (default all). */
  layers?: readonly number[];
  /** Make only the new feature maps (and gammas, unless trainGamma is false) trainable. Default true. */
  freezeBase?: boolean;
  /** Default true. */
  trainFeatureMaps?: boolean;
  /** Default true. */
  trainGamma?: boolean;
}

export interface ConvertResult {
  kernels: HybridAttentionKernel[];
  /** Every new parameter's full name. */
  names: string[];
  /** The new parameters by group. */
  groups: { featureMaps: string[]; gammas: string[] };
}

/**
 * Swaps the attention kernel of the chosen layers for a hybrid/linear one with fresh
 * feature-map parameters (named model.layers.{i}.self_attn.feature_map_q.weight, ...,
 * gamma_logit) added to model.params. The previous kernels are disposed. Gradients are
 * re-allocated for the new trainable set.
 */
export function convertToHybrid(model: LlamaModel, options: ConvertOptions = {}): ConvertResult {
  const c = model.config;
  const layers = options.layers ?? model.blocks.map((_, i) => i);
  for (const i of layers)
    if (!Number.isInteger(i) || i < 0 || i >= model.blocks.length) throw new InvalidArgumentError(`no layer ${String(i)}`, 'layers');
  if (new Set(layers).size !== layers.length) throw new InvalidArgumentError('layers has duplicates', 'layers');
  const shape = { heads: c.numHeads, kvHeads: c.numKvHeads, headDim: c.headDim, dtype: model.dtype, device: model.device };
  const seed = options.seed ?? 0;
  const kernels: HybridAttentionKernel[] = [];
  // Build every kernel first (validation errors leave the model untouched).
  const made: [number, HybridAttentionKernel][] = [];
  try {
    for (const i of layers) {
      const k = HybridAttentionKernel.init(model.params, `${layerPrefix(i)}.self_attn.`, shape, { ...options, seed: (seed + 7919 * (i + 1)) >>> 0 });
      made.push([i, k]);
    }
  } catch (e) {
    for (const [, k] of made) for (const n of k.parameterNames()) {
      model.params.get(k.prefix + n)?.dispose();
      model.params.delete(k.prefix + n);
    }
    throw e;
  }
  const featureMaps: string[] = [];
  const gammas: string[] = [];
  for (const [i, k] of made) {
    const block = model.blocks[i]!;
    block.attention.dispose();
    block.attention = k;
    kernels.push(k);
    for (const n of k.parameterNames()) (n === HYBRID_PARAM_NAMES.gamma ? gammas : featureMaps).push(k.prefix + n);
  }
  if (options.freezeBase ?? true) model.trainable.clear();
  if (options.trainFeatureMaps ?? true) featureMaps.forEach((n) => model.trainable.add(n));
  if (options.trainGamma ?? true) gammas.forEach((n) => model.trainable.add(n));
  model.zeroGrad();
  return { kernels, names: [...featureMaps, ...gammas], groups: { featureMaps, gammas } };
}

export const PARAM_GROUPS = ['base', 'lora', 'feature_map', 'gamma'] as const;
export type ParamGroup = (typeof PARAM_GROUPS)[number];

/** The group of a parameter name: LoRA adapters, feature maps, gamma logits, or the base model. */
export function paramGroup(name: string): ParamGroup {
  if (/\.lora_[AB]\.weight$/.test(name)) return 'lora';
  if (/\.feature_map_[qk]\.(weight|bias)$/.test(name)) return 'feature_map';
  if (/\.gamma_logit$/.test(name)) return 'gamma';
  return 'base';
}

/** Parameters by group (names in model.params order). */
export function parameterGroups(model: LlamaModel): Record<ParamGroup, string[]> {
  const out: Record<ParamGroup, string[]> = { base: [], lora: [], feature_map: [], gamma: [] };
  for (const n of model.params.keys()) out[paramGroup(n)].push(n);
  return out;
}

/** Which parameters a freeze/unfreeze touches: a group or parameter name, a list of them, a pattern, or a predicate. */
export type ParamSelector = ParamGroup | (string & {}) | readonly (ParamGroup | (string & {}))[] | RegExp | ((name: string) => boolean);

function select(model: LlamaModel, sel: ParamSelector): string[] {
  const names = [...model.params.keys()];
  if (typeof sel === 'function') return names.filter((n) => sel(n));
  if (sel instanceof RegExp) return names.filter((n) => sel.test(n));
  const items: readonly string[] = typeof sel === 'string' ? [sel] : sel;
  if (!Array.isArray(items)) throw new InvalidArgumentError('selector must be a group, a list of groups/names, a RegExp or a predicate', 'selector');
  const out = new Set<string>();
  for (const it of items) {
    if ((PARAM_GROUPS as readonly string[]).includes(it)) names.filter((n) => paramGroup(n) === it).forEach((n) => out.add(n));
    else if (model.params.has(it)) out.add(it);
    else throw new InvalidArgumentError(`'${it}' is neither a parameter group (${PARAM_GROUPS.join(', ')}) nor a parameter`, 'selector');
  }
  return [...out];
}

/** Stops gradients for the selected parameters (their gradient tensors are freed); returns them. */
export function freeze(model: LlamaModel, sel: ParamSelector): string[] {
  const names = select(model, sel);
  for (const n of names) {
    model.trainable.delete(n);
    model.grads.get(n)?.dispose();
    model.grads.delete(n);
  }
  return names;
}

/**
 * Makes the selected parameters trainable (each newly trainable one gets a zero gradient when
 * gradients exist already; others keep their accumulated values); returns them.
 */
export function unfreeze(model: LlamaModel, sel: ParamSelector): string[] {
  const names = select(model, sel);
  const allocated = model.grads.size > 0;
  for (const n of names) {
    model.trainable.add(n);
    if (allocated && !model.grads.has(n)) model.grads.set(n, fillLike(model.params.get(n)!, 0));
  }
  return names;
}

export const SSD_GRANULARITIES = ['layer', 'head', 'sample', 'sample-head'] as const;
export type SsdGranularity = (typeof SSD_GRANULARITIES)[number];

export interface SsdKeepOptions {
  layers: number;
  batch: number;
  heads: number;
  /** Probability of dropping the SWA branch (keep ~ Bernoulli(1 - p)). */
  p: number;
  /** One draw per layer (default), per (layer, head), per (layer, sample), or per (layer, sample, head). */
  granularity?: SsdGranularity;
  /** Uniform draws in [0, 1) (e.g. a LoraRng's next); default Math.random. */
  random?: () => number;
}

/** SSD keep masks, one Float64Array [B*H] (row-major [B, H]) per layer, for ForwardOptions.keep. */
export function drawSsdKeep(o: SsdKeepOptions): Float64Array[] {
  const L = expectInteger(o.layers, 'layers', 1);
  const B = expectInteger(o.batch, 'batch', 1);
  const H = expectInteger(o.heads, 'heads', 1);
  if (typeof o.p !== 'number' || !(o.p >= 0 && o.p <= 1)) throw new InvalidArgumentError('p must be in [0, 1]', 'p');
  const g = expectChoice(o.granularity ?? 'layer', 'granularity', SSD_GRANULARITIES);
  const rnd = o.random ?? Math.random;
  const draw = () => (rnd() < o.p ? 0 : 1);
  const out: Float64Array[] = [];
  for (let l = 0; l < L; l++) {
    const m = new Float64Array(B * H);
    if (g === 'layer') m.fill(draw());
    else if (g === 'head') {
      const hs = Array.from({ length: H }, draw);
      for (let b = 0; b < B; b++) for (let h = 0; h < H; h++) m[b * H + h] = hs[h]!;
    } else if (g === 'sample') {
      for (let b = 0; b < B; b++) m.fill(draw(), b * H, (b + 1) * H);
    } else for (let i = 0; i < B * H; i++) m[i] = draw();
    out.push(m);
  }
  return out;
}

/**
 * The SSD drop probability at `step` of `totalSteps`: stages (default 0.9, 0.75, 0.5) over
 * equal parts of training. The same staging serves a window schedule (e.g. [16, 32, 64]).
 */
export function ssdSchedule<T = number>(step: number, totalSteps: number, stages: readonly T[] = [0.9, 0.75, 0.5] as unknown as T[]): T {
  expectInteger(totalSteps, 'totalSteps', 1);
  if (stages.length === 0) throw new InvalidArgumentError('stages must not be empty', 'stages');
  const i = Math.min(stages.length - 1, Math.max(0, Math.floor((step * stages.length) / totalSteps)));
  return stages[i]!;
}
