/**
 * Sampling for generation (transformers' semantics): temperature, then top-k (ties with the
 * k-th logit are kept), then top-p (the smallest set of most likely tokens whose probability
 * reaches p; the token that crosses p is kept), then a draw from a seeded generator. Greedy when
 * doSample is false or temperature is 0 (ties: lowest id, as torch.argmax).
 *
 * generate() runs a batch of prompts (of any lengths: equal-length prompts share a batched
 * forward and one decode cache per layer), each sequence with its own generator derived from
 * (seed, index), so results do not depend on how prompts are grouped.
 */
import { InvalidArgumentError } from '../errors.js';
import type { AttentionCache } from './attention-layer.js';
import type { LlamaModel } from './llama.js';
import { LoraRng } from './lora.js';

export interface SamplingOptions {
  /** Default true (false: greedy). */
  doSample?: boolean;
  /** > 0 (default 1); 0 means greedy. */
  temperature?: number;
  /** Keep the k most likely tokens (0 or undefined: off). */
  topK?: number;
  /** Nucleus sampling threshold in (0, 1] (1 or undefined: off). */
  topP?: number;
  /** Tokens top-p always keeps (default 1). */
  minTokensToKeep?: number;
}

/** Deterministic uniform draws in [0, 1) (mulberry32). */
export class SamplingRng extends LoraRng {
  /** The generator of sequence `index` under `seed`. */
  static forSequence(seed: number, index: number): SamplingRng {
    let h = (seed >>> 0) ^ Math.imul(index + 1, 0x9e3779b1);
    h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
    h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
    return new SamplingRng((h ^ (h >>> 16)) >>> 0);
  }
}

function checkSampling(o: SamplingOptions): Required<SamplingOptions> {
  const r = { doSample: o.doSample ?? true, temperature: o.temperature ?? 1, topK: o.topK ?? 0, topP: o.topP ?? 1, minTokensToKeep: o.minTokensToKeep ?? 1 };
  if (typeof r.doSample !== 'boolean') throw new InvalidArgumentError('doSample must be a boolean', 'doSample');
  if (typeof r.temperature !== 'number' || !(r.temperature >= 0) || !Number.isFinite(r.temperature)) throw new InvalidArgumentError('temperature must be a finite number >= 0', 'temperature');
  if (!Number.isInteger(r.topK) || r.topK < 0) throw new InvalidArgumentError('topK must be an integer >= 0', 'topK');
  if (typeof r.topP !== 'number' || !(r.topP > 0 && r.topP <= 1)) throw new InvalidArgumentError('topP must be in (0, 1]', 'topP');
  if (!Number.isInteger(r.minTokensToKeep) || r.minTokensToKeep < 1) throw new InvalidArgumentError('minTokensToKeep must be an integer >= 1', 'minTokensToKeep');
  return r;
}

export function isGreedy(o: SamplingOptions): boolean {
  const r = checkSampling(o);
  return !r.doSample || r.temperature === 0;
}

/** Index of the largest value (ties: lowest index). */
export function argmax(logits: ArrayLike<number>): number {
  let best = 0;
  for (let j = 1; j < logits.length; j++) if (logits[j]! > logits[best]!) best = j;
  return best;
}

/**
 * The distribution a sampled token is drawn from: softmax(logits / temperature) restricted to
 * the top-k and top-p sets and renormalised (zeros elsewhere). Greedy options give a one-hot.
 */
export function samplingDistribution(logits: ArrayLike<number>, o: SamplingOptions = {}): Float64Array {
  const r = checkSampling(o);
  const V = logits.length;
  if (V === 0) throw new InvalidArgumentError('logits must not be empty', 'logits');
  const p = new Float64Array(V);
  if (!r.doSample || r.temperature === 0) {
    p[argmax(logits)] = 1;
    return p;
  }
  const z = Float64Array.from(logits, (x) => x / r.temperature);
  const order = Array.from({ length: V }, (_, i) => i).sort((a, b) => z[b]! - z[a]! || a - b);
  let keep = V;
  if (r.topK > 0 && r.topK < V) {
    const kth = z[order[r.topK - 1]!]!;
    keep = r.topK;
    while (keep < V && z[order[keep]!]! >= kth) keep++; // ties with the k-th are kept
  }
  const m = z[order[0]!]!;
  let sum = 0;
  for (let i = 0; i < keep; i++) sum += (p[order[i]!] = Math.exp(z[order[i]!]! - m));
  if (r.topP < 1) {
    // Probabilities after top-k, in descending order: keep until the cumulative mass reaches p.
    let cum = 0;
    let n = 0;
    while (n < keep && (cum < r.topP * sum || n < r.minTokensToKeep)) cum += p[order[n++]!]!;
    for (let i = n; i < keep; i++) p[order[i]!] = 0;
    sum = cum;
  }
  for (let i = 0; i < V; i++) p[i]! /= sum;
  return p;
}

/** One token drawn from samplingDistribution(logits, o) with `rng` (argmax when greedy). */
export function sampleToken(logits: ArrayLike<number>, o: SamplingOptions, rng: { next(): number }): number {
  if (isGreedy(o)) return argmax(logits);
  const p = samplingDistribution(logits, o);
  const u = rng.next();
  let cum = 0;
  let last = -1;
  for (let i = 0; i < p.length; i++) {
    if (p[i]! <= 0) continue;
    last = i;
    cum += p[i]!;
    if (u < cum) return i;
  }
  return last; // rounding: u above the accumulated total
}

export interface GenerateOptions extends SamplingOptions {
  maxNewTokens: number;
  /** A sequence stops after emitting one of these. */
  eosTokenIds?: readonly number[];
  /** Default true (falls back to recomputation when a layer has no decode cache). */
  useCache?: boolean;
  /** Seed of the per-sequence generators (default 0): sequence i uses SamplingRng.forSequence(seed, i). */
  seed?: number;
  /** One seed per prompt instead (sequence i uses SamplingRng.forSequence(seeds[i], 0)). */
  seeds?: readonly number[];
}

/** Prompts plus generated tokens, one row per prompt (a row stops at its first EOS). */
export async function generate(model: LlamaModel, prompts: readonly (readonly number[])[], o: GenerateOptions): Promise<number[][]> {
  if (!Array.isArray(prompts) || prompts.length === 0) throw new InvalidArgumentError('prompts must be a non-empty array of token arrays', 'prompts');
  prompts.forEach((p, i) => {
    if (!Array.isArray(p) || p.length === 0) throw new InvalidArgumentError(`prompts[${i}] must be a non-empty token array`, 'prompts');
  });
  if (!Number.isInteger(o.maxNewTokens) || o.maxNewTokens < 0) throw new InvalidArgumentError('maxNewTokens must be an integer >= 0', 'maxNewTokens');
  checkSampling(o);
  const seed = o.seed ?? 0;
  if (o.seeds !== undefined && (!Array.isArray(o.seeds) || o.seeds.length !== prompts.length || !o.seeds.every((x) => Number.isInteger(x))))
    throw new InvalidArgumentError(`seeds must hold one integer per prompt (${prompts.length})`, 'seeds');
  const rngOf = (i: number) => (o.seeds ? SamplingRng.forSequence(o.seeds[i]!, 0) : SamplingRng.forSequence(seed, i));
  const out: number[][] = prompts.map((p) => [...p]);
  const byLength = new Map<number, number[]>();
  prompts.forEach((p, i) => byLength.set(p.length, [...(byLength.get(p.length) ?? []), i]));
  for (const [len, rows] of byLength) await generateGroup(model, rows.map((i) => out[i]!), len, rows.map(rngOf), o);
  return out;
}

async function generateGroup(model: LlamaModel, seqs: number[][], promptLen: number, rngs: SamplingRng[], o: GenerateOptions): Promise<void> {
  const B = seqs.length;
  const V = model.config.vocabSize;
  const caches: AttentionCache[] | undefined = o.useCache === false ? undefined : model.createCaches(B, promptLen + o.maxNewTokens);
  const done = new Array<boolean>(B).fill(false);
  const work = seqs.map((s) => [...s]); // finished rows keep a filler token so the batch stays rectangular
  try {
    for (let step = 0; step < o.maxNewTokens && !done.every(Boolean); step++) {
      const input = caches && step > 0 ? work.map((s) => s.slice(-1)) : work;
      const { logits } = model.forward(input, { lastPositionOnly: true, ...(caches ? { caches, positionOffset: step > 0 ? work[0]!.length - 1 : 0 } : {}) });
      const all = await logits.toArray();
      logits.dispose();
      for (let b = 0; b < B; b++) {
        const row = all.subarray(b * V, (b + 1) * V);
        const next = done[b] ? work[b]!.at(-1)! : sampleToken(row, o, rngs[b]!);
        work[b]!.push(next);
        if (done[b]) continue;
        seqs[b]!.push(next);
        if (o.eosTokenIds?.includes(next)) done[b] = true;
      }
    }
  } finally {
    caches?.forEach((c) => c.dispose());
  }
}
