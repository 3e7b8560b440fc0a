/** Hybrid/linear attention layers in a Llama model: gradients, exactness vs softmax, decode vs recompute. */
import { describe, expect, it } from 'vitest';
import { Tensor, liveTensors, synchronize } from '../../lib/index.js';
import { copyInto } from '../../lib/ops/elementwise.js';
import { repeatKv, repeatKvBackward, sigmoid, sigmoidBackward } from '../../lib/ops/repeat-kv.js';
import { laShare } from '../../lib/ops/la-share.js';
import { greedyGenerate } from '../../lib/model/generate.js';
import { convertToHybrid, drawSsdKeep, type ConvertOptions } from '../../lib/model/convert.js';
import { HybridAttentionKernel } from '../../lib/model/hybrid-layer.js';
import { randomLlamaModel, tinyLlamaConfig } from '../../lib/model/random-init.js';
import type { LlamaModel } from '../../lib/model/llama.js';
import { relErr, Rng } from '../helpers/fixtures.js';

const ids = (B: number, T: number, V: number, seed = 1) => {
  const r = new Rng(seed);
  return Array.from({ length: B }, () => Array.from({ length: T }, () => r.int(0, V - 1)));
};

async function setParam(model: LlamaModel, name: string, data: Float64Array): Promise<void> {
  const p = model.params.get(name)!;
  const src = Tensor.fromArray(data, p.shape, { dtype: p.dtype });
  copyInto(p, src);
  src.dispose();
}

async function logitsOf(model: LlamaModel, x: number[][]): Promise<Float64Array> {
  const { logits } = model.forward(x);
  try {
    return Float64Array.from(await logits.toArray());
  } finally {
    logits.dispose();
  }
}

describe('repeat-kv and sigmoid ops', () => {
  it('repeatKv copies kv heads to their q heads; backward sums each group', async () => {
    const r = new Rng(2);
    const [B, Hkv, T, d, g] = [2, 3, 4, 5, 2];
    const xs = r.normals(B * Hkv * T * d);
    const x = Tensor.fromArray(xs, [B, Hkv, T, d], { dtype: 'f64' });
    const y = repeatKv(x, g);
    expect(y.shape).toEqual([B, Hkv * g, T, d]);
    const ya = await y.toArray();
    for (let b = 0; b < B; b++)
      for (let h = 0; h < Hkv * g; h++)
        for (let i = 0; i < T * d; i++) expect(ya[(b * Hkv * g + h) * T * d + i]).toBe(xs[(b * Hkv + Math.floor(h / g)) * T * d + i]);
    const dys = r.normals(B * Hkv * g * T * d);
    const dy = Tensor.fromArray(dys, [B, Hkv * g, T, d], { dtype: 'f64' });
    const dxT = repeatKvBackward(dy, g);
    const dx = await dxT.toArray();
    dxT.dispose();
    for (let b = 0; b < B; b++)
      for (let j = 0; j < Hkv; j++)
        for (let i = 0; i < T * d; i++) {
          let s = 0;
          for (let k = 0; k < g; k++) s += dys[(b * Hkv * g + j * g + k) * T * d + i]!;
          expect(dx[(b * Hkv + j) * T * d + i]).toBeCloseTo(s, 14);
        }
    const s = sigmoid(x);
    const sa = await s.toArray();
    sa.forEach((v, i) => expect(v).toBeCloseTo(1 / (1 + Math.exp(-xs[i]!)), 15));
    const dsT = sigmoidBackward(s, x);
    const ds = await dsT.toArray();
    dsT.dispose();
    ds.forEach((v, i) => expect(v).toBeCloseTo(xs[i]! * sa[i]! * (1 - sa[i]!), 15));
    [x, y, dy, s].forEach((t) => t.dispose());
  });
});

describe('hybrid layers in a Llama model', () => {
  const cfg = tinyLlamaConfig({ hidden_size: 32, num_attention_heads: 4, num_key_value_heads: 2, num_hidden_layers: 2, vocab_size: 48 });

  const gradCases: { name: string; conv: ConvertOptions; keep?: 'head' | 'sample-head' }[] = [
    { name: 'hedgehog softmax + bias, sliding, hybrid, SSD mask', conv: { featureMap: { kind: 'hedgehog', size: 'lolcats', bias: true, initStd: 0.4 }, window: 4, gammaInit: 0.3 }, keep: 'sample-head' },
    { name: 'hedgecats exp act, terraced, overlap, affine', conv: { featureMap: { kind: 'hedgehog', size: 'hedgecats', act: 'exp', initStd: 0.2 }, window: 3, geometry: 'terraced', mode: 'overlap', lambda: 'affine', gammaInit: 0.6 } },
    { name: 't2r, la-full (linear layer)', conv: { featureMap: { kind: 't2r', size: 6, initStd: 0.4 }, kind: 'linear', window: 4 } },
    { name: 'elu (no feature-map params), hybrid', conv: { featureMap: 'elu', window: 5, gammaInit: 0.2 } },
  ];

  for (const gc of gradCases)
    it(`gradients match central differences (f64): ${gc.name}`, async () => {
      const model = randomLlamaModel(cfg, { dtype: 'f64', seed: 11, std: 0.2 });
      const conv = convertToHybrid(model, { ...gc.conv, freezeBase: false, seed: 3 });
      expect(conv.groups.gammas).toEqual(['model.layers.0.self_attn.gamma_logit', 'model.layers.1.self_attn.gamma_logit']);
      const x = ids(2, 11, cfg.vocabSize, 5);
      const keep = gc.keep ? drawSsdKeep({ layers: 2, batch: 2, heads: 4, p: 0.5, granularity: gc.keep, random: (() => { const r = new Rng(9); return () => r.uniform(); })() }) : undefined;
      if (keep) expect(keep.some((m) => m.includes(0)) && keep.some((m) => m.includes(1))).toBe(true);
      const lossOpts = keep ? { keep } : {};
      await model.loss(x, lossOpts);
      model.zeroGrad();
      const grads = model.backward();
      // Perturb gamma logits away from a uniform init so each head's gradient differs.
      const names = [...conv.names, 'model.layers.0.self_attn.q_proj.weight', 'model.layers.1.self_attn.k_proj.weight'];
      for (const name of names) {
        const g = await grads.get(name)!.toArray();
        const base = Float64Array.from(await model.params.get(name)!.toArray());
        const idx = [...new Set([0, 1, Math.floor(base.length / 2), base.length - 1])];
        for (const i of idx) {
          const h = 1e-5;
          const at = async (dlt: number) => {
            const v = Float64Array.from(base);
            v[i]! += dlt;
            await setParam(model, name, v);
            const l = await model.loss(x, lossOpts);
            model.clearPending();
            return l;
          };
          const fd = ((await at(h)) - (await at(-h))) / (2 * h);
          await setParam(model, name, base);
          expect(Math.abs(fd - g[i]!), `${name}[${i}] fd ${fd} vs ${g[i]}`).toBeLessThan(1e-8 + 1e-5 * Math.abs(fd));
        }
      }
      model.dispose();
    });

  it("mode 'swa' with w >= T equals the softmax model (logits, hidden states)", async () => {
    const soft = randomLlamaModel(cfg, { dtype: 'f64', seed: 4, std: 0.3 });
    const hyb = randomLlamaModel(cfg, { dtype: 'f64', seed: 4, std: 0.3 });
    convertToHybrid(hyb, { featureMap: 'hedgecats', window: 16, mode: 'swa' });
    expect(hyb.attentionModes()).toEqual(['swa', 'swa']);
    const x = ids(2, 16, cfg.vocabSize, 8);
    const a = soft.forward(x, { hiddenStates: true });
    const b = hyb.forward(x, { hiddenStates: true });
    expect(relErr(await b.logits.toArray(), await a.logits.toArray())).toBeLessThan(1e-13);
    for (let i = 0; i < a.hiddenStates!.length; i++) expect(relErr(await b.hiddenStates![i]!.toArray(), await a.hiddenStates![i]!.toArray())).toBeLessThan(1e-13);
    // and the hybrid mode is really something else
    hyb.setAttentionMode('hybrid');
    hyb.setAttentionMode('la-full', { layers: [1] });
    expect(hyb.attentionModes()).toEqual(['hybrid', 'la-full']);
    const c = await logitsOf(hyb, x);
    expect(relErr(c, await a.logits.toArray())).toBeGreaterThan(1e-3);
    for (const t of [a.logits, b.logits, ...a.hiddenStates!, ...b.hiddenStates!]) t.dispose();
    soft.dispose();
    hyb.dispose();
  });

  it('setAttentionMode refuses softmax layers named explicitly; partial conversion; setGamma', async () => {
    const model = randomLlamaModel(cfg, { seed: 1 });
    convertToHybrid(model, { layers: [1], window: 4 });
    expect(model.attentionModes()).toEqual(['softmax', 'hybrid']);
    expect(model.setAttentionMode('la')).toEqual([1]);
    expect(() => model.setAttentionMode('la', { layers: [0] })).toThrow(/no attention modes/);
    expect(() => model.setAttentionMode('bogus' as never)).toThrow(/mode/);
    const k = model.blocks[1]!.attention as HybridAttentionKernel;
    k.setGamma([0.2, 0.5, 0.7, 0.9]);
    const g = k.gamma();
    expect(Array.from(await g.toArray())).toEqual([0.2, 0.5, 0.7, 0.9].map((x) => expect.closeTo(x, 6)));
    g.dispose();
    expect(() => k.setGamma(1.5)).toThrow(/outside/);
    expect(() => k.setGamma(0)).toThrow(/outside/);
    k.setGamma(1); // the fixed gamma of inference-time hybridisation (lambda one)
    const one = k.gamma();
    expect(Array.from(await one.toArray())).toEqual([1, 1, 1, 1]);
    one.dispose();
    k.lambda = 'affine';
    expect(() => k.setGamma(1)).toThrow(/affine/);
    model.dispose();
  });

  for (const modes of [['hybrid', 'la'], ['overlap', 'sinks'], ['swa', 'la-full']] as const)
    it(`generation with the decode state equals recomputation (${modes.join(', ')})`, async () => {
      for (const mode of modes) {
        const model = randomLlamaModel(cfg, { dtype: 'f64', seed: 21, std: 0.4 });
        convertToHybrid(model, { featureMap: { kind: 'hedgehog', size: 'lolcats', initStd: 0.5 }, window: 3, sinks: 2, mode, gammaInit: 0.4, geometry: mode === 'la' ? 'terraced' : 'sliding' });
        const prompt = ids(1, 5, cfg.vocabSize, 3)[0]!;
        const cached = await greedyGenerate(model, prompt, { maxNewTokens: 9 });
        const recomputed = await greedyGenerate(model, prompt, { maxNewTokens: 9, useCache: false });
        expect(cached, mode).toEqual(recomputed);
        // stronger: logits of cached single-token steps equal the full forward's
        const full = await logitsOf(model, [cached]);
        const caches = model.createCaches(1, cached.length)!;
        const V = cfg.vocabSize;
        const first = model.forward([cached.slice(0, 5)], { caches });
        expect(relErr(await first.logits.toArray(), full.subarray(0, 5 * V))).toBeLessThan(1e-12);
        first.logits.dispose();
        // then 2 tokens at once, then single tokens
        const two = model.forward([cached.slice(5, 7)], { caches, positionOffset: 5 });
        expect(relErr(await two.logits.toArray(), full.subarray(5 * V, 7 * V))).toBeLessThan(1e-12);
        two.logits.dispose();
        for (let t = 7; t < cached.length; t++) {
          const s = model.forward([[cached[t]!]], { caches, positionOffset: t });
          expect(relErr(await s.logits.toArray(), full.subarray(t * V, (t + 1) * V)), `${mode} t=${t}`).toBeLessThan(1e-12);
          s.logits.dispose();
        }
        caches.forEach((c) => c.dispose());
        model.dispose();
      }
    });

  it('batched decode (f32) matches the full forward; stats and LA share are recorded', async () => {
    const model = randomLlamaModel(cfg, { seed: 5, std: 0.3 });
    const conv = convertToHybrid(model, { featureMap: 'lolcats', window: 4 });
    const x = ids(3, 10, cfg.vocabSize, 4);
    const full = await logitsOf(model, x);
    const caches = model.createCaches(3, 10)!;
    const V = cfg.vocabSize;
    const pre = model.forward(x.map((r) => r.slice(0, 6)), { caches });
    const got = await pre.logits.toArray();
    pre.logits.dispose();
    for (let b = 0; b < 3; b++) expect(relErr(got.subarray(b * 6 * V, (b + 1) * 6 * V), full.subarray(b * 10 * V, (b * 10 + 6) * V))).toBeLessThan(1e-5);
    for (let t = 6; t < 10; t++) {
      const s = model.forward(x.map((r) => [r[t]!]), { caches, positionOffset: t });
      const a = await s.logits.toArray();
      s.logits.dispose();
      for (let b = 0; b < 3; b++) expect(relErr(a.subarray(b * V, (b + 1) * V), full.subarray((b * 10 + t) * V, (b * 10 + t + 1) * V))).toBeLessThan(1e-5);
    }
    caches.forEach((c) => c.dispose());
    const k0 = conv.kernels[0]!;
    k0.recordStats = true;
    (await logitsOf(model, x));
    const share = await laShare(k0.lastStats!, k0.window);
    expect(share.mean.length).toBe(4);
    for (const v of share.late) expect(v).toBeGreaterThan(0);
    for (const v of share.early) expect(v).toBeGreaterThanOrEqual(0);
    model.dispose();
  });

  it('no tensors leak across forward/backward/decode; the kernel validates its params', async () => {
    const model = randomLlamaModel(cfg, { seed: 6 });
    convertToHybrid(model, { featureMap: 'hedgecats', window: 4 });
    const x = ids(2, 8, cfg.vocabSize, 2);
    await model.loss(x);
    model.zeroGrad();
    model.backward();
    (globalThis as { gc?: () => void }).gc?.(); // finalizers of earlier tests' garbage must not run inside the window
    await new Promise((r) => setTimeout(r, 10));
    await synchronize();
    const before = liveTensors();
    for (let i = 0; i < 2; i++) {
      await model.loss(x, { keep: [[1, 0, 1, 1, 0, 0, 1, 1], undefined] });
      model.backward();
      await logitsOf(model, x);
      await greedyGenerate(model, x[0]!, { maxNewTokens: 3 });
    }
    await synchronize();
    expect(liveTensors().tensors).toBe(before.tensors);
    await expect(model.loss(x, { keep: [[1, 2, 1, 1, 0, 0, 1, 1], undefined] })).rejects.toThrow(/keep\[0\]\[1\]/);
    expect(() => model.forward(x, { keep: [undefined] })).toThrow(/keep/);
    expect(() => model.forward(x, { keep: [[1, 1], undefined] })).toThrow(/batch \* heads/);
    await synchronize();
    expect(liveTensors().tensors).toBe(before.tensors); // rejected before allocating
    expect(() => new HybridAttentionKernel(new Map(), 'x.', { heads: 4, kvHeads: 2, headDim: 8, dtype: 'f32', device: 'cpu' })).toThrow(/missing parameter/);
    model.dispose();
  });
});
