// Feature maps, the attention-weight transfer loss and causal softmax attention (the teacher):
// golden fixtures in f64, finite differences, an independent reference, and bad input.
import { describe, expect, it } from 'vitest';
import {
  DTypeError,
  InvalidArgumentError,
  Tensor,
  disposeAll,
  featureMap,
  featureMapBackward,
  softmaxAttention,
  softmaxAttentionBackward,
  transferLoss,
  transferLossBackward,
  FEATURE_ACTS,
} from '../../lib/index.js';
import type { FeatureAct, FeatureMapKind } from '../../lib/index.js';
import { Rng, haveFixtures, loadFixture, relErr, toTensor } from '../helpers/fixtures.js';

const f64 = (data: ArrayLike<number>, shape: number[]) => Tensor.fromArray(data, shape, { dtype: 'f64' });
const sumProduct = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!;
  return s;
};

/** Central differences of f at a few random coordinates of x, against `analytic`. */
async function fdCheck(x: Float64Array, f: () => Promise<number>, analytic: ArrayLike<number>, rng: Rng, count = 10): Promise<number> {
  const eps = 1e-6;
  const num: number[] = [];
  const ana: number[] = [];
  for (let c = 0; c < count; c++) {
    const i = rng.int(0, x.length - 1);
    const orig = x[i]!;
    x[i] = orig + eps;
    const plus = await f();
    x[i] = orig - eps;
    const minus = await f();
    x[i] = orig;
    num.push((plus - minus) / (2 * eps));
    ana.push(analytic[i]!);
  }
  return relErr(ana, num, 1e-3);
}

describe.skipIf(!haveFixtures)('golden fixtures (f64)', () => {
  it('Hedgehog feature map with bias: phi, dx, dw, db', async () => {
    const fx = await loadFixture('hybrid/featuremap-hedgehog.safetensors');
    const inputs = { x: toTensor(fx.get('x')!), w: toTensor(fx.get('w')!), b: toTensor(fx.get('b')!) };
    const fwd = featureMap(inputs, { kind: 'hedgehog', act: 'softmax' });
    const g = featureMapBackward(fwd.saved, toTensor(fx.get('dphi')!));
    expect(relErr(await fwd.phi.toArray(), fx.get('phi')!.data)).toBeLessThan(1e-9);
    expect(relErr(await g.dx.toArray(), fx.get('dx')!.data)).toBeLessThan(1e-9);
    expect(relErr(await g.dw!.toArray(), fx.get('dw')!.data)).toBeLessThan(1e-9);
    expect(relErr(await g.db!.toArray(), fx.get('db')!.data)).toBeLessThan(1e-9);
    disposeAll([inputs, fwd, g]);
  });

  it('attention-weight transfer loss: loss, dfq, dfk', async () => {
    const fx = await loadFixture('hybrid/transfer-ce.safetensors');
    const inputs = { q: toTensor(fx.get('q')!), k: toTensor(fx.get('k')!), fq: toTensor(fx.get('fq')!), fk: toTensor(fx.get('fk')!) };
    const { loss, saved } = transferLoss(inputs);
    const g = transferLossBackward(saved);
    expect(relErr(await loss.toArray(), fx.get('loss')!.data)).toBeLessThan(1e-9);
    expect(relErr(await g.dfq.toArray(), fx.get('dfq')!.data)).toBeLessThan(1e-9);
    expect(relErr(await g.dfk.toArray(), fx.get('dfk')!.data)).toBeLessThan(1e-9);
    disposeAll([inputs, loss, g]);
  });
});

describe('feature maps: finite differences for every kind and activation', () => {
  const variants: [FeatureMapKind, FeatureAct, boolean][] = [
    ...FEATURE_ACTS.flatMap((act): [FeatureMapKind, FeatureAct, boolean][] => [
      ['hedgehog', act, true],
      ['hedgehog', act, false],
    ]),
    ['t2r', 'softmax', true],
    ['elu', 'softmax', false],
  ];
  for (const [kind, act, bias] of variants)
    it(`${kind} ${kind === 'hedgehog' ? act : ''} ${bias ? 'with' : 'without'} bias`, async () => {
      const rng = new Rng(31);
      const [B, H, T, d, f] = [2, 2, 5, 4, 3];
      const x = rng.normals(B * H * T * d);
      const w = rng.normals(H * d * f, 0.5);
      const b = rng.normals(H * f, 0.5);
      const out = kind === 'hedgehog' ? 2 * f : kind === 't2r' ? f : d;
      const dphi = rng.normals(B * H * T * out);
      const make = () => ({ x: f64(x, [B, H, T, d]), ...(kind !== 'elu' ? { w: f64(w, [H, d, f]) } : {}), ...(bias ? { b: f64(b, [H, f]) } : {}) });
      const loss = async () => {
        const inputs = make();
        const r = featureMap(inputs, { kind, act });
        const v = sumProduct(await r.phi.toArray(), dphi);
        disposeAll([inputs, r]);
        return v;
      };
      const inputs = make();
      const r = featureMap(inputs, { kind, act });
      const dphiT = f64(dphi, [B, H, T, out]);
      const g = featureMapBackward(r.saved, dphiT);
      expect(await fdCheck(x, loss, await g.dx.toArray(), rng)).toBeLessThan(1e-6);
      if (g.dw) expect(await fdCheck(w, loss, await g.dw.toArray(), rng)).toBeLessThan(1e-6);
      if (g.db) expect(await fdCheck(b, loss, await g.db.toArray(), rng)).toBeLessThan(1e-6);
      disposeAll([inputs, r, dphiT, g]);
    });
});

describe('transfer loss', () => {
  it('matches an independent quadratic computation and finite differences (GQA 2)', async () => {
    const rng = new Rng(41);
    const [B, H, Hkv, T, d, F] = [1, 2, 1, 9, 4, 6];
    const q = rng.normals(B * H * T * d);
    const k = rng.normals(B * Hkv * T * d);
    const fq = Float64Array.from(rng.normals(B * H * T * F), Math.exp);
    const fk = Float64Array.from(rng.normals(B * H * T * F), Math.exp);
    const make = () => ({ q: f64(q, [B, H, T, d]), k: f64(k, [B, Hkv, T, d]), fq: f64(fq, [B, H, T, F]), fk: f64(fk, [B, H, T, F]) });
    const lossOf = async () => {
      const inputs = make();
      const r = transferLoss(inputs);
      const v = (await r.loss.toArray())[0]!;
      disposeAll([inputs, r.loss]);
      return v;
    };
    // independent reference straight from SPEC sec. 4
    let ref = 0;
    for (let h = 0; h < H; h++)
      for (let n = 0; n < T; n++) {
        const s: number[] = [];
        const g: number[] = [];
        for (let i = 0; i <= n; i++) {
          let dot = 0;
          let phi = 0;
          for (let j = 0; j < d; j++) dot += q[(h * T + n) * d + j]! * k[i * d + j]!;
          for (let j = 0; j < F; j++) phi += fq[(h * T + n) * F + j]! * fk[(h * T + i) * F + j]!;
          s.push(dot / Math.sqrt(d));
          g.push(phi);
        }
        const m = Math.max(...s);
        const z = s.reduce((a, x) => a + Math.exp(x - m), 0);
        const gz = g.reduce((a, x) => a + x, 0);
        for (let i = 0; i <= n; i++) ref -= (Math.exp(s[i]! - m) / z) * Math.log(g[i]! / gz);
      }
    ref /= B * H * T;
    expect(Math.abs((await lossOf()) - ref) / Math.abs(ref)).toBeLessThan(1e-12);
    const inputs = make();
    const r = transferLoss(inputs);
    const g = transferLossBackward(r.saved, 2.5);
    const scaled = async () => 2.5 * (await lossOf());
    expect(await fdCheck(fq, scaled, await g.dfq.toArray(), rng)).toBeLessThan(1e-6);
    expect(await fdCheck(fk, scaled, await g.dfk.toArray(), rng)).toBeLessThan(1e-6);
    disposeAll([inputs, r.loss, g]);
  });
});

describe('softmax attention (teacher)', () => {
  it('matches an independent reference and finite differences (GQA 2, T not a power of two)', async () => {
    const rng = new Rng(51);
    const [B, H, Hkv, T, d, dv] = [1, 4, 2, 11, 4, 3];
    const q = rng.normals(B * H * T * d);
    const k = rng.normals(B * Hkv * T * d);
    const v = rng.normals(B * Hkv * T * dv);
    const dy = rng.normals(B * H * T * dv);
    const make = () => ({ q: f64(q, [B, H, T, d]), k: f64(k, [B, Hkv, T, d]), v: f64(v, [B, Hkv, T, dv]) });
    const want = new Float64Array(B * H * T * dv);
    for (let h = 0; h < H; h++)
      for (let n = 0; n < T; n++) {
        const kh = Math.floor(h / (H / Hkv));
        const s = Array.from({ length: n + 1 }, (_, i) => {
          let dot = 0;
          for (let j = 0; j < d; j++) dot += q[(h * T + n) * d + j]! * k[(kh * T + i) * d + j]!;
          return dot / Math.sqrt(d);
        });
        const m = Math.max(...s);
        const z = s.reduce((a, x) => a + Math.exp(x - m), 0);
        for (let i = 0; i <= n; i++)
          for (let j = 0; j < dv; j++) want[(h * T + n) * dv + j]! += (Math.exp(s[i]! - m) / z) * v[(kh * T + i) * dv + j]!;
      }
    const inputs = make();
    const r = softmaxAttention(inputs);
    expect(relErr(await r.y.toArray(), want)).toBeLessThan(1e-12);
    const dyT = f64(dy, [B, H, T, dv]);
    const g = softmaxAttentionBackward(r.saved, dyT);
    const loss = async () => {
      const i2 = make();
      const r2 = softmaxAttention(i2);
      const val = sumProduct(await r2.y.toArray(), dy);
      disposeAll([i2, r2.y, r2.lse]);
      return val;
    };
    expect(await fdCheck(q, loss, await g.dq.toArray(), rng)).toBeLessThan(1e-6);
    expect(await fdCheck(k, loss, await g.dk.toArray(), rng)).toBeLessThan(1e-6);
    expect(await fdCheck(v, loss, await g.dv.toArray(), rng)).toBeLessThan(1e-6);
    disposeAll([inputs, r.y, r.lse, dyT, g]);
  });
});

describe('bad input', () => {
  it('is rejected with typed errors naming the argument', () => {
    const x = Tensor.zeros([1, 2, 3, 4], { dtype: 'f64' });
    const w = Tensor.zeros([2, 4, 3], { dtype: 'f64' });
    expect(() => featureMap({ x, w: Tensor.zeros([3, 4, 3], { dtype: 'f64' }) })).toThrow(expect.objectContaining({ argument: 'w' }));
    expect(() => featureMap({ x, w, b: Tensor.zeros([2, 4], { dtype: 'f64' }) })).toThrow(expect.objectContaining({ argument: 'b' }));
    expect(() => featureMap({ x, w }, { act: 'gelu' as never })).toThrow(InvalidArgumentError);
    expect(() => featureMap({ x: x.cast('f32'), w })).toThrow(DTypeError);
    expect(() => softmaxAttention({ q: x, k: x, v: Tensor.zeros([1, 2, 2, 4], { dtype: 'f64' }) })).toThrow(expect.objectContaining({ argument: 'v' }));
    expect(() => transferLoss({ q: x, k: x, fq: x, fk: Tensor.zeros([1, 2, 3, 5], { dtype: 'f64' }) })).toThrow(expect.objectContaining({ argument: 'fk' }));
    disposeAll([x, w]);
  });
});
