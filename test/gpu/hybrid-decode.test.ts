// CUDA recurrent decode against the CPU f64 reference: prefill(T0) + single steps (and the
// parallel state build, multi-token and ragged steps) equal the parallel form within the SPEC
// tolerance rule, every mode, both geometries, GQA, keep, both lambdas, T0 in {0, 1, w-1, w,
// random}; statistics against the CPU f64 decode; a state saved on the GPU continues on the CPU.
// Outputs are poisoned (NaN) before each kernel, so an unwritten element fails.
process.env.HYBRID_ATTENTION_POISON = '1';
import { describe, expect, it } from 'vitest';
import { DisposedError, HybridDecodeState, InvalidArgumentError, Tensor, disposeAll, hybridAttention, hybridAttentionNaive } from '../../lib/index.js';
import type { DType, DecodeOptions, HybridMode, WindowGeometry } from '../../lib/index.js';
import { randomHybrid, type HostHybrid, type HybridCase } from '../helpers/hybrid.js';
import { gpuAvailable } from './gpu-env.js';

type Case = HybridCase & { w: number; sinks: number };
type Dev = 'cpu' | 'cuda';
const UNIT: Record<string, number> = { f32: 2 ** -23, bf16: 2 ** -8, f16: 2 ** -11 };
const MODES: HybridMode[] = ['hybrid', 'swa', 'la', 'la-full', 'overlap', 'sinks', 'none'];

interface Out {
  y: Float64Array; // [B, H, T, dv] (the parallel layout)
  c: Float64Array; // [B, H, T]
  denSwa: Float64Array;
  denLa: Float64Array;
}

/** A tensor of `dtype` on `device` from host f64 data. */
function tensor(x: ArrayLike<number>, shape: number[], dtype: DType, device: Dev): Tensor {
  const host = Tensor.fromArray(Float64Array.from(x), shape, { dtype: 'f64' });
  const cast = host.cast(dtype);
  if (cast !== host) host.dispose();
  if (device === 'cpu') return cast;
  const moved = cast.to(device);
  if (moved !== cast) cast.dispose();
  return moved;
}

/** Rounds host inputs to `dtype` (what the GPU sees). */
async function rounded(h: HostHybrid, dtype: DType): Promise<HostHybrid> {
  const r = { ...h };
  for (const name of ['q', 'k', 'v', 'fq', 'fk'] as const) {
    const t = Tensor.fromArray(h[name], h.shapes[name], { dtype: 'f64' });
    const c = t.cast(dtype);
    r[name] = Float64Array.from(await c.toArray());
    disposeAll([t, c]);
  }
  return r;
}

/** Rows [t0, t1) of x [B, heads, T, dim] packed token-major [B * (t1 - t0), heads, dim]. */
function packRows(x: Float64Array, B: number, heads: number, T: number, dim: number, t0: number, t1: number): Float64Array {
  const n = t1 - t0;
  const out = new Float64Array(B * n * heads * dim);
  for (let b = 0; b < B; b++)
    for (let t = t0; t < t1; t++)
      for (let h = 0; h < heads; h++)
        out.set(x.subarray(((b * heads + h) * T + t) * dim, ((b * heads + h) * T + t + 1) * dim), ((b * n + (t - t0)) * heads + h) * dim);
  return out;
}

/** Rows [0, t0) in the parallel layout [B, heads, t0, dim]. */
function prefixRows(x: Float64Array, B: number, heads: number, T: number, dim: number, t0: number): Float64Array {
  const out = new Float64Array(B * heads * t0 * dim);
  for (let bh = 0; bh < B * heads; bh++) out.set(x.subarray(bh * T * dim, bh * T * dim + t0 * dim), bh * t0 * dim);
  return out;
}

function emptyOut(c: Case): Out {
  const rows = c.B * c.H * c.T;
  return { y: new Float64Array(rows * c.dv).fill(NaN), c: new Float64Array(rows).fill(NaN), denSwa: new Float64Array(rows).fill(NaN), denLa: new Float64Array(rows).fill(NaN) };
}

function createState(c: Case, geometry: WindowGeometry, dtype: DType, device: Dev): HybridDecodeState {
  return HybridDecodeState.create(
    { heads: c.H, kvHeads: c.Hkv, headDim: c.d, valueDim: c.dv, featureDim: c.F, window: c.w, sinks: c.sinks, geometry, dtype, device },
    c.B,
  );
}

function common(h: HostHybrid, c: Case, dtype: DType, device: Dev) {
  const acc = dtype === 'f64' ? 'f64' : 'f32';
  const gamma = Tensor.fromArray(h.gamma, [c.H], { dtype: acc, device });
  const keep = h.keep ? Tensor.fromArray(h.keep, [c.B, c.H], { dtype: acc, device }) : undefined;
  return { gamma, ...(keep ? { keep } : {}) };
}

/** Prefill rows [0, t0) into `out` (via 'prefill' with outputs, or 'state': parallel build, no outputs). */
async function prefillInto(state: HybridDecodeState, h: HostHybrid, c: Case, dtype: DType, device: Dev, options: DecodeOptions, t0: number, via: 'prefill' | 'state', out: Out) {
  const mk = (name: 'q' | 'k' | 'v' | 'fq' | 'fk', heads: number, dim: number) => tensor(prefixRows(h[name], c.B, heads, c.T, dim, t0), [c.B, heads, t0, dim], dtype, device);
  const toks = { q: mk('q', c.H, c.d), k: mk('k', c.Hkv, c.d), v: mk('v', c.Hkv, c.dv), fq: mk('fq', c.H, c.F), fk: mk('fk', c.H, c.F) };
  const cm = common(h, c, dtype, device);
  if (via === 'state') {
    state.prefillState(toks);
  } else {
    const p = state.prefill({ ...toks, ...cm }, options);
    const y = await p.y.toArray();
    const st = { c: await p.stats.c.toArray(), denSwa: await p.stats.denSwa.toArray(), denLa: await p.stats.denLa.toArray() };
    for (let bh = 0; bh < c.B * c.H; bh++) {
      out.y.set(y.subarray(bh * t0 * c.dv, (bh + 1) * t0 * c.dv), bh * c.T * c.dv);
      for (const k of ['c', 'denSwa', 'denLa'] as const) out[k].set(st[k].subarray(bh * t0, (bh + 1) * t0), bh * c.T);
    }
    p.dispose();
  }
  disposeAll([toks, cm]);
}

/** Steps rows [t0, t1) in chunks of `chunk` tokens per sequence into `out`. */
async function stepInto(state: HybridDecodeState, h: HostHybrid, c: Case, dtype: DType, device: Dev, options: DecodeOptions, t0: number, t1: number, chunk: number, out: Out) {
  const cm = common(h, c, dtype, device);
  for (let t = t0; t < t1; t += chunk) {
    const e = Math.min(t1, t + chunk);
    const n = e - t;
    const mk = (name: 'q' | 'k' | 'v' | 'fq' | 'fk', heads: number, dim: number) => tensor(packRows(h[name], c.B, heads, c.T, dim, t, e), [c.B * n, heads, dim], dtype, device);
    const toks = { q: mk('q', c.H, c.d), k: mk('k', c.Hkv, c.d), v: mk('v', c.Hkv, c.dv), fq: mk('fq', c.H, c.F), fk: mk('fk', c.H, c.F) };
    const s = state.step({ ...toks, ...cm }, { ...options, tokensPerSeq: n });
    const y = await s.y.toArray();
    const st = { c: await s.stats.c.toArray(), denSwa: await s.stats.denSwa.toArray(), denLa: await s.stats.denLa.toArray() };
    for (let b = 0; b < c.B; b++)
      for (let i = 0; i < n; i++)
        for (let hh = 0; hh < c.H; hh++) {
          const src = (b * n + i) * c.H + hh;
          const dst = (b * c.H + hh) * c.T + t + i;
          out.y.set(y.subarray(src * c.dv, (src + 1) * c.dv), dst * c.dv);
          for (const k of ['c', 'denSwa', 'denLa'] as const) out[k][dst] = st[k][src]!;
        }
    disposeAll([toks, s]);
  }
  disposeAll(cm);
}

async function decode(h: HostHybrid, c: Case, geometry: WindowGeometry, options: DecodeOptions, dtype: DType, device: Dev, t0: number, chunk = 1, via: 'prefill' | 'state' = 'prefill'): Promise<Out> {
  const state = createState(c, geometry, dtype, device);
  const out = emptyOut(c);
  await prefillInto(state, h, c, dtype, device, options, t0, via, out);
  await stepInto(state, h, c, dtype, device, options, t0, c.T, chunk, out);
  expect(await state.positions()).toEqual(new Array(c.B).fill(c.T));
  state.dispose();
  return out;
}

/** y of the parallel form on the CPU (f64 reference or the naive f32 computation). */
async function parallelY(h: HostHybrid, c: Case, geometry: WindowGeometry, options: DecodeOptions, dtype: 'f64' | 'f32', naive: boolean): Promise<Float64Array> {
  const t = (n: 'q' | 'k' | 'v' | 'fq' | 'fk') => tensor(h[n], h.shapes[n], dtype, 'cpu');
  const inputs = { q: t('q'), k: t('k'), v: t('v'), fq: t('fq'), fk: t('fk'), ...common(h, c, dtype, 'cpu') };
  const o = { window: c.w, geometry, sinks: c.sinks, ...options };
  const out = naive ? hybridAttentionNaive(inputs as never, o as never) : hybridAttention(inputs as never, o as never);
  const y = Float64Array.from(await out.y.toArray());
  disposeAll([inputs, out]);
  return y;
}

function maxAbsDiff(a: Float64Array, b: Float64Array, skipRow?: (row: number) => boolean, width = 1): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    if (skipRow && skipRow(Math.floor(i / width))) continue;
    const d = Math.abs(a[i]! - b[i]!);
    m = Number.isNaN(d) ? Infinity : Math.max(m, d);
  }
  return m;
}
const maxAbs = (a: Float64Array) => a.reduce((m, x) => Math.max(m, Math.abs(x)), 0);

/** The SPEC rule: |gpu - ref| <= 2 |naive_low - ref| (+ rounding of the output) + 8 units. */
function expectWithin(name: string, dtype: DType, gpu: Float64Array, ref: Float64Array, naive: Float64Array, roundOutput: boolean, skip?: (row: number) => boolean, width = 1) {
  const maxRef = maxAbs(ref);
  const naiveErr = maxAbsDiff(naive, ref, skip, width) + (roundOutput ? UNIT[dtype]! * maxRef : 0);
  const gpuErr = maxAbsDiff(gpu, ref, skip, width);
  expect(gpuErr, `${name}: gpu ${gpuErr.toExponential(2)} vs naive ${naiveErr.toExponential(2)} (max |ref| ${maxRef.toExponential(2)})`).toBeLessThanOrEqual(
    2 * naiveErr + 8 * UNIT[dtype]! * Math.max(1, maxRef),
  );
}

const cases: Case[] = [
  { B: 2, H: 4, Hkv: 2, T: 40, d: 32, dv: 32, F: 16, w: 8, sinks: 3, seed: 201, withKeep: true },
  { B: 1, H: 3, Hkv: 1, T: 29, d: 24, dv: 18, F: 10, w: 5, sinks: 4, seed: 202 }, // dv % 4 != 0: scalar S pass
  { B: 1, H: 2, Hkv: 2, T: 19, d: 16, dv: 16, F: 12, w: 1, sinks: 2, seed: 203 },
  { B: 1, H: 2, Hkv: 1, T: 140, d: 128, dv: 128, F: 128, w: 64, sinks: 8, seed: 204, withKeep: true },
  // B*H >= 2 x SMs (132 on an H100/H200): single-token sliding steps run the persistent kernel
  { B: 9, H: 32, Hkv: 8, T: 70, d: 32, dv: 32, F: 32, w: 8, sinks: 4, seed: 205, withKeep: true },
];

describe.skipIf(!gpuAvailable)('CUDA decode vs the CPU f64 reference', () => {
  for (const c of cases)
    for (const dtype of ['f32', 'bf16', 'f16'] as DType[])
      for (const geometry of ['sliding', 'terraced'] as WindowGeometry[])
        it(`${dtype} ${geometry} B=${c.B} H=${c.H}/${c.Hkv} T=${c.T} d=${c.d} dv=${c.dv} F=${c.F} w=${c.w}${c.withKeep ? ' keep' : ''}`, async () => {
          const h = randomHybrid(c);
          const low = await rounded(h, dtype);
          // T0 in {0, 1, w-1, w, random}; the large case keeps the step count down
          const big = c.T > 100;
          const t0s = [...new Set(big ? [c.w - 1, c.w, 2 * c.w + 3] : [0, 1, Math.max(0, c.w - 1), c.w, 13 % c.T, Math.min(c.T, 2 * c.w + 3)])];
          for (const mode of MODES) {
            const options: DecodeOptions = { mode, lambda: mode === 'overlap' ? 'affine' : 'one' };
            const ref = await parallelY(low, c, geometry, options, 'f64', false);
            const naive = await parallelY(low, c, geometry, options, 'f32', true);
            // statistics: the decode's own (hybrid_decode.h), CPU f64 and f32 on the rounded inputs
            const cpuRef = await decode(low, c, geometry, options, 'f64', 'cpu', c.T);
            const cpuLow = await decode(low, c, geometry, options, 'f32', 'cpu', c.T);
            expectWithin(`${mode} cpu-decode y`, 'f32', cpuRef.y, ref, ref, false); // sanity: CPU decode == parallel
            for (const t0 of t0s) {
              const gpu = await decode(h, c, geometry, options, dtype, 'cuda', t0);
              expectWithin(`${mode} T0=${t0} y`, dtype, gpu.y, ref, naive, true);
              for (const s of ['c', 'denSwa', 'denLa'] as const) expectWithin(`${mode} T0=${t0} ${s}`, dtype, gpu[s], cpuRef[s], cpuLow[s], false);
            }
            // the parallel state build (no prefill outputs): rows >= T0 only
            for (const t0 of big ? [2 * c.w + 3] : [c.w, Math.min(c.T - 1, 2 * c.w + 3)]) {
              const gpu = await decode(h, c, geometry, options, dtype, 'cuda', t0, 1, 'state');
              const skip = (row: number) => row % c.T < t0;
              expectWithin(`${mode} state(${t0}) y`, dtype, gpu.y, ref, naive, true, skip, c.dv);
              expectWithin(`${mode} state(${t0}) denLa`, dtype, gpu.denLa, cpuRef.denLa, cpuLow.denLa, false, skip);
            }
          }
        }, 900_000);

  it('multi-token and ragged steps equal single steps (bf16 and f32)', async () => {
    const c: Case = { B: 2, H: 4, Hkv: 2, T: 37, d: 32, dv: 32, F: 16, w: 4, sinks: 3, seed: 210, withKeep: true };
    const h = randomHybrid(c);
    for (const dtype of ['f32', 'bf16'] as DType[])
      for (const geometry of ['sliding', 'terraced'] as WindowGeometry[]) {
        const low = await rounded(h, dtype);
        const options: DecodeOptions = { mode: 'hybrid' };
        const ref = await parallelY(low, c, geometry, options, 'f64', false);
        const naive = await parallelY(low, c, geometry, options, 'f32', true);
        for (const chunk of [3, 11]) {
          const gpu = await decode(h, c, geometry, options, dtype, 'cuda', 2, chunk);
          expectWithin(`${dtype} ${geometry} chunk ${chunk}`, dtype, gpu.y, ref, naive, true);
        }
        // ragged: sequence 0 takes 3 then 1 tokens, sequence 1 takes 1 then 3
        const state = createState(c, geometry, dtype, 'cuda');
        const out = emptyOut(c);
        await prefillInto(state, h, c, dtype, 'cuda', options, 0, 'prefill', out);
        const schedule: [number, number][][] = [
          [[0, 0], [0, 1], [0, 2], [1, 0]],
          [[0, 3], [1, 1], [1, 2], [1, 3]],
        ];
        const cu = [[0, 3, 4], [0, 1, 4]];
        const cm = common(h, c, dtype, 'cuda');
        for (let s = 0; s < 2; s++) {
          const spans = schedule[s]!;
          const rows = (name: 'q' | 'k' | 'v' | 'fq' | 'fk', heads: number, dim: number) => {
            const x: number[] = [];
            for (const [b, t] of spans) for (let hh = 0; hh < heads; hh++) x.push(...h[name].subarray(((b * heads + hh) * c.T + t) * dim, ((b * heads + hh) * c.T + t + 1) * dim));
            return tensor(x, [spans.length, heads, dim], dtype, 'cuda');
          };
          const toks = { q: rows('q', c.H, c.d), k: rows('k', c.Hkv, c.d), v: rows('v', c.Hkv, c.dv), fq: rows('fq', c.H, c.F), fk: rows('fk', c.H, c.F) };
          const o = state.step({ ...toks, ...cm }, { ...options, cuSeqlens: cu[s]! });
          const y = await o.y.toArray();
          spans.forEach(([b, t], row) => {
            for (let hh = 0; hh < c.H; hh++) out.y.set(y.subarray((row * c.H + hh) * c.dv, (row * c.H + hh + 1) * c.dv), ((b * c.H + hh) * c.T + t) * c.dv);
          });
          disposeAll([toks, o]);
        }
        disposeAll(cm);
        expect(await state.positions()).toEqual([4, 4]);
        state.dispose();
        const skip = (row: number) => row % c.T >= 4;
        expectWithin(`${dtype} ${geometry} ragged`, dtype, out.y, ref, naive, true, skip, c.dv);
      }
  }, 600_000);

  it('a state saved on the GPU restores on the CPU and continues identically (f32)', async () => {
    const c: Case = { B: 2, H: 4, Hkv: 2, T: 60, d: 32, dv: 32, F: 16, w: 8, sinks: 3, seed: 220, withKeep: true };
    const h = randomHybrid(c);
    const low = await rounded(h, 'f32');
    for (const geometry of ['sliding', 'terraced'] as WindowGeometry[])
      for (const mode of ['hybrid', 'overlap', 'sinks'] as HybridMode[]) {
        const options: DecodeOptions = { mode, lambda: mode === 'overlap' ? 'affine' : 'one' };
        const ref = await parallelY(low, c, geometry, options, 'f64', false);
        const naive = await parallelY(low, c, geometry, options, 'f32', true);
        const gpuState = createState(c, geometry, 'f32', 'cuda');
        const scratch = emptyOut(c);
        await prefillInto(gpuState, h, c, 'f32', 'cuda', options, 21, 'prefill', scratch);
        await stepInto(gpuState, h, c, 'f32', 'cuda', options, 21, 33, 1, scratch);
        const cpuState = createState(c, geometry, 'f32', 'cpu');
        for (let b = 0; b < c.B; b++) cpuState.restore(b, await gpuState.save(b));
        expect(await cpuState.positions()).toEqual([33, 33]);
        const onCpu = emptyOut(c);
        const onGpu = emptyOut(c);
        await stepInto(cpuState, h, c, 'f32', 'cpu', options, 33, c.T, 1, onCpu);
        await stepInto(gpuState, h, c, 'f32', 'cuda', options, 33, c.T, 1, onGpu);
        const skip = (row: number) => row % c.T < 33;
        expectWithin(`${geometry} ${mode} cpu continuation`, 'f32', onCpu.y, ref, naive, true, skip, c.dv);
        expectWithin(`${geometry} ${mode} gpu continuation`, 'f32', onGpu.y, ref, naive, true, skip, c.dv);
        // and back: the CPU state restores on the GPU
        const back = createState(c, geometry, 'f32', 'cuda');
        for (let b = 0; b < c.B; b++) back.restore(b, await cpuState.save(b));
        expect(await back.positions()).toEqual([c.T, c.T]);
        disposeAll([gpuState, cpuState, back]);
      }
  }, 600_000);

  it('a step before prefill is a typed error', () => {
    const c: Case = { B: 1, H: 2, Hkv: 2, T: 4, d: 8, dv: 8, F: 4, w: 2, sinks: 1, seed: 230 };
    const h = randomHybrid(c);
    const state = createState(c, 'sliding', 'bf16', 'cuda');
    const mk = (name: 'q' | 'k' | 'v' | 'fq' | 'fk', heads: number, dim: number) => tensor(packRows(h[name], 1, heads, c.T, dim, 0, 1), [1, heads, dim], 'bf16', 'cuda');
    const toks = { q: mk('q', c.H, c.d), k: mk('k', c.Hkv, c.d), v: mk('v', c.Hkv, c.dv), fq: mk('fq', c.H, c.F), fk: mk('fk', c.H, c.F) };
    expect(() => state.step({ ...toks, gamma: h.gamma })).toThrow(InvalidArgumentError);
    disposeAll([toks, state]);
  });
});

describe.skipIf(!gpuAvailable)('CUDA-graph decode steps', () => {
  // N replays of a captured step equal N eager steps bit for bit (same kernel, same inputs),
  // outputs, statistics, positions and the state bytes; new tokens go in through replay(tokens).
  const graphCases: (Case & { geometry: WindowGeometry; mode: HybridMode; dtype: DType })[] = [
    { B: 2, H: 4, Hkv: 2, T: 40, d: 32, dv: 32, F: 16, w: 4, sinks: 3, seed: 240, withKeep: true, geometry: 'sliding', mode: 'hybrid', dtype: 'bf16' },
    { B: 2, H: 4, Hkv: 2, T: 40, d: 32, dv: 32, F: 16, w: 4, sinks: 3, seed: 241, geometry: 'terraced', mode: 'overlap', dtype: 'f32' },
    { B: 3, H: 8, Hkv: 4, T: 160, d: 128, dv: 128, F: 128, w: 64, sinks: 8, seed: 242, geometry: 'sliding', mode: 'hybrid', dtype: 'bf16' },
  ];
  for (const c of graphCases)
    it(`${c.dtype} ${c.geometry} ${c.mode} B=${c.B} H=${c.H}/${c.Hkv} d=${c.d} w=${c.w}: N replays == N eager steps`, async () => {
      const h = randomHybrid(c);
      const options: DecodeOptions = { mode: c.mode, lambda: c.mode === 'overlap' ? 'affine' : 'one' };
      const t0 = 2 * c.w + 3;
      const N = c.T - t0;
      const eager = createState(c, c.geometry, c.dtype, 'cuda');
      const graphed = createState(c, c.geometry, c.dtype, 'cuda');
      const scratch = emptyOut(c);
      for (const s of [eager, graphed]) await prefillInto(s, h, c, c.dtype, 'cuda', options, t0, 'state', scratch);
      expect(Buffer.from(await eager.save(0)).equals(Buffer.from(await graphed.save(0)))).toBe(true);
      const cm = common(h, c, c.dtype, 'cuda');
      const tokensAt = (t: number) => {
        const mk = (name: 'q' | 'k' | 'v' | 'fq' | 'fk', heads: number, dim: number) => tensor(packRows(h[name], c.B, heads, c.T, dim, t, t + 1), [c.B, heads, dim], c.dtype, 'cuda');
        return { q: mk('q', c.H, c.d), k: mk('k', c.Hkv, c.d), v: mk('v', c.Hkv, c.dv), fq: mk('fq', c.H, c.F), fk: mk('fk', c.H, c.F) };
      };
      // the graph reads its own token tensors; replay(tokens) copies each step's tokens into them
      const inputs = tokensAt(t0);
      const graph = graphed.captureStep({ ...inputs, ...cm }, options);
      expect(await graphed.positions()).toEqual(new Array(c.B).fill(t0)); // capturing runs nothing
      for (let i = 0; i < N; i++) {
        const toks = tokensAt(t0 + i);
        const e = eager.step({ ...toks, ...cm }, options);
        const g = graph.replay(i === 0 ? {} : toks);
        const [ey, gy] = [await e.y.toArray(), await g.y.toArray()];
        expect(Buffer.from(gy.buffer, gy.byteOffset, gy.byteLength).equals(Buffer.from(ey.buffer, ey.byteOffset, ey.byteLength)), `y at step ${i}`).toBe(true);
        for (const s of ['c', 'denSwa', 'denLa'] as const) expect(Array.from(await g.stats[s].toArray()), `${s} at step ${i}`).toEqual(Array.from(await e.stats[s].toArray()));
        disposeAll([toks, e]);
      }
      expect(await graphed.positions()).toEqual(new Array(c.B).fill(c.T));
      expect(await eager.positions()).toEqual(new Array(c.B).fill(c.T));
      for (let b = 0; b < c.B; b++) expect(Buffer.from(await graphed.save(b)).equals(Buffer.from(await eager.save(b))), `state ${b}`).toBe(true);
      graph.dispose();
      expect(graph.disposed).toBe(true);
      expect(() => graph.replay()).toThrow(DisposedError);
      disposeAll([inputs, cm, eager, graphed]);
    }, 600_000);

  it('capture errors are typed; the graph outlives the disposed state and token tensors', async () => {
    const c: Case = { B: 2, H: 2, Hkv: 1, T: 12, d: 16, dv: 16, F: 8, w: 2, sinks: 1, seed: 250 };
    const h = randomHybrid(c);
    const state = createState(c, 'sliding', 'bf16', 'cuda');
    const mk = (name: 'q' | 'k' | 'v' | 'fq' | 'fk', heads: number, dim: number) => tensor(packRows(h[name], c.B, heads, c.T, dim, 5, 6), [c.B, heads, dim], 'bf16', 'cuda');
    const toks = { q: mk('q', c.H, c.d), k: mk('k', c.Hkv, c.d), v: mk('v', c.Hkv, c.dv), fq: mk('fq', c.H, c.F), fk: mk('fk', c.H, c.F) };
    expect(() => state.captureStep({ ...toks, gamma: h.gamma })).toThrow(InvalidArgumentError); // not prefilled
    await prefillInto(state, h, c, 'bf16', 'cuda', {}, 5, 'state', emptyOut(c));
    expect(() => state.captureStep({ ...toks, gamma: h.gamma }, { cuSeqlens: [0, 1, 2] } as never)).toThrow(InvalidArgumentError);
    const wrong = tensor(new Float64Array(c.B * c.H * c.d), [c.B, c.H, c.d], 'f16', 'cuda');
    expect(() => state.captureStep({ ...toks, q: wrong, gamma: h.gamma })).toThrow(InvalidArgumentError);
    const graph = state.captureStep({ ...toks, gamma: h.gamma }); // gamma as numbers: held by the graph
    expect(() => graph.replay({ q: wrong })).toThrow(InvalidArgumentError);
    disposeAll([toks, wrong, state]);
    for (let i = 0; i < 3; i++) graph.replay();
    const y = await graph.y.toArray();
    expect(y.every((x) => Number.isFinite(x))).toBe(true);
    graph.dispose();
    graph.dispose(); // idempotent
  });
});
