// llama-tiny-bf16 run by the CUDA runtime in bf16 (the checkpoint's own dtype, no widening)
// against the float64 fixtures, under the SPEC tolerance rule: err(cuda bf16 vs f64) <= 2 x
// err(naive bf16 vs f64) + 8 units x max(1, max |ref|). The naive bf16 computation is the CPU
// model with every op's output rounded to bf16 (HYBRID_ATTENTION_CPU_EMULATE, set before the
// addon loads; the pool runs each test file in its own process). Outputs poisoned.
process.env.HYBRID_ATTENTION_POISON = '1';
process.env.HYBRID_ATTENTION_CPU_EMULATE = 'bf16';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolve } from 'node:path';
import { LlamaModel } from '../../lib/model/llama.js';
import { greedyGenerate } from '../../lib/model/generate.js';
import { fixturesDir, haveFixtures, maxAbs } from '../helpers/fixtures.js';
import { loadExpected, tokenRows } from '../helpers/llama-fixtures.js';
import { withinRule } from '../helpers/tolerance.js';
import { gpuAvailable } from './gpu-env.js';

const BF16_UNIT = 2 ** -8;

/** Fraction of rows whose argmax agrees. */
function argmaxAgreement(a: ArrayLike<number>, b: ArrayLike<number>, V: number): number {
  let same = 0;
  const rows = a.length / V;
  for (let r = 0; r < rows; r++) {
    let ia = 0, ib = 0;
    for (let v = 1; v < V; v++) {
      if (a[r * V + v]! > a[r * V + ia]!) ia = v;
      if (b[r * V + v]! > b[r * V + ib]!) ib = v;
    }
    if (ia === ib) same++;
  }
  return same / rows;
}

const report: Record<string, string> = {};

describe.skipIf(!gpuAvailable || !haveFixtures)('llama-tiny-bf16 on CUDA (bf16) vs the float64 fixtures', () => {
  let gpu: LlamaModel, naive: LlamaModel;
  let exp: Awaited<ReturnType<typeof loadExpected>>;
  let ids: number[][];
  beforeAll(async () => {
    gpu = await LlamaModel.load(resolve(fixturesDir, 'llama-tiny-bf16'), { device: 'cuda' });
    naive = await LlamaModel.load(resolve(fixturesDir, 'llama-tiny-bf16'), { dtype: 'f32', device: 'cpu' });
    exp = await loadExpected('llama-tiny-bf16/expected.safetensors');
    ids = tokenRows(exp.get('input_ids')!);
  });
  afterAll(() => {
    gpu?.dispose();
    naive?.dispose();
  });

  it('the weights arrive in bf16 bit for bit', () => {
    expect(gpu.dtype).toBe('bf16');
    expect(gpu.params.get('model.embed_tokens.weight')!.dtype).toBe('bf16');
  });

  it('logits and hidden states', async () => {
    const g = gpu.forward(ids, { hiddenStates: true });
    const n = naive.forward(ids, { hiddenStates: true });
    const ref = exp.get('logits')!.data;
    const gl = await g.logits.toArray();
    const r = withinRule(gl, await n.logits.toArray(), ref, BF16_UNIT);
    report['bf16 logits'] = r.msg;
    expect(r.ok, r.msg).toBe(true);
    const agree = argmaxAgreement(gl, ref, gpu.config.vocabSize);
    report['bf16 argmax agreement with f64'] = agree.toFixed(4);
    expect(agree).toBeGreaterThan(0.9);
    for (let i = 0; i < 3; i++) {
      const h = withinRule(await g.hiddenStates![i]!.toArray(), await n.hiddenStates![i]!.toArray(), exp.get(`hidden_states.${i}`)!.data, BF16_UNIT);
      expect(h.ok, `hidden_states.${i}: ${h.msg}`).toBe(true);
    }
    for (const o of [g, n]) [o.logits, ...o.hiddenStates!].forEach((t) => t.dispose());
  });

  for (const chunked of [false, true]) {
    it(`loss and every gradient (${chunked ? 'chunked' : 'plain'} cross-entropy)`, async () => {
      const opts = chunked ? { chunked: true, vocabChunk: 500 } : {};
      const lg = await gpu.loss(ids, opts);
      const ln = await naive.loss(ids, opts);
      const lr = withinRule([lg], [ln], [exp.get('loss')!.data[0]!], BF16_UNIT);
      report[`bf16 loss${chunked ? ' (chunked)' : ''}`] = lr.msg;
      expect(lr.ok, `loss: ${lr.msg}`).toBe(true);
      gpu.zeroGrad();
      naive.zeroGrad();
      const gg = gpu.backward(), gn = naive.backward();
      const names = [...exp.keys()].filter((k) => k.startsWith('grad.')).map((k) => k.slice(5));
      expect(new Set(gg.keys())).toEqual(new Set(names));
      let worst = 0;
      for (const n of names) {
        const r = withinRule(await gg.get(n)!.toArray(), await gn.get(n)!.toArray(), exp.get(`grad.${n}`)!.data, BF16_UNIT);
        worst = Math.max(worst, r.eg / Math.max(1e-30, maxAbs(exp.get(`grad.${n}`)!.data)));
        expect(r.ok, `${n}: ${r.msg}`).toBe(true);
      }
      report[`bf16 worst relative gradient error${chunked ? ' (chunked)' : ''}`] = worst.toExponential(2);
    });
  }

  it('greedy generation (KV cache) follows the float64 tokens', async () => {
    const g = Array.from(exp.get('greedy_ids')!.data);
    const out = await greedyGenerate(gpu, g.slice(0, 16), { maxNewTokens: g.length - 16 });
    let agree = 0;
    while (agree < g.length - 16 && out[16 + agree] === g[16 + agree]) agree++;
    report['bf16 greedy tokens equal to f64 before the first divergence'] = `${agree} of ${g.length - 16}`;
    expect(out.slice(0, 16)).toEqual(g.slice(0, 16));
    expect(agree).toBeGreaterThanOrEqual(4);
  });
});

afterAll(() => {
  if (Object.keys(report).length) console.log('llama-model-bf16 (CUDA):', JSON.stringify(report, null, 1));
});
