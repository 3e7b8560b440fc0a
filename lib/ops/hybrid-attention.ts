/**
 * Hybrid attention (SPEC sec. 2): a sliding-window softmax plus linear attention over older
 * tokens under one normaliser, with its diagnostic modes, forward and backward.
 */
import { accumDType, DTYPE_CODE } from '../dtype.js';
import { DEVICE_CODE } from '../device.js';
import { callNative } from '../errors.js';
import { native } from '../native.js';
import { Tensor } from '../tensor.js';
import {
  expectChoice,
  expectInteger,
  expectQueryKey,
  expectShape,
  expectTensor,
  gammaArg,
  keepArg,
  resolveScale,
} from './validate.js';

export const HYBRID_MODES = ['hybrid', 'swa', 'la', 'la-full', 'overlap', 'sinks', 'none'] as const;
export type HybridMode = (typeof HYBRID_MODES)[number];
export const WINDOW_GEOMETRIES = ['sliding', 'terraced'] as const;
export type WindowGeometry = (typeof WINDOW_GEOMETRIES)[number];
export const LAMBDA_KINDS = ['one', 'affine'] as const;
export type LambdaKind = (typeof LAMBDA_KINDS)[number];

export interface HybridAttentionInputs {
  /** [B, H, T, d], after RoPE. */
  q: Tensor;
  /** [B, Hkv, T, d]; H must be a multiple of Hkv (GQA). */
  k: Tensor;
  /** [B, Hkv, T, dv]. */
  v: Tensor;
  /** phi_q(q): [B, H, T, F], non-negative. */
  fq: Tensor;
  /** phi_k(k), per q head: [B, H, T, F], non-negative. */
  fk: Tensor;
  /**
   * Per-head gamma (already sigmoid-ed): a [H] tensor of the accumulator dtype, or numbers; in
   * (0, 1), or exactly 1 with lambda 'one' (inference-time hybridisation's fixed gamma).
   */
  gamma: Tensor | ArrayLike<number>;
  /** Optional SSD keep mask in {0, 1} per (batch, head): [B, H] tensor or numbers (row-major). */
  keep?: Tensor | ArrayLike<number>;
}

export interface HybridAttentionOptions {
  /** Window size w >= 1. */
  window: number;
  /** Default 'hybrid'. */
  mode?: HybridMode;
  /** Default 'sliding'. */
  geometry?: WindowGeometry;
  /** Sink count S for mode 'sinks' (default 8). */
  sinks?: number;
  /** lambda = 1 ('one', default) or 1 - gamma ('affine'). */
  lambda?: LambdaKind;
  /** Softmax scale, default 1/sqrt(d). */
  scale?: number;
}

/** Per-row statistics [B, H, T] in the accumulator dtype (f64 for f64 inputs, else f32). */
export interface HybridAttentionStats {
  /** Window max c_n of s_ni. */
  c: Tensor;
  /** gamma_eff * sum_Win exp(s - c) (the plain softmax normaliser in modes swa and sinks). */
  denSwa: Tensor;
  /** lambda * sum_Lin fq.fk. */
  denLa: Tensor;
}

/** Everything hybridAttentionBackward needs. */
export interface HybridAttentionSaved {
  readonly inputs: HybridAttentionInputs & { gamma: Tensor };
  readonly options: Required<HybridAttentionOptions>;
  readonly y: Tensor;
  readonly stats: HybridAttentionStats;
  /** @internal tensors uploaded from host numbers, owned by this result */
  readonly owned: Tensor[];
}

export interface HybridAttentionResult {
  /** [B, H, T, dv]. */
  y: Tensor;
  stats: HybridAttentionStats;
  saved: HybridAttentionSaved;
  /** Disposes y, the statistics and tensors uploaded from host numbers. */
  dispose(): void;
}

export interface HybridAttentionGrads {
  dq: Tensor;
  dk: Tensor;
  dv: Tensor;
  dfq: Tensor;
  dfk: Tensor;
  /** [H], accumulator dtype. */
  dgamma: Tensor;
}

interface Prepared {
  args: Record<string, unknown>;
  inputs: HybridAttentionInputs & { gamma: Tensor; keep?: Tensor };
  options: Required<HybridAttentionOptions>;
  owned: Tensor[];
}

function prepare(inputs: HybridAttentionInputs, options: HybridAttentionOptions): Prepared {
  if (inputs === null || typeof inputs !== 'object') throw new TypeError('inputs must be an object');
  if (options === null || typeof options !== 'object') throw new TypeError('options must be an object');
  const { q, k, dtype, device, B, H, Hkv, T, d } = expectQueryKey(inputs.q, inputs.k);
  const v = expectTensor(inputs.v, 'v', { rank: 4, dtype, device });
  expectShape(v, 'v', [B, Hkv, T, null], 'v must match k in batch, kv heads and sequence');
  const dv = v.shape[3]!;
  const fq = expectTensor(inputs.fq, 'fq', { rank: 4, dtype, device });
  expectShape(fq, 'fq', [B, H, T, null], 'feature maps are per q head');
  const F = fq.shape[3]!;
  const fk = expectTensor(inputs.fk, 'fk', { rank: 4, dtype, device });
  expectShape(fk, 'fk', [B, H, T, F], 'fk must match fq');

  const window = expectInteger(options.window, 'window', 1);
  const mode = expectChoice(options.mode ?? 'hybrid', 'mode', HYBRID_MODES);
  const geometry = expectChoice(options.geometry ?? 'sliding', 'geometry', WINDOW_GEOMETRIES);
  const sinks = expectInteger(options.sinks ?? 8, 'sinks', 1);
  const lambda = expectChoice(options.lambda ?? 'one', 'lambda', LAMBDA_KINDS);
  const scale = resolveScale(options.scale, d);

  const owned: Tensor[] = [];
  const gamma = gammaArg(inputs.gamma, H, dtype, device, lambda);
  if (gamma.owned) owned.push(gamma.tensor);
  let keep: Tensor | undefined;
  if (inputs.keep !== undefined && inputs.keep !== null) {
    const kept = keepArg(inputs.keep, B, H, dtype, device);
    if (kept.owned) owned.push(kept.tensor);
    keep = kept.tensor;
  }
  const args: Record<string, unknown> = {
    device: DEVICE_CODE[device],
    dtype: DTYPE_CODE[dtype],
    batch: B,
    heads: H,
    kvHeads: Hkv,
    seqlen: T,
    headDim: d,
    valueDim: dv,
    featureDim: F,
    window,
    sinks,
    mode: HYBRID_MODES.indexOf(mode),
    geometry: WINDOW_GEOMETRIES.indexOf(geometry),
    lambda: LAMBDA_KINDS.indexOf(lambda),
    scale,
    q: q.handle,
    k: k.handle,
    v: v.handle,
    fq: fq.handle,
    fk: fk.handle,
    gamma: gamma.tensor.handle,
    keep: keep?.handle,
  };
  const prepared: Prepared = {
    args,
    inputs: { q, k, v, fq, fk, gamma: gamma.tensor },
    options: { window, mode, geometry, sinks, lambda, scale },
    owned,
  };
  if (keep) prepared.inputs.keep = keep;
  return prepared;
}

function runForward(inputs: HybridAttentionInputs, options: HybridAttentionOptions, naive: boolean): HybridAttentionResult {
  const p = prepare(inputs, options);
  const { q, v } = p.inputs;
  const acc = accumDType(q.dtype);
  const [B, H, T] = q.shape as [number, number, number];
  let out;
  try {
    out = callNative(() => (naive ? native.hybridAttentionForwardNaive(p.args) : native.hybridAttentionForward(p.args)));
  } catch (err) {
    p.owned.forEach((t) => t.dispose());
    throw err;
  }
  const y = new Tensor(out.y, [B, H, T, v.shape[3]!], q.dtype, q.device);
  const stats: HybridAttentionStats = {
    c: new Tensor(out.c, [B, H, T], acc, q.device),
    denSwa: new Tensor(out.denSwa, [B, H, T], acc, q.device),
    denLa: new Tensor(out.denLa, [B, H, T], acc, q.device),
  };
  const saved: HybridAttentionSaved = { inputs: p.inputs, options: p.options, y, stats, owned: p.owned };
  return {
    y,
    stats,
    saved,
    dispose() {
      y.dispose();
      stats.c.dispose();
      stats.denSwa.dispose();
      stats.denLa.dispose();
      p.owned.forEach((t) => t.dispose());
    },
  };
}

function runBackward(saved: HybridAttentionSaved, dy: Tensor, naive: boolean): HybridAttentionGrads {
  if (saved === null || typeof saved !== 'object' || !saved.inputs) throw new TypeError('saved must come from hybridAttention()');
  const p = prepare(saved.inputs, saved.options);
  const { q, k, v } = p.inputs;
  expectTensor(saved.y, 'y');
  expectTensor(saved.stats.c, 'c');
  expectTensor(saved.stats.denSwa, 'denSwa');
  expectTensor(saved.stats.denLa, 'denLa');
  expectTensor(dy, 'dy', { dtype: q.dtype, device: q.device });
  expectShape(dy, 'dy', saved.y.shape);
  const args = {
    ...p.args,
    y: saved.y.handle,
    c: saved.stats.c.handle,
    denSwa: saved.stats.denSwa.handle,
    denLa: saved.stats.denLa.handle,
    dy: dy.handle,
  };
  const out = callNative(() => (naive ? native.hybridAttentionBackwardNaive(args) : native.hybridAttentionBackward(args)));
  const acc = accumDType(q.dtype);
  return {
    dq: new Tensor(out.dq, q.shape, q.dtype, q.device),
    dk: new Tensor(out.dk, k.shape, k.dtype, k.device),
    dv: new Tensor(out.dv, v.shape, v.dtype, v.device),
    dfq: new Tensor(out.dfq, p.inputs.fq.shape, q.dtype, q.device),
    dfk: new Tensor(out.dfk, p.inputs.fk.shape, q.dtype, q.device),
    dgamma: new Tensor(out.dgamma, [q.shape[1]!], acc, q.device),
  };
}

/**
 * Hybrid attention forward. Returns y, per-row statistics and what the backward needs.
 * Validates every argument before queuing work; the kernel runs on the inputs' device.
 */
export function hybridAttention(inputs: HybridAttentionInputs, options: HybridAttentionOptions): HybridAttentionResult {
  return runForward(inputs, options, false);
}

/** Gradients of sum(y * dy) with respect to q, k, v, fq, fk and gamma (including the path through c_n). */
export function hybridAttentionBackward(saved: HybridAttentionSaved, dy: Tensor): HybridAttentionGrads {
  return runBackward(saved, dy, false);
}

/** The quadratic reference straight from the formula (CPU; for tests and checks). */
export function hybridAttentionNaive(inputs: HybridAttentionInputs, options: HybridAttentionOptions): HybridAttentionResult {
  return runForward(inputs, options, true);
}

export function hybridAttentionBackwardNaive(saved: HybridAttentionSaved, dy: Tensor): HybridAttentionGrads {
  return runBackward(saved, dy, true);
}
