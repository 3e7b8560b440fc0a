/**
 * Token embedding lookup and its scatter-add backward. ids are i32 tensors on the weight's device;
 * an id outside [0, V) fails the queued kernel (validate host ids first with checkTokenIds).
 */
import { callNative, InvalidArgumentError } from '../errors.js';
import { native } from '../native.js';
import { Tensor } from '../tensor.js';
import { expectShape, expectTensor } from './validate.js';
import { int32On, leadTensor, opBase, sameAs } from './op-args.js';

/** Throws naming the first id outside [0, vocab). */
export function checkTokenIds(ids: ArrayLike<number>, vocab: number, name = 'inputIds'): void {
  for (let i = 0; i < ids.length; i++) {
    const v = ids[i]!;
    if (!Number.isInteger(v) || v < 0 || v >= vocab) throw new InvalidArgumentError(`${name}[${i}] = ${v} is outside the vocabulary [0, ${vocab})`, name);
  }
}

/** out [...ids.shape, D] = weight[ids]. */
export function embedding(ids: Tensor, weight: Tensor): Tensor {
  const tw = leadTensor(weight, 'weight', 2);
  const base = opBase(tw);
  const tid = int32On(ids, 'ids', base);
  const [V, D] = tw.shape as [number, number];
  const res = callNative(() => native.embeddingForward({ ...base.codes, numIds: tid.numel, vocab: V, dim: D, ids: tid.handle, weight: tw.handle }));
  return new Tensor(res.out, [...tid.shape, D], base.dtype, base.device);
}

/** dweight [V, D] (new, or added into `options.dweight`): scatter-add of dout rows by id. */
export function embeddingBackward(ids: Tensor, dout: Tensor, vocab: number, options: { dweight?: Tensor } = {}): Tensor {
  const td = leadTensor(dout, 'dout');
  const base = opBase(td);
  const tid = expectTensor(ids, 'ids', { dtype: 'i32', device: base.device });
  if (!Number.isInteger(vocab) || vocab < 1) throw new InvalidArgumentError(`vocab must be a positive integer, got ${String(vocab)}`, 'vocab');
  const D = td.shape[td.rank - 1]!;
  expectShape(td, 'dout', [...tid.shape, D]);
  const args: Record<string, unknown> = { ...base.codes, numIds: tid.numel, vocab, dim: D, ids: tid.handle, dout: td.handle };
  if (options.dweight !== undefined) {
    const dw = sameAs(options.dweight, 'dweight', base);
    expectShape(dw, 'dweight', [vocab, D]);
    args.dweight = dw.handle;
    callNative(() => native.embeddingBackward(args));
    return dw;
  }
  const res = callNative(() => native.embeddingBackward(args));
  return new Tensor(res.dweight!, [vocab, D], base.dtype, base.device);
}
