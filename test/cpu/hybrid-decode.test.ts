// Recurrent decode equals the parallel form: prefill(T0) followed by T - T0 steps, every mode
// and geometry, in f64 to 1e-10; ragged batches, multi-token steps, save and restore.
import { describe, expect, it } from 'vitest';
import { HybridDecodeState, InvalidArgumentError, NotImplementedError, Tensor, disposeAll, hybridAttention, HYBRID_MODES } from '../../lib/index.js';
import type { DecodeOptions, HybridMode, WindowGeometry } from '../../lib/index.js';
import { relErr } from '../helpers/fixtures.js';
import { randomHybrid, type HostHybrid } from '../helpers/hybrid.js';

const [B, H, Hkv, T, d, dv, F] = [2, 4, 2, 23, 4, 3, 5];

/** Rows [t0, t1) of a [B, heads, T, dim] host array, packed token-major [B * (t1 - t0), heads, dim]. */
function tokens(x: Float64Array, heads: number, dim: number, t0: number, t1: number): Tensor {
  const n = t1 - t0;
  const out = new Float64Array(B * n * heads * dim);
  for (let b = 0; b < B; b++)
    for (let t = t0; t < t1; t++)
      for (let h = 0; h < heads; h++)
        for (let j = 0; j < dim; j++) out[((b * n + (t - t0)) * heads + h) * dim + j] = x[((b * heads + h) * T + t) * dim + j]!;
  return Tensor.fromArray(out, [B * n, heads, dim], { dtype: 'f64' });
}

/** Rows [0, t0) in the parallel layout [B, heads, t0, dim]. */
function prefix(x: Float64Array, heads: number, dim: number, t0: number): Tensor {
  const out = new Float64Array(B * heads * t0 * dim);
  for (let bh = 0; bh < B * heads; bh++) out.set(x.subarray(bh * T * dim, bh * T * dim + t0 * dim), bh * t0 * dim);
  return Tensor.fromArray(out, [B, heads, t0, dim], { dtype: 'f64' });
}

/** y of the parallel form, reordered token-major like the steps produce. */
async function parallel(h: HostHybrid, window: number, geometry: WindowGeometry, options: DecodeOptions) {
  const t = (n: 'q' | 'k' | 'v' | 'fq' | 'fk') => Tensor.fromArray(h[n], h.shapes[n], { dtype: 'f64' });
  const inputs = { q: t('q'), k: t('k'), v: t('v'), fq: t('fq'), fk: t('fk'), gamma: h.gamma, keep: h.keep! };
  const out = hybridAttention(inputs, { window, geometry, sinks: 3, ...options });
  const y = await out.y.toArray();
  disposeAll([inputs, out]);
  return y;
}

async function decode(h: HostHybrid, window: number, geometry: WindowGeometry, options: DecodeOptions, t0: number, chunk: number) {
  const state = HybridDecodeState.create({ heads: H, kvHeads: Hkv, headDim: d, valueDim: dv, featureDim: F, window, sinks: 3, geometry, dtype: 'f64' }, B);
  const y = new Float64Array(B * H * T * dv);
  const common = { gamma: h.gamma, keep: h.keep! };
  const pre = { q: prefix(h.q, H, d, t0), k: prefix(h.k, Hkv, d, t0), v: prefix(h.v, Hkv, dv, t0), fq: prefix(h.fq, H, F, t0), fk: prefix(h.fk, H, F, t0) };
  const p = state.prefill({ ...pre, ...common }, options);
  const py = await p.y.toArray();
  for (let bh = 0; bh < B * H; bh++) y.set(py.subarray(bh * t0 * dv, (bh + 1) * t0 * dv), bh * T * dv);
  disposeAll([pre, p]);
  for (let t = t0; t < T; t += chunk) {
    const t1 = Math.min(T, t + chunk);
    const n = t1 - t;
    const step = { q: tokens(h.q, H, d, t, t1), k: tokens(h.k, Hkv, d, t, t1), v: tokens(h.v, Hkv, dv, t, t1), fq: tokens(h.fq, H, F, t, t1), fk: tokens(h.fk, H, F, t, t1) };
    const s = state.step({ ...step, ...common }, { ...options, tokensPerSeq: n });
    const sy = await s.y.toArray();
    for (let b = 0; b < B; b++)
      for (let i = 0; i < n; i++)
        for (let hh = 0; hh < H; hh++)
          for (let j = 0; j < dv; j++) y[((b * H + hh) * T + t + i) * dv + j] = sy[((b * n + i) * H + hh) * dv + j]!;
    disposeAll([step, s]);
  }
  expect(await state.positions()).toEqual([T, T]);
  state.dispose();
  return y;
}

describe('decode equals the parallel form (f64)', () => {
  for (const geometry of ['sliding', 'terraced'] as WindowGeometry[])
    for (const window of [1, 4])
      it(`${geometry} w=${window}: every mode, T0 in {0, 1, w-1, w, random}`, async () => {
        const h = randomHybrid({ B, H, Hkv, T, d, dv, F, seed: 77, withKeep: true });
        for (const mode of HYBRID_MODES as readonly HybridMode[]) {
          const options = { mode, lambda: mode === 'overlap' ? ('affine' as const) : ('one' as const) };
          const want = await parallel(h, window, geometry, options);
          for (const t0 of [...new Set([0, 1, window - 1, window, 13])]) {
            const got = await decode(h, window, geometry, options, t0, 1);
            expect(relErr(got, want, 1e-3), `${mode} T0=${t0}`).toBeLessThan(1e-10);
          }
        }
      });

  it('multi-token continuation steps equal single steps', async () => {
    const h = randomHybrid({ B, H, Hkv, T, d, dv, F, seed: 78, withKeep: true });
    const want = await parallel(h, 4, 'terraced', { mode: 'hybrid' });
    const got = await decode(h, 4, 'terraced', { mode: 'hybrid' }, 2, 5);
    expect(relErr(got, want, 1e-3)).toBeLessThan(1e-10);
  });
});

describe('decode state handling', () => {
  const config = { heads: H, kvHeads: Hkv, headDim: d, valueDim: dv, featureDim: F, window: 4, dtype: 'f64' as const };

  it('ragged steps: sequences at different positions step together', async () => {
    const h = randomHybrid({ B, H, Hkv, T, d, dv, F, seed: 79, withKeep: true });
    const want = await parallel(h, 4, 'sliding', {});
    const state = HybridDecodeState.create(config, B);
    const empty = { q: prefix(h.q, H, d, 0), k: prefix(h.k, Hkv, d, 0), v: prefix(h.v, Hkv, dv, 0), fq: prefix(h.fq, H, F, 0), fk: prefix(h.fk, H, F, 0) };
    disposeAll([state.prefill({ ...empty, gamma: h.gamma, keep: h.keep! }), empty]);
    // sequence 0 takes 3 tokens then 1; sequence 1 takes 1 then 3 (positions diverge)
    const rowsOf = (x: Float64Array, heads: number, dim: number, spans: [number, number][]) => {
      const parts = spans.map(([b, t]) => Array.from(x.subarray(((b * heads) * T + t) * dim, ((b * heads) * T + t) * dim + dim)));
      void parts;
      const out: number[] = [];
      for (const [b, t] of spans) for (let hh = 0; hh < heads; hh++) out.push(...x.subarray(((b * heads + hh) * T + t) * dim, ((b * heads + hh) * T + t + 1) * dim));
      return Tensor.fromArray(out, [spans.length, heads, dim], { dtype: 'f64' });
    };
    const schedule: [number, number][][] = [
      [[0, 0], [0, 1], [0, 2], [1, 0]],
      [[0, 3], [1, 1], [1, 2], [1, 3]],
    ];
    const cu = [[0, 3, 4], [0, 1, 4]];
    for (let s = 0; s < 2; s++) {
      const spans = schedule[s]!;
      const step = { q: rowsOf(h.q, H, d, spans), k: rowsOf(h.k, Hkv, d, spans), v: rowsOf(h.v, Hkv, dv, spans), fq: rowsOf(h.fq, H, F, spans), fk: rowsOf(h.fk, H, F, spans) };
      const out = state.step({ ...step, gamma: h.gamma, keep: h.keep! }, { cuSeqlens: cu[s]! });
      const y = await out.y.toArray();
      spans.forEach(([b, t], row) => {
        for (let hh = 0; hh < H; hh++) {
          const got = y.subarray((row * H + hh) * dv, (row * H + hh + 1) * dv);
          const ref = want.subarray(((b * H + hh) * T + t) * dv, ((b * H + hh) * T + t + 1) * dv);
          expect(relErr(got, ref, 1e-3)).toBeLessThan(1e-10);
        }
      });
      disposeAll([step, out]);
    }
    expect(await state.positions()).toEqual([4, 4]);
    state.dispose();
  });

  it('save and restore a sequence; a mismatched state is a typed error', async () => {
    const h = randomHybrid({ B, H, Hkv, T, d, dv, F, seed: 80 });
    const a = HybridDecodeState.create(config, B);
    const pre = { q: prefix(h.q, H, d, 9), k: prefix(h.k, Hkv, d, 9), v: prefix(h.v, Hkv, dv, 9), fq: prefix(h.fq, H, F, 9), fk: prefix(h.fk, H, F, 9) };
    disposeAll(a.prefill({ ...pre, gamma: h.gamma }));
    const saved = await a.save(1);
    expect(saved.byteLength).toBe(a.bytesPerSequence);
    const b = HybridDecodeState.create(config, B);
    disposeAll(b.prefill({ ...pre, gamma: h.gamma }));
    const zeros = { q: tokens(new Float64Array(B * H * T * d), H, d, 0, 1) };
    void zeros;
    b.restore(0, saved);
    expect(await b.positions()).toEqual([9, 9]);
    const other = HybridDecodeState.create({ ...config, window: 5 }, 1);
    expect(() => other.restore(0, saved)).toThrow(InvalidArgumentError);
    const corrupt = saved.slice();
    corrupt[0] = 0; // magic
    expect(() => a.restore(0, corrupt)).toThrow(expect.objectContaining({ argument: 'data' }));
    expect(() => a.restore(0, saved.slice(0, 100))).toThrow(InvalidArgumentError);
    expect(() => HybridDecodeState.create({ ...config, window: 0 }, 1)).toThrow(expect.objectContaining({ argument: 'window' }));
    disposeAll([a, b, other, pre, zeros]);
  });
});

describe('decode statistics equal the parallel form', () => {
  it('c, denSwa and denLa of prefill(T) match hybridAttention for every mode, with a keep mask', async () => {
    const h = randomHybrid({ B, H, Hkv, T, d, dv, F, seed: 81, withKeep: true });
    for (const geometry of ['sliding', 'terraced'] as WindowGeometry[])
      for (const mode of HYBRID_MODES as readonly HybridMode[]) {
        const t = (n: 'q' | 'k' | 'v' | 'fq' | 'fk') => Tensor.fromArray(h[n], h.shapes[n], { dtype: 'f64' });
        const inputs = { q: t('q'), k: t('k'), v: t('v'), fq: t('fq'), fk: t('fk') };
        const par = hybridAttention({ ...inputs, gamma: h.gamma, keep: h.keep! }, { window: 4, geometry, mode, sinks: 3 });
        const state = HybridDecodeState.create({ heads: H, kvHeads: Hkv, headDim: d, valueDim: dv, featureDim: F, window: 4, sinks: 3, geometry, dtype: 'f64' }, B);
        const dec = state.prefill({ ...inputs, gamma: h.gamma, keep: h.keep! }, { mode });
        for (const name of ['c', 'denSwa', 'denLa'] as const)
          expect(relErr(await dec.stats[name].toArray(), await par.stats[name].toArray(), 1e-3), `${geometry} ${mode} ${name}`).toBeLessThan(1e-10);
        disposeAll([inputs, par, dec, state]);
      }
  });
});

describe('CUDA-graph capture of a step', () => {
  it('is a typed NotImplementedError on the CPU (step() is the CPU path)', async () => {
    const [B1, H1, d1, F1] = [1, 2, 4, 3];
    const state = HybridDecodeState.create({ heads: H1, kvHeads: H1, headDim: d1, valueDim: d1, featureDim: F1, window: 2, dtype: 'f32' }, B1);
    const t = (heads: number, dim: number) => Tensor.fromArray(new Float32Array(B1 * heads * dim).fill(0.1), [B1, heads, dim], { dtype: 'f32' });
    const toks = { q: t(H1, d1), k: t(H1, d1), v: t(H1, d1), fq: t(H1, F1), fk: t(H1, F1) };
    expect(() => state.captureStep({ ...toks, gamma: [0.5, 0.5] })).toThrow(NotImplementedError);
    disposeAll([toks, state]);
  });
});
