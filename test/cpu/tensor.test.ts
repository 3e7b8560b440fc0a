// Tensors over native memory: creation, dtypes, read-back, casts, devices, disposal, counters,
// and the execution model (queued work, non-blocking event loop).
import { describe, expect, it } from 'vitest';
import {
  DTypeError,
  DeviceError,
  DisposedError,
  InvalidArgumentError,
  OutOfMemoryError,
  Tensor,
  cudaMemoryStats,
  disposeAll,
  hybridAttention,
  liveTensors,
  resolveDevice,
  runtimeInfo,
  synchronize,
} from '../../lib/index.js';
import { hybridTensors, randomHybrid } from '../helpers/hybrid.js';

describe('Tensor', () => {
  it('round-trips f64, f32 and i32', async () => {
    const a = Tensor.fromArray([1.5, -2.25, 1e-300, 3], [2, 2], { dtype: 'f64' });
    expect(Array.from(await a.toArray())).toEqual([1.5, -2.25, 1e-300, 3]);
    const b = Tensor.fromArray([0.1, 2, 3], [3], { dtype: 'f32' });
    expect(Array.from(await b.toArray())).toEqual(Array.from(Float32Array.from([0.1, 2, 3])));
    const c = Tensor.fromArray([1, -7, 2147483647], [3], { dtype: 'i32' });
    expect(Array.from(await c.toArray())).toEqual([1, -7, 2147483647]);
    expect(a.shape).toEqual([2, 2]);
    expect(a.numel).toBe(4);
    expect(a.byteLength).toBe(32);
    disposeAll([a, b, c]);
  });

  it('rounds to bf16 and f16 to nearest even, as torch does', async () => {
    // 1 + 2^-8 is halfway between bf16 neighbours 1 and 1 + 2^-7: ties to even -> 1
    // 1 + 3 * 2^-9 rounds up to 1 + 2^-7; 65520 rounds to 65536 in bf16
    const x = [1 + 2 ** -8, 1 + 3 * 2 ** -9, -3.140625, 65520, 2 ** -25, 2 ** -24];
    const b = Tensor.fromArray(x, [6], { dtype: 'bf16' });
    // f16 has 10 mantissa bits: 1 + 2^-11 ties to 1, 1 + 3 * 2^-11 ties to the even 1 + 2^-9
    const h = Tensor.fromArray([1 + 2 ** -11, 1 + 3 * 2 ** -11, -3.140625, 65520, 2 ** -25, 2 ** -24], [6], { dtype: 'f16' });
    const bv = Array.from(await b.toArray());
    const hv = Array.from(await h.toArray());
    expect(bv.slice(0, 3)).toEqual([1, 1 + 2 ** -7, -3.140625]);
    expect(bv[3]).toBe(65536);
    expect(hv.slice(0, 3)).toEqual([1, 1 + 2 ** -9, -3.140625]);
    expect(hv[3]).toBe(Infinity);
    expect(hv[4]).toBe(0);
    expect(hv[5]).toBe(2 ** -24); // smallest f16 subnormal survives
    const bits = new Uint16Array((await b.toBytes()).buffer);
    expect(bits[0]).toBe(0x3f80);
    disposeAll([b, h]);
  });

  it('casts between dtypes and reshapes without copying', async () => {
    const a = Tensor.fromArray([1.7, -2.5, 3.5], [3], { dtype: 'f64' });
    const i = a.cast('i32');
    expect(Array.from(await i.toArray())).toEqual([2, -2, 4]);
    const r = a.reshape([3, 1]);
    expect(r.shape).toEqual([3, 1]);
    expect(() => a.reshape([2, 2])).toThrow(InvalidArgumentError);
    disposeAll([a, i]);
  });

  it('rejects bad creation arguments with typed errors', () => {
    expect(() => Tensor.fromArray([1, 2, 3], [2, 2])).toThrow(InvalidArgumentError);
    expect(() => Tensor.fromArray([1, 2], [2], { dtype: 'f8' as never })).toThrow(DTypeError);
    expect(() => Tensor.fromArray([1.5], [1], { dtype: 'i32' })).toThrow(InvalidArgumentError);
    expect(() => Tensor.zeros([2, -1])).toThrow(InvalidArgumentError);
    expect(() => Tensor.zeros([2], { device: 'tpu' as never })).toThrow(InvalidArgumentError);
  });

  it('an allocation beyond host memory is a typed OutOfMemoryError, not a crash', () => {
    expect(() => Tensor.empty([2 ** 40], { dtype: 'f32' })).toThrow(OutOfMemoryError); // 4 TiB
    const ok = Tensor.zeros([4]);
    expect(ok.numel).toBe(4);
    ok.dispose();
  });

  it('a disposed tensor cannot be used', async () => {
    const a = Tensor.fromArray([1, 2], [2]);
    a.dispose();
    expect(a.disposed).toBe(true);
    await expect(a.toArray()).rejects.toBeInstanceOf(DisposedError);
    expect(() => a.cast('f64')).toThrow(DisposedError);
    a.dispose(); // idempotent
  });

  it('10,000 create/dispose cycles leave the live counters where they started', async () => {
    await synchronize('cpu');
    const before = liveTensors('cpu');
    for (let i = 0; i < 10_000; i++) {
      const t = Tensor.fromArray([i, i + 1, i + 2, i + 3], [2, 2]);
      const c = t.cast('f64');
      t.dispose();
      c.dispose();
    }
    await synchronize('cpu'); // queued casts hold their storages until they ran
    expect(liveTensors('cpu')).toEqual(before);
  });

  it('forgotten tensors are freed by the finalizer once garbage-collected', async () => {
    const gc = (globalThis as { gc?: () => void }).gc;
    expect(gc, 'vitest runs with --expose-gc').toBeTypeOf('function');
    await synchronize('cpu');
    const before = liveTensors('cpu');
    (() => {
      for (let i = 0; i < 200; i++) Tensor.zeros([1024], { dtype: 'f64' }); // never disposed
    })();
    expect(liveTensors('cpu').tensors).toBeGreaterThanOrEqual(before.tensors + 200);
    for (let i = 0; i < 10 && liveTensors('cpu').tensors > before.tensors; i++) {
      gc!();
      await new Promise((r) => setTimeout(r, 10)); // finalizers run after the GC pass
    }
    expect(liveTensors('cpu')).toEqual(before);
  });

  it('device selection: cpu always works, cuda throws where unusable, auto falls back with one line', () => {
    expect(resolveDevice('cpu')).toBe('cpu');
    const info = runtimeInfo();
    expect(typeof info.compiledWithCuda).toBe('boolean');
    expect(info.cpuThreads).toBeGreaterThan(0);
    if (!info.cudaAvailable) {
      expect(info.cudaUnavailableReason).toBeTruthy();
      expect(() => resolveDevice('cuda')).toThrow(DeviceError);
      expect(() => cudaMemoryStats()).toThrow(DeviceError);
      const lines: string[] = [];
      expect(resolveDevice('auto', (l) => lines.push(l))).toBe('cpu');
      expect(lines.length).toBeLessThanOrEqual(1);
    }
    const saved = process.env.HYBRID_ATTENTION_DEVICE;
    process.env.HYBRID_ATTENTION_DEVICE = 'cpu';
    expect(resolveDevice('cuda')).toBe('cpu');
    process.env.HYBRID_ATTENTION_DEVICE = 'gpu0';
    expect(() => resolveDevice('auto')).toThrow(DeviceError);
    if (saved === undefined) delete process.env.HYBRID_ATTENTION_DEVICE;
    else process.env.HYBRID_ATTENTION_DEVICE = saved;
  });
});

describe('Tensor.randn', () => {
  it('is counter-based: deterministic per (seed, index), prefix-stable, with the right moments', async () => {
    const a = await Tensor.randn([200_000], { seed: 7, dtype: 'f64' }).toArray();
    const b = await Tensor.randn([1000], { seed: 7, dtype: 'f64' }).toArray();
    expect(Array.from(b)).toEqual(Array.from(a.subarray(0, 1000)));
    const c = await Tensor.randn([1000], { seed: 8, dtype: 'f64' }).toArray();
    expect(Array.from(c)).not.toEqual(Array.from(b));
    let m = 0, v = 0, k4 = 0;
    for (const x of a) m += x;
    m /= a.length;
    for (const x of a) {
      v += (x - m) ** 2;
      k4 += (x - m) ** 4;
    }
    v /= a.length;
    k4 /= a.length * v * v;
    expect(Math.abs(m)).toBeLessThan(0.01); // 4.5 sigma of the mean
    expect(Math.abs(v - 1)).toBeLessThan(0.015);
    expect(Math.abs(k4 - 3)).toBeLessThan(0.06); // normal, not uniform (1.8)
    const s = await Tensor.randn([1000], { seed: 7, dtype: 'f32', mean: 2, std: 0.5 }).toArray();
    s.forEach((x, i) => expect(x).toBe(Math.fround(2 + 0.5 * b[i]!)));
  });

  it('rejects bad arguments by name', () => {
    expect(() => Tensor.randn([2], { seed: -1 })).toThrow(InvalidArgumentError);
    expect(() => Tensor.randn([2], { std: -1 })).toThrow(/std/);
    expect(() => Tensor.randn([2], { dtype: 'bf16' })).toThrow(DTypeError);
    expect(() => Tensor.randn([2], { dtype: 'i32' })).toThrow(DTypeError);
  });
});

describe('execution model', () => {
  it('ops return at once and the event loop keeps running while the CPU works', async () => {
    const h = randomHybrid({ B: 2, H: 4, Hkv: 4, T: 3000, d: 64, dv: 64, F: 64, seed: 3 });
    const t = hybridTensors(h, 'f32');
    const started = performance.now();
    const fwd = hybridAttention(t, { window: 64 });
    const queuedIn = performance.now() - started;
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    const y = await fwd.y.toArray();
    clearInterval(timer);
    const total = performance.now() - started;
    expect(y.length).toBe(2 * 4 * 3000 * 64);
    expect(queuedIn).toBeLessThan(total / 2);
    expect(ticks, `timer ticks during a ${total.toFixed(0)} ms op`).toBeGreaterThan(2);
    disposeAll([t, fwd]);
  });

  it('ops queue in order: a read sees every earlier write', async () => {
    const a = Tensor.fromArray([1, 2, 3], [3], { dtype: 'f64' });
    const chain = [a];
    for (let i = 0; i < 50; i++) chain.push(chain[chain.length - 1]!.cast(i % 2 ? 'f64' : 'f32'));
    expect(Array.from(await chain[chain.length - 1]!.toArray())).toEqual([1, 2, 3]);
    disposeAll(chain);
  });
});
