/**
 * Next-token cross-entropy (mean over counted rows, PyTorch reduction="mean"): on logits, or
 * chunked and fused with the lm_head (never holds more than rows x vocabChunk logits).
 * The loss is an f64 tensor [1]; read it with `await loss.toArray()`.
 */
import { accumDType } from '../dtype.js';
import { callNative, InvalidArgumentError } from '../errors.js';
import { native } from '../native.js';
import { Tensor } from '../tensor.js';
import { expectShape } from './validate.js';
import { expectFinite, int32On, leadTensor, opBase, sameAs } from './op-args.js';

export interface CrossEntropyOptions {
  /** Default -100 (PyTorch). */
  ignoreIndex?: number;
  /** > 0: loss = sum / normalizer (gradient accumulation); default 0 = number of counted rows. */
  normalizer?: number;
}

export interface CrossEntropySaved {
  logits: Tensor;
  targets: Tensor;
  lse: Tensor;
  options: Required<CrossEntropyOptions>;
}

function resolve(options: CrossEntropyOptions): Required<CrossEntropyOptions> {
  const ignoreIndex = options.ignoreIndex ?? -100;
  if (!Number.isInteger(ignoreIndex)) throw new InvalidArgumentError('ignoreIndex must be an integer', 'ignoreIndex');
  const normalizer = expectFinite(options.normalizer ?? 0, 'normalizer');
  if (normalizer < 0) throw new InvalidArgumentError('normalizer must be >= 0', 'normalizer');
  return { ignoreIndex, normalizer };
}

/** Targets for next-token prediction: target[b, t] = ids[b, t + 1], the last position ignored. */
export function nextTokenTargets(ids: ArrayLike<number>, batch: number, seqlen: number, ignoreIndex = -100): Int32Array {
  const out = new Int32Array(batch * seqlen);
  for (let b = 0; b < batch; b++)
    for (let t = 0; t < seqlen; t++) out[b * seqlen + t] = t + 1 < seqlen ? ids[b * seqlen + t + 1]! : ignoreIndex;
  return out;
}

function prepare(logits: Tensor, targets: Tensor, options: Required<CrossEntropyOptions>) {
  const tl = leadTensor(logits, 'logits', 2);
  const base = opBase(tl);
  const [rows, vocab] = tl.shape as [number, number];
  const tt = int32On(targets, 'targets', base);
  expectShape(tt, 'targets', [rows], 'one per row of logits');
  return { tl, tt, base, rows, args: { ...base.codes, rows, vocab, ...options, logits: tl.handle, targets: tt.handle } };
}

export function crossEntropy(logits: Tensor, targets: Tensor, options: CrossEntropyOptions = {}): { loss: Tensor; saved: CrossEntropySaved } {
  const o = resolve(options);
  const p = prepare(logits, targets, o);
  const res = callNative(() => native.crossEntropyForward(p.args));
  const lse = new Tensor(res.lse, [p.rows], accumDType(p.base.dtype), p.base.device);
  return { loss: new Tensor(res.loss, [1], 'f64', p.base.device), saved: { logits: p.tl, targets: p.tt, lse, options: o } };
}

/** dlogits = (softmax - onehot) dloss / norm; ignored rows get 0. */
export function crossEntropyBackward(saved: CrossEntropySaved, dloss = 1): Tensor {
  const p = prepare(saved.logits, saved.targets, saved.options);
  const lse = sameAs(saved.lse, 'lse', { ...p.base, dtype: accumDType(p.base.dtype) });
  const res = callNative(() => native.crossEntropyBackward({ ...p.args, lse: lse.handle, dloss: expectFinite(dloss, 'dloss') }));
  return new Tensor(res.dlogits, p.tl.shape, p.base.dtype, p.base.device);
}

export interface ChunkedCrossEntropySaved {
  hidden: Tensor;
  weight: Tensor;
  targets: Tensor;
  lse: Tensor;
  vocabChunk: number;
  options: Required<CrossEntropyOptions>;
}

function prepareChunked(hidden: Tensor, weight: Tensor, targets: Tensor, vocabChunk: number, o: Required<CrossEntropyOptions>) {
  const th = leadTensor(hidden, 'hidden', 2);
  const base = opBase(th);
  const [rows, dim] = th.shape as [number, number];
  const tw = sameAs(weight, 'weight', base, 2);
  expectShape(tw, 'weight', [null, dim], 'lm_head [vocab, hidden]');
  const tt = int32On(targets, 'targets', base);
  expectShape(tt, 'targets', [rows]);
  if (!Number.isInteger(vocabChunk) || vocabChunk < 0) throw new InvalidArgumentError('vocabChunk must be an integer >= 0', 'vocabChunk');
  const args = { ...base.codes, rows, dim, vocab: tw.shape[0]!, vocabChunk, ...o, hidden: th.handle, weight: tw.handle, targets: tt.handle };
  return { th, tw, tt, base, rows, args };
}

/** Loss of logits = hidden weight^T without materialising them (vocabChunk 0: 4096). */
export function chunkedCrossEntropy(
  hidden: Tensor,
  weight: Tensor,
  targets: Tensor,
  options: CrossEntropyOptions & { vocabChunk?: number } = {},
): { loss: Tensor; saved: ChunkedCrossEntropySaved } {
  const o = resolve(options);
  const vocabChunk = options.vocabChunk ?? 0;
  const p = prepareChunked(hidden, weight, targets, vocabChunk, o);
  const res = callNative(() => native.chunkedCrossEntropyForward(p.args));
  const lse = new Tensor(res.lse, [p.rows], accumDType(p.base.dtype), p.base.device);
  return {
    loss: new Tensor(res.loss, [1], 'f64', p.base.device),
    saved: { hidden: p.th, weight: p.tw, targets: p.tt, lse, vocabChunk, options: o },
  };
}

/** dhidden, and dweight (new, or added into `options.dweight`, e.g. a tied embedding's grad). */
export function chunkedCrossEntropyBackward(
  saved: ChunkedCrossEntropySaved,
  options: { dloss?: number; dweight?: Tensor } = {},
): { dhidden: Tensor; dweight: Tensor } {
  const p = prepareChunked(saved.hidden, saved.weight, saved.targets, saved.vocabChunk, saved.options);
  const lse = sameAs(saved.lse, 'lse', { ...p.base, dtype: accumDType(p.base.dtype) });
  const args: Record<string, unknown> = { ...p.args, lse: lse.handle, dloss: expectFinite(options.dloss ?? 1, 'dloss') };
  if (options.dweight !== undefined) {
    const dw = sameAs(options.dweight, 'dweight', p.base);
    expectShape(dw, 'dweight', p.tw.shape);
    args.dweight = dw.handle;
  }
  const res = callNative(() => native.chunkedCrossEntropyBackward(args));
  return {
    dhidden: new Tensor(res.dhidden, p.th.shape, p.base.dtype, p.base.device),
    dweight: options.dweight ?? new Tensor(res.dweight!, p.tw.shape, p.base.dtype, p.base.device),
  };
}
