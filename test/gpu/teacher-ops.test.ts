// CUDA feature maps, transfer loss and softmax attention against the CPU f64 reference on
// fresh random inputs (rounded to the GPU dtype first), within the SPEC tolerance rule.
process.env.HYBRID_ATTENTION_POISON = '1';
import { describe, expect, it } from 'vitest';
import { Tensor, disposeAll, featureMap, featureMapBackward, softmaxAttention, softmaxAttentionBackward, transferLoss, transferLossBackward } from '../../lib/index.js';
import type { DType, Device } from '../../lib/index.js';
import { Rng } from '../helpers/fixtures.js';
import { UNIT, put, read, rounded } from '../helpers/gpu-data.js';
import { gpuAvailable } from './gpu-env.js';

/** Absolute errors: err(gpu vs f64) <= 2 x (err(f32 naive vs f64) + output rounding) + 8 units x max(1, max |ref|). */
function expectWithin(name: string, gpu: Float64Array, ref: Float64Array, low: Float64Array, dtype: DType, rounds = true) {
  const maxRef = Math.max(...Array.from(ref, Math.abs));
  const e = (a: Float64Array) => a.reduce((m, x, i) => Math.max(m, Math.abs(x - ref[i]!)), 0);
  const gpuErr = e(gpu);
  const naiveErr = e(low) + (rounds ? UNIT[dtype]! * maxRef : 0);
  expect(gpuErr, `${name}: gpu ${gpuErr.toExponential(2)} vs naive ${naiveErr.toExponential(2)}`).toBeLessThanOrEqual(
    2 * naiveErr + 8 * UNIT[dtype]! * Math.max(1, maxRef),
  );
}

describe.skipIf(!gpuAvailable)('CUDA teacher ops vs the CPU f64 reference', () => {
  for (const dtype of ['bf16', 'f16', 'f32'] as DType[]) {
    it(`softmax attention ${dtype} (GQA 2, d 64 and 128, T 77 and 200)`, async () => {
      for (const [H, Hkv, T, d] of [[4, 2, 77, 64], [2, 2, 200, 128], [2, 1, 50, 80]] as const) {
        const rng = new Rng(T + d);
        const host = {
          q: await rounded(rng.normals(H * T * d), dtype),
          k: await rounded(rng.normals(Hkv * T * d), dtype),
          v: await rounded(rng.normals(Hkv * T * d), dtype),
          dy: await rounded(rng.normals(H * T * d), dtype),
        };
        const run = async (dt: DType, device: Device) => {
          const q = put(host.q, [1, H, T, d], dt, device);
          const k = put(host.k, [1, Hkv, T, d], dt, device);
          const v = put(host.v, [1, Hkv, T, d], dt, device);
          const dy = put(host.dy, [1, H, T, d], dt, device);
          const f = softmaxAttention({ q, k, v });
          const g = softmaxAttentionBackward(f.saved, dy);
          const out = { y: await read(f.y), lse: await read(f.lse), dq: await read(g.dq), dk: await read(g.dk), dv: await read(g.dv) };
          disposeAll([q, k, v, dy, f, g]);
          return out;
        };
        const [ref, low, gpu] = [await run('f64', 'cpu'), await run('f32', 'cpu'), await run(dtype, 'cuda')];
        for (const name of ['y', 'lse', 'dq', 'dk', 'dv'] as const) expectWithin(`${name} T=${T} d=${d}`, gpu[name], ref[name], low[name], dtype, name !== 'lse');
      }
    });

    it(`Hedgehog feature map ${dtype} (softmax and exp, with bias)`, async () => {
      for (const act of ['softmax', 'exp'] as const) {
        const [B, H, T, d, f] = [2, 3, 37, 64, 32];
        const rng = new Rng(7);
        const host = {
          x: await rounded(rng.normals(B * H * T * d, 0.5), dtype),
          w: await rounded(rng.normals(H * d * f, 0.1), dtype),
          b: await rounded(rng.normals(H * f, 0.1), dtype),
          dphi: await rounded(rng.normals(B * H * T * 2 * f), dtype),
        };
        const run = async (dt: DType, device: Device) => {
          const x = put(host.x, [B, H, T, d], dt, device);
          const w = put(host.w, [H, d, f], dt, device);
          const b = put(host.b, [H, f], dt, device);
          const dphi = put(host.dphi, [B, H, T, 2 * f], dt, device);
          const r = featureMap({ x, w, b }, { act });
          const g = featureMapBackward(r.saved, dphi);
          const out = { phi: await read(r.phi), dx: await read(g.dx), dw: await read(g.dw!), db: await read(g.db!) };
          disposeAll([x, w, b, dphi, r, g]);
          return out;
        };
        const [ref, low, gpu] = [await run('f64', 'cpu'), await run('f32', 'cpu'), await run(dtype, 'cuda')];
        for (const name of ['phi', 'dx', 'dw', 'db'] as const) expectWithin(`${act} ${name}`, gpu[name], ref[name], low[name], dtype);
      }
    });

    it(`attention-weight transfer loss ${dtype}`, async () => {
      const [B, H, Hkv, T, d, F] = [1, 2, 1, 90, 64, 128];
      const rng = new Rng(9);
      const positive = (n: number) => Float64Array.from(rng.normals(n), (x) => Math.exp(0.5 * x) / F);
      const host = {
        q: await rounded(rng.normals(B * H * T * d), dtype),
        k: await rounded(rng.normals(B * Hkv * T * d), dtype),
        fq: await rounded(positive(B * H * T * F), dtype),
        fk: await rounded(positive(B * H * T * F), dtype),
      };
      const run = async (dt: DType, device: Device) => {
        const q = put(host.q, [B, H, T, d], dt, device);
        const k = put(host.k, [B, Hkv, T, d], dt, device);
        const fq = put(host.fq, [B, H, T, F], dt, device);
        const fk = put(host.fk, [B, H, T, F], dt, device);
        const r = transferLoss({ q, k, fq, fk });
        const g = transferLossBackward(r.saved);
        const out = { loss: await read(r.loss), dfq: await read(g.dfq), dfk: await read(g.dfk) };
        disposeAll([q, k, fq, fk, r, g]);
        return out;
      };
      const [ref, low, gpu] = [await run('f64', 'cpu'), await run('f32', 'cpu'), await run(dtype, 'cuda')];
      for (const name of ['loss', 'dfq', 'dfk'] as const) expectWithin(name, gpu[name], ref[name], low[name], dtype, name !== 'loss');
    });
  }

  it('bad device use is a typed error, and the process lives on after a CUDA failure', async () => {
    const cpu = Tensor.zeros([1, 1, 4, 8], { dtype: 'f32' });
    const gpu = cpu.to('cuda');
    expect(() => softmaxAttention({ q: gpu, k: cpu, v: gpu })).toThrow(expect.objectContaining({ argument: 'k' }));
    expect(() => Tensor.empty([2 ** 40], { dtype: 'f32', device: 'cuda' })).toThrow(expect.objectContaining({ name: 'OutOfMemoryError' }));
    const ok = Tensor.fromArray([1, 2, 3], [3], { device: 'cuda' });
    expect(Array.from(await ok.toArray())).toEqual([1, 2, 3]);
    disposeAll([cpu, gpu, ok]);
  });
});
