/** Llama-tiny against the float64 PyTorch/transformers fixtures (see ../shared/fixtures/README.md). */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolve } from 'node:path';
import { LlamaModel } from '../../lib/model/llama.js';
import { greedyGenerate } from '../../lib/model/generate.js';
import { fixturesDir, haveFixtures, relErr, type HostTensor } from '../helpers/fixtures.js';
import { loadExpected, tokenRows } from '../helpers/llama-fixtures.js';

const report: Record<string, number> = {};

for (const variant of ['llama-tiny', 'llama-tiny-bf16'] as const) {
  describe.skipIf(!haveFixtures)(`${variant} (f32)`, () => {
    let model: LlamaModel;
    let exp: Map<string, HostTensor>;
    let ids: number[][];

    beforeAll(async () => {
      model = await LlamaModel.load(resolve(fixturesDir, variant), { dtype: 'f32' });
      exp = await loadExpected(`${variant}/expected.safetensors`);
      ids = tokenRows(exp.get('input_ids')!);
    });
    afterAll(() => model?.dispose());

    it('logits and hidden states', async () => {
      const { logits, hiddenStates } = model.forward(ids, { hiddenStates: true });
      const e = relErr(await logits.toArray(), exp.get('logits')!.data);
      report[`${variant} logits`] = e;
      expect(e).toBeLessThan(2e-6);
      expect(hiddenStates!.length).toBe(3);
      for (let i = 0; i < 3; i++) {
        const h = relErr(await hiddenStates![i]!.toArray(), exp.get(`hidden_states.${i}`)!.data);
        report[`${variant} hidden_states.${i}`] = h;
        expect(h).toBeLessThan(2e-6);
      }
      logits.dispose();
      hiddenStates!.forEach((t) => t.dispose());
    });

    it('lastPositionOnly: the last row of the full logits', async () => {
      const full = await model.forward(ids).logits.toArray();
      const last = model.forward(ids, { lastPositionOnly: true }).logits;
      const V = model.config.vocabSize, T = ids[0]!.length;
      expect(last.shape).toEqual([ids.length, 1, V]);
      const got = await last.toArray();
      ids.forEach((_, b) => expect(Array.from(got.subarray(b * V, (b + 1) * V))).toEqual(Array.from(full.subarray((b * T + T - 1) * V, (b * T + T) * V))));
      expect(() => model.forward(ids, { lastPositionOnly: true, train: true })).toThrow(/lastPositionOnly/);
    });

    for (const chunked of [false, true]) {
      it(`loss and every gradient (${chunked ? 'chunked' : 'plain'} cross-entropy)`, async () => {
        const loss = await model.loss(ids, chunked ? { chunked: true, vocabChunk: 500 } : {});
        const le = Math.abs(loss - exp.get('loss')!.data[0]!) / Math.abs(exp.get('loss')!.data[0]!);
        report[`${variant} loss${chunked ? ' (chunked)' : ''}`] = le;
        expect(le).toBeLessThan(1e-6);
        model.zeroGrad();
        const grads = model.backward();
        const names = [...exp.keys()].filter((k) => k.startsWith('grad.')).map((k) => k.slice(5));
        expect(new Set(grads.keys())).toEqual(new Set(names));
        let worst = 0;
        for (const n of names) {
          const e = relErr(await grads.get(n)!.toArray(), exp.get(`grad.${n}`)!.data);
          worst = Math.max(worst, e);
          expect(e, n).toBeLessThan(5e-6);
        }
        report[`${variant} worst grad${chunked ? ' (chunked)' : ''}`] = worst;
      });
    }

    for (const useCache of [true, false]) {
      it(`greedy ids (${useCache ? 'KV cache' : 'full recompute per token'})`, async () => {
        const g = Array.from(exp.get('greedy_ids')!.data);
        const out = await greedyGenerate(model, g.slice(0, 16), { maxNewTokens: g.length - 16, useCache });
        expect(out).toEqual(g);
      });
    }

    it('KV-cache logits equal the full forward', async () => {
      const prompt = Array.from(exp.get('input_ids')!.data.subarray(0, 20));
      const caches = model.createCaches(1, 20)!;
      const parts = [model.forward([prompt.slice(0, 12)], { caches }).logits];
      for (let t = 12; t < 20; t++) parts.push(model.forward([[prompt[t]!]], { caches, positionOffset: t }).logits);
      const inc = (await Promise.all(parts.map((p) => p.toArray()))).flatMap((a) => Array.from(a));
      const { logits } = model.forward([prompt]);
      const e = relErr(inc, await logits.toArray());
      report[`${variant} kv-cache vs full`] = e;
      expect(e).toBeLessThan(1e-6);
      [...parts, logits].forEach((t) => t.dispose());
      caches.forEach((c) => c.dispose());
    });
  });
}

describe.skipIf(!haveFixtures)('llama-tiny (f64)', () => {
  it('logits and loss', async () => {
    const model = await LlamaModel.load(resolve(fixturesDir, 'llama-tiny'), { dtype: 'f64' });
    const exp = await loadExpected('llama-tiny/expected.safetensors');
    const x = exp.get('input_ids')!;
    const ids = { ids: Array.from(x.data), batch: x.shape[0]!, seqlen: x.shape[1]! };
    const { logits } = model.forward(ids);
    expect(logits.dtype).toBe('f64');
    const e = relErr(await logits.toArray(), exp.get('logits')!.data);
    report['llama-tiny f64 logits'] = e;
    expect(e).toBeLessThan(2e-6);
    const l = await model.loss(ids);
    report['llama-tiny f64 loss'] = Math.abs(l - exp.get('loss')!.data[0]!) / exp.get('loss')!.data[0]!;
    logits.dispose();
    model.dispose();
  });
});

afterAll(() => {
  console.log('observed relative errors:', JSON.stringify(report, null, 1));
});
