/**
 * Where recipes get their batches: a BatchSource yields the training batches of one epoch (in a
 * deterministic order, so a resumed run skips exactly the batches already consumed) and optional
 * validation batches. arraySource wraps in-memory batches; datasetSource a PackedDataset.
 */
import { InvalidArgumentError } from '../errors.js';
import type { PackedDataset, TokenBatch } from '../data/pack.js';

export type { TokenBatch } from '../data/pack.js';

export interface BatchSource {
  /** Training batches of epoch `epoch`, the first `skip` left out. Must be deterministic. */
  train(o: { epoch: number; skip: number; signal?: AbortSignal }): AsyncIterable<TokenBatch> | Iterable<TokenBatch>;
  /** Validation batches (bounded; used for early stopping and the gap guard). */
  validation?(o: { signal?: AbortSignal }): AsyncIterable<TokenBatch> | Iterable<TokenBatch>;
}

/** Rows [B][T] (or TokenBatch) -> TokenBatch. */
export function toTokenBatch(x: TokenBatch | readonly (readonly number[])[]): TokenBatch {
  if (Array.isArray(x)) {
    const rows = x as readonly (readonly number[])[];
    const T = rows[0]?.length ?? 0;
    if (rows.length === 0 || T === 0) throw new InvalidArgumentError('a batch needs at least one non-empty row', 'batch');
    const ids = new Int32Array(rows.length * T);
    rows.forEach((r, b) => {
      if (r.length !== T) throw new InvalidArgumentError('rows of one batch must have equal length', 'batch');
      ids.set(r, b * T);
    });
    return { ids, batch: rows.length, seqlen: T };
  }
  return x as TokenBatch;
}

/** In-memory batches: the training list is replayed every epoch. */
export function arraySource(train: readonly (TokenBatch | readonly (readonly number[])[])[], validation?: readonly (TokenBatch | readonly (readonly number[])[])[]): BatchSource {
  const tr = train.map(toTokenBatch);
  if (tr.length === 0) throw new InvalidArgumentError('arraySource needs at least one training batch', 'train');
  const va = validation?.map(toTokenBatch);
  return {
    train: ({ skip }) => tr.slice(skip),
    ...(va && va.length > 0 ? { validation: () => va } : {}),
  };
}

/** Batches of a PackedDataset: training split (optionally shuffled by the dataset) and up to validationBatches of the validation split. */
export function datasetSource(ds: PackedDataset, batchSize: number, o: { validationBatches?: number } = {}): BatchSource {
  const maxVal = o.validationBatches ?? 4;
  return {
    train: ({ epoch, skip, signal }) => ds.batches('train', batchSize, { epoch, skip: skip * batchSize, ...(signal ? { signal } : {}) }),
    ...(maxVal > 0
      ? {
          validation: async function* ({ signal }: { signal?: AbortSignal }) {
            let n = 0;
            for await (const b of ds.batches('validation', batchSize, { keepLast: true, ...(signal ? { signal } : {}) })) {
              yield b;
              if (++n >= maxVal) break;
            }
          },
        }
      : {}),
  };
}

/** Cycles through a BatchSource's epochs, tracking the position a checkpoint needs. */
export class BatchCursor {
  private it: AsyncIterator<TokenBatch> | Iterator<TokenBatch> | undefined;
  constructor(
    readonly source: BatchSource,
    public epoch = 0,
    /** Batches consumed in the current epoch. */
    public consumed = 0,
    private readonly signal?: AbortSignal,
  ) {}

  private open(): AsyncIterator<TokenBatch> | Iterator<TokenBatch> {
    const src = this.source.train({ epoch: this.epoch, skip: this.consumed, ...(this.signal ? { signal: this.signal } : {}) });
    const s = src as AsyncIterable<TokenBatch> & Iterable<TokenBatch>;
    return typeof s[Symbol.asyncIterator] === 'function' ? s[Symbol.asyncIterator]() : s[Symbol.iterator]();
  }

  async next(): Promise<TokenBatch> {
    for (let attempt = 0; attempt < 2; attempt++) {
      this.it ??= this.open();
      const r = await this.it.next();
      if (!r.done) {
        this.consumed++;
        return toTokenBatch(r.value);
      }
      if (attempt === 1 || this.consumed === 0) break;
      this.epoch++;
      this.consumed = 0;
      this.it = undefined;
    }
    throw new InvalidArgumentError('the training data holds no batch', 'data');
  }
}

export async function collectBatches(src: AsyncIterable<TokenBatch> | Iterable<TokenBatch>): Promise<TokenBatch[]> {
  const out: TokenBatch[] = [];
  for await (const b of src) out.push(toTokenBatch(b));
  return out;
}
