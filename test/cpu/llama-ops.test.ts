/** The Llama runtime ops against naive f64 references, and their argument checks. */
import { describe, expect, it } from 'vitest';
import { Tensor, DTypeError, InvalidArgumentError, DisposedError } from '../../lib/index.js';
import { matmul, linear, linearBackward } from '../../lib/ops/matmul.js';
import { accumulate, add, sumRows, transpose12 } from '../../lib/ops/elementwise.js';
import { rmsNorm } from '../../lib/ops/rms-norm.js';
import { adamwStep, clipGradNorm } from '../../lib/ops/adamw.js';
import { crossEntropy, nextTokenTargets } from '../../lib/ops/cross-entropy.js';
import { embedding, embeddingBackward } from '../../lib/ops/embedding.js';
import { relErr, Rng } from '../helpers/fixtures.js';

const rng = new Rng(7);
const t = (data: ArrayLike<number>, shape: number[], dtype: 'f64' | 'f32' = 'f64') => Tensor.fromArray(data, shape, { dtype });
const arr = async (x: Tensor) => Array.from(await x.toArray());

function naiveMm(a: Float64Array, b: Float64Array, m: number, n: number, k: number, ta: boolean, tb: boolean): Float64Array {
  const c = new Float64Array(m * n);
  for (let i = 0; i < m; i++)
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let p = 0; p < k; p++) s += (ta ? a[p * m + i]! : a[i * k + p]!) * (tb ? b[j * k + p]! : b[p * n + j]!);
      c[i * n + j] = s;
    }
  return c;
}

describe('llama ops', () => {
  it('matmul: transposes, batching with a shared operand, accumulation', async () => {
    const [m, n, k] = [5, 7, 9];
    for (const [ta, tb] of [[false, false], [true, false], [false, true], [true, true]] as const) {
      const a = rng.normals(m * k);
      const b = rng.normals(k * n);
      const c = matmul(t(a, ta ? [k, m] : [m, k]), t(b, tb ? [n, k] : [k, n]), { transA: ta, transB: tb });
      expect(c.shape).toEqual([m, n]);
      expect(relErr(await c.toArray(), naiveMm(a, b, m, n, k, ta, tb))).toBeLessThan(1e-14);
    }
    const a3 = rng.normals(3 * m * k);
    const w = rng.normals(k * n);
    const c3 = matmul(t(a3, [3, m, k]), t(w, [k, n]));
    const want = new Float64Array(3 * m * n);
    for (let i = 0; i < 3; i++) want.set(naiveMm(a3.subarray(i * m * k, (i + 1) * m * k), w, m, n, k, false, false), i * m * n);
    expect(relErr(await c3.toArray(), want)).toBeLessThan(1e-14);
    matmul(t(a3, [3, m, k]), t(w, [k, n]), { out: c3, beta: 1 }); // c3 += same product
    expect(relErr(await c3.toArray(), want.map((x) => 2 * x))).toBeLessThan(1e-14);
  });

  it('linear with bias and its backward', async () => {
    const [N, I, O] = [6, 4, 3];
    const x = rng.normals(N * I), w = rng.normals(O * I), b = rng.normals(O), dy = rng.normals(N * O);
    const y = linear(t(x, [2, 3, I]), t(w, [O, I]), t(b, [O]));
    expect(y.shape).toEqual([2, 3, O]);
    const want = naiveMm(x, w, N, O, I, false, true).map((v, i) => v + b[i % O]!);
    expect(relErr(await y.toArray(), want)).toBeLessThan(1e-14);
    const g = linearBackward(t(x, [N, I]), t(w, [O, I]), t(dy, [N, O]), { bias: true });
    expect(relErr(await g.dx!.toArray(), naiveMm(dy, w, N, I, O, false, false))).toBeLessThan(1e-14);
    expect(relErr(await g.dw!.toArray(), naiveMm(dy, x, O, I, N, true, false))).toBeLessThan(1e-14);
    const db = new Float64Array(O);
    for (let r = 0; r < N; r++) for (let j = 0; j < O; j++) db[j] += dy[r * O + j]!;
    expect(relErr(await g.db!.toArray(), db)).toBeLessThan(1e-14);
  });

  it('transpose12, add, accumulate, sumRows', async () => {
    const x = Float64Array.from({ length: 2 * 3 * 4 * 5 }, (_, i) => i);
    const y = await arr(transpose12(t(x, [2, 3, 4, 5])));
    expect(y[((1 * 4 + 2) * 3 + 1) * 5 + 3]).toBe(x[((1 * 3 + 1) * 4 + 2) * 5 + 3]);
    const a = t([1, 2, 3], [3]);
    expect(await arr(add(a, t([1, 1, 1], [3]), 2))).toEqual([3, 4, 5]);
    accumulate(a, t([1, 1, 1], [3]), -1);
    expect(await arr(a)).toEqual([0, 1, 2]);
    expect(await arr(sumRows(t([1, 2, 3, 4], [2, 2])))).toEqual([4, 6]);
  });

  it('rmsNorm matches the formula', async () => {
    const x = rng.normals(3 * 8), w = rng.normals(8);
    const { y, saved } = rmsNorm(t(x, [3, 8]), t(w, [8]), 1e-5);
    const want = new Float64Array(24);
    for (let r = 0; r < 3; r++) {
      let ms = 0;
      for (let i = 0; i < 8; i++) ms += x[r * 8 + i]! ** 2 / 8;
      for (let i = 0; i < 8; i++) want[r * 8 + i] = (x[r * 8 + i]! / Math.sqrt(ms + 1e-5)) * w[i]!;
    }
    expect(relErr(await y.toArray(), want)).toBeLessThan(1e-14);
    expect(saved.rstd.shape).toEqual([3]);
  });

  it('embedding scatter-add and cross-entropy on tiny inputs', async () => {
    const ids = Tensor.fromArray([2, 0, 2], [3], { dtype: 'i32' });
    const wt = t([0, 1, 2, 3, 4, 5], [3, 2]);
    expect(await arr(embedding(ids, wt))).toEqual([4, 5, 0, 1, 4, 5]);
    expect(await arr(embeddingBackward(ids, t([1, 1, 1, 1, 1, 1], [3, 2]), 3))).toEqual([1, 1, 0, 0, 2, 2]);
    expect(Array.from(nextTokenTargets([5, 6, 7, 8], 2, 2))).toEqual([6, -100, 8, -100]);
    const ce = crossEntropy(t([0, 0, 0, 0], [2, 2]), Tensor.fromArray([1, -100], [2], { dtype: 'i32' }));
    expect((await ce.loss.toArray())[0]).toBeCloseTo(Math.log(2), 14);
  });

  it('adamwStep matches torch.optim.AdamW arithmetic; clipGradNorm clips', async () => {
    const p0 = [0.5, -1], g = [0.1, 0.2];
    const st = { param: t(p0, [2]), grad: t(g, [2]), expAvg: t([0, 0], [2]), expAvgSq: t([0, 0], [2]) };
    const h = { lr: 0.1, weightDecay: 0.01 };
    adamwStep(st, h, 1);
    const want = p0.map((p, i) => {
      const pd = p * (1 - 0.1 * 0.01);
      const m = 0.1 * g[i]!, v = 0.001 * g[i]! ** 2;
      return pd - (0.1 / 0.1) * (m / (Math.sqrt(v) / Math.sqrt(0.001) + 1e-8));
    });
    expect(relErr(await st.param.toArray(), want)).toBeLessThan(1e-14);
    const a = t([3, 0], [2]), b = t([4], [1]);
    const norm = clipGradNorm([a, b], 1);
    expect((await norm.toArray())[0]).toBe(5);
    expect((await a.toArray())[0]).toBeCloseTo(3 / (5 + 1e-6), 12);
  });

  it('checks name the argument', () => {
    const a = t([1, 2, 3, 4], [2, 2]);
    expect(() => matmul(a, t([1, 2, 3], [3, 1]))).toThrow(InvalidArgumentError);
    expect(() => matmul(a, t([1, 2, 3, 4], [2, 2], 'f32'))).toThrow(DTypeError);
    try {
      linear(a, t([1, 2, 3], [1, 3]));
    } catch (e) {
      expect((e as InvalidArgumentError).argument).toBe('x');
    }
    expect(() => rmsNorm(a, t([1, 2, 3], [3]), 1e-5)).toThrow(/w has shape/);
    const gone = t([1], [1]);
    gone.dispose();
    expect(() => add(gone, gone)).toThrow(DisposedError);
    expect(() => embedding(t([0], [1]), a)).toThrow(DTypeError);
    expect(() => adamwStep({ param: a, grad: a, expAvg: a, expAvgSq: a }, { lr: 1 }, 0)).toThrow(/step/);
  });
});
