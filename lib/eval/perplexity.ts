/**
 * Perplexity overall and split by position: the prediction made at query position n (of token
 * n + 1) counts as "early" when n < w (the window holds the whole prefix, so hybrid and SWA
 * coincide in the sliding geometry) and "late" when n >= w (tokens older than the window exist
 * and only linear attention can reach them).
 */
import { InvalidArgumentError } from '../errors.js';
import { toScoreFn, type Scoreable, type ScorerOptions, type TokenScores } from './scoring.js';

export interface PerplexityPart {
  perplexity: number;
  /** Mean negative log-likelihood (nats per token). */
  nll: number;
  tokens: number;
}

export interface PerplexityResult extends PerplexityPart {
  window: number;
  sequences: number;
  /** Predictions from positions n < window. */
  early: PerplexityPart;
  /** Predictions from positions n >= window (NaN when no sequence is longer than window). */
  late: PerplexityPart;
}

/** Accumulates per-token scores (usable from a training loop's validation pass). */
export class PerplexityAccumulator {
  private sum = [0, 0];
  private count = [0, 0];
  sequences = 0;
  constructor(readonly window: number) {
    if (!Number.isInteger(window) || window < 1) throw new InvalidArgumentError(`window must be an integer >= 1, got ${String(window)}`, 'window');
  }

  /** Adds one sequence's scores; `mask[t] = 0` excludes prediction t (padding). */
  add(scores: Pick<TokenScores, 'logProbs'>, mask?: ArrayLike<number>): void {
    const lp = scores.logProbs;
    for (let t = 0; t < lp.length; t++) {
      if (mask && !mask[t]) continue;
      const part = t < this.window ? 0 : 1;
      this.sum[part]! -= lp[t]!;
      this.count[part]! += 1;
    }
    this.sequences++;
  }

  result(): PerplexityResult {
    const part = (s: number, c: number): PerplexityPart => ({ perplexity: c > 0 ? Math.exp(s / c) : Number.NaN, nll: c > 0 ? s / c : Number.NaN, tokens: c });
    return {
      ...part(this.sum[0]! + this.sum[1]!, this.count[0]! + this.count[1]!),
      window: this.window,
      sequences: this.sequences,
      early: part(this.sum[0]!, this.count[0]!),
      late: part(this.sum[1]!, this.count[1]!),
    };
  }
}

export interface PerplexityOptions extends ScorerOptions {
  /** The attention window w that splits early/late positions. */
  window: number;
  /** Sequences per scoring call (default 1). */
  batchSize?: number;
  /** Stop after this many sequences. */
  maxSequences?: number;
  signal?: AbortSignal;
  onProgress?: (p: { sequences: number; tokens: number }) => void;
}

/** Perplexity of a model over sequences (each scored independently from position 0). */
export async function perplexity(
  model: Scoreable,
  sequences: AsyncIterable<ArrayLike<number>> | Iterable<ArrayLike<number>>,
  o: PerplexityOptions,
): Promise<PerplexityResult> {
  const acc = new PerplexityAccumulator(o.window);
  const score = toScoreFn(model, { maxBatch: o.batchSize ?? 1, ...(o.padId !== undefined ? { padId: o.padId } : {}) });
  const batchSize = o.batchSize ?? 1;
  let pending: number[][] = [];
  let tokens = 0;
  const flush = async () => {
    if (pending.length === 0) return;
    for (const s of await score(pending)) {
      acc.add(s);
      tokens += s.logProbs.length;
    }
    pending = [];
    o.onProgress?.({ sequences: acc.sequences, tokens });
  };
  let seen = 0;
  for await (const seq of sequences) {
    o.signal?.throwIfAborted();
    if (o.maxSequences !== undefined && seen >= o.maxSequences) break;
    seen++;
    if (seq.length < 2) continue;
    pending.push(Array.from(seq));
    if (pending.length >= batchSize) await flush();
  }
  await flush();
  return acc.result();
}
