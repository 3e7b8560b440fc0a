import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  SafetensorsError,
  openCheckpoint,
  openSafetensors,
  writeSafetensors,
  type SafetensorsErrorCode,
  type TensorToWrite,
} from '../../lib/io/safetensors.js';
import {
  bf16ToF32,
  f16ToF32,
  f16ToNumber,
  f32Bits,
  f32ToBf16,
  f32ToF16,
  numberToBf16,
  numberToF16,
} from '../../lib/io/half.js';
import { fixturesDir, haveFixtures } from '../helpers/fixtures.js';

const TINY = join(fixturesDir, 'llama-tiny');
const TINY_BF16 = join(fixturesDir, 'llama-tiny-bf16');

/** Independent header parse of a whole file, for cross-checking the reader. */
function manualParse(path: string) {
  const bytes = readFileSync(path);
  const n = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + n).toString('utf8')) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  const slice = (name: string) => {
    const [a, b] = header[name]!.data_offsets;
    return bytes.subarray(8 + n + a, 8 + n + b);
  };
  return { n, header, slice };
}

/** A raw safetensors file from a header object (or string) and data bytes. */
function raw(header: unknown, data: Buffer | number = 0, lengthOverride?: bigint): Buffer {
  const json = Buffer.isBuffer(header) ? header : Buffer.from(typeof header === 'string' ? header : JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(lengthOverride ?? BigInt(json.length));
  return Buffer.concat([len, json, typeof data === 'number' ? Buffer.alloc(data) : data]);
}

let tmp: string;
beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'st-test-'));
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

async function expectCode(p: Promise<unknown>, code: SafetensorsErrorCode, ...inMessage: string[]) {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(SafetensorsError);
  expect((err as SafetensorsError).code).toBe(code);
  for (const s of inMessage) expect((err as Error).message).toContain(s);
  return err as SafetensorsError;
}

describe.skipIf(!haveFixtures)('reading the llama-tiny fixtures', () => {
  it('lists model.safetensors tensors with absolute offsets and metadata', async () => {
    const path = join(TINY, 'model.safetensors');
    const { n, header } = manualParse(path);
    const f = await openSafetensors(path);
    try {
      expect(f.metadata).toEqual({ format: 'pt' });
      expect(f.tensors).toHaveLength(21);
      const lm = f.info('lm_head.weight');
      expect(lm).toMatchObject({ dtype: 'F32', shape: [2048, 128], byteOffset: 8 + n, byteLength: 2048 * 128 * 4, file: path });
      for (const t of f.tensors) {
        const h = header[t.name]!;
        expect(t.byteOffset).toBe(8 + n + h.data_offsets[0]);
        expect(t.shape).toEqual(h.shape);
      }
      expect(f.info('model.layers.1.self_attn.k_proj.weight').shape).toEqual([64, 128]); // 2 kv heads x 32
    } finally {
      await f.close();
    }
  });

  it('reads expected.safetensors tensors equal to a manual parse', async () => {
    const path = join(TINY, 'expected.safetensors');
    const m = manualParse(path);
    const f = await openSafetensors(path);
    try {
      const ids = await f.readArray('input_ids', { dtype: 'I32', shape: [2, 96] });
      expect(ids).toBeInstanceOf(Int32Array);
      const s = m.slice('input_ids');
      const manual = Array.from({ length: 192 }, (_, i) => s.readInt32LE(4 * i));
      expect(Array.from(ids as Int32Array)).toEqual(manual);
      expect(manual.slice(0, 3)).toEqual([501, 272, 1992]);

      const loss = (await f.readF32('loss'))[0]!;
      const expected = JSON.parse(readFileSync(join(TINY, 'expected.json'), 'utf8')) as { loss: number };
      expect(loss).toBe(Math.fround(expected.loss));

      const logits = await f.readF32('logits', { shape: [2, 96, 2048] });
      const ls = m.slice('logits');
      for (const i of [0, 1, 2047, 100000, logits.length - 1]) expect(logits[i]).toBe(ls.readFloatLE(4 * i));
    } finally {
      await f.close();
    }
  });

  it('bf16 embeddings widen exactly to the float32 hidden_states.0 of the bf16 fixture', async () => {
    const model = await openSafetensors(join(TINY_BF16, 'model.safetensors'));
    const exp = await openSafetensors(join(TINY_BF16, 'expected.safetensors'));
    try {
      const embBits = (await model.readArray('model.embed_tokens.weight', { dtype: 'BF16', shape: [2048, 128] })) as Uint16Array;
      const emb = await model.readF32('model.embed_tokens.weight');
      expect(emb).toEqual(bf16ToF32(embBits));
      const ids = (await exp.readArray('input_ids')) as Int32Array;
      const h0 = await exp.readF32('hidden_states.0', { shape: [2, 96, 128] });
      // hidden_states.0 = embedding rows (computed in float64 from the bf16 weights, stored as f32),
      // and rounding those f32 values back to bf16 gives the stored bits
      const back = f32ToBf16(h0);
      let wrongValue = 0;
      let wrongBits = 0;
      for (let t = 0; t < ids.length; t++) {
        for (let j = 0; j < 128; j++) {
          if (h0[t * 128 + j] !== emb[ids[t]! * 128 + j]) wrongValue++;
          if (back[t * 128 + j] !== embBits[ids[t]! * 128 + j]) wrongBits++;
        }
      }
      expect([wrongValue, wrongBits]).toEqual([0, 0]);
    } finally {
      await model.close();
      await exp.close();
    }
  });

  it('f32 -> bf16 of the f32 weights rounds to the nearest bf16, ties to even', async () => {
    const f = await openSafetensors(join(TINY, 'model.safetensors'));
    const w = await f.readF32('model.layers.0.mlp.down_proj.weight');
    await f.close();
    const b = f32ToBf16(w);
    const wide = bf16ToF32(b);
    for (let i = 0; i < w.length; i += 7) {
      // independent check: the two bf16 neighbours by truncation, pick the nearer one
      const lo = Math.abs(bf16ToF32(new Uint16Array([f32Bits(w[i]!) >>> 16]))[0]!);
      const up = bf16ToF32(new Uint16Array([(f32Bits(Math.abs(w[i]!)) >>> 16) + 1]))[0]!;
      const a = Math.abs(w[i]!);
      const want = a - lo < up - a ? lo : a - lo > up - a ? up : ((f32Bits(lo) >>> 16) & 1) === 0 ? lo : up;
      expect(Math.abs(wide[i]!)).toBe(want);
    }
  });
});

describe('half precision conversion', () => {
  it('f16 -> f32 matches the formula for every bit pattern', () => {
    const all = new Uint16Array(65536).map((_, i) => i);
    const f = f16ToF32(all);
    for (let h = 0; h < 65536; h++) {
      const s = h & 0x8000 ? -1 : 1;
      const e = (h >> 10) & 0x1f;
      const m = h & 0x3ff;
      const want = e === 31 ? (m ? NaN : s * Infinity) : e === 0 ? s * m * 2 ** -24 : s * (1 + m / 1024) * 2 ** (e - 15);
      if (Number.isNaN(want)) expect(f[h]).toBeNaN();
      else expect(Object.is(f[h], want)).toBe(true);
    }
    // and back again, bit-exact for every non-NaN pattern
    const back = f32ToF16(f);
    for (let h = 0; h < 65536; h++) if (!Number.isNaN(f[h]!)) expect(back[h]).toBe(h);
  });

  it('f32 -> f16 rounds to nearest even, including at subnormal and overflow edges', () => {
    // Midpoints between adjacent finite f16 values are exact in f32: they must go to the even one,
    // and one f32 ulp either side must go to the nearer one.
    for (let h = 0; h < 0x7bff; h++) {
      const a = f16ToNumber(h);
      const b = f16ToNumber(h + 1);
      const mid = (a + b) / 2;
      expect(numberToF16(mid)).toBe(h % 2 === 0 ? h : h + 1);
      const below = new Float32Array([mid]);
      const u = new Uint32Array(below.buffer);
      u[0]! -= 1;
      expect(numberToF16(below[0]!)).toBe(h);
      u[0]! += 2;
      expect(numberToF16(below[0]!)).toBe(h + 1);
    }
    expect(numberToF16(65504)).toBe(0x7bff);
    expect(numberToF16(65519.99)).toBe(0x7bff);
    expect(numberToF16(65520)).toBe(0x7c00); // tie between max and "2^16": even is inf
    expect(numberToF16(-1e9)).toBe(0xfc00);
    expect(numberToF16(2 ** -24)).toBe(1);
    expect(numberToF16(2 ** -25)).toBe(0); // tie to even zero
    expect(numberToF16(-(2 ** -26))).toBe(0x8000);
    expect(numberToF16(-0)).toBe(0x8000);
    expect(numberToF16(2 ** -14 - 2 ** -25)).toBe(0x0400); // rounds up out of the subnormals
    expect(numberToF16(NaN) & 0x7c00).toBe(0x7c00);
    expect(numberToF16(NaN) & 0x3ff).not.toBe(0);
  });

  it('f32 -> bf16 ties, overflow and NaN', () => {
    expect(numberToBf16(1)).toBe(0x3f80);
    expect(numberToBf16(1 + 2 ** -8)).toBe(0x3f80); // tie, even stays
    expect(numberToBf16(1 + 3 * 2 ** -8)).toBe(0x3f82); // tie, odd rounds up
    expect(numberToBf16(1 + 2 ** -8 + 2 ** -20)).toBe(0x3f81);
    expect(numberToBf16(3.4028234663852886e38)).toBe(0x7f80); // f32 max rounds to inf
    expect(numberToBf16(-Infinity)).toBe(0xff80);
    const nan = numberToBf16(NaN);
    expect(nan & 0x7f80).toBe(0x7f80);
    expect(nan & 0x7f).not.toBe(0);
    expect(bf16ToF32(new Uint16Array([0x7fc1]))[0]).toBeNaN();
  });
});

describe('writing', () => {
  const sample = (): TensorToWrite[] => [
    { name: 'a.f32', dtype: 'F32', shape: [2, 3], data: new Float32Array([1, 2, 3, 4, 5, 6]) },
    { name: 'b.i64', dtype: 'I64', shape: [2], data: new BigInt64Array([-5n, 1n << 40n]) },
    { name: 'c.bf16', dtype: 'BF16', shape: [3], data: f32ToBf16(new Float32Array([0.5, -2, 3.140625])) },
    { name: 'd.bool', dtype: 'BOOL', shape: [1, 1, 3], data: Buffer.from([1, 0, 1]) },
    { name: 'e.empty', dtype: 'F64', shape: [0, 4], data: new Float64Array(0) },
    { name: 'f.scalar', dtype: 'F64', shape: [], data: new Float64Array([Math.PI]) },
    { name: 'g.f16', dtype: 'F16', shape: [2], data: f32ToF16(new Float32Array([1.5, -0.25])) },
  ];

  it('round-trips tensors and metadata, with an 8-byte-aligned header', async () => {
    const path = join(tmp, 'rt.safetensors');
    await writeSafetensors(path, sample(), { format: 'pt', note: 'ünïcode' });
    const bytes = await readFile(path);
    const n = Number(bytes.readBigUInt64LE(0));
    expect(n % 8).toBe(0);
    expect(bytes.subarray(8, 9).toString()).toBe('{');
    const f = await openSafetensors(path);
    try {
      expect(f.metadata).toEqual({ format: 'pt', note: 'ünïcode' });
      expect(f.names).toEqual(sample().map((t) => t.name));
      expect(Array.from((await f.readArray('a.f32')) as Float32Array)).toEqual([1, 2, 3, 4, 5, 6]);
      expect(Array.from((await f.readArray('b.i64')) as BigInt64Array)).toEqual([-5n, 1n << 40n]);
      expect(Array.from(await f.readF32('c.bf16'))).toEqual([0.5, -2, 3.140625]);
      expect(Array.from(await f.read('d.bool'))).toEqual([1, 0, 1]);
      expect(f.info('e.empty')).toMatchObject({ shape: [0, 4], byteLength: 0 });
      expect((await f.readF64('e.empty')).length).toBe(0);
      expect((await f.readF64('f.scalar'))[0]).toBe(Math.PI);
      expect(Array.from(await f.readF64('g.f16'))).toEqual([1.5, -0.25]);
    } finally {
      await f.close();
    }
  });

  it('accepts chunked sync and async data sources', async () => {
    const path = join(tmp, 'chunks.safetensors');
    async function* gen() {
      yield new Float32Array([1, 2]);
      yield new Float32Array([3]);
    }
    await writeSafetensors(path, [
      { name: 'x', dtype: 'F32', shape: [3], data: gen() },
      { name: 'y', dtype: 'U8', shape: [4], data: [Buffer.from([1, 2]), new Uint8Array([3, 4])] },
    ]);
    const f = await openSafetensors(path);
    expect(Array.from(await f.readF32('x'))).toEqual([1, 2, 3]);
    expect(Array.from(await f.read('y'))).toEqual([1, 2, 3, 4]);
    await f.close();
  });

  it('leaves the previous file intact when the data source fails mid-write', async () => {
    const path = join(tmp, 'atomic.safetensors');
    await writeSafetensors(path, sample());
    const before = await readFile(path);
    async function* failing() {
      yield new Float32Array(1024);
      throw new Error('disk source exploded');
    }
    const err = await expectCode(
      writeSafetensors(path, [
        { name: 'ok', dtype: 'F32', shape: [4], data: new Float32Array(4) },
        { name: 'big', dtype: 'F32', shape: [4096], data: failing() },
      ]),
      'WRITE_FAILED',
      path,
      '"big"',
      'disk source exploded',
    );
    expect((err.cause as Error).message).toBe('disk source exploded');
    expect(await readFile(path)).toEqual(before);
    expect((await readdir(tmp)).filter((f) => f.endsWith('.tmp'))).toEqual([]);
  });

  it('rejects bad input before touching the target', async () => {
    const path = join(tmp, 'never.safetensors');
    await expectCode(
      writeSafetensors(path, [{ name: 'x', dtype: 'F32', shape: [3], data: new Float32Array(2) }]),
      'SHAPE_MISMATCH',
      '"x"',
    );
    await expectCode(
      writeSafetensors(path, [
        { name: 'x', dtype: 'U8', shape: [1], data: Buffer.alloc(1) },
        { name: 'x', dtype: 'U8', shape: [1], data: Buffer.alloc(1) },
      ]),
      'DUPLICATE_TENSOR',
    );
    await expectCode(writeSafetensors(path, [{ name: 'x', dtype: 'F128' as 'F32', shape: [1], data: Buffer.alloc(16) }]), 'BAD_DTYPE');
    async function* short() {
      yield Buffer.alloc(3);
    }
    await expectCode(writeSafetensors(path, [{ name: 's', dtype: 'U8', shape: [4], data: short() }]), 'SHAPE_MISMATCH', '"s"');
    expect(await readdir(tmp)).not.toContain('never.safetensors');
    expect((await readdir(tmp)).filter((f) => f.endsWith('.tmp'))).toEqual([]);
  });
});

describe('malformed files', () => {
  const write = async (name: string, bytes: Buffer) => {
    const p = join(tmp, name);
    await writeFile(p, bytes);
    return p;
  };
  const entry = (dtype: string, shape: number[], begin: number, end: number) => ({ dtype, shape, data_offsets: [begin, end] });

  it.skipIf(!haveFixtures)('truncated files', async () => {
    const full = readFileSync(join(TINY, 'model.safetensors'));
    const cut = await write('cut.safetensors', full.subarray(0, full.length - 100));
    await expectCode(openSafetensors(cut), 'TRUNCATED', cut, 'model.norm.weight');
    await expectCode(openSafetensors(await write('tiny.safetensors', Buffer.from([1, 2, 3]))), 'TRUNCATED');
    await expectCode(openSafetensors(await write('hdr.safetensors', full.subarray(0, 1000))), 'TRUNCATED', 'header length');
  });

  it('bad headers', async () => {
    await expectCode(openSafetensors(await write('json.safetensors', raw('{"a": '))), 'BAD_HEADER', 'JSON');
    await expectCode(openSafetensors(await write('arr.safetensors', raw('[1,2]'))), 'BAD_HEADER');
    await expectCode(openSafetensors(await write('huge.safetensors', raw({}, 0, 1n << 40n))), 'BAD_HEADER');
    await expectCode(
      openSafetensors(await write('shape.safetensors', raw({ t: entry('F32', [-1], 0, 0) }))),
      'BAD_HEADER',
      '"t"',
    );
    await expectCode(
      openSafetensors(await write('meta.safetensors', raw({ __metadata__: { a: 1 } }))),
      'BAD_HEADER',
      '__metadata__',
    );
    const utf = Buffer.concat([Buffer.from('{"'), Buffer.from([0xff]), Buffer.from('":1}')]);
    await expectCode(openSafetensors(await write('utf.safetensors', raw(utf))), 'BAD_HEADER', 'UTF-8');
  });

  it('bad dtype', async () => {
    await expectCode(
      openSafetensors(await write('dtype.safetensors', raw({ w: entry('F128', [1], 0, 16) }, 16))),
      'BAD_DTYPE',
      '"w"',
      'F128',
    );
  });

  it('byte size not matching shape', async () => {
    await expectCode(
      openSafetensors(await write('size.safetensors', raw({ w: entry('F32', [3], 0, 8) }, 8))),
      'SHAPE_MISMATCH',
      '"w"',
    );
  });

  it('overlapping or reversed offsets', async () => {
    const p = await write('overlap.safetensors', raw({ a: entry('F32', [4], 0, 16), b: entry('F32', [2], 8, 16) }, 16));
    await expectCode(openSafetensors(p), 'BAD_OFFSETS', p, '"b"', '"a"');
    await expectCode(openSafetensors(await write('rev.safetensors', raw({ a: entry('U8', [0], 8, 4) }, 8))), 'BAD_OFFSETS');
    // touching ranges and empty tensors are fine
    const ok = await openSafetensors(
      await write('touch.safetensors', raw({ a: entry('U8', [4], 0, 4), z: entry('U8', [0], 2, 2), b: entry('U8', [4], 4, 8) }, 8)),
    );
    expect(ok.names).toEqual(['a', 'z', 'b']);
    await ok.close();
  });

  it.skipIf(!haveFixtures)('missing tensor, expectation mismatches, use after close', async () => {
    const path = join(TINY, 'model.safetensors');
    const f = await openSafetensors(path);
    await expectCode(f.read('model.layers.7.mlp.up_proj.weight'), 'MISSING_TENSOR', path, 'model.layers.7.mlp.up_proj.weight');
    expect(() => f.info('nope')).toThrow(SafetensorsError);
    await expectCode(f.read('model.norm.weight', { shape: [256] }), 'SHAPE_MISMATCH', 'model.norm.weight', '[128]');
    await expectCode(f.read('model.norm.weight', { dtype: 'BF16' }), 'DTYPE_MISMATCH');
    await expectCode(f.readF32('model.norm.weight', { shape: [128] }).then(() => f.readArray('x')), 'MISSING_TENSOR');
    await f.close();
    await expectCode(f.read('model.norm.weight'), 'CLOSED');
    await expectCode(openSafetensors(join(tmp, 'does-not-exist.safetensors')), 'NOT_FOUND');
  });
});

describe('checkpoints', () => {
  it.skipIf(!haveFixtures)('opens a directory holding model.safetensors', async () => {
    const ck = await openCheckpoint(TINY);
    expect(ck.has('lm_head.weight')).toBe(true);
    expect(ck.tensors).toHaveLength(21);
    await ck.close();
  });

  it.skipIf(!haveFixtures)('opens a sharded checkpoint through its index', async () => {
    const dir = await mkdtemp(join(tmp, 'sharded-'));
    const src = await openSafetensors(join(TINY, 'model.safetensors'));
    const names = src.names;
    const shards = [names.slice(0, 8), names.slice(8)];
    const weightMap: Record<string, string> = {};
    for (const [i, group] of shards.entries()) {
      const file = `model-0000${i + 1}-of-00002.safetensors`;
      const tensors: TensorToWrite[] = [];
      for (const name of group) {
        const t = src.info(name);
        tensors.push({ name, dtype: t.dtype, shape: t.shape, data: await src.read(name) });
        weightMap[name] = file;
      }
      await writeSafetensors(join(dir, file), tensors, { format: 'pt' });
    }
    await writeFile(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: 3549696 }, weight_map: weightMap }));

    const ck = await openCheckpoint(dir);
    try {
      expect(ck.metadata).toEqual({ total_size: 3549696 });
      expect(new Set(ck.names)).toEqual(new Set(names));
      expect(ck.info('model.norm.weight').file).toBe(join(dir, 'model-00002-of-00002.safetensors'));
      expect(ck.info(names[0]!).file).toBe(join(dir, 'model-00001-of-00002.safetensors'));
      for (const name of [names[0]!, names[8]!, 'model.norm.weight']) {
        expect((await ck.read(name)).equals(await src.read(name))).toBe(true);
      }
      await expectCode(ck.read('absent'), 'MISSING_TENSOR', 'model.safetensors.index.json');
    } finally {
      await ck.close();
      await src.close();
    }

    // index naming a tensor its shard lacks
    await writeFile(join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { ...weightMap, ghost: 'model-00001-of-00002.safetensors' } }));
    await expectCode(openCheckpoint(dir), 'MISSING_TENSOR', '"ghost"');
    // shard paths must stay beside the index
    await writeFile(join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { a: '../x.safetensors' } }));
    await expectCode(openCheckpoint(dir), 'BAD_INDEX');
    await writeFile(join(dir, 'model.safetensors.index.json'), '{"metadata": {}}');
    await expectCode(openCheckpoint(dir), 'BAD_INDEX', 'weight_map');
  });

  it('reports a directory with no checkpoint', async () => {
    const dir = await mkdtemp(join(tmp, 'empty-'));
    await expectCode(openCheckpoint(dir), 'NOT_FOUND', 'model.safetensors');
  });
});
