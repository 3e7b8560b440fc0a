/**
 * AdamW step (torch.optim.AdamW semantics) in place on a parameter and its moments, and the
 * global gradient norm / clipping (torch.nn.utils.clip_grad_norm_). f64 arithmetic.
 */
import { callNative, InvalidArgumentError } from '../errors.js';
import { native } from '../native.js';
import { Tensor } from '../tensor.js';
import { expectFinite, expectNumel, leadTensor, opBase, sameAs } from './op-args.js';

export interface AdamWHyper {
  lr: number;
  /** Default 0.9, 0.999. */
  beta1?: number;
  beta2?: number;
  /** Default 1e-8. */
  eps?: number;
  /** Default 0.01 (torch's default). */
  weightDecay?: number;
}

export interface AdamWState {
  param: Tensor;
  grad: Tensor;
  expAvg: Tensor;
  expAvgSq: Tensor;
}

/** One update; `step` is the count after this update (1 first); gradScale multiplies grad. */
export function adamwStep(s: AdamWState, hyper: AdamWHyper, step: number, gradScale = 1): void {
  const param = leadTensor(s.param, 'param');
  const base = opBase(param);
  const n = param.numel;
  for (const name of ['grad', 'expAvg', 'expAvgSq'] as const) expectNumel(sameAs(s[name], name, base), name, n, 'one per parameter element');
  if (!Number.isInteger(step) || step < 1) throw new InvalidArgumentError(`step must be an integer >= 1, got ${String(step)}`, 'step');
  const beta1 = expectFinite(hyper.beta1 ?? 0.9, 'beta1');
  const beta2 = expectFinite(hyper.beta2 ?? 0.999, 'beta2');
  if (!(beta1 >= 0 && beta1 < 1)) throw new InvalidArgumentError('beta1 must be in [0, 1)', 'beta1');
  if (!(beta2 >= 0 && beta2 < 1)) throw new InvalidArgumentError('beta2 must be in [0, 1)', 'beta2');
  const lr = expectFinite(hyper.lr, 'lr');
  if (lr < 0) throw new InvalidArgumentError('lr must be >= 0', 'lr');
  callNative(() =>
    native.adamwStep({
      ...base.codes, n, lr, beta1, beta2,
      eps: expectFinite(hyper.eps ?? 1e-8, 'eps'),
      weightDecay: expectFinite(hyper.weightDecay ?? 0.01, 'weightDecay'),
      step, gradScale: expectFinite(gradScale, 'gradScale'),
      param: param.handle, grad: s.grad.handle, expAvg: s.expAvg.handle, expAvgSq: s.expAvgSq.handle,
    }),
  );
}

function normCall(tensors: readonly Tensor[], maxNorm: number): Tensor {
  if (!Array.isArray(tensors) || tensors.length === 0) throw new InvalidArgumentError('tensors must be a non-empty array of tensors', 'tensors');
  const first = leadTensor(tensors[0], 'tensors[0]');
  const base = opBase(first);
  tensors.forEach((t, i) => sameAs(t, `tensors[${i}]`, base));
  const res = callNative(() => native.gradNorm({ ...base.codes, maxNorm, tensors: tensors.map((t) => t.handle) }));
  return new Tensor(res.norm, [1], 'f64', base.device);
}

/** Global L2 norm of the tensors, as an f64 tensor [1]. */
export function gradNorm(tensors: readonly Tensor[]): Tensor {
  return normCall(tensors, -1);
}

/** Clips in place when norm > maxNorm (scale maxNorm / (norm + 1e-6)); returns the norm before. */
export function clipGradNorm(tensors: readonly Tensor[], maxNorm: number): Tensor {
  const m = expectFinite(maxNorm, 'maxNorm');
  if (m < 0) throw new InvalidArgumentError('maxNorm must be >= 0', 'maxNorm');
  return normCall(tensors, m);
}
