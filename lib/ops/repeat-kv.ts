/**
 * GQA helpers of the hybrid layers: repeat-kv (kv head j serves q heads j*g .. j*g+g-1, so a
 * per-q-head feature map can be applied to keys) with its backward (sum over each group), and
 * an elementwise sigmoid (gamma = sigmoid(w_h)) with its backward.
 */
import { callNative, InvalidArgumentError } from '../errors.js';
import { native, type NativeTensorHandle } from '../native.js';
import { Tensor } from '../tensor.js';
import { leadTensor, opBase, sameAs, expectNumel } from './op-args.js';
import { expectInteger } from './validate.js';

// The two ops live in native/binding/llama_ops_binding.cpp; typed here (lib/native.ts lists the rest).
const addon = native as unknown as {
  repeatKv(a: object): { y: NativeTensorHandle };
  sigmoid(a: object): { y: NativeTensorHandle };
};

/** x [B, Hkv, T, d] -> a new [B, Hkv * groups, T, d] (head h reads kv head floor(h / groups)). */
export function repeatKv(x: Tensor, groups: number): Tensor {
  const t = leadTensor(x, 'x', 4);
  expectInteger(groups, 'groups', 1);
  const [B, Hkv, T, d] = t.shape as [number, number, number, number];
  const base = opBase(t);
  const r = callNative(() => addon.repeatKv({ ...base.codes, outer: B, kvHeads: Hkv, groups, inner: T * d, x: t.handle }));
  return new Tensor(r.y, [B, Hkv * groups, T, d], base.dtype, base.device);
}

/** dy [B, H, T, d] -> dx [B, H / groups, T, d]: each kv head gets the sum of its group's gradients. */
export function repeatKvBackward(dy: Tensor, groups: number): Tensor {
  const t = leadTensor(dy, 'dy', 4);
  expectInteger(groups, 'groups', 1);
  const [B, H, T, d] = t.shape as [number, number, number, number];
  if (H % groups !== 0) throw new InvalidArgumentError(`dy has ${H} heads, not a multiple of groups ${groups}`, 'dy');
  const base = opBase(t);
  const r = callNative(() => addon.repeatKv({ ...base.codes, outer: B, kvHeads: H / groups, groups, inner: T * d, x: t.handle, backward: true }));
  return new Tensor(r.y, [B, H / groups, T, d], base.dtype, base.device);
}

/** 1 / (1 + exp(-x)), elementwise. */
export function sigmoid(x: Tensor): Tensor {
  const t = leadTensor(x, 'x');
  const base = opBase(t);
  const r = callNative(() => addon.sigmoid({ ...base.codes, n: t.numel, x: t.handle }));
  return new Tensor(r.y, t.shape, base.dtype, base.device);
}

/** Given y = sigmoid(x) and dy: dx = dy * y * (1 - y). */
export function sigmoidBackward(y: Tensor, dy: Tensor): Tensor {
  const t = leadTensor(y, 'y');
  const base = opBase(t);
  const g = sameAs(dy, 'dy', base);
  expectNumel(g, 'dy', t.numel, `y is [${t.shape.join(', ')}]`);
  const r = callNative(() => addon.sigmoid({ ...base.codes, n: t.numel, x: t.handle, dy: g.handle }));
  return new Tensor(r.y, t.shape, base.dtype, base.device);
}
