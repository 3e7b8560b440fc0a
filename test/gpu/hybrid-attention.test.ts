// CUDA hybrid attention against the CPU reference in f64 on fresh random inputs, over a sweep of
// shapes, modes, geometries and dtypes, within the SPEC tolerance rule. Outputs are poisoned
// (NaN) before each kernel, so an unwritten element fails.
process.env.HYBRID_ATTENTION_POISON = '1';
import { describe, expect, it } from 'vitest';
import { Tensor, disposeAll, hybridAttention, hybridAttentionBackward, hybridAttentionNaive, hybridAttentionBackwardNaive } from '../../lib/index.js';
import type { DType, HybridMode, LambdaKind, WindowGeometry } from '../../lib/index.js';
import { randomHybrid, type HostHybrid, type HybridCase } from '../helpers/hybrid.js';
import { gpuAvailable } from './gpu-env.js';

const NAMES = ['y', 'c', 'denSwa', 'denLa', 'dq', 'dk', 'dv', 'dfq', 'dfk', 'dgamma'] as const;
type Out = Record<(typeof NAMES)[number], Float64Array>;

async function collect(fwd: ReturnType<typeof hybridAttention>, grads: ReturnType<typeof hybridAttentionBackward>): Promise<Out> {
  const f = async (t: Tensor) => Float64Array.from(await t.toArray());
  return {
    y: await f(fwd.y),
    c: await f(fwd.stats.c),
    denSwa: await f(fwd.stats.denSwa),
    denLa: await f(fwd.stats.denLa),
    dq: await f(grads.dq),
    dk: await f(grads.dk),
    dv: await f(grads.dv),
    dfq: await f(grads.dfq),
    dfk: await f(grads.dfk),
    dgamma: await f(grads.dgamma),
  };
}

/** Runs the op on `device` in `dtype` from host data (rounded to dtype first when `round`). */
async function run(h: HostHybrid, options: object, dtype: DType, device: 'cpu' | 'cuda', naive = false): Promise<Out> {
  const acc = dtype === 'f64' ? 'f64' : 'f32';
  const make = (name: 'q' | 'k' | 'v' | 'fq' | 'fk' | 'dy') => {
    const host = Tensor.fromArray(h[name], h.shapes[name], { dtype: 'f64' });
    const cast = host.cast(dtype);
    const moved = device === 'cpu' ? cast : cast.to(device);
    if (moved !== cast) cast.dispose();
    host.dispose();
    return moved;
  };
  const t = { q: make('q'), k: make('k'), v: make('v'), fq: make('fq'), fk: make('fk') };
  const dy = make('dy');
  const gamma = Tensor.fromArray(h.gamma, [h.gamma.length], { dtype: acc, device });
  const keep = h.keep ? Tensor.fromArray(h.keep, [h.shapes.q[0]!, h.shapes.q[1]!], { dtype: acc, device }) : undefined;
  const inputs = { ...t, gamma, ...(keep ? { keep } : {}) };
  const fwd = naive ? hybridAttentionNaive(inputs, options as never) : hybridAttention(inputs, options as never);
  const grads = naive ? hybridAttentionBackwardNaive(fwd.saved, dy) : hybridAttentionBackward(fwd.saved, dy);
  const out = await collect(fwd, grads);
  disposeAll([t, dy, gamma, keep, fwd, grads]);
  return out;
}

/** Rounds host data to `dtype` the way the GPU inputs were rounded. */
async function rounded(h: HostHybrid, dtype: DType): Promise<HostHybrid> {
  const r = { ...h, shapes: h.shapes };
  for (const name of ['q', 'k', 'v', 'fq', 'fk', 'dy'] as const) {
    const t = Tensor.fromArray(h[name], h.shapes[name], { dtype: 'f64' });
    const c = t.cast(dtype);
    r[name] = Float64Array.from(await c.toArray());
    disposeAll([t, c]);
  }
  return r;
}

function err(a: Float64Array, b: Float64Array, scale: number): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    m = Number.isNaN(d) ? Infinity : Math.max(m, d);
  }
  return m / scale;
}

function maxAbs(a: Float64Array): number {
  let m = 0;
  for (const x of a) m = Math.max(m, Math.abs(x));
  return m;
}

const UNIT: Record<string, number> = { f32: 2 ** -23, bf16: 2 ** -8, f16: 2 ** -11 };

const shapes: (HybridCase & { window: number })[] = [
  { B: 2, H: 4, Hkv: 2, T: 200, d: 64, dv: 64, F: 64, seed: 101, window: 64, withKeep: true },
  { B: 1, H: 2, Hkv: 2, T: 333, d: 128, dv: 128, F: 128, seed: 102, window: 64 },
  { B: 1, H: 4, Hkv: 1, T: 100, d: 32, dv: 48, F: 96, seed: 103, window: 16 },
  { B: 1, H: 2, Hkv: 2, T: 77, d: 64, dv: 64, F: 256, seed: 104, window: 1 },
  { B: 1, H: 2, Hkv: 2, T: 50, d: 80, dv: 80, F: 40, seed: 105, window: 100 },
];
const modes: HybridMode[] = ['hybrid', 'swa', 'la', 'la-full', 'overlap', 'sinks', 'none'];

describe.skipIf(!gpuAvailable)('CUDA hybrid attention vs the CPU f64 reference', () => {
  for (const shape of shapes)
    for (const dtype of ['bf16', 'f16', 'f32'] as DType[])
      for (const geometry of ['sliding', 'terraced'] as WindowGeometry[])
        it(`${dtype} T=${shape.T} d=${shape.d} dv=${shape.dv} F=${shape.F} w=${shape.window} H=${shape.H}/${shape.Hkv} ${geometry}${shape.withKeep ? ' keep' : ''}`, async () => {
          const h = randomHybrid(shape);
          const low = await rounded(h, dtype);
          for (const mode of modes) {
            const lambda: LambdaKind = mode === 'overlap' ? 'affine' : 'one';
            const options = { window: shape.window, geometry, mode, lambda, sinks: 5 };
            // reference: f64 on the rounded inputs; "naive low precision": f32 naive on the same
            const [ref, naiveLow, gpu] = await Promise.all([
              run(low, options, 'f64', 'cpu', true),
              run(low, options, 'f32', 'cpu', true),
              run(h, options, dtype, 'cuda'),
            ]);
            for (const name of NAMES) {
              // absolute errors; the small absolute term is 8 units of the inputs' O(1) scale,
              // which covers outputs that vanish analytically (rounding noise of cancelling terms)
              const maxRef = Math.max(...Array.from(ref[name], Math.abs));
              const rounding = ['c', 'denSwa', 'denLa', 'dgamma'].includes(name) ? 0 : UNIT[dtype]! * maxRef;
              const naiveErr = err(naiveLow[name], ref[name], 1) + rounding;
              const gpuErr = err(gpu[name], ref[name], 1);
              expect(gpuErr, `${mode} ${name}: gpu ${gpuErr.toExponential(2)} vs naive ${naiveErr.toExponential(2)} (max |ref| ${maxRef.toExponential(2)})`).toBeLessThanOrEqual(
                2 * naiveErr + 8 * UNIT[dtype]! * Math.max(1, maxRef),
              );
            }
          }
        });
});

// Shapes the tensor-core fast path takes (bf16/f16, d = dv = F in {64, 128}, modes hybrid, swa, la,
// la-full, overlap, sliding w <= 64, terraced w <= 32 or 64): forward and backward both run there,
// including GQA, the keep mask, affine lambda in every mode, T not a multiple of the 64-row chunk
// and lengths whose LA state walks run in several segments (B*H small), up to more than 16.
const fastShapes: (HybridCase & { window: number; geometry: WindowGeometry })[] = [
  { B: 1, H: 4, Hkv: 1, T: 390, d: 128, dv: 128, F: 128, seed: 201, window: 32, geometry: 'sliding', withKeep: true },
  { B: 2, H: 2, Hkv: 2, T: 130, d: 64, dv: 64, F: 64, seed: 202, window: 64, geometry: 'sliding' },
  { B: 1, H: 4, Hkv: 2, T: 301, d: 64, dv: 64, F: 64, seed: 203, window: 32, geometry: 'terraced', withKeep: true },
  { B: 1, H: 2, Hkv: 1, T: 1000, d: 64, dv: 64, F: 64, seed: 204, window: 64, geometry: 'sliding' },
  { B: 1, H: 2, Hkv: 2, T: 200, d: 128, dv: 128, F: 128, seed: 205, window: 64, geometry: 'terraced' },
  // B*H = 1: 19 segments, so more than 16 segment sums: the forward's prefix pass and the backward's scan
  { B: 1, H: 1, Hkv: 1, T: 2400, d: 64, dv: 64, F: 64, seed: 206, window: 64, geometry: 'sliding' },
  // terraced w = 64 (the fused forward's branch without the 5-tile frame) over 10 segments
  { B: 1, H: 1, Hkv: 1, T: 1300, d: 64, dv: 64, F: 64, seed: 207, window: 64, geometry: 'terraced' },
];
const fastModes: HybridMode[] = ['hybrid', 'swa', 'la', 'la-full', 'overlap'];

describe.skipIf(!gpuAvailable)('CUDA hybrid attention fast path (tensor cores) vs the CPU f64 reference', () => {
  for (const shape of fastShapes)
    for (const dtype of ['bf16', 'f16'] as DType[])
      it(`${dtype} T=${shape.T} d=${shape.d} w=${shape.window} H=${shape.H}/${shape.Hkv} ${shape.geometry}${shape.withKeep ? ' keep' : ''}`, async () => {
        const h = randomHybrid(shape);
        const low = await rounded(h, dtype);
        for (const mode of fastModes)
          for (const lambda of ['one', 'affine'] as LambdaKind[]) {
            const options = { window: shape.window, geometry: shape.geometry, mode, lambda };
            const [ref, naiveLow, gpu] = await Promise.all([
              run(low, options, 'f64', 'cpu', true),
              run(low, options, 'f32', 'cpu', true),
              run(h, options, dtype, 'cuda'),
            ]);
            for (const name of NAMES) {
              const maxRef = maxAbs(ref[name]);
              const rounding = ['c', 'denSwa', 'denLa', 'dgamma'].includes(name) ? 0 : UNIT[dtype]! * maxRef;
              const naiveErr = err(naiveLow[name], ref[name], 1) + rounding;
              const gpuErr = err(gpu[name], ref[name], 1);
              expect(gpuErr, `${mode} ${lambda} ${name}: gpu ${gpuErr.toExponential(2)} vs naive ${naiveErr.toExponential(2)} (max |ref| ${maxRef.toExponential(2)})`).toBeLessThanOrEqual(
                2 * naiveErr + 8 * UNIT[dtype]! * Math.max(1, maxRef),
              );
            }
          }
      });
});
