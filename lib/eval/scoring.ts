/**
 * The one primitive every metric is built on: per-token log-probabilities of a sequence under a
 * causal LM (and whether each token is the greedy choice). Works with any model through a small
 * interface: something with forward(ids) -> logits [B, T, V] (LlamaModel fits), or a plain
 * scoring function (remote models, cached scores, toy models in tests).
 */
import { InvalidArgumentError } from '../errors.js';
import type { Tensor } from '../tensor.js';

/** Any causal LM: logits [B, T, V] for rows of equal length (LlamaModel.forward fits). */
export interface LogitsModel {
  forward(ids: number[][]): Tensor | { logits: Tensor } | Promise<Tensor | { logits: Tensor }>;
}

/** Scores of one row of T tokens: entry t is about token t + 1 given tokens 0..t (length T - 1). */
export interface TokenScores {
  /** log p(row[t+1] | row[0..t]) (natural log). */
  logProbs: Float64Array;
  /** 1 where row[t+1] is the arg-max of the distribution (ties: lowest id, as torch.argmax). */
  greedy: Uint8Array;
}

/** Rows may differ in length; each result has length row.length - 1. */
export type ScoreFn = (rows: readonly (readonly number[])[]) => Promise<TokenScores[]>;

export type Scoreable = LogitsModel | ScoreFn;

export interface ScorerOptions {
  /** Rows per forward call (default 8). */
  maxBatch?: number;
  /** Token used to right-pad rows of unequal length (default 0; causal models never see it). */
  padId?: number;
}

/** Scores target tokens from host logits [rows, T, V] (row-major). */
export function scoresFromLogits(logits: ArrayLike<number>, rows: readonly (readonly number[])[], T: number, V: number): TokenScores[] {
  return rows.map((row, b) => {
    const n = Math.max(0, row.length - 1);
    const logProbs = new Float64Array(n);
    const greedy = new Uint8Array(n);
    for (let t = 0; t < n; t++) {
      const off = (b * T + t) * V;
      let max = -Infinity;
      let arg = 0;
      for (let j = 0; j < V; j++) {
        const x = logits[off + j]!;
        if (x > max) {
          max = x;
          arg = j;
        }
      }
      let sum = 0;
      for (let j = 0; j < V; j++) sum += Math.exp(logits[off + j]! - max);
      const target = row[t + 1]!;
      if (!Number.isInteger(target) || target < 0 || target >= V) throw new InvalidArgumentError(`token id ${target} outside the vocabulary (${V})`, 'ids');
      logProbs[t] = logits[off + target]! - max - Math.log(sum);
      greedy[t] = arg === target ? 1 : 0;
    }
    return { logProbs, greedy };
  });
}

/** Wraps a LogitsModel as a ScoreFn (batches rows, right-pads, frees the logits). */
export function scorerFromModel(model: LogitsModel, o: ScorerOptions = {}): ScoreFn {
  const maxBatch = o.maxBatch ?? 8;
  const padId = o.padId ?? 0;
  return async (rows) => {
    const out: TokenScores[] = [];
    for (let i = 0; i < rows.length; i += maxBatch) {
      const group = rows.slice(i, i + maxBatch);
      const T = Math.max(...group.map((r) => r.length));
      if (T < 1) throw new InvalidArgumentError('cannot score empty rows', 'rows');
      const padded = group.map((r) => {
        const p = [...r];
        while (p.length < T) p.push(padId);
        return p;
      });
      const res = await model.forward(padded);
      const logits: Tensor = 'logits' in res ? res.logits : res;
      try {
        const shape = logits.shape;
        if (shape.length !== 3 || shape[0] !== group.length || shape[1] !== T)
          throw new InvalidArgumentError(`forward returned logits of shape [${shape.join(', ')}], expected [${group.length}, ${T}, V]`, 'model');
        const host = await logits.toArray();
        out.push(...scoresFromLogits(host, group, T, shape[2]!));
      } finally {
        logits.dispose();
      }
    }
    return out;
  };
}

export function toScoreFn(model: Scoreable, o: ScorerOptions = {}): ScoreFn {
  return typeof model === 'function' ? model : scorerFromModel(model, o);
}

/** Summed log-likelihood of row[start..] given row[..start) and whether greedy decoding reproduces it exactly. */
export interface ContinuationScore {
  logLikelihood: number;
  tokens: number;
  /** Every continuation token is the greedy choice: greedy generation from the context yields exactly it. */
  exactMatch: boolean;
}

/** Scores `continuationStart..` of each row (start >= 1). */
export async function scoreContinuations(score: ScoreFn, rows: readonly { ids: readonly number[]; start: number }[]): Promise<ContinuationScore[]> {
  const res = await score(rows.map((r) => r.ids));
  return rows.map((r, i) => {
    if (!(r.start >= 1 && r.start <= r.ids.length)) throw new InvalidArgumentError(`continuation start ${r.start} outside [1, ${r.ids.length}]`, 'start');
    const s = res[i]!;
    let ll = 0;
    let exact = true;
    for (let t = r.start - 1; t < r.ids.length - 1; t++) {
      ll += s.logProbs[t]!;
      if (!s.greedy[t]) exact = false;
    }
    return { logLikelihood: ll, tokens: r.ids.length - r.start, exactMatch: exact };
  });
}
