// Finite-difference checks of the chunked backward in f64, including the path through the
// window max c_n, and the limits the SPEC names.
import { describe, expect, it } from 'vitest';
import { disposeAll, hybridAttention, hybridAttentionBackward, Tensor } from '../../lib/index.js';
import type { HybridAttentionOptions } from '../../lib/index.js';
import { Rng, relErr } from '../helpers/fixtures.js';
import { randomHybrid, type HostHybrid } from '../helpers/hybrid.js';

type Name = 'q' | 'k' | 'v' | 'fq' | 'fk' | 'gamma';

async function loss(h: HostHybrid, options: HybridAttentionOptions): Promise<number> {
  const t = (n: 'q' | 'k' | 'v' | 'fq' | 'fk') => Tensor.fromArray(h[n], h.shapes[n], { dtype: 'f64' });
  const inputs = { q: t('q'), k: t('k'), v: t('v'), fq: t('fq'), fk: t('fk'), gamma: h.gamma, ...(h.keep ? { keep: h.keep } : {}) };
  const fwd = hybridAttention(inputs, options);
  const y = await fwd.y.toArray();
  disposeAll([inputs, fwd]);
  let s = 0;
  for (let i = 0; i < y.length; i++) s += y[i]! * h.dy[i]!;
  return s;
}

async function analytic(h: HostHybrid, options: HybridAttentionOptions) {
  const t = (n: 'q' | 'k' | 'v' | 'fq' | 'fk' | 'dy') => Tensor.fromArray(h[n], h.shapes[n], { dtype: 'f64' });
  const inputs = { q: t('q'), k: t('k'), v: t('v'), fq: t('fq'), fk: t('fk'), gamma: h.gamma, ...(h.keep ? { keep: h.keep } : {}) };
  const dy = t('dy');
  const fwd = hybridAttention(inputs, options);
  const g = hybridAttentionBackward(fwd.saved, dy);
  const out = {
    q: await g.dq.toArray(),
    k: await g.dk.toArray(),
    v: await g.dv.toArray(),
    fq: await g.dfq.toArray(),
    fk: await g.dfk.toArray(),
    gamma: await g.dgamma.toArray(),
  };
  disposeAll([inputs, dy, fwd, g]);
  return out;
}

const cases: { name: string; options: HybridAttentionOptions; keep?: boolean }[] = [
  { name: 'hybrid sliding', options: { window: 4, mode: 'hybrid' } },
  { name: 'hybrid terraced, affine lambda, keep mask', options: { window: 3, mode: 'hybrid', geometry: 'terraced', lambda: 'affine' }, keep: true },
  { name: 'overlap sliding', options: { window: 5, mode: 'overlap' } },
  { name: 'swa terraced', options: { window: 4, mode: 'swa', geometry: 'terraced' } },
  { name: 'la', options: { window: 3, mode: 'la' } },
  { name: 'la-full', options: { window: 3, mode: 'la-full' } },
  { name: 'sinks', options: { window: 3, mode: 'sinks', sinks: 3 } },
];

describe('finite differences (f64)', () => {
  for (const c of cases)
    it(c.name, async () => {
      const h = randomHybrid({ B: 1, H: 2, Hkv: 1, T: 13, d: 4, dv: 3, F: 5, seed: 7, withKeep: c.keep ?? false });
      if (h.keep) h.keep.set([1, 0]);
      const grads = await analytic(h, c.options);
      const rng = new Rng(99);
      const eps = 1e-6;
      for (const name of ['q', 'k', 'v', 'fq', 'fk', 'gamma'] as Name[]) {
        const x = h[name];
        const picks = name === 'gamma' ? [0, 1] : Array.from({ length: 12 }, () => rng.int(0, x.length - 1));
        const numeric: number[] = [];
        const wanted: number[] = [];
        for (const i of picks) {
          const orig = x[i]!;
          x[i] = orig + eps;
          const plus = await loss(h, c.options);
          x[i] = orig - eps;
          const minus = await loss(h, c.options);
          x[i] = orig;
          numeric.push((plus - minus) / (2 * eps));
          wanted.push(grads[name][i]!);
        }
        expect(relErr(wanted, numeric, 1e-3), `${c.name} d${name}`).toBeLessThan(1e-6);
      }
    });
});

describe('limits', () => {
  it('gamma -> 0 equals mode la on rows n >= w', async () => {
    const w = 5;
    const h = randomHybrid({ B: 1, H: 2, Hkv: 1, T: 30, d: 8, dv: 8, F: 8, seed: 21 });
    const t = (n: 'q' | 'k' | 'v' | 'fq' | 'fk') => Tensor.fromArray(h[n], h.shapes[n], { dtype: 'f64' });
    const inputs = { q: t('q'), k: t('k'), v: t('v'), fq: t('fq'), fk: t('fk') };
    const tiny = hybridAttention({ ...inputs, gamma: [1e-13, 1e-13] }, { window: w, mode: 'hybrid' });
    const la = hybridAttention({ ...inputs, gamma: h.gamma }, { window: w, mode: 'la' });
    const [a, b] = [await tiny.y.toArray(), await la.y.toArray()];
    const T = 30;
    const dv = 8;
    for (let head = 0; head < 2; head++) {
      const rows = (x: ArrayLike<number>) => Array.from(x).slice((head * T + w) * dv, (head + 1) * T * dv);
      expect(relErr(rows(a), rows(b))).toBeLessThan(1e-9);
    }
    disposeAll([inputs, tiny, la]);
  });

  it('swa equals a plain windowed softmax', async () => {
    const [T, d, dv, w] = [17, 4, 3, 5];
    const h = randomHybrid({ B: 1, H: 1, Hkv: 1, T, d, dv, F: 2, seed: 5 });
    const t = (n: 'q' | 'k' | 'v' | 'fq' | 'fk') => Tensor.fromArray(h[n], h.shapes[n], { dtype: 'f64' });
    const inputs = { q: t('q'), k: t('k'), v: t('v'), fq: t('fq'), fk: t('fk'), gamma: [0.3] };
    const out = hybridAttention(inputs, { window: w, mode: 'swa' });
    const y = await out.y.toArray();
    const want = new Float64Array(T * dv);
    for (let n = 0; n < T; n++) {
      const lo = Math.max(0, n - w + 1);
      const s: number[] = [];
      for (let i = lo; i <= n; i++) {
        let dot = 0;
        for (let j = 0; j < d; j++) dot += h.q[n * d + j]! * h.k[i * d + j]!;
        s.push(dot / Math.sqrt(d));
      }
      const m = Math.max(...s);
      const e = s.map((x) => Math.exp(x - m));
      const z = e.reduce((a, b) => a + b, 0);
      for (let i = lo; i <= n; i++) for (let j = 0; j < dv; j++) want[n * dv + j]! += (e[i - lo]! / z) * h.v[i * dv + j]!;
    }
    expect(relErr(y, want)).toBeLessThan(1e-12);
    disposeAll([inputs, out]);
  });

  it('rows with an empty LA set output 0 in mode la, never NaN', async () => {
    const h = randomHybrid({ B: 1, H: 1, Hkv: 1, T: 10, d: 4, dv: 4, F: 4, seed: 6 });
    const t = (n: 'q' | 'k' | 'v' | 'fq' | 'fk') => Tensor.fromArray(h[n], h.shapes[n], { dtype: 'f64' });
    const inputs = { q: t('q'), k: t('k'), v: t('v'), fq: t('fq'), fk: t('fk'), gamma: [0.5] };
    const out = hybridAttention(inputs, { window: 4, mode: 'la' });
    const y = await out.y.toArray();
    expect(Array.from(y.slice(0, 3 * 4)).every((x) => x === 0)).toBe(true); // rows 0..2 have Lin = {}
    expect(Array.from(y.slice(3 * 4)).some((x) => x !== 0)).toBe(true);
    expect(Array.from(y).every(Number.isFinite)).toBe(true);
    disposeAll([inputs, out]);
  });
});

describe('LA share of the normaliser', () => {
  it('is 0 for swa, 1 for la on rows past the window, and in between for the hybrid', async () => {
    const { laShare } = await import('../../lib/index.js');
    const w = 4;
    const h = randomHybrid({ B: 2, H: 2, Hkv: 1, T: 20, d: 4, dv: 4, F: 4, seed: 8 });
    const t = (n: 'q' | 'k' | 'v' | 'fq' | 'fk') => Tensor.fromArray(h[n], h.shapes[n], { dtype: 'f64' });
    const inputs = { q: t('q'), k: t('k'), v: t('v'), fq: t('fq'), fk: t('fk'), gamma: [0.5, 0.01] };
    const share = async (mode: 'swa' | 'la' | 'hybrid') => {
      const out = hybridAttention(inputs, { window: w, mode });
      const s = await laShare(out.stats, w);
      out.dispose();
      return s;
    };
    const swa = await share('swa');
    expect(Array.from(swa.mean)).toEqual([0, 0]);
    const la = await share('la');
    expect(Array.from(la.late)).toEqual([1, 1]);
    expect(Array.from(la.early).every(Number.isNaN)).toBe(true); // no LA set and no window in mode la before w
    const hybrid = await share('hybrid');
    expect(Array.from(hybrid.early)).toEqual([0, 0]); // n < w: the window holds the whole prefix
    for (const x of hybrid.late) expect(x > 0 && x < 1).toBe(true);
    expect(hybrid.late[1]!).toBeGreaterThan(hybrid.late[0]!); // smaller gamma, larger LA share
    disposeAll(inputs);
  });
});
