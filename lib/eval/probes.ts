/**
 * Long-range probes whose answer lies beyond the attention window, so that only linear
 * attention (the part of a hybrid that sees tokens older than w) can reach it:
 * - passkey retrieval: a random number planted in filler text, asked for at the end;
 * - associative recall: key -> value pairs, then a query key.
 * "distance" is the number of tokens from the last token of the evidence (the planted key, or
 * the queried pair's value) to the last context token, whose prediction must produce the answer;
 * the generators make it > window. Items are deterministic functions of the seed.
 */
import { InvalidArgumentError } from '../errors.js';
import type { TokenizerLike } from '../data/pack.js';
import { Rng } from '../data/random.js';
import { multipleChoice, type McOptions } from './multiple-choice.js';
import type { Scoreable } from './scoring.js';

export interface ProbeItem {
  kind: 'passkey' | 'associative';
  context: string;
  /** The continuation that answers (leading space included, e.g. ' 48213'). */
  answer: string;
  /** Wrong continuations of the same form (for choice accuracy). */
  distractors: string[];
  /** answer and distractors in a seeded order (so ties never favour the answer), and the answer's index. */
  choices: string[];
  gold: number;
  /** Tokens from the end of the evidence to the last context token. */
  distance: number;
  /** Context length in tokens. */
  length: number;
}

export interface ProbeOptions {
  /** Token counting; the tokenizer the model is evaluated with. */
  tokenizer: Pick<TokenizerLike, 'encode'>;
  /** The attention window w; distances are drawn above it. */
  window: number;
  count: number;
  seed?: number;
  /** Distance range in tokens (default window + 2 .. 2 * window + 2). */
  minDistance?: number;
  maxDistance?: number;
  /** Wrong answers per item (default 4). */
  distractors?: number;
  /** Filler tokens before the evidence (default 0 .. window / 2, random). */
  maxLeadTokens?: number;
}

const FILLER = [
  'The grass is green.',
  'The sky is blue.',
  'The sun is yellow.',
  'Here we go.',
  'There and back again.',
];

function checkProbeOptions(o: ProbeOptions): { min: number; max: number } {
  if (!Number.isInteger(o.window) || o.window < 1) throw new InvalidArgumentError('window must be an integer >= 1', 'window');
  if (!Number.isInteger(o.count) || o.count < 0) throw new InvalidArgumentError('count must be an integer >= 0', 'count');
  const min = o.minDistance ?? o.window + 2;
  const max = o.maxDistance ?? 2 * o.window + 2;
  if (!(min > o.window)) throw new InvalidArgumentError(`minDistance (${min}) must exceed the window (${o.window})`, 'minDistance');
  if (!(max >= min)) throw new InvalidArgumentError(`maxDistance (${max}) must be >= minDistance (${min})`, 'maxDistance');
  return { min, max };
}

const countTokens = (tok: Pick<TokenizerLike, 'encode'>, text: string) => tok.encode(text, { addSpecialTokens: false }).length;

function randomDigits(rng: Rng, digits: number): string {
  let s = String(rng.range(1, 9));
  for (let i = 1; i < digits; i++) s += String(rng.int(10));
  return s;
}

function distinct(n: number, make: () => string, avoid: Set<string>): string[] {
  const out: string[] = [];
  for (let tries = 0; out.length < n && tries < 1000 * (n + 1); tries++) {
    const x = make();
    if (avoid.has(x)) continue;
    avoid.add(x);
    out.push(x);
  }
  if (out.length < n) throw new InvalidArgumentError('cannot draw enough distinct values', 'distractors');
  return out;
}

/** Appends filler sentences after `head` until the tokens after position `evidenceEnd` reach `target`. */
function fillTo(tok: Pick<TokenizerLike, 'encode'>, head: string, tail: string, evidenceEnd: number, target: number, rng: Rng, sep = ' '): { body: string; distance: number; length: number } {
  let body = head;
  let k = rng.int(FILLER.length);
  for (;;) {
    const length = countTokens(tok, body + tail);
    const distance = length - evidenceEnd;
    if (distance >= target) return { body: body + tail, distance, length };
    // add roughly enough filler at once, then re-measure
    const missing = target - distance;
    let added = 0;
    while (added < missing) {
      const s = FILLER[k++ % FILLER.length]!;
      body += sep + s;
      added += Math.max(1, countTokens(tok, sep + s));
    }
  }
}

/** Passkey retrieval items: "... The pass key is 48213. Remember it. 48213 is the pass key. ... What is the pass key? The pass key is" -> " 48213". */
export function passkeyItems(o: ProbeOptions & { digits?: number }): ProbeItem[] {
  const { min, max } = checkProbeOptions(o);
  const rng = new Rng((o.seed ?? 0) ^ 0x5a5a1234);
  const digits = o.digits ?? 5;
  const items: ProbeItem[] = [];
  for (let i = 0; i < o.count; i++) {
    const key = randomDigits(rng, digits);
    const wrong = distinct(o.distractors ?? 4, () => randomDigits(rng, digits), new Set([key]));
    const target = rng.range(min, max);
    let lead = 'There is an important piece of information hidden in this text. Find it and memorise it.';
    const leadTokens = rng.int((o.maxLeadTokens ?? Math.floor(o.window / 2)) + 1);
    let k = rng.int(FILLER.length);
    while (countTokens(o.tokenizer, lead) < leadTokens) lead += ' ' + FILLER[k++ % FILLER.length];
    const evidence = `${lead} The pass key is ${key}. Remember it. ${key} is the pass key.`;
    const evidenceEnd = countTokens(o.tokenizer, evidence);
    const question = ' What is the pass key? The pass key is';
    const { body, distance, length } = fillTo(o.tokenizer, evidence, question, evidenceEnd, target, rng);
    items.push(withChoices(rng, { kind: 'passkey', context: body, answer: ` ${key}`, distractors: wrong.map((w) => ` ${w}`), distance, length }));
  }
  return items;
}

function withChoices(rng: Rng, it: Omit<ProbeItem, 'choices' | 'gold'>): ProbeItem {
  const choices = rng.shuffle([it.answer, ...it.distractors]);
  return { ...it, choices, gold: choices.indexOf(it.answer) };
}

function randomKey(rng: Rng): string {
  const letters = 'abcdefghijklmnopqrstuvwxyz';
  let s = '';
  for (let i = 0; i < 4; i++) s += letters[rng.int(26)];
  return s;
}

/**
 * Associative recall items: "Remember these pairs. kqzv: 417. mbta: 902. ... Query: kqzv:" -> " 417".
 * The queried pair comes first; later pairs (their values are the distractors, all present in
 * the text) and filler push it beyond the window.
 */
export function associativeRecallItems(o: ProbeOptions & { pairs?: number }): ProbeItem[] {
  const { min, max } = checkProbeOptions(o);
  const rng = new Rng((o.seed ?? 0) ^ 0x2c1b3c6d);
  const nPairs = o.pairs ?? 8;
  const nWrong = o.distractors ?? 4;
  if (nPairs < nWrong + 1) throw new InvalidArgumentError(`pairs (${nPairs}) must exceed distractors (${nWrong})`, 'pairs');
  const items: ProbeItem[] = [];
  for (let i = 0; i < o.count; i++) {
    const keys = distinct(nPairs, () => randomKey(rng), new Set());
    const values = distinct(nPairs, () => String(rng.range(100, 999)), new Set());
    const target = rng.range(min, max);
    const evidence = `Remember these pairs. ${keys[0]}: ${values[0]}.`;
    const evidenceEnd = countTokens(o.tokenizer, evidence);
    let body = evidence;
    for (let p = 1; p < nPairs; p++) body += ` ${keys[p]}: ${values[p]}.`;
    const { body: text, distance, length } = fillTo(o.tokenizer, body, ` Query: ${keys[0]}:`, evidenceEnd, target, rng);
    items.push(withChoices(rng, { kind: 'associative', context: text, answer: ` ${values[0]}`, distractors: values.slice(1, 1 + nWrong).map((v) => ` ${v}`), distance, length }));
  }
  return items;
}

export interface ProbeResult {
  /** Greedy decoding reproduces the answer exactly. */
  exactMatch: number;
  /** The answer has the highest log-likelihood among answer + distractors. */
  choiceAccuracy: number;
  n: number;
  meanDistance: number;
}

/** Scores probe items: exact greedy match of the answer and choice accuracy against distractors. */
export async function probeAccuracy(model: Scoreable, items: readonly ProbeItem[], o: Omit<McOptions, 'details' | 'limit'>): Promise<ProbeResult> {
  const mc = await multipleChoice(
    model,
    items.map((it) => ({ context: it.context, choices: it.choices, gold: it.gold })),
    o,
  );
  const meanDistance = items.length ? items.reduce((s, it) => s + it.distance, 0) / items.length : Number.NaN;
  return { exactMatch: mc.exactMatch, choiceAccuracy: mc.accuracy, n: mc.n, meanDistance };
}
