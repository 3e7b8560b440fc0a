// The conversion recipes on CUDA in bf16 (fp32 master weights), end to end on a small random
// model: transfer and fine-tuning losses fall for every method, diagnostics run every mode with
// the LA share of the normaliser, a converted model saves and loads back on the CPU with the
// same outputs within the bf16 rounding of its weights, and a resumed ssd run is bit-identical.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomLlamaModel, tinyLlamaConfig } from '../../lib/model/random-init.js';
import { arraySource, loadConvertedModel, RECIPES, runRecipe, saveConvertedModel } from '../../lib/recipes/index.js';
import { diagnose, modeControlFor } from '../../lib/eval/diagnose.js';
import { DIAGNOSTIC_MODES } from '../../lib/eval/report.js';
import { scorerFromModel } from '../../lib/eval/scoring.js';
import { collectLaShare } from '../../lib/eval/la-stats.js';
import { copyBatch as copyTask } from '../helpers/copy-task.js';
import { gpuAvailable } from './gpu-env.js';

const T = 64;
const B = 4;
const W = 16;
const copyBatch = (seed: number) => copyTask(seed, B, T);
const train = [copyBatch(1), copyBatch(2), copyBatch(3)];
const data = arraySource(train, [copyBatch(9)]);
const cfg = tinyLlamaConfig({ hidden_size: 64, intermediate_size: 128, num_attention_heads: 4, num_key_value_heads: 2 });
const small = (device: 'cpu' | 'cuda' = 'cuda') => randomLlamaModel(cfg, { device, seed: 2 });

let tmp: string;
beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'ha-gpu-recipes-'));
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

describe.skipIf(!gpuAvailable)('recipes on CUDA (bf16)', () => {
  it.each(RECIPES)('%s: transfer and fine-tuning losses fall; diagnostics run every mode', async (method) => {
    const model = small();
    expect(model.dtype).toBe('bf16');
    const r = await runRecipe(method, model, data, {
      window: W,
      transfer: { steps: 10, lr: 1e-2 },
      finetune: method === 'linear-only' ? { steps: 16, lr: 1e-2, earlyStopping: false } : { steps: 16, lr: 1e-2, earlyStopping: false, gapGuard: false },
    });
    const tr = r.transfer!.curve.map((c) => c.loss);
    expect(tr.every(Number.isFinite)).toBe(true);
    expect(Math.min(...tr.slice(-3))).toBeLessThan(tr[0]!);
    const ft = r.finetune!.curve.map((c) => c.loss);
    expect(Math.min(...ft.slice(-3))).toBeLessThan(ft[0]! - 0.2);
    const seqs = [Array.from(train[0]!.ids.slice(0, T)), Array.from(train[1]!.ids.slice(0, T))];
    const report = await diagnose(scorerFromModel(model), modeControlFor(model), { sequences: seqs }, { window: W });
    expect(report.modes.map((m) => m.mode)).toEqual([...DIAGNOSTIC_MODES]);
    for (const m of report.modes) expect(Number.isFinite(m.metrics.ppl), `${method} ${m.mode}`).toBe(true);
    const la = await collectLaShare(model, (ids) => model.forward(ids).logits.dispose(), seqs, cfg.numHeads);
    expect(la).toBeDefined();
    for (const v of la!.mean.flat()) expect(v >= 0 && v <= 1).toBe(true);
    model.dispose();
  });

  it('a converted model saved from CUDA loads on the CPU with the same outputs (to bf16 rounding)', async () => {
    const model = small();
    const r = await runRecipe('lolcats', model, data, { window: W, transfer: { steps: 3 }, finetune: { steps: 3, lr: 1e-2 } });
    const dir = join(tmp, 'saved');
    await saveConvertedModel(dir, model, r.conversion, { merge: false });
    const { model: gpu } = await loadConvertedModel(dir, { device: 'cuda', dtype: 'f32' });
    const { model: cpu } = await loadConvertedModel(dir, { device: 'cpu', dtype: 'f32' });
    for (const mode of ['hybrid', 'swa', 'la-full'] as const) {
      gpu.setAttentionMode(mode);
      cpu.setAttentionMode(mode);
      const a = await gpu.forward(train[0]!).logits.toArray();
      const b = await cpu.forward(train[0]!).logits.toArray();
      let err = 0, mx = 0;
      for (let i = 0; i < a.length; i++) {
        err = Math.max(err, Math.abs(a[i]! - b[i]!));
        mx = Math.max(mx, Math.abs(b[i]!));
      }
      expect(err / mx, mode).toBeLessThan(1e-4); // same f32 weights on both devices: f32 arithmetic only
    }
    for (const m of [model, gpu, cpu]) m.dispose();
  });

  it('ssd: an aborted run resumes bit-identically on CUDA', async () => {
    const opts = { window: W, seed: 3, transfer: { steps: 4 }, finetune: { steps: 8, lr: 1e-2, evalEvery: 2, ssd: { granularity: 'head' as const } } };
    const ref = small();
    const r0 = await runRecipe('ssd', ref, data, opts);
    const dir = join(tmp, 'resume');
    const ac = new AbortController();
    const m1 = small();
    const r1 = await runRecipe('ssd', m1, data, { ...opts, checkpointDir: dir, signal: ac.signal, onProgress: (p) => p.stage === 'finetune' && p.step === 3 && ac.abort() });
    expect(r1.interrupted).toBe(true);
    m1.dispose();
    const m2 = small();
    const r2 = await runRecipe('ssd', m2, data, { ...opts, checkpointDir: dir, resume: true });
    expect(r2.finetune!.curve.map((c) => [c.loss, c.gradNorm, c.ssd_p])).toEqual(r0.finetune!.curve.map((c) => [c.loss, c.gradNorm, c.ssd_p]));
    for (const [n, t] of ref.params) expect(Array.from(await m2.params.get(n)!.toArray()), n).toEqual(Array.from(await t.toArray()));
    ref.dispose();
    m2.dispose();
  });
});
