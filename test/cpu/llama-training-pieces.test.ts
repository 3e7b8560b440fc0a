/** LR schedules, gradient accumulation, parameter groups (freeze/unfreeze), bias layers' gradients. */
import { describe, expect, it } from 'vitest';
import { Tensor, liveTensors } from '../../lib/index.js';
import { copyInto } from '../../lib/ops/elementwise.js';
import { constantLr, cosineLr, ReduceLrOnPlateau } from '../../lib/model/lr-schedule.js';
import { applyLora } from '../../lib/model/lora.js';
import { AdamWOptimizer } from '../../lib/model/optimizer.js';
import { convertToHybrid, freeze, parameterGroups, paramGroup, unfreeze, drawSsdKeep, ssdSchedule } from '../../lib/model/convert.js';
import { randomLlamaModel, tinyLlamaConfig } from '../../lib/model/random-init.js';
import type { LlamaModel } from '../../lib/model/llama.js';
import { relErr, Rng } from '../helpers/fixtures.js';

const ids = (B: number, T: number, V: number, seed = 1) => {
  const r = new Rng(seed);
  return Array.from({ length: B }, () => Array.from({ length: T }, () => r.int(0, V - 1)));
};

async function snapshot(grads: Map<string, Tensor>): Promise<Map<string, Float64Array>> {
  const out = new Map<string, Float64Array>();
  for (const [n, g] of grads) out.set(n, Float64Array.from(await g.toArray()));
  return out;
}

describe('learning-rate schedules', () => {
  it('constant', () => {
    const s = constantLr(3e-4);
    expect([0, 1, 1000].map(s)).toEqual([3e-4, 3e-4, 3e-4]);
  });

  it('cosine with linear warmup', () => {
    const s = cosineLr(1, 14, { warmup: 4, minLr: 0.1 });
    expect(s(0)).toBeCloseTo(0.25, 15);
    expect(s(1)).toBeCloseTo(0.5, 15);
    expect(s(3)).toBeCloseTo(1, 15);
    expect(s(4)).toBeCloseTo(1, 15); // cosine starts at the peak
    expect(s(9)).toBeCloseTo(0.55, 15); // half way: minLr + (lr - minLr) / 2
    expect(s(6)).toBeCloseTo(0.1 + 0.45 * (1 + Math.cos(Math.PI * 0.2)), 15);
    expect(s(14)).toBeCloseTo(0.1, 15);
    expect(s(100)).toBeCloseTo(0.1, 15); // clamped after the end
    const plain = cosineLr(2, 10);
    expect(plain(0)).toBe(2);
    expect(plain(5)).toBeCloseTo(1, 15);
    expect(plain(10)).toBeCloseTo(0, 15);
    for (let i = 4; i < 14; i++) expect(s(i + 1)).toBeLessThan(s(i));
    expect(() => cosineLr(1, 4, { warmup: 4 })).toThrow(/totalSteps/);
  });

  it('reduce on plateau (torch semantics: mode min, relative threshold, patience, factor, floor)', () => {
    const s = new ReduceLrOnPlateau(1, { factor: 0.5, patience: 2, minLr: 0.2 });
    const metrics = [10, 9, 9, 9, 9, 8, 8.9999, 8, 8, 7, 7, 7, 7, 7, 7, 7, 7, 7];
    const lrs = metrics.map((m) => s.observe(m));
    expect(lrs).toEqual([1, 1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.25, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2]);
    // threshold is relative: an improvement smaller than threshold * best is not one
    const t = new ReduceLrOnPlateau(1, { factor: 0.1, patience: 0, threshold: 0.01 });
    expect([100, 99.5, 98.9].map((m) => t.observe(m))).toEqual([1, expect.closeTo(0.1, 15), expect.closeTo(0.1, 15)]);
  });

  it('SSD schedule stages over equal thirds', () => {
    expect([0, 32, 33, 34, 66, 67, 99, 120].map((s) => ssdSchedule(s, 100))).toEqual([0.9, 0.9, 0.9, 0.75, 0.75, 0.5, 0.5, 0.5]);
    expect(ssdSchedule(50, 100, [16, 32, 64])).toBe(32);
  });
});

describe('gradient accumulation', () => {
  for (const hybrid of [false, true])
    it(`k micro-batches with a shared normalizer equal one batch of k x (f64, 1e-12)${hybrid ? ', hybrid layers' : ''}`, async () => {
      const cfg = tinyLlamaConfig({ vocab_size: 50 });
      const model = randomLlamaModel(cfg, { dtype: 'f64', seed: 2, std: 0.3 });
      if (hybrid) convertToHybrid(model, { window: 3, featureMap: 'hedgecats', freezeBase: false });
      const x = ids(6, 9, cfg.vocabSize, 3);
      const full = await model.loss(x);
      model.zeroGrad();
      const one = await snapshot(model.backward());
      const tokens = 6 * 8; // next-token targets: the last position of each row is ignored
      for (const k of [2, 3, 6]) {
        model.zeroGrad();
        let sum = 0;
        const per = 6 / k;
        for (let m = 0; m < k; m++) {
          sum += await model.loss(x.slice(m * per, (m + 1) * per), { normalizer: tokens });
          model.backward();
        }
        expect(Math.abs(sum - full)).toBeLessThan(1e-12 * Math.abs(full));
        const acc = await snapshot(model.grads);
        expect([...acc.keys()].sort()).toEqual([...one.keys()].sort());
        for (const [n, g] of one) expect(relErr(acc.get(n)!, g), `${n} k=${k}`).toBeLessThan(1e-12);
      }
      model.dispose();
    });
});

describe('parameter groups', () => {
  it('groups, freeze and unfreeze decide which gradients exist; gradients do not depend on the frozen set', async () => {
    const cfg = tinyLlamaConfig({ vocab_size: 50 });
    const model = randomLlamaModel(cfg, { dtype: 'f64', seed: 7, std: 0.3 });
    const conv = convertToHybrid(model, { window: 4, featureMap: { kind: 'hedgehog', size: 'lolcats', bias: true } });
    expect([...model.trainable].sort()).toEqual([...conv.names].sort());
    expect(conv.groups.featureMaps).toContain('model.layers.1.self_attn.feature_map_k.bias');
    const lora = applyLora(model, { rank: 2, targets: ['q', 'v'] });
    const groups = parameterGroups(model);
    expect(groups.lora.sort()).toEqual([...lora.names].sort());
    expect(groups.feature_map.length).toBe(8);
    expect(groups.gamma).toEqual(['model.layers.0.self_attn.gamma_logit', 'model.layers.1.self_attn.gamma_logit']);
    expect(groups.base.length).toBe(model.params.size - 8 - 2 - lora.names.length);
    expect(paramGroup('model.norm.weight')).toBe('base');
    // LoRA freezes phi and gamma (SPEC sec. 4 default)
    expect([...model.trainable].sort()).toEqual([...lora.names].sort());
    // B = 0 would zero dA: give B values
    for (const n of lora.names.filter((x) => x.includes('lora_B'))) {
      const p = model.params.get(n)!;
      const t = Tensor.fromArray(new Rng(1).normals(p.numel, 0.1), p.shape, { dtype: 'f64' });
      copyInto(p, t);
      t.dispose();
    }
    const x = ids(2, 8, cfg.vocabSize, 4);
    unfreeze(model, () => true);
    await model.loss(x);
    model.zeroGrad();
    const all = await snapshot(model.backward());
    expect(all.size).toBe(model.params.size);

    freeze(model, 'base');
    unfreeze(model, ['gamma', 'model.layers.0.self_attn.q_proj.weight']);
    freeze(model, /feature_map_k/);
    const want = [...lora.names, ...groups.gamma, ...groups.feature_map.filter((n) => n.includes('feature_map_q')), 'model.layers.0.self_attn.q_proj.weight'].sort();
    expect([...model.trainable].sort()).toEqual(want);
    expect([...model.grads.keys()].sort()).toEqual(want); // frozen gradients freed
    model.zeroGrad();
    await model.loss(x);
    const some = await snapshot(model.backward());
    expect([...some.keys()].sort()).toEqual(want);
    for (const [n, g] of some) expect(relErr(g, all.get(n)!), n).toBeLessThan(1e-13);
    // unfreezing mid-accumulation keeps accumulated gradients and adds zeros for the new ones
    unfreeze(model, 'model.norm.weight');
    expect(Array.from(await model.grads.get('model.norm.weight')!.toArray()).every((v) => v === 0)).toBe(true);
    expect(relErr(await model.grads.get(lora.names[0]!)!.toArray(), all.get(lora.names[0]!)!)).toBeLessThan(1e-13);
    expect(() => freeze(model, ['nope'])).toThrow(/neither/);

    // the optimizer updates exactly the trainable set
    const before = new Map<string, Float64Array>();
    for (const n of model.params.keys()) before.set(n, Float64Array.from(await model.params.get(n)!.toArray()));
    const opt = new AdamWOptimizer(model.params, [...model.trainable], { lr: 1e-2, weightDecay: 0 });
    model.zeroGrad();
    await model.loss(x);
    await opt.step(model.backward());
    for (const [n, b] of before) {
      const changed = relErr(await model.params.get(n)!.toArray(), b) > 0;
      expect(changed, n).toBe(model.trainable.has(n));
    }
    opt.dispose();
    model.dispose();
  });

  it('SSD keep masks have the requested granularity', () => {
    const r = new Rng(3);
    const rnd = () => r.uniform();
    const layer = drawSsdKeep({ layers: 50, batch: 2, heads: 3, p: 0.5, random: rnd });
    for (const m of layer) expect(new Set(m).size).toBe(1);
    expect(new Set(layer.map((m) => m[0])).size).toBe(2);
    const head = drawSsdKeep({ layers: 20, batch: 2, heads: 3, p: 0.5, granularity: 'head', random: rnd });
    for (const m of head) expect(Array.from(m.subarray(0, 3))).toEqual(Array.from(m.subarray(3, 6)));
    const sample = drawSsdKeep({ layers: 20, batch: 2, heads: 3, p: 0.5, granularity: 'sample', random: rnd });
    for (const m of sample) expect(new Set(m.subarray(0, 3)).size + new Set(m.subarray(3, 6)).size).toBe(2);
    expect(drawSsdKeep({ layers: 3, batch: 2, heads: 2, p: 0, random: rnd }).every((m) => m.every((v) => v === 1))).toBe(true);
    expect(drawSsdKeep({ layers: 3, batch: 2, heads: 2, p: 1, random: rnd }).every((m) => m.every((v) => v === 0))).toBe(true);
  });
});

describe('attention and MLP bias layers', () => {
  it('bias gradients of a full model match central differences (f64)', async () => {
    const cfg = tinyLlamaConfig({ vocab_size: 40, attention_bias: true, mlp_bias: true, num_key_value_heads: 4 });
    const model = randomLlamaModel(cfg, { dtype: 'f64', seed: 12, std: 0.3 });
    expect(model.params.has('model.layers.0.self_attn.k_proj.bias')).toBe(true);
    const x = ids(2, 7, cfg.vocabSize, 6);
    await model.loss(x);
    model.zeroGrad();
    const grads = model.backward();
    const set = async (m: LlamaModel, name: string, data: Float64Array) => {
      const p = m.params.get(name)!;
      const t = Tensor.fromArray(data, p.shape, { dtype: 'f64' });
      copyInto(p, t);
      t.dispose();
    };
    const names = ['q_proj', 'k_proj', 'v_proj', 'o_proj'].map((p) => `model.layers.0.self_attn.${p}.bias`);
    names.push(...['gate_proj', 'up_proj', 'down_proj'].map((p) => `model.layers.1.mlp.${p}.bias`));
    for (const name of names) {
      const g = await grads.get(name)!.toArray();
      const base = Float64Array.from(await model.params.get(name)!.toArray());
      let nonzero = 0;
      for (const i of [0, 3, base.length - 1]) {
        const h = 1e-5;
        const at = async (d: number) => {
          const v = Float64Array.from(base);
          v[i]! += d;
          await set(model, name, v);
          const l = await model.loss(x);
          model.clearPending();
          return l;
        };
        const fd = ((await at(h)) - (await at(-h))) / (2 * h);
        await set(model, name, base);
        if (Math.abs(fd) > 1e-6) nonzero++;
        expect(Math.abs(fd - g[i]!), `${name}[${i}] fd ${fd} vs ${g[i]}`).toBeLessThan(1e-9 + 1e-6 * Math.abs(fd));
      }
      // k_proj's bias only shifts scores by a per-query constant: softmax ignores it
      if (!name.includes('k_proj')) expect(nonzero, name).toBeGreaterThan(0);
    }
    const live = liveTensors().tensors;
    model.dispose();
    expect(liveTensors().tensors).toBeLessThan(live);
  });
});
