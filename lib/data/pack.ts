/**
 * Tokenisation and packing: documents are tokenised one at a time, EOS appended after each, and
 * the token stream cut into fixed-length sequences (LoLCATs packs 1024), so memory holds one
 * document and one sequence. Deterministic train/validation split by document hash (default) or
 * every k-th sequence; optional seeded shuffle buffer; batches as Int32Array [B, T] in the
 * { ids, batch, seqlen } form LlamaModel.forward/loss take.
 */
import { InvalidArgumentError } from '../errors.js';
import type { Corpus, Document } from './corpus.js';
import { Rng, hashUnit } from './random.js';

/** What packing needs from a tokenizer (lib/model/tokenizer.ts's Tokenizer fits). */
export interface TokenizerLike {
  encode(text: string, opts?: { addSpecialTokens?: boolean }): number[];
  readonly eosId: number | null;
  readonly bosId?: number | null;
}

export interface PackOptions {
  /** Tokens per sequence (e.g. 1024). */
  seqLen: number;
  /** Separator appended after every document; default tokenizer.eosId; null: none. */
  eosId?: number | null;
  /** Token put before every document (default none). */
  bosId?: number | null;
  /** Pass addSpecialTokens to encode (default false: the separators above are explicit). */
  addSpecialTokens?: boolean;
  /** Emit the last partial sequence padded with padId (default false: dropped). */
  keepRemainder?: boolean;
  padId?: number;
  signal?: AbortSignal;
}

function checkSeqLen(n: number): void {
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`seqLen must be an integer >= 1, got ${String(n)}`, 'seqLen');
}

/** Cuts a stream of token chunks into sequences of seqLen (each a fresh Int32Array). */
export async function* packTokenChunks(
  chunks: AsyncIterable<readonly number[]> | Iterable<readonly number[]>,
  o: { seqLen: number; keepRemainder?: boolean; padId?: number; signal?: AbortSignal },
): AsyncGenerator<Int32Array> {
  checkSeqLen(o.seqLen);
  let buf = new Int32Array(o.seqLen);
  let fill = 0;
  for await (const chunk of chunks) {
    o.signal?.throwIfAborted();
    let i = 0;
    while (i < chunk.length) {
      const n = Math.min(chunk.length - i, o.seqLen - fill);
      for (let j = 0; j < n; j++) buf[fill + j] = chunk[i + j]!;
      fill += n;
      i += n;
      if (fill === o.seqLen) {
        yield buf;
        buf = new Int32Array(o.seqLen);
        fill = 0;
      }
    }
  }
  if (fill > 0 && o.keepRemainder) {
    buf.fill(o.padId ?? 0, fill);
    yield buf;
  }
}

/** Tokens of one document with its separators. */
export function documentTokens(text: string, tokenizer: TokenizerLike, o: Omit<PackOptions, 'seqLen'> = {}): number[] {
  const ids = tokenizer.encode(text, { addSpecialTokens: o.addSpecialTokens ?? false });
  const bos = o.bosId ?? null;
  const eos = o.eosId === undefined ? tokenizer.eosId : o.eosId;
  if (bos !== null) ids.unshift(bos);
  if (eos !== null) ids.push(eos);
  return ids;
}

/** Tokenises and packs documents into sequences of o.seqLen tokens. */
export async function* packDocuments(docs: AsyncIterable<Document>, tokenizer: TokenizerLike, o: PackOptions): AsyncGenerator<Int32Array> {
  checkSeqLen(o.seqLen);
  async function* tokens() {
    for await (const d of docs) yield documentTokens(d.text, tokenizer, o);
  }
  yield* packTokenChunks(tokens(), o);
}

export interface SplitOptions {
  /** Fraction of documents (by: 'document') held out for validation, in [0, 1). Default 0.01. */
  validationFraction?: number;
  /** 'document' (default): by a seeded hash of the text (identical texts share a split). 'sequence': every k-th packed sequence. */
  by?: 'document' | 'sequence';
  /** For by: 'sequence': one sequence in `every` goes to validation (default round(1 / validationFraction)). */
  every?: number;
  seed?: number;
}

export type SplitName = 'train' | 'validation' | 'all';

/** Whether a document belongs to the validation split (by: 'document'). */
export function isValidationDocument(text: string, o: SplitOptions = {}): boolean {
  const f = o.validationFraction ?? 0.01;
  return hashUnit(text, o.seed ?? 0) < f;
}

function splitEvery(o: SplitOptions): { every: number; offset: number } {
  const f = o.validationFraction ?? 0.01;
  const every = o.every ?? (f > 0 ? Math.max(2, Math.round(1 / f)) : 0);
  if (!Number.isInteger(every) || every < 0 || every === 1) throw new InvalidArgumentError(`every must be 0 (no validation) or an integer >= 2, got ${every}`, 'every');
  return { every, offset: every > 0 ? new Rng(o.seed ?? 0).int(every) : 0 };
}

/** Batches of B sequences: ids is [B, T] row-major, the form LlamaModel.forward/loss accept. */
export interface TokenBatch {
  ids: Int32Array;
  batch: number;
  seqlen: number;
}

/** Groups sequences into batches of batchSize (a short last batch is dropped unless keepLast). */
export async function* batchSequences(
  seqs: AsyncIterable<Int32Array> | Iterable<Int32Array>,
  batchSize: number,
  o: { keepLast?: boolean } = {},
): AsyncGenerator<TokenBatch> {
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new InvalidArgumentError(`batchSize must be an integer >= 1, got ${String(batchSize)}`, 'batchSize');
  let rows: Int32Array[] = [];
  const emit = (): TokenBatch => {
    const T = rows[0]!.length;
    const ids = new Int32Array(rows.length * T);
    rows.forEach((r, b) => ids.set(r, b * T));
    const out = { ids, batch: rows.length, seqlen: T };
    rows = [];
    return out;
  };
  for await (const s of seqs) {
    if (rows.length > 0 && s.length !== rows[0]!.length) throw new InvalidArgumentError('sequences of one batch must have equal length', 'seqs');
    rows.push(s);
    if (rows.length === batchSize) yield emit();
  }
  if (rows.length > 0 && o.keepLast) yield emit();
}

/** Seeded shuffle buffer (as tf.data / HF streaming datasets): bounded memory, deterministic. */
export async function* shuffleBuffer<T>(items: AsyncIterable<T>, size: number, seed: number): AsyncGenerator<T> {
  if (!Number.isInteger(size) || size < 1) throw new InvalidArgumentError(`shuffle buffer size must be an integer >= 1`, 'size');
  const rng = new Rng(seed);
  const buf: T[] = [];
  for await (const x of items) {
    if (buf.length < size) {
      buf.push(x);
      continue;
    }
    const j = rng.int(size);
    const out = buf[j]!;
    buf[j] = x;
    yield out;
  }
  rng.shuffle(buf);
  yield* buf;
}

export interface DatasetOptions extends Omit<PackOptions, 'signal'> {
  split?: SplitOptions;
  /** Shuffle training sequences through a buffer of this many (default: no shuffle). */
  shuffleBuffer?: number;
  /** Seed of the shuffle; epoch e uses seed + e. Default split.seed ?? 0. */
  shuffleSeed?: number;
}

export interface IterateOptions {
  /** Skip this many sequences of the split first (resuming a run). */
  skip?: number;
  /** Epoch number (changes the shuffle order only). */
  epoch?: number;
  signal?: AbortSignal;
}

/**
 * A corpus tokenised and packed on the fly, split deterministically. Iterating twice gives the
 * same sequences in the same order.
 */
export class PackedDataset {
  constructor(
    readonly corpus: Corpus,
    readonly tokenizer: TokenizerLike,
    readonly options: DatasetOptions,
  ) {
    checkSeqLen(options.seqLen);
    if (options.split?.by === 'sequence') splitEvery(options.split); // validate now
    const f = options.split?.validationFraction;
    if (f !== undefined && !(f >= 0 && f < 1)) throw new InvalidArgumentError(`validationFraction must be in [0, 1), got ${f}`, 'validationFraction');
  }

  get seqLen(): number {
    return this.options.seqLen;
  }

  /** Packed sequences of one split. */
  async *sequences(split: SplitName = 'train', o: IterateOptions = {}): AsyncGenerator<Int32Array> {
    const so = this.options.split ?? {};
    const by = so.by ?? 'document';
    const signal = o.signal;
    const corpus = this.corpus;
    async function* docs(): AsyncGenerator<Document> {
      for await (const d of corpus.documents(signal)) {
        if (split === 'all' || by === 'sequence') yield d;
        else if (isValidationDocument(d.text, so) === (split === 'validation')) yield d;
      }
    }
    let seqs: AsyncIterable<Int32Array> = packDocuments(docs(), this.tokenizer, { ...this.options, ...(signal ? { signal } : {}) });
    if (by === 'sequence' && split !== 'all') {
      const { every, offset } = splitEvery(so);
      const src = seqs;
      seqs = (async function* () {
        let i = 0;
        for await (const s of src) {
          const isVal = every > 0 && (i++ + offset) % every === 0;
          if (isVal === (split === 'validation')) yield s;
        }
      })();
    }
    if (split === 'train' && this.options.shuffleBuffer) seqs = shuffleBuffer(seqs, this.options.shuffleBuffer, (this.options.shuffleSeed ?? so.seed ?? 0) + (o.epoch ?? 0));
    let skip = o.skip ?? 0;
    for await (const s of seqs) {
      if (skip > 0) {
        skip--;
        continue;
      }
      yield s;
    }
  }

  /** Batches [B, seqLen] of one split. */
  batches(split: SplitName, batchSize: number, o: IterateOptions & { keepLast?: boolean } = {}): AsyncGenerator<TokenBatch> {
    return batchSequences(this.sequences(split, o), batchSize, o);
  }
}
