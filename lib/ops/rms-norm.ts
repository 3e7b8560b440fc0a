/** RMSNorm over the last dimension (LlamaRMSNorm): forward keeps rstd for the backward. */
import { accumDType } from '../dtype.js';
import { callNative, InvalidArgumentError } from '../errors.js';
import { native } from '../native.js';
import { Tensor } from '../tensor.js';
import { expectShape } from './validate.js';
import { leadTensor, opBase, sameAs } from './op-args.js';

export interface RmsNormSaved {
  x: Tensor;
  w: Tensor;
  rstd: Tensor;
  eps: number;
}

function prepare(x: Tensor, w: Tensor, eps: number) {
  const tx = leadTensor(x, 'x');
  const base = opBase(tx);
  if (tx.rank < 1) throw new InvalidArgumentError('x must have rank >= 1', 'x');
  const dim = tx.shape[tx.rank - 1]!;
  const tw = sameAs(w, 'w', base);
  expectShape(tw, 'w', [dim], 'one weight per feature');
  if (typeof eps !== 'number' || !(eps >= 0) || !Number.isFinite(eps)) throw new InvalidArgumentError(`eps must be a finite number >= 0, got ${String(eps)}`, 'eps');
  const rows = dim ? tx.numel / dim : 0;
  return { tx, tw, base, dim, rows, args: { ...base.codes, rows, dim, eps, x: tx.handle, w: tw.handle } };
}

/** y = x rstd w with rstd = 1/sqrt(mean(x^2) + eps) per row. Dispose `rstd` with the saved state. */
export function rmsNorm(x: Tensor, w: Tensor, eps: number): { y: Tensor; saved: RmsNormSaved } {
  const p = prepare(x, w, eps);
  const res = callNative(() => native.rmsNormForward(p.args));
  const y = new Tensor(res.y, p.tx.shape, p.base.dtype, p.base.device);
  const rstd = new Tensor(res.rstd, [p.rows], accumDType(p.base.dtype), p.base.device);
  return { y, saved: { x: p.tx, w: p.tw, rstd, eps } };
}

/** dx, and dw (new, or added into `options.dw` in place). */
export function rmsNormBackward(saved: RmsNormSaved, dy: Tensor, options: { dw?: Tensor } = {}): { dx: Tensor; dw: Tensor } {
  const p = prepare(saved.x, saved.w, saved.eps);
  const rstd = sameAs(saved.rstd, 'rstd', { ...p.base, dtype: accumDType(p.base.dtype) });
  const tdy = sameAs(dy, 'dy', p.base);
  expectShape(tdy, 'dy', p.tx.shape);
  const args: Record<string, unknown> = { ...p.args, rstd: rstd.handle, dy: tdy.handle };
  if (options.dw !== undefined) {
    const dw = sameAs(options.dw, 'dw', p.base);
    expectShape(dw, 'dw', [p.dim]);
    args.dw = dw.handle;
  }
  const res = callNative(() => native.rmsNormBackward(args));
  return {
    dx: new Tensor(res.dx, p.tx.shape, p.base.dtype, p.base.device),
    dw: options.dw ?? new Tensor(res.dw!, [p.dim], p.base.dtype, p.base.device),
  };
}
