/** Causal softmax attention (the teacher), flash-style: forward with log-sum-exp, and backward. */
import { accumDType, DTYPE_CODE } from '../dtype.js';
import { DEVICE_CODE } from '../device.js';
import { InvalidArgumentError, callNative } from '../errors.js';
import { native } from '../native.js';
import { Tensor } from '../tensor.js';
import { expectQueryKey, expectShape, expectTensor, resolveScale } from './validate.js';

export interface SoftmaxAttentionInputs {
  q: Tensor; // [B, H, T, d]
  k: Tensor; // [B, Hkv, T, d]
  v: Tensor; // [B, Hkv, T, dv]
}

export interface SoftmaxAttentionOptions {
  scale?: number;
  /** Default true. */
  causal?: boolean;
}

export interface SoftmaxAttentionSaved {
  readonly inputs: SoftmaxAttentionInputs;
  readonly options: { scale: number; causal: boolean };
  readonly y: Tensor;
  readonly lse: Tensor;
}

function prepare(inputs: SoftmaxAttentionInputs, options: SoftmaxAttentionOptions) {
  const { q, k, dtype, device, B, H, Hkv, T, d } = expectQueryKey(inputs.q, inputs.k);
  const v = expectTensor(inputs.v, 'v', { rank: 4, dtype, device });
  expectShape(v, 'v', [B, Hkv, T, null]);
  const scale = resolveScale(options.scale, d);
  const causal = options.causal ?? true;
  if (typeof causal !== 'boolean') throw new InvalidArgumentError('causal must be a boolean', 'causal');
  const args = {
    device: DEVICE_CODE[device],
    dtype: DTYPE_CODE[dtype],
    batch: B,
    heads: H,
    kvHeads: Hkv,
    seqlen: T,
    headDim: d,
    valueDim: v.shape[3]!,
    scale,
    causal,
    q: q.handle,
    k: k.handle,
    v: v.handle,
  };
  return { args, q, k, v, options: { scale, causal } };
}

export function softmaxAttention(
  inputs: SoftmaxAttentionInputs,
  options: SoftmaxAttentionOptions = {},
): { y: Tensor; lse: Tensor; saved: SoftmaxAttentionSaved; dispose(): void } {
  const p = prepare(inputs, options);
  const out = callNative(() => native.softmaxAttentionForward(p.args));
  const [B, H, T] = p.q.shape as [number, number, number];
  const y = new Tensor(out.y, [B, H, T, p.v.shape[3]!], p.q.dtype, p.q.device);
  const lse = new Tensor(out.lse, [B, H, T], accumDType(p.q.dtype), p.q.device);
  const dispose = () => {
    y.dispose();
    lse.dispose();
  };
  return { y, lse, saved: { inputs: { q: p.q, k: p.k, v: p.v }, options: p.options, y, lse }, dispose };
}

export function softmaxAttentionBackward(saved: SoftmaxAttentionSaved, dy: Tensor): { dq: Tensor; dk: Tensor; dv: Tensor } {
  const p = prepare(saved.inputs, saved.options);
  expectTensor(saved.y, 'y');
  expectTensor(saved.lse, 'lse');
  expectTensor(dy, 'dy', { dtype: p.q.dtype, device: p.q.device });
  expectShape(dy, 'dy', saved.y.shape);
  const out = callNative(
    () => native.softmaxAttentionBackward({ ...p.args, y: saved.y.handle, lse: saved.lse.handle, dy: dy.handle })
  );
  return {
    dq: new Tensor(out.dq, p.q.shape, p.q.dtype, p.q.device),
    dk: new Tensor(out.dk, p.k.shape, p.q.dtype, p.q.device),
    dv: new Tensor(out.dv, p.v.shape, p.q.dtype, p.q.device),
  };
}
