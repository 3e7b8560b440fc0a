// The chunked state-scan kernel against the quadratic reference over seeded random sweeps, and
// the f32 kernel against f64 under the SPEC tolerance rule.
import { describe, expect, it } from 'vitest';
import {
  disposeAll,
  hybridAttention,
  hybridAttentionBackward,
  hybridAttentionBackwardNaive,
  hybridAttentionNaive,
  HYBRID_MODES,
  WINDOW_GEOMETRIES,
} from '../../lib/index.js';
import type { HybridAttentionOptions, HybridMode, LambdaKind, WindowGeometry } from '../../lib/index.js';
import { relErr } from '../helpers/fixtures.js';
import { hybridTensors, randomHybrid, type HybridCase } from '../helpers/hybrid.js';

const GRADS = ['dq', 'dk', 'dv', 'dfq', 'dfk', 'dgamma'] as const;

async function run(c: HybridCase, options: HybridAttentionOptions, dtype: 'f64' | 'f32', naive: boolean) {
  const host = randomHybrid(c);
  const t = hybridTensors(host, dtype);
  const fwd = naive ? hybridAttentionNaive(t, options) : hybridAttention(t, options);
  const grads = naive ? hybridAttentionBackwardNaive(fwd.saved, t.dy) : hybridAttentionBackward(fwd.saved, t.dy);
  const out: Record<string, ArrayLike<number>> = {
    y: await fwd.y.toArray(),
    c: await fwd.stats.c.toArray(),
    denSwa: await fwd.stats.denSwa.toArray(),
    denLa: await fwd.stats.denLa.toArray(),
  };
  for (const g of GRADS) out[g] = await grads[g].toArray();
  disposeAll([t, fwd, grads]);
  return out;
}

const shapes: (HybridCase & { window: number })[] = [
  { B: 2, H: 2, Hkv: 2, T: 37, d: 8, dv: 8, F: 8, seed: 1, window: 8 }, // T not a multiple of w
  { B: 1, H: 4, Hkv: 2, T: 29, d: 6, dv: 5, F: 12, seed: 2, window: 1 }, // w = 1, GQA 2, F != d, dv != d
  { B: 1, H: 4, Hkv: 1, T: 19, d: 4, dv: 7, F: 3, seed: 3, window: 32 }, // w >= T, GQA 4
  { B: 2, H: 4, Hkv: 1, T: 50, d: 8, dv: 4, F: 6, seed: 4, window: 7, withKeep: true }, // keep mask
];

describe('chunked kernel equals the naive reference (f64)', () => {
  for (const shape of shapes)
    for (const geometry of WINDOW_GEOMETRIES)
      for (const lambda of ['one', 'affine'] as LambdaKind[])
        it(`T=${shape.T} w=${shape.window} H=${shape.H}/${shape.Hkv} ${geometry} lambda=${lambda}${shape.withKeep ? ' keep' : ''}`, async () => {
          for (const mode of HYBRID_MODES) {
            const options = { window: shape.window, geometry, lambda, mode, sinks: 3 };
            const [a, b] = await Promise.all([run(shape, options, 'f64', false), run(shape, options, 'f64', true)]);
            for (const name of Object.keys(b)) {
              // floor: gradients that vanish analytically are rounding noise around 0
              expect(relErr(a[name]!, b[name]!, 1e-2), `${mode} ${name}`).toBeLessThan(1e-10);
            }
          }
        });
});

describe('f32 kernel within the SPEC tolerance rule', () => {
  // error(chunked f32 vs f64) <= 2 x error(naive f32 vs f64) + small absolute term
  const cases: [HybridCase & { window: number }, HybridMode, WindowGeometry][] = [
    [{ B: 1, H: 2, Hkv: 1, T: 300, d: 32, dv: 32, F: 32, seed: 11, window: 16 }, 'hybrid', 'sliding'],
    [{ B: 1, H: 2, Hkv: 2, T: 300, d: 32, dv: 16, F: 64, seed: 12, window: 24 }, 'hybrid', 'terraced'],
    [{ B: 1, H: 2, Hkv: 1, T: 200, d: 16, dv: 16, F: 16, seed: 13, window: 16 }, 'overlap', 'sliding'],
    [{ B: 1, H: 2, Hkv: 1, T: 200, d: 16, dv: 16, F: 16, seed: 14, window: 16 }, 'la-full', 'sliding'],
    [{ B: 1, H: 2, Hkv: 1, T: 200, d: 16, dv: 16, F: 16, seed: 15, window: 16 }, 'swa', 'terraced'],
  ];
  for (const [shape, mode, geometry] of cases)
    it(`${mode} ${geometry} T=${shape.T} d=${shape.d} F=${shape.F}`, async () => {
      const options = { window: shape.window, geometry, mode };
      const [ref, fast, naive32] = await Promise.all([
        run(shape, options, 'f64', true),
        run(shape, options, 'f32', false),
        run(shape, options, 'f32', true),
      ]);
      for (const name of Object.keys(ref)) {
        const scale = Math.max(1e-2, ...Array.from(ref[name]!, Math.abs));
        const errFast = relErr(fast[name]!, ref[name]!, scale);
        const errNaive = relErr(naive32[name]!, ref[name]!, scale);
        expect(errFast, `${name}: fast ${errFast} vs naive-f32 ${errNaive}`).toBeLessThanOrEqual(2 * errNaive + 1e-6);
      }
    });
});
