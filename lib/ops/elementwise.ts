/**
 * Elementwise basics of the Llama runtime (residual adds, gradient accumulation, scaling,
 * zeroing, bias gradients) and the head transpose between [B, T, H, D] and [B, H, T, D].
 */
import { callNative } from '../errors.js';
import { native } from '../native.js';
import { Tensor } from '../tensor.js';
import { expectFinite, expectNumel, leadTensor, opBase, sameAs } from './op-args.js';
import { DEVICE_CODE } from '../device.js';
import { DTYPE_CODE } from '../dtype.js';
import { expectTensor } from './validate.js';

const OPS = { add: 0, mul: 1, scale: 2, fill: 3 } as const;

function binary(op: 'add' | 'mul', a: Tensor, b: Tensor, alpha: number): Tensor {
  const ta = leadTensor(a, 'a');
  const base = opBase(ta);
  const tb = sameAs(b, 'b', base);
  expectNumel(tb, 'b', ta.numel, `a is [${ta.shape.join(', ')}]`);
  const res = callNative(() => native.elementwise({ ...base.codes, op: OPS[op], n: ta.numel, alpha, a: ta.handle, b: tb.handle }));
  return new Tensor(res.y, ta.shape, base.dtype, base.device);
}

/** a + alpha b (same element count; the result has a's shape). */
export function add(a: Tensor, b: Tensor, alpha = 1): Tensor {
  return binary('add', a, b, expectFinite(alpha, 'alpha'));
}

export function mul(a: Tensor, b: Tensor): Tensor {
  return binary('mul', a, b, 1);
}

export function scale(a: Tensor, alpha: number): Tensor {
  const ta = leadTensor(a, 'a');
  const base = opBase(ta);
  const res = callNative(() => native.elementwise({ ...base.codes, op: OPS.scale, n: ta.numel, alpha: expectFinite(alpha, 'alpha'), a: ta.handle }));
  return new Tensor(res.y, ta.shape, base.dtype, base.device);
}

/** A new tensor shaped like `like`, every element `value`. */
export function fillLike(like: Tensor, value: number): Tensor {
  const t = leadTensor(like, 'like');
  const base = opBase(t);
  const res = callNative(() => native.elementwise({ ...base.codes, op: OPS.fill, n: t.numel, alpha: expectFinite(value, 'value') }));
  return new Tensor(res.y, t.shape, base.dtype, base.device);
}

/** y += alpha a, in place (gradient accumulation, residual adds); returns y. */
export function accumulate(y: Tensor, a: Tensor, alpha = 1): Tensor {
  const ty = leadTensor(y, 'y');
  const base = opBase(ty);
  const ta = sameAs(a, 'a', base);
  expectNumel(ta, 'a', ty.numel, `y is [${ty.shape.join(', ')}]`);
  callNative(() => native.accumulate({ ...base.codes, n: ty.numel, alpha: expectFinite(alpha, 'alpha'), a: ta.handle, y: ty.handle }));
  return ty;
}

/** Overwrites dst with src (same dtype, element count and device); returns dst. */
export function copyInto(dst: Tensor, src: Tensor): Tensor {
  const td = expectTensor(dst, 'dst');
  const ts = expectTensor(src, 'src', { dtype: td.dtype, device: td.device });
  expectNumel(ts, 'src', td.numel, `dst is [${td.shape.join(', ')}]`);
  callNative(() => native.copyInto({ device: DEVICE_CODE[td.device], dtype: DTYPE_CODE[td.dtype], n: td.numel, a: ts.handle, y: td.handle }));
  return td;
}

/** Column sums of x [rows, cols] (bias gradients); with `into`, added to it in place. */
export function sumRows(x: Tensor, options: { into?: Tensor } = {}): Tensor {
  const tx = leadTensor(x, 'x', 2);
  const base = opBase(tx);
  const [rows, cols] = tx.shape as [number, number];
  const args: Record<string, unknown> = { ...base.codes, rows, cols, x: tx.handle };
  if (options.into !== undefined) {
    const into = sameAs(options.into, 'into', base);
    expectNumel(into, 'into', cols, 'one per column');
    args.y = into.handle;
    callNative(() => native.sumRows(args));
    return into;
  }
  const res = callNative(() => native.sumRows(args));
  return new Tensor(res.y!, [cols], base.dtype, base.device);
}

/** [d0, d1, d2, d3] -> [d0, d2, d1, d3] (any dtype): heads between projections and attention. */
export function transpose12(x: Tensor): Tensor {
  const t = expectTensor(x, 'x', { rank: 4 });
  const [d0, d1, d2, d3] = t.shape as [number, number, number, number];
  const res = callNative(() => native.transpose12({ device: DEVICE_CODE[t.device], dtype: DTYPE_CODE[t.dtype], d0, d1, d2, d3, x: t.handle }));
  return new Tensor(res.y, [d0, d2, d1, d3], t.dtype, t.device);
}

