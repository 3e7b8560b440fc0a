/**
 * Feature maps (SPEC sec. 3): Hedgehog phi(x) = [act(u), act(-u)] with u = x W + b per head,
 * T2R relu(x W + b), and elu(x) + 1 on raw x. Forward and backward.
 */
import { DTYPE_CODE } from '../dtype.js';
import { DEVICE_CODE } from '../device.js';
import { callNative } from '../errors.js';
import { native } from '../native.js';
import { Tensor } from '../tensor.js';
import { expectBackendDType, expectChoice, expectShape, expectTensor } from './validate.js';

export const FEATURE_MAP_KINDS = ['hedgehog', 't2r', 'elu'] as const;
export type FeatureMapKind = (typeof FEATURE_MAP_KINDS)[number];
export const FEATURE_ACTS = ['softmax', 'exp', 'relu', '1+elu', 'identity'] as const;
export type FeatureAct = (typeof FEATURE_ACTS)[number];

export interface FeatureMapInputs {
  /** [B, H, T, d]. */
  x: Tensor;
  /** [H, d, f] (hedgehog, t2r). */
  w?: Tensor;
  /** Optional bias [H, f]. */
  b?: Tensor;
}

export interface FeatureMapOptions {
  /** Default 'hedgehog'. */
  kind?: FeatureMapKind;
  /** Hedgehog activation, default 'softmax' (over the f features of each half). */
  act?: FeatureAct;
}

export interface FeatureMapSaved {
  readonly inputs: FeatureMapInputs;
  readonly options: Required<FeatureMapOptions>;
}

export interface FeatureMapResult {
  /** [B, H, T, F] with F = 2f (hedgehog), f (t2r) or d (elu). */
  phi: Tensor;
  saved: FeatureMapSaved;
  /** Disposes phi (not the inputs). */
  dispose(): void;
}

export interface FeatureMapGrads {
  dx: Tensor;
  dw?: Tensor;
  db?: Tensor;
}

function prepare(inputs: FeatureMapInputs, options: FeatureMapOptions) {
  const x = expectTensor(inputs.x, 'x', { rank: 4 });
  const { dtype, device } = x;
  expectBackendDType(dtype, device, 'x');
  const kind = expectChoice(options.kind ?? 'hedgehog', 'kind', FEATURE_MAP_KINDS);
  const act = expectChoice(options.act ?? 'softmax', 'act', FEATURE_ACTS);
  const [B, H, T, d] = x.shape as [number, number, number, number];
  let f = d;
  let w: Tensor | undefined;
  let b: Tensor | undefined;
  if (kind !== 'elu') {
    w = expectTensor(inputs.w, 'w', { rank: 3, dtype, device });
    expectShape(w, 'w', [H, d, null], 'one d x f projection per head');
    f = w.shape[2]!;
    if (inputs.b !== undefined) {
      b = expectTensor(inputs.b, 'b', { rank: 2, dtype, device });
      expectShape(b, 'b', [H, f]);
    }
  }
  const out = kind === 'hedgehog' ? 2 * f : kind === 't2r' ? f : d;
  const args = {
    device: DEVICE_CODE[device],
    dtype: DTYPE_CODE[dtype],
    batch: B,
    heads: H,
    seqlen: T,
    inDim: d,
    projDim: f,
    kind: FEATURE_MAP_KINDS.indexOf(kind),
    act: FEATURE_ACTS.indexOf(act),
    x: x.handle,
    w: w?.handle,
    b: b?.handle,
  };
  const kept: FeatureMapInputs = { x };
  if (w) kept.w = w;
  if (b) kept.b = b;
  return { args, x, w, b, out, inputs: kept, options: { kind, act } };
}

export function featureMap(inputs: FeatureMapInputs, options: FeatureMapOptions = {}): FeatureMapResult {
  const p = prepare(inputs, options);
  const out = callNative(() => native.featureMapForward(p.args));
  const [B, H, T] = p.x.shape as [number, number, number];
  const phi = new Tensor(out.phi, [B, H, T, p.out], p.x.dtype, p.x.device);
  return { phi, saved: { inputs: p.inputs, options: p.options }, dispose: () => phi.dispose() };
}

/** Gradients of sum(phi * dphi) with respect to x, w and b. */
export function featureMapBackward(saved: FeatureMapSaved, dphi: Tensor): FeatureMapGrads {
  const p = prepare(saved.inputs, saved.options);
  expectTensor(dphi, 'dphi', { dtype: p.x.dtype, device: p.x.device });
  const [B, H, T] = p.x.shape as [number, number, number];
  expectShape(dphi, 'dphi', [B, H, T, p.out]);
  const out = callNative(() => native.featureMapBackward({ ...p.args, dphi: dphi.handle }));
  const grads: FeatureMapGrads = { dx: new Tensor(out.dx, p.x.shape, p.x.dtype, p.x.device) };
  if (p.w) grads.dw = new Tensor(out.dw!, p.w.shape, p.x.dtype, p.x.device);
  if (p.b) grads.db = new Tensor(out.db!, p.b.shape, p.x.dtype, p.x.device);
  return grads;
}
