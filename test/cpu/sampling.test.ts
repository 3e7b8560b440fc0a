/** Sampling for generation: distributions, seeds, top-k = 1 vs greedy, batched prompts. */
import { describe, expect, it } from 'vitest';
import { greedyGenerate } from '../../lib/model/generate.js';
import { generate, sampleToken, samplingDistribution, SamplingRng } from '../../lib/model/sampling.js';
import { convertToHybrid } from '../../lib/model/convert.js';
import { randomLlamaModel, tinyLlamaConfig } from '../../lib/model/random-init.js';
import { Rng } from '../helpers/fixtures.js';

const softmax = (z: number[]) => {
  const m = Math.max(...z);
  const e = z.map((x) => Math.exp(x - m));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / s);
};

describe('sampling distribution', () => {
  const logits = [1.0, 3.0, 0.5, 2.0, -1.0, 2.5];

  it('temperature, top-k, top-p give the expected distributions', () => {
    expect(Array.from(samplingDistribution(logits))).toEqual(softmax(logits).map((x) => expect.closeTo(x, 15)));
    expect(Array.from(samplingDistribution(logits, { temperature: 0.5 }))).toEqual(softmax(logits.map((x) => x / 0.5)).map((x) => expect.closeTo(x, 15)));
    // top-k 2: tokens 1 (3.0) and 5 (2.5)
    const k2 = softmax([3.0, 2.5]);
    expect(Array.from(samplingDistribution(logits, { topK: 2 }))).toEqual([0, k2[0], 0, 0, 0, k2[1]].map((x) => expect.closeTo(x!, 15)));
    // top-p: probabilities sorted: token 1, 5, 3, 0, 2, 4; keep until the mass reaches p
    const full = softmax(logits);
    const p = full[1]! + full[5]! - 1e-9; // reached after two tokens
    const d = samplingDistribution(logits, { topP: p });
    expect(Array.from(d)).toEqual([0, full[1]! / (full[1]! + full[5]!), 0, 0, 0, full[5]! / (full[1]! + full[5]!)].map((x) => expect.closeTo(x, 14)));
    // a p just above the two-token mass keeps the third (the crossing token)
    expect(samplingDistribution(logits, { topP: full[1]! + full[5]! + 1e-9 }).filter((x) => x > 0).length).toBe(3);
    // tiny p keeps the single best token (min tokens to keep 1); minTokensToKeep raises it
    expect(Array.from(samplingDistribution(logits, { topP: 1e-6 }))).toEqual([0, 1, 0, 0, 0, 0]);
    expect(samplingDistribution(logits, { topP: 1e-6, minTokensToKeep: 3 }).filter((x) => x > 0).length).toBe(3);
    // top-k then top-p (HF order): top-k 3 renormalised, then p
    const k3 = softmax([3.0, 2.5, 2.0]);
    const kp = samplingDistribution(logits, { topK: 3, topP: k3[0]! + 1e-9 });
    expect(Array.from(kp)).toEqual([0, expect.closeTo(k3[0]! / (k3[0]! + k3[1]!), 14), 0, 0, 0, expect.closeTo(k3[1]! / (k3[0]! + k3[1]!), 14)]);
    // ties with the k-th value are kept
    expect(samplingDistribution([1, 2, 2, 0], { topK: 2 }).filter((x) => x > 0).length).toBe(2);
    expect(samplingDistribution([2, 1, 1, 0], { topK: 2 }).filter((x) => x > 0).length).toBe(3);
    // greedy
    expect(Array.from(samplingDistribution(logits, { temperature: 0 }))).toEqual([0, 1, 0, 0, 0, 0]);
    expect(Array.from(samplingDistribution([1, 5, 5], { doSample: false }))).toEqual([0, 1, 0]);
  });

  it('rejects bad options', () => {
    expect(() => samplingDistribution(logits, { topP: 0 })).toThrow(/topP/);
    expect(() => samplingDistribution(logits, { topK: -1 })).toThrow(/topK/);
    expect(() => samplingDistribution(logits, { temperature: -1 })).toThrow(/temperature/);
  });

  it('draws follow the distribution (chi-square-ish bound) and never pick filtered tokens', () => {
    const rng = new SamplingRng(123);
    for (const o of [{}, { temperature: 0.7, topK: 4 }, { topP: 0.8 }]) {
      const p = samplingDistribution(logits, o);
      const n = 40000;
      const counts = new Array(logits.length).fill(0);
      for (let i = 0; i < n; i++) counts[sampleToken(logits, o, rng)]++;
      for (let j = 0; j < p.length; j++) {
        if (p[j] === 0) expect(counts[j]).toBe(0);
        const sd = Math.sqrt((p[j]! * (1 - p[j]!)) / n);
        expect(Math.abs(counts[j] / n - p[j]!)).toBeLessThanOrEqual(5 * sd + 1e-12);
      }
    }
  });

  it('a seed fixes the draws', () => {
    const draw = (seed: number) => {
      const r = new SamplingRng(seed);
      return Array.from({ length: 50 }, () => sampleToken(logits, { temperature: 1.3 }, r));
    };
    expect(draw(7)).toEqual(draw(7));
    expect(draw(7)).not.toEqual(draw(8));
  });
});

describe('generate', () => {
  const cfg = tinyLlamaConfig({ vocab_size: 40 });
  const r = new Rng(4);
  const prompt = (n: number) => Array.from({ length: n }, () => r.int(0, 39));
  const prompts = [prompt(5), prompt(3), prompt(5), prompt(7)];

  it('top-k = 1 and temperature 0 equal greedy; seeds reproduce; batched = one by one', async () => {
    const model = randomLlamaModel(cfg, { seed: 3, std: 0.5 });
    const greedy = await Promise.all(prompts.map((p) => greedyGenerate(model, p, { maxNewTokens: 8 })));
    expect(await generate(model, prompts, { maxNewTokens: 8, topK: 1, temperature: 1.5, seed: 9 })).toEqual(greedy);
    expect(await generate(model, prompts, { maxNewTokens: 8, temperature: 0 })).toEqual(greedy);
    const o = { maxNewTokens: 10, temperature: 1.2, topP: 0.95, seed: 42 };
    const a = await generate(model, prompts, o);
    expect(await generate(model, prompts, o)).toEqual(a);
    expect(await generate(model, prompts, { ...o, seed: 43 })).not.toEqual(a);
    expect(await generate(model, prompts, { ...o, useCache: false })).toEqual(a);
    // per-prompt seeds: each row equals generating that prompt alone with its seed
    const seeds = [5, 6, 7, 8];
    const batched = await generate(model, prompts, { ...o, seeds });
    for (let i = 0; i < prompts.length; i++) expect(await generate(model, [prompts[i]!], { ...o, seeds: [seeds[i]!] })).toEqual([batched[i]]);
    model.dispose();
  });

  it('EOS stops each row; hybrid layers sample through the decode state', async () => {
    const model = randomLlamaModel(cfg, { seed: 5, std: 0.5 });
    convertToHybrid(model, { window: 3, featureMap: 'hedgecats' });
    const o = { maxNewTokens: 12, temperature: 1.0, topK: 10, seed: 1 };
    const a = await generate(model, prompts, o);
    expect(await generate(model, prompts, { ...o, useCache: false })).toEqual(a);
    a.forEach((row, i) => expect(row.length).toBe(prompts[i]!.length + 12));
    const eos = a[0]![prompts[0]!.length + 2]!;
    const firstEos = a[0]!.slice(prompts[0]!.length).indexOf(eos); // <= 2 (it may occur earlier)
    const b = await generate(model, prompts, { ...o, eosTokenIds: [eos] });
    expect(b[0]).toEqual(a[0]!.slice(0, prompts[0]!.length + firstEos + 1));
    b.forEach((row, i) => {
      const gen = row.slice(prompts[i]!.length);
      expect(gen.indexOf(eos) === -1 || gen.indexOf(eos) === gen.length - 1).toBe(true);
      expect(row).toEqual(a[i]!.slice(0, row.length));
    });
    model.dispose();
  });
});
