/**
 * Multiple-choice accuracy as lm-eval-harness computes it: each choice is scored by the summed
 * log-likelihood of its tokens given the context; acc = arg-max of the sums is gold, acc_norm =
 * arg-max of the sums divided by the choice's length in characters. Context/continuation are
 * split the harness's way: trailing spaces of the context move to the continuation, the whole
 * string is tokenised and the continuation is what follows the context's own tokens.
 */
import { InvalidArgumentError } from '../errors.js';
import { readLines } from '../data/lines.js';
import type { TokenizerLike } from '../data/pack.js';
import { scoreContinuations, toScoreFn, type ContinuationScore, type Scoreable, type ScorerOptions } from './scoring.js';

export interface McItem {
  context: string;
  choices: string[];
  /** Index of the correct choice. */
  gold: number;
}

export function validateMcItem(x: unknown, where = 'item'): McItem {
  const o = x as Partial<McItem> | null;
  if (typeof o !== 'object' || o === null) throw new InvalidArgumentError(`${where}: expected an object {context, choices, gold}`, 'item');
  if (typeof o.context !== 'string') throw new InvalidArgumentError(`${where}: context must be a string`, 'context');
  if (!Array.isArray(o.choices) || o.choices.length < 2 || !o.choices.every((c) => typeof c === 'string'))
    throw new InvalidArgumentError(`${where}: choices must be an array of at least 2 strings`, 'choices');
  if (!Number.isInteger(o.gold) || o.gold! < 0 || o.gold! >= o.choices.length)
    throw new InvalidArgumentError(`${where}: gold must be an index into choices (0..${o.choices.length - 1})`, 'gold');
  return { context: o.context, choices: o.choices, gold: o.gold! };
}

/** Streams a JSONL task file of {context, choices[], gold} (blank lines ignored). */
export async function* readMcTasks(path: string, o: { signal?: AbortSignal } = {}): AsyncGenerator<McItem> {
  let lineNo = 0;
  for await (const line of readLines(path, o)) {
    lineNo++;
    if (line.trim() === '') continue;
    let rec: unknown;
    try {
      rec = JSON.parse(line);
    } catch (e) {
      throw new InvalidArgumentError(`${path}:${lineNo}: invalid JSON (${(e as Error).message})`, 'path');
    }
    yield validateMcItem(rec, `${path}:${lineNo}`);
  }
}

export interface EncodeOptions {
  /** Add the tokenizer's special tokens (BOS) to the context (default false). */
  addSpecialTokens?: boolean;
  /** Keep at most this many tokens (context truncated from the left, as the harness does). */
  maxLength?: number;
}

/** Token ids of context + continuation and where the continuation starts (harness's _encode_pair). */
export function encodePair(tokenizer: TokenizerLike, context: string, continuation: string, o: EncodeOptions = {}): { ids: number[]; start: number } {
  const trailing = context.length - context.trimEnd().length;
  if (trailing > 0) {
    continuation = context.slice(context.length - trailing) + continuation;
    context = context.slice(0, context.length - trailing);
  }
  const special = { addSpecialTokens: o.addSpecialTokens ?? false };
  let ctx = tokenizer.encode(context, special);
  const whole = tokenizer.encode(context + continuation, special);
  let cont = whole.slice(ctx.length);
  // A merge across the boundary: fall back to separate encodings.
  if (ctx.some((t, i) => whole[i] !== t)) cont = tokenizer.encode(continuation, { addSpecialTokens: false });
  if (cont.length === 0) throw new InvalidArgumentError(`continuation '${continuation}' encodes to no tokens`, 'continuation');
  if (ctx.length === 0) {
    const prefix = tokenizer.bosId ?? tokenizer.eosId;
    if (prefix === null || prefix === undefined) throw new InvalidArgumentError('empty context needs a BOS or EOS token to condition on', 'context');
    ctx = [prefix];
  }
  let ids = [...ctx, ...cont];
  const max = o.maxLength;
  if (max !== undefined && ids.length > max) {
    if (cont.length >= max) throw new InvalidArgumentError(`continuation of ${cont.length} tokens does not fit maxLength ${max}`, 'maxLength');
    ids = ids.slice(ids.length - max);
  }
  return { ids, start: ids.length - cont.length };
}

export interface McItemResult {
  scores: ContinuationScore[];
  /** Predicted index by summed log-likelihood and by log-likelihood per character. */
  pred: number;
  predNorm: number;
  gold: number;
}

export interface McResult {
  accuracy: number;
  accuracyNorm: number;
  /** Gold choice reproduced exactly by greedy decoding from the context. */
  exactMatch: number;
  n: number;
  items?: McItemResult[];
}

export interface McOptions extends EncodeOptions, ScorerOptions {
  tokenizer: TokenizerLike;
  limit?: number;
  /** Keep per-item scores in the result. */
  details?: boolean;
  signal?: AbortSignal;
  onProgress?: (done: number) => void;
}

function argmax(xs: readonly number[]): number {
  let best = 0;
  for (let i = 1; i < xs.length; i++) if (xs[i]! > xs[best]!) best = i; // ties: first (np.argmax)
  return best;
}

/** Multiple-choice accuracy (acc and acc_norm) over items. */
export async function multipleChoice(model: Scoreable, items: AsyncIterable<McItem> | Iterable<McItem>, o: McOptions): Promise<McResult> {
  const score = toScoreFn(model, { maxBatch: o.maxBatch ?? 8, ...(o.padId !== undefined ? { padId: o.padId } : {}) });
  let n = 0;
  let correct = 0;
  let correctNorm = 0;
  let exact = 0;
  const details: McItemResult[] = [];
  for await (const raw of items) {
    o.signal?.throwIfAborted();
    if (o.limit !== undefined && n >= o.limit) break;
    const item = validateMcItem(raw);
    const rows = item.choices.map((c) => encodePair(o.tokenizer, item.context, c, o));
    const scores = await scoreContinuations(score, rows);
    const lls = scores.map((s) => s.logLikelihood);
    const pred = argmax(lls);
    const predNorm = argmax(lls.map((ll, i) => ll / Math.max(1, [...item.choices[i]!].length)));
    n++;
    if (pred === item.gold) correct++;
    if (predNorm === item.gold) correctNorm++;
    if (scores[item.gold]!.exactMatch) exact++;
    if (o.details) details.push({ scores, pred, predNorm, gold: item.gold });
    o.onProgress?.(n);
  }
  const frac = (k: number) => (n > 0 ? k / n : Number.NaN);
  return { accuracy: frac(correct), accuracyNorm: frac(correctNorm), exactMatch: frac(exact), n, ...(o.details ? { items: details } : {}) };
}
