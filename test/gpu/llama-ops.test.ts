// CUDA kernels of the Llama runtime (GEMM, RMSNorm, RoPE, SwiGLU, embedding, cross-entropy plain
// and chunked, AdamW, gradient norm/clipping, elementwise basics) against the CPU f64 reference
// on fresh random inputs (rounded to the GPU dtype first), within the SPEC tolerance rule of
// test/gpu/teacher-ops.test.ts: err(gpu vs f64) <= 2 x (err(f32 CPU vs f64) + output rounding)
// + 8 units x max(1, max |ref|). Outputs are poisoned (HYBRID_ATTENTION_POISON=1), so an element a
// kernel forgets to write fails. The seed is printed; LLAMA_OPS_SEED=<n> replays a run.
process.env.HYBRID_ATTENTION_POISON = '1';
import { describe, expect, it } from 'vitest';
import { Tensor, disposeAll } from '../../lib/index.js';
import type { DType, Device } from '../../lib/index.js';
import { matmul, linear, linearBackward } from '../../lib/ops/matmul.js';
import { rmsNorm, rmsNormBackward } from '../../lib/ops/rms-norm.js';
import { rope, ropeBackward } from '../../lib/ops/rope.js';
import { swiglu, swigluBackward } from '../../lib/ops/swiglu.js';
import { embedding, embeddingBackward } from '../../lib/ops/embedding.js';
import { crossEntropy, crossEntropyBackward, chunkedCrossEntropy, chunkedCrossEntropyBackward } from '../../lib/ops/cross-entropy.js';
import { adamwStep, clipGradNorm, gradNorm } from '../../lib/ops/adamw.js';
import { accumulate, add, copyInto, fillLike, mul, scale, sumRows, transpose12 } from '../../lib/ops/elementwise.js';
import { repeatKv, repeatKvBackward, sigmoid, sigmoidBackward } from '../../lib/ops/repeat-kv.js';
import { Rng } from '../helpers/fixtures.js';
import { UNIT, put, read, rounded } from '../helpers/gpu-data.js';
import { gpuAvailable } from './gpu-env.js';

const SEED = Number(process.env.LLAMA_OPS_SEED ?? Date.now() % 1_000_000_007);
if (gpuAvailable) console.log(`test/gpu/llama-ops: seed ${SEED} (LLAMA_OPS_SEED=${SEED} replays it)`);
let seedCounter = 0;
const freshRng = () => new Rng(SEED + 7919 * ++seedCounter);

const DTYPES: DType[] = ['bf16', 'f16', 'f32'];

function putI32(x: ArrayLike<number>, shape: number[], device: Device): Tensor {
  return Tensor.fromArray(Int32Array.from(x), shape, { dtype: 'i32', device });
}

function maxAbs(a: Float64Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
}

function maxErr(a: Float64Array, ref: Float64Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const e = Math.abs(a[i]! - ref[i]!);
    if (!(e <= m)) m = Number.isNaN(e) ? NaN : e;
    if (Number.isNaN(m)) return NaN;
  }
  return m;
}

/** The SPEC rule (absolute errors). `rounds`: the output is stored in the GPU dtype. */
function expectWithin(name: string, gpu: Float64Array, ref: Float64Array, low: Float64Array, dtype: DType, rounds = true) {
  expect(gpu.length, `${name}: length`).toBe(ref.length);
  const mr = maxAbs(ref);
  const gpuErr = maxErr(gpu, ref);
  const naiveErr = maxErr(low, ref) + (rounds ? UNIT[dtype]! * mr : 0);
  expect(gpuErr, `${name} (${dtype}): gpu ${gpuErr.toExponential(2)} vs naive ${naiveErr.toExponential(2)}, max |ref| ${mr.toExponential(2)}`).toBeLessThanOrEqual(
    2 * naiveErr + 8 * UNIT[dtype]! * Math.max(1, mr),
  );
}

type Outputs = Record<string, Float64Array>;

/** Runs `run` as the f64 CPU reference, the f32 CPU "naive" and on CUDA in `dtype`; compares every output. */
async function check(label: string, dtype: DType, run: (dt: DType, device: Device) => Promise<Outputs>, unrounded: readonly string[] = []) {
  const ref = await run('f64', 'cpu');
  const low = await run('f32', 'cpu');
  const gpu = await run(dtype, 'cuda');
  for (const name of Object.keys(ref)) {
    expect(gpu[name], `${label}: ${name} missing on cuda`).toBeDefined();
    expectWithin(`${label} ${name}`, gpu[name]!, ref[name]!, low[name]!, dtype, !unrounded.includes(name));
  }
}

describe.skipIf(!gpuAvailable)('CUDA Llama ops vs the CPU f64 reference', () => {
  for (const dtype of DTYPES) {
    it(`matmul ${dtype}: every layout, tile edges, odd sizes`, async () => {
      const rng = freshRng();
      // [m, n, k]: tile multiples, multiples of 8 off the tile, odd sizes (generic path for
      // 16-bit), a single row, a long K, and one big enough for the 128 x 256 configuration.
      const shapes: [number, number, number][] = [
        [128, 256, 64], [200, 136, 72], [77, 50, 33], [1, 264, 40], [130, 70, 1000], [24, 8, 8], [1656, 2808, 88],
      ];
      for (const [m, n, k] of shapes)
        for (const [ta, tb] of [[false, false], [false, true], [true, false], [true, true]] as const) {
          const a = await rounded(rng.normals(m * k), dtype);
          const b = await rounded(rng.normals(k * n), dtype);
          await check(`mm ${m}x${n}x${k} ta=${ta} tb=${tb}`, dtype, async (dt, dev) => {
            const A = put(a, ta ? [k, m] : [m, k], dt, dev);
            const B = put(b, tb ? [n, k] : [k, n], dt, dev);
            const C = matmul(A, B, { transA: ta, transB: tb });
            const out = { c: await read(C) };
            disposeAll([A, B, C]);
            return out;
          });
        }
    });

    it(`matmul ${dtype}: batched (shared and per-item operands), alpha and beta into out`, async () => {
      const rng = freshRng();
      for (const [batch, m, n, k] of [[3, 40, 72, 56], [2, 13, 9, 7], [4, 136, 264, 48]] as const)
        for (const [ta, tb] of [[false, false], [true, false], [false, true], [true, true]] as const) {
          const a = await rounded(rng.normals(batch * m * k), dtype);
          const w = await rounded(rng.normals(k * n), dtype);
          const b3 = await rounded(rng.normals(batch * k * n), dtype);
          const c0 = await rounded(rng.normals(batch * m * n), dtype);
          await check(`bmm ${batch}x${m}x${n}x${k} ta=${ta} tb=${tb}`, dtype, async (dt, dev) => {
            const A = put(a, ta ? [batch, k, m] : [batch, m, k], dt, dev);
            const W = put(w, tb ? [n, k] : [k, n], dt, dev);
            const B3 = put(b3, tb ? [batch, n, k] : [batch, k, n], dt, dev);
            const shared = matmul(A, W, { transA: ta, transB: tb });
            const C = put(c0, [batch, m, n], dt, dev);
            matmul(A, B3, { transA: ta, transB: tb, out: C, alpha: 0.5, beta: -1.5 });
            const out = { shared: await read(shared), acc: await read(C) };
            disposeAll([A, W, B3, shared, C]);
            return out;
          });
        }
    });

    it(`linear ${dtype}: bias, backward (dx, dw, db)`, async () => {
      const rng = freshRng();
      const [N, I, O] = [74, 96, 80];
      const x = await rounded(rng.normals(N * I), dtype);
      const w = await rounded(rng.normals(O * I, 0.1), dtype);
      const b = await rounded(rng.normals(O), dtype);
      const dy = await rounded(rng.normals(N * O), dtype);
      await check('linear', dtype, async (dt, dev) => {
        const X = put(x, [2, N / 2, I], dt, dev), W = put(w, [O, I], dt, dev), Bb = put(b, [O], dt, dev), DY = put(dy, [N, O], dt, dev);
        const y = linear(X, W, Bb);
        const g = linearBackward(X.reshape([N, I]), W, DY, { bias: true });
        const out = { y: await read(y), dx: await read(g.dx!), dw: await read(g.dw!), db: await read(g.db!) };
        disposeAll([X, W, Bb, DY, y, g]);
        return out;
      });
    });

    it(`rmsNorm ${dtype}: forward and backward (dw accumulated, many row chunks)`, async () => {
      const rng = freshRng();
      for (const [rows, dim] of [[37, 200], [300, 160], [3, 4096]] as const) {
        const x = await rounded(rng.normals(rows * dim), dtype);
        const w = await rounded(Float64Array.from(rng.normals(dim, 0.2), (v) => 1 + v), dtype);
        const dy = await rounded(rng.normals(rows * dim), dtype);
        const dw0 = await rounded(rng.normals(dim), dtype);
        await check(`rmsNorm ${rows}x${dim}`, dtype, async (dt, dev) => {
          const X = put(x, [rows, dim], dt, dev), W = put(w, [dim], dt, dev), DY = put(dy, [rows, dim], dt, dev);
          const DW = put(dw0, [dim], dt, dev);
          const f = rmsNorm(X, W, 1e-6);
          const g = rmsNormBackward(f.saved, DY);
          rmsNormBackward(f.saved, DY, { dw: DW });
          const out = { y: await read(f.y), rstd: await read(f.saved.rstd), dx: await read(g.dx), dw: await read(g.dw), dwAcc: await read(DW) };
          disposeAll([X, W, DY, DW, f, g]);
          return out;
        }, ['rstd']);
      }
    });

    it(`rope ${dtype}: forward and backward, large positions`, async () => {
      const rng = freshRng();
      const [B, H, T, D] = [2, 3, 29, 64];
      const x = await rounded(rng.normals(B * H * T * D), dtype);
      const dy = await rounded(rng.normals(B * H * T * D), dtype);
      const pos = Array.from({ length: B * T }, () => rng.int(0, 40000));
      const inv = Float64Array.from({ length: D / 2 }, (_, i) => 1 / Math.pow(500000, (2 * i) / D));
      await check('rope', dtype, async (dt, dev) => {
        const X = put(x, [B, H, T, D], dt, dev), DY = put(dy, [B, H, T, D], dt, dev);
        const tables = { positions: putI32(pos, [B, T], dev), invFreq: Tensor.fromArray(inv, [D / 2], { dtype: 'f64', device: dev }) };
        const y = rope(X, tables);
        const dx = ropeBackward(DY, tables);
        const out = { y: await read(y), dx: await read(dx) };
        disposeAll([X, DY, tables, y, dx]);
        return out;
      });
    });

    it(`swiglu ${dtype}: forward and backward`, async () => {
      const rng = freshRng();
      const n = 50 * 101;
      const gate = await rounded(rng.normals(n, 4), dtype);
      const up = await rounded(rng.normals(n), dtype);
      const dy = await rounded(rng.normals(n), dtype);
      await check('swiglu', dtype, async (dt, dev) => {
        const G = put(gate, [50, 101], dt, dev), U = put(up, [50, 101], dt, dev), DY = put(dy, [50, 101], dt, dev);
        const y = swiglu(G, U);
        const g = swigluBackward(G, U, DY);
        const out = { y: await read(y), dgate: await read(g.dgate), dup: await read(g.dup) };
        disposeAll([G, U, DY, y, g]);
        return out;
      });
    });

    it(`embedding ${dtype}: lookup and deterministic scatter-add backward`, async () => {
      const rng = freshRng();
      const [V, D, N] = [300, 72, 90];
      const weight = await rounded(rng.normals(V * D), dtype);
      const dout = await rounded(rng.normals(N * D), dtype);
      const dw0 = await rounded(rng.normals(V * D), dtype);
      const ids = Array.from({ length: N }, (_, i) => (i % 3 === 0 ? rng.int(0, V - 1) : rng.int(0, 20))); // many repeats
      await check('embedding', dtype, async (dt, dev) => {
        const W = put(weight, [V, D], dt, dev), DO = put(dout, [2, N / 2, D], dt, dev), DW = put(dw0, [V, D], dt, dev);
        const I = putI32(ids, [2, N / 2], dev);
        const out0 = embedding(I, W);
        const dw = embeddingBackward(I, DO, V);
        embeddingBackward(I, DO, V, { dweight: DW });
        const out = { out: await read(out0), dweight: await read(dw), dweightAcc: await read(DW) };
        disposeAll([W, DO, DW, I, out0, dw]);
        return out;
      });
    });

    it(`embedding ${dtype}: an id outside the vocabulary fails the op, the process lives on`, async () => {
      const W = put(new Float64Array(4 * 8).fill(1), [4, 8], dtype, 'cuda');
      const I = putI32([0, 3, 4], [3], 'cuda');
      let failed = false;
      try {
        const o = embedding(I, W);
        await o.toArray();
        o.dispose();
      } catch {
        failed = true;
      }
      expect(failed).toBe(true);
      const ok = embedding(putI32([1, 2], [2], 'cuda'), W);
      expect(Array.from(await ok.toArray())).toEqual(new Array(16).fill(1));
      disposeAll([W, I, ok]);
    });

    it(`crossEntropy ${dtype}: loss, lse, dlogits (ignored rows, normalizer)`, async () => {
      const rng = freshRng();
      const [N, V] = [37, 517];
      const logits = await rounded(rng.normals(N * V, 2), dtype);
      const targets = Array.from({ length: N }, (_, i) => (i % 5 === 4 ? -100 : rng.int(0, V - 1)));
      for (const normalizer of [0, 50]) {
        await check(`crossEntropy normalizer=${normalizer}`, dtype, async (dt, dev) => {
          const Z = put(logits, [N, V], dt, dev), Tt = putI32(targets, [N], dev);
          const f = crossEntropy(Z, Tt, { normalizer });
          const dz = crossEntropyBackward(f.saved, 0.7);
          const out = { loss: await read(f.loss), lse: await read(f.saved.lse), dlogits: await read(dz) };
          disposeAll([Z, Tt, f, dz]);
          return out;
        }, ['loss', 'lse']);
      }
    });

    it(`chunkedCrossEntropy ${dtype}: chunks of 256, 100 (unaligned) and the default`, async () => {
      const rng = freshRng();
      const [N, D, V] = [45, 64, 1000];
      const hidden = await rounded(rng.normals(N * D), dtype);
      const weight = await rounded(rng.normals(V * D, 0.25), dtype);
      const dw0 = await rounded(rng.normals(V * D, 0.01), dtype);
      const targets = Array.from({ length: N }, (_, i) => (i % 7 === 6 ? -100 : rng.int(0, V - 1)));
      for (const vocabChunk of [256, 100, 0]) {
        await check(`chunkedCrossEntropy chunk=${vocabChunk}`, dtype, async (dt, dev) => {
          const Hd = put(hidden, [N, D], dt, dev), W = put(weight, [V, D], dt, dev), DW = put(dw0, [V, D], dt, dev);
          const Tt = putI32(targets, [N], dev);
          const f = chunkedCrossEntropy(Hd, W, Tt, { vocabChunk });
          const g = chunkedCrossEntropyBackward(f.saved, { dloss: 1.3 });
          const g2 = chunkedCrossEntropyBackward(f.saved, { dloss: 1.3, dweight: DW });
          const out = {
            loss: await read(f.loss), lse: await read(f.saved.lse), dhidden: await read(g.dhidden), dweight: await read(g.dweight),
            dweightAcc: await read(DW), dhidden2: await read(g2.dhidden),
          };
          disposeAll([Hd, W, DW, Tt, f, g, g2.dhidden]);
          return out;
        }, ['loss', 'lse']);
      }
    });

    it(`gradNorm and clipGradNorm ${dtype}`, async () => {
      const rng = freshRng();
      const sizes = [40000, 1000, 7];
      const data = await Promise.all(sizes.map((n) => rounded(rng.normals(n), dtype)));
      await check('gradNorm', dtype, async (dt, dev) => {
        const ts = data.map((d, i) => put(d, [sizes[i]!], dt, dev));
        const norm = gradNorm(ts);
        const normValue = (await read(norm))[0]!;
        const before = await read(clipGradNorm(ts, normValue / 3));
        const out: Outputs = { norm: Float64Array.of(normValue), clipNorm: before };
        for (let i = 0; i < ts.length; i++) out[`t${i}`] = await read(ts[i]!);
        disposeAll([ts, norm]);
        return out;
      }, ['norm', 'clipNorm']);
    });

    it(`elementwise ${dtype}: add, mul, scale, fill, accumulate, sumRows`, async () => {
      const rng = freshRng();
      const n = 3001;
      const a = await rounded(rng.normals(n), dtype);
      const b = await rounded(rng.normals(n), dtype);
      const [R, C] = [300, 70];
      const x = await rounded(rng.normals(R * C), dtype);
      const into = await rounded(rng.normals(C), dtype);
      await check('elementwise', dtype, async (dt, dev) => {
        const A = put(a, [n], dt, dev), Bt = put(b, [n], dt, dev), X = put(x, [R, C], dt, dev), INTO = put(into, [C], dt, dev);
        const Y = put(b, [n], dt, dev);
        const r = { add: add(A, Bt, 0.3), mul: mul(A, Bt), scale: scale(A, -1.7), fill: fillLike(A, 0.25), sum: sumRows(X) };
        accumulate(Y, A, 0.5);
        sumRows(X, { into: INTO });
        const out: Outputs = {};
        for (const [k, v] of Object.entries(r)) out[k] = await read(v);
        out.accumulate = await read(Y);
        out.sumInto = await read(INTO);
        disposeAll([A, Bt, X, INTO, Y, r]);
        return out;
      });
    });

    it(`transpose12, copyInto, repeatKv (forward, backward), sigmoid (forward, backward) ${dtype}`, async () => {
      const rng = freshRng();
      const [B, T, H, D] = [2, 37, 6, 40]; // rows of 80 bytes in 16-bit: the 16-byte pieces path; D = 3 below: 2-byte pieces
      const x = await rounded(rng.normals(B * T * H * D), dtype);
      const odd = await rounded(rng.normals(B * T * H * 3), dtype);
      const logits = await rounded(rng.normals(500, 3), dtype);
      const g = await rounded(rng.normals(500), dtype);
      await check('data movement and GQA', dtype, async (dt, dev) => {
        const X = put(x, [B, T, H, D], dt, dev), O = put(odd, [B, T, H, 3], dt, dev);
        const tr = transpose12(X), tro = transpose12(O);
        const back = transpose12(tr);
        const kv = put(x, [B, 3, T * 2, D], dt, dev); // 3 kv heads, repeated x2
        const rep = repeatKv(kv, 2);
        const red = repeatKvBackward(X.reshape([B, 6, T, D]), 3);
        const dst = fillLike(X, 0);
        copyInto(dst, back);
        const L = put(logits, [500], dt, dev), G = put(g, [500], dt, dev);
        const sg = sigmoid(L);
        const dsg = sigmoidBackward(sg, G);
        const out: Outputs = { tr: await read(tr), tro: await read(tro), copy: await read(dst), rep: await read(rep), red: await read(red), sg: await read(sg), dsg: await read(dsg) };
        disposeAll([X, O, tr, tro, back, kv, rep, red, dst, L, G, sg, dsg]);
        return out;
      }, ['tr', 'tro', 'copy', 'rep']);
    });

    it(`Tensor.randn ${dtype}: the CUDA stream equals the CPU one`, async () => {
      const cpu = await Tensor.randn([100_003], { seed: 11, mean: 0.5, std: 2, dtype: 'f64' }).toArray();
      const gpu = Tensor.randn([100_003], { seed: 11, mean: 0.5, std: 2, dtype, device: 'cuda' });
      const low = await rounded(Float64Array.from(cpu), dtype);
      const got = await read(gpu);
      gpu.dispose();
      // same element stream: at most one unit of the dtype apart (log/cos may differ in the last f64 bit)
      let worst = 0;
      for (let i = 0; i < got.length; i++) worst = Math.max(worst, Math.abs(got[i]! - low[i]!) / Math.max(1, Math.abs(low[i]!)));
      expect(worst).toBeLessThanOrEqual(UNIT[dtype]!);
    });
  }

  it('adamwStep f32 (fp32 master weights and moments): three steps with decay and a grad scale', async () => {
    const rng = freshRng();
    const n = 5000;
    const p0 = await rounded(rng.normals(n), 'f32');
    const grads = await Promise.all([0, 1, 2].map(() => rounded(rng.normals(n, 0.1), 'f32')));
    await check('adamw', 'f32', async (dt, dev) => {
      const s = { param: put(p0, [n], dt, dev), grad: put(grads[0]!, [n], dt, dev), expAvg: put(new Float64Array(n), [n], dt, dev), expAvgSq: put(new Float64Array(n), [n], dt, dev) };
      for (let step = 1; step <= 3; step++) {
        const g = put(grads[step - 1]!, [n], dt, dev);
        adamwStep({ ...s, grad: g }, { lr: 1e-2, weightDecay: 0.1 }, step, 0.8);
        g.dispose();
      }
      const out = { param: await read(s.param), m: await read(s.expAvg), v: await read(s.expAvgSq) };
      disposeAll(s);
      return out;
    });
  });
});
