// The whole Llama runtime on CUDA in f32: llama-tiny's logits, hidden states, loss and every
// gradient against the float64 fixtures, within the SPEC tolerance rule with the CPU f32 run as
// the naive f32 computation (err(cuda) <= 2 err(cpu f32) + 8 units x max(1, max |ref|)); greedy
// ids reproduced exactly; a converted (hybrid) model's loss and gradients against its CPU f64
// run; bf16 training pieces (fp32 master weights, LoRA, checkpoint resume). Outputs poisoned.
process.env.HYBRID_ATTENTION_POISON = '1';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolve } from 'node:path';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { Tensor, cudaMemoryStats, synchronize } from '../../lib/index.js';
import { LlamaModel } from '../../lib/model/llama.js';
import { greedyGenerate } from '../../lib/model/generate.js';
import { randomLlamaModel, tinyLlamaConfig } from '../../lib/model/random-init.js';
import { convertToHybrid } from '../../lib/model/convert.js';
import { applyLora } from '../../lib/model/lora.js';
import { AdamWOptimizer } from '../../lib/model/optimizer.js';
import { loadTrainingState, saveTrainingState } from '../../lib/model/checkpoint.js';
import { fixturesDir, haveFixtures, maxAbs } from '../helpers/fixtures.js';
import { loadExpected, tokenRows } from '../helpers/llama-fixtures.js';
import { maxDiff, withinRule } from '../helpers/tolerance.js';
import { gpuAvailable } from './gpu-env.js';

const F32_UNIT = 2 ** -23;

const report: Record<string, string> = {};

describe.skipIf(!gpuAvailable || !haveFixtures)('llama-tiny on CUDA (f32) vs the float64 fixtures', () => {
  let gpu: LlamaModel, cpu: LlamaModel;
  let exp: Awaited<ReturnType<typeof loadExpected>>;
  let ids: number[][];
  beforeAll(async () => {
    gpu = await LlamaModel.load(resolve(fixturesDir, 'llama-tiny'), { dtype: 'f32', device: 'cuda' });
    cpu = await LlamaModel.load(resolve(fixturesDir, 'llama-tiny'), { dtype: 'f32', device: 'cpu' });
    exp = await loadExpected('llama-tiny/expected.safetensors');
    ids = tokenRows(exp.get('input_ids')!);
  });
  afterAll(() => {
    gpu?.dispose();
    cpu?.dispose();
  });

  it('logits and hidden states', async () => {
    const g = gpu.forward(ids, { hiddenStates: true });
    const c = cpu.forward(ids, { hiddenStates: true });
    const r = withinRule(await g.logits.toArray(), await c.logits.toArray(), exp.get('logits')!.data, F32_UNIT);
    report['f32 logits'] = r.msg;
    expect(r.ok, r.msg).toBe(true);
    for (let i = 0; i < 3; i++) {
      const h = withinRule(await g.hiddenStates![i]!.toArray(), await c.hiddenStates![i]!.toArray(), exp.get(`hidden_states.${i}`)!.data, F32_UNIT);
      expect(h.ok, `hidden_states.${i}: ${h.msg}`).toBe(true);
    }
    for (const o of [g, c]) [o.logits, ...o.hiddenStates!].forEach((t) => t.dispose());
  });

  for (const chunked of [false, true]) {
    it(`loss and every gradient (${chunked ? 'chunked' : 'plain'} cross-entropy)`, async () => {
      const opts = chunked ? { chunked: true, vocabChunk: 500 } : {};
      const lossRef = exp.get('loss')!.data[0]!;
      const lg = await gpu.loss(ids, opts);
      const lc = await cpu.loss(ids, opts);
      const lr = withinRule([lg], [lc], [lossRef], F32_UNIT);
      expect(lr.ok, `loss: ${lr.msg}`).toBe(true);
      gpu.zeroGrad();
      cpu.zeroGrad();
      const gg = gpu.backward(), gc = cpu.backward();
      const names = [...exp.keys()].filter((k) => k.startsWith('grad.')).map((k) => k.slice(5));
      expect(new Set(gg.keys())).toEqual(new Set(names));
      for (const n of names) {
        const r = withinRule(await gg.get(n)!.toArray(), await gc.get(n)!.toArray(), exp.get(`grad.${n}`)!.data, F32_UNIT);
        expect(r.ok, `${n}: ${r.msg}`).toBe(true);
      }
      report[`f32 loss${chunked ? ' (chunked)' : ''}`] = lr.msg;
    });
  }

  for (const useCache of [true, false]) {
    it(`greedy ids exactly (${useCache ? 'KV cache' : 'recompute'})`, async () => {
      const g = Array.from(exp.get('greedy_ids')!.data);
      const out = await greedyGenerate(gpu, g.slice(0, 16), { maxNewTokens: g.length - 16, useCache });
      expect(out).toEqual(g);
    });
  }
});

describe.skipIf(!gpuAvailable)('converted (hybrid) model on CUDA', () => {
  // Same weights on both devices (Tensor.randn is counter-based): CUDA f32 and CPU f32 against
  // CPU f64, every parameter of the hybrid layers included.
  const cfg = tinyLlamaConfig({ vocab_size: 96, hidden_size: 64, intermediate_size: 96, num_attention_heads: 4, num_key_value_heads: 2 });
  const rows = Array.from({ length: 2 }, (_, b) => Array.from({ length: 70 }, (_, t) => (7 * t + 13 * b + ((t * t) % 11)) % 96));
  const build = (device: 'cpu' | 'cuda', dtype: 'f32' | 'f64') => {
    const m = randomLlamaModel(cfg, { device, dtype, seed: 3, std: 0.2 });
    const conv = convertToHybrid(m, { window: 16, featureMap: 'hedgecats', layers: [0, 1], seed: 5 });
    return { m, names: conv.names };
  };

  for (const mode of ['hybrid', 'la', 'swa'] as const) {
    it(`mode ${mode}: loss and every gradient (f32) within the rule against f64`, async () => {
      const g = build('cuda', 'f32'), c = build('cpu', 'f32'), r = build('cpu', 'f64');
      for (const x of [g, c, r]) {
        x.m.setAttentionMode(mode);
        for (const n of x.m.params.keys()) x.m.trainable.add(n);
      }
      const losses = [] as number[];
      const grads = [] as Map<string, Tensor>[];
      for (const x of [g, c, r]) {
        losses.push(await x.m.loss(rows));
        x.m.zeroGrad();
        grads.push(x.m.backward());
      }
      const lr = withinRule([losses[0]!], [losses[1]!], [losses[2]!], F32_UNIT);
      expect(lr.ok, `loss: ${lr.msg}`).toBe(true);
      expect(g.names.length).toBeGreaterThan(0);
      for (const n of grads[2]!.keys()) {
        const ref = await grads[2]!.get(n)!.toArray();
        const rr = withinRule(await grads[0]!.get(n)!.toArray(), await grads[1]!.get(n)!.toArray(), ref, F32_UNIT);
        // f32 sums over ~140 tokens: give the rule the f32 CPU error or 1e-5 relative, whichever is larger.
        const ok = rr.ok || maxDiff(await grads[0]!.get(n)!.toArray(), ref) <= 1e-5 * Math.max(1, maxAbs(ref));
        expect(ok, `${mode} ${n}: ${rr.msg}`).toBe(true);
      }
      for (const x of [g, c, r]) x.m.dispose();
    });
  }
});

describe.skipIf(!gpuAvailable)('bf16 training on CUDA', () => {
  const cfg = tinyLlamaConfig({ vocab_size: 128, hidden_size: 64, intermediate_size: 128, num_attention_heads: 4, num_key_value_heads: 2 });
  const rows = Array.from({ length: 4 }, (_, b) => Array.from({ length: 48 }, (_, t) => (3 * t + 5 * b) % 17));
  let dir: string;
  beforeAll(() => (dir = mkdtempSync(resolve(tmpdir(), 'ha-gpu-train-'))));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('LoRA + AdamW with fp32 master weights: the loss falls; checkpoint resume is bit-identical', async () => {
    const model = randomLlamaModel(cfg, { device: 'cuda', seed: 1 });
    expect(model.dtype).toBe('bf16');
    const lora = applyLora(model, { rank: 4, alpha: 8, targets: ['q', 'v', 'gate', 'down'] });
    const opt = new AdamWOptimizer(model.params, lora.names, { lr: 3e-2, maxGradNorm: 1 });
    for (const n of lora.names) {
      expect(opt.masters.get(n)!.dtype).toBe('f32');
      expect(opt.expAvg.get(n)!.dtype).toBe('f32');
    }
    const step = async () => {
      model.zeroGrad();
      const l = await model.loss(rows);
      model.backward();
      await opt.step(model.grads);
      return l;
    };
    const losses: number[] = [];
    for (let i = 0; i < 8; i++) losses.push(await step());
    report['bf16 LoRA losses'] = losses.map((l) => l.toFixed(4)).join(' ');
    expect(losses[7]!).toBeLessThan(losses[0]! - 0.3);
    // The bf16 parameter is the master rounded once.
    const n0 = lora.names[1]!;
    const rounded = opt.masters.get(n0)!.cast('bf16');
    expect(Array.from(await model.params.get(n0)!.toArray())).toEqual(Array.from(await rounded.toArray()));
    rounded.dispose();

    const path = resolve(dir, 'state.safetensors');
    await saveTrainingState(path, opt);
    const next = [await step(), await step()];
    const after = await model.params.get(n0)!.toArray();
    await loadTrainingState(path, opt);
    const again = [await step(), await step()];
    expect(again).toEqual(next);
    expect(Array.from(await model.params.get(n0)!.toArray())).toEqual(Array.from(after));
    await synchronize('cuda');
    const mem = cudaMemoryStats();
    expect(mem.used).toBeGreaterThan(0);
    expect(mem.usedPeak).toBeGreaterThanOrEqual(mem.used);
    expect(mem.reservedPeak).toBeGreaterThanOrEqual(mem.usedPeak);
    opt.dispose();
    model.dispose();
  });
});

afterAll(() => {
  if (Object.keys(report).length) console.log('llama-model (CUDA):', JSON.stringify(report, null, 1));
});
