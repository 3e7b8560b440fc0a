/**
 * Matrix products of the Llama runtime: matmul (optionally batched, accumulating into an
 * existing tensor) and linear layers y = x W^T + b with their backward. f64 accumulation.
 */
import { callNative, InvalidArgumentError } from '../errors.js';
import { native } from '../native.js';
import { Tensor } from '../tensor.js';
import { expectShape } from './validate.js';
import { expectFinite, leadTensor, opBase, sameAs } from './op-args.js';
import { sumRows } from './elementwise.js';

export interface MatmulOptions {
  transA?: boolean;
  transB?: boolean;
  /** Default 1. */
  alpha?: number;
  /** Accumulate into this tensor: out = alpha op(a) op(b) + beta out (in place). */
  out?: Tensor;
  /** Default 1 when `out` is given. */
  beta?: number;
}

/**
 * op(a) op(b) for 2-D operands, or batched over a leading dimension (a 2-D operand is shared by
 * every batch item). Returns a new tensor, or `out` updated in place.
 */
export function matmul(a: Tensor, b: Tensor, options: MatmulOptions = {}): Tensor {
  const ta = leadTensor(a, 'a');
  const base = opBase(ta);
  const tb = sameAs(b, 'b', base);
  for (const [t, name] of [[ta, 'a'], [tb, 'b']] as const)
    if (t.rank !== 2 && t.rank !== 3) throw new InvalidArgumentError(`${name} must have rank 2 or 3, got [${t.shape.join(', ')}]`, name);
  const transA = options.transA ?? false;
  const transB = options.transB ?? false;
  const batch = ta.rank === 3 ? ta.shape[0]! : tb.rank === 3 ? tb.shape[0]! : 1;
  const last2 = (t: Tensor) => t.shape.slice(-2) as [number, number];
  const [a0, a1] = last2(ta);
  const [b0, b1] = last2(tb);
  const [m, k] = transA ? [a1, a0] : [a0, a1];
  const [kb, n] = transB ? [b1, b0] : [b0, b1];
  if (k !== kb) throw new InvalidArgumentError(`inner sizes differ: op(a) is [${m}, ${k}], op(b) is [${kb}, ${n}]`, 'b');
  if (ta.rank === 3 && tb.rank === 3 && tb.shape[0] !== batch)
    throw new InvalidArgumentError(`b has batch ${tb.shape[0]}, a has ${batch}`, 'b');
  const outShape = ta.rank === 3 || tb.rank === 3 ? [batch, m, n] : [m, n];
  const alpha = expectFinite(options.alpha ?? 1, 'alpha');
  const args: Record<string, unknown> = {
    ...base.codes, batch, m, n, k, transA, transB, alpha,
    sharedA: ta.rank === 2 && batch > 1, sharedB: tb.rank === 2 && batch > 1, a: ta.handle, b: tb.handle,
  };
  if (options.out !== undefined) {
    const out = sameAs(options.out, 'out', base);
    expectShape(out, 'out', outShape);
    if (out.handle === ta.handle || out.handle === tb.handle) throw new InvalidArgumentError('out must not be an input', 'out');
    args.c = out.handle;
    args.beta = expectFinite(options.beta ?? 1, 'beta');
    callNative(() => native.matmul(args));
    return out;
  }
  const res = callNative(() => native.matmul(args));
  return new Tensor(res.c!, outShape, base.dtype, base.device);
}

export interface LinearSaved {
  x: Tensor;
  w: Tensor;
  hasBias: boolean;
}

/** y [..., out] = x [..., in] W^T + bias, W [out, in] (torch.nn.Linear). */
export function linear(x: Tensor, w: Tensor, bias?: Tensor): Tensor {
  const tx = leadTensor(x, 'x');
  const base = opBase(tx);
  const tw = sameAs(w, 'w', base, 2);
  const [outF, inF] = tw.shape as [number, number];
  if (tx.rank < 1 || tx.shape[tx.rank - 1] !== inF)
    throw new InvalidArgumentError(`x has shape [${tx.shape.join(', ')}], its last size must be w's in-features ${inF}`, 'x');
  let tb: Tensor | undefined;
  if (bias !== undefined) {
    tb = sameAs(bias, 'bias', base);
    expectShape(tb, 'bias', [outF]);
  }
  const rows = tx.numel / inF;
  const res = callNative(() =>
    native.linear({ ...base.codes, rows, inFeatures: inF, outFeatures: outF, x: tx.handle, w: tw.handle, bias: tb?.handle }),
  );
  return new Tensor(res.y, [...tx.shape.slice(0, -1), outF], base.dtype, base.device);
}

export interface LinearGradOptions {
  /** Default true; false skips dx (e.g. nothing upstream needs it). */
  needInput?: boolean;
  /** Default true; false skips dW (frozen weight). */
  needWeight?: boolean;
  /** The layer has a bias: also return db (implied by `db`). */
  bias?: boolean;
  /** Accumulate into these (in place) instead of returning new tensors. */
  dw?: Tensor;
  db?: Tensor;
  /** Accumulate dx into this tensor (several projections of one input). */
  dx?: Tensor;
}

/** Gradients of y = x W^T + b: dx = dy W, dW = dy^T x, db = sum over rows of dy. */
export function linearBackward(x: Tensor, w: Tensor, dy: Tensor, options: LinearGradOptions = {}): { dx?: Tensor; dw?: Tensor; db?: Tensor } {
  const tx = leadTensor(x, 'x');
  const base = opBase(tx);
  const tw = sameAs(w, 'w', base, 2);
  const [outF, inF] = tw.shape as [number, number];
  if (tx.shape[tx.rank - 1] !== inF) throw new InvalidArgumentError(`x has shape [${tx.shape.join(', ')}], its last size must be w's in-features ${inF}`, 'x');
  const rows = tx.numel / inF;
  const tdy = sameAs(dy, 'dy', base);
  if (tdy.numel !== rows * outF) throw new InvalidArgumentError(`dy has shape [${tdy.shape.join(', ')}], expected [..., ${outF}] with ${rows} rows`, 'dy');
  const x2 = tx.reshape([rows, inF]);
  const dy2 = tdy.reshape([rows, outF]);
  const out: { dx?: Tensor; dw?: Tensor; db?: Tensor } = {};
  if (options.needWeight ?? true) {
    if (options.dw) {
      matmul(dy2, x2, { transA: true, out: sameAs(options.dw, 'dw', base).reshape([outF, inF]) });
      out.dw = options.dw;
    } else out.dw = matmul(dy2, x2, { transA: true });
  }
  if (options.needInput ?? true) {
    if (options.dx) {
      const dx = sameAs(options.dx, 'dx', base);
      if (dx.numel !== rows * inF) throw new InvalidArgumentError(`dx has ${dx.numel} elements, expected ${rows * inF}`, 'dx');
      matmul(dy2, tw, { out: dx.reshape([rows, inF]) });
      out.dx = options.dx;
    } else out.dx = matmul(dy2, tw).reshape(tx.shape);
  }
  if (options.bias || options.db) out.db = sumRows(dy2, options.db ? { into: options.db } : {});
  return out;
}
