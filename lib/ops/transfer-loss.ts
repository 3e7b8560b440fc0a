/**
 * Attention-weight transfer loss (SPEC sec. 4, Hedgehog / HedgeCATs stage 1): cross-entropy
 * between the teacher's causal softmax weights and the student's normalised linear-attention
 * weights, mean over (batch, head, position), computed without T x T buffers.
 */
import { accumDType, DTYPE_CODE } from '../dtype.js';
import { DEVICE_CODE } from '../device.js';
import { callNative } from '../errors.js';
import { native } from '../native.js';
import { Tensor } from '../tensor.js';
import { expectQueryKey, expectShape, expectTensor, resolveScale } from './validate.js';

export interface TransferLossInputs {
  /** Teacher queries [B, H, T, d] and keys [B, Hkv, T, d] (after RoPE). */
  q: Tensor;
  k: Tensor;
  /** Student features [B, H, T, F]. */
  fq: Tensor;
  fk: Tensor;
}

export interface TransferLossSaved {
  readonly inputs: TransferLossInputs;
  readonly scale: number;
}

function prepare(inputs: TransferLossInputs, scaleOption?: number) {
  const { q, k, dtype, device, B, H, Hkv, T, d } = expectQueryKey(inputs.q, inputs.k);
  const fq = expectTensor(inputs.fq, 'fq', { rank: 4, dtype, device });
  expectShape(fq, 'fq', [B, H, T, null]);
  const fk = expectTensor(inputs.fk, 'fk', { rank: 4, dtype, device });
  expectShape(fk, 'fk', fq.shape);
  const scale = resolveScale(scaleOption, d);
  const args = {
    device: DEVICE_CODE[device],
    dtype: DTYPE_CODE[dtype],
    batch: B,
    heads: H,
    kvHeads: Hkv,
    seqlen: T,
    headDim: d,
    featureDim: fq.shape[3]!,
    scale,
    q: q.handle,
    k: k.handle,
    fq: fq.handle,
    fk: fk.handle,
  };
  return { args, q, fq, fk, scale, inputs: { q, k, fq, fk } };
}

/** Returns the scalar loss (shape [], accumulator dtype) and what the backward needs. */
export function transferLoss(
  inputs: TransferLossInputs,
  options: { scale?: number } = {},
): { loss: Tensor; saved: TransferLossSaved; dispose(): void } {
  const p = prepare(inputs, options.scale);
  const out = callNative(() => native.transferLossForward(p.args));
  const loss = new Tensor(out.loss, [], accumDType(p.q.dtype), p.q.device);
  return { loss, saved: { inputs: p.inputs, scale: p.scale }, dispose: () => loss.dispose() };
}

/** Gradients of dloss * loss with respect to fq and fk (the teacher is frozen). */
export function transferLossBackward(saved: TransferLossSaved, dloss: Tensor | number = 1): { dfq: Tensor; dfk: Tensor } {
  const p = prepare(saved.inputs, saved.scale);
  const acc = accumDType(p.q.dtype);
  const upstream = typeof dloss === 'number' ? Tensor.fromArray([dloss], [], { dtype: acc, device: p.q.device }) : dloss;
  try {
    expectTensor(upstream, 'dloss', { dtype: acc, device: p.q.device });
    expectShape(upstream, 'dloss', []);
    const out = callNative(() => native.transferLossBackward({ ...p.args, dloss: upstream.handle }));
    return { dfq: new Tensor(out.dfq, p.fq.shape, p.q.dtype, p.q.device), dfk: new Tensor(out.dfk, p.fk.shape, p.q.dtype, p.q.device) };
  } finally {
    if (typeof dloss === 'number') upstream.dispose();
  }
}
