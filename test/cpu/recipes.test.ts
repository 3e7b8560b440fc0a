/** Conversion recipes end to end on a tiny random model: losses fall, bit-exact resume, save/load, diagnostics modes, probes beyond the window. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomLlamaModel, tinyLlamaConfig } from '../../lib/model/random-init.js';
import type { LlamaModel } from '../../lib/model/llama.js';
import {
  arraySource,
  attentionTransfer,
  hybridKernels,
  loadConvertedModel,
  loraFinetune,
  RECIPES,
  runRecipe,
  saveConvertedModel,
  transferLossOf,
  type ProgressInfo,
  type TokenBatch,
} from '../../lib/recipes/index.js';
import { convertToHybrid } from '../../lib/model/convert.js';
import { diagnose, modeControlFor } from '../../lib/eval/diagnose.js';
import { DIAGNOSTIC_MODES } from '../../lib/eval/report.js';
import { perplexity } from '../../lib/eval/perplexity.js';
import { scorerFromModel } from '../../lib/eval/scoring.js';
import { passkeyItems } from '../../lib/eval/probes.js';
import { Tensor } from '../../lib/tensor.js';
import { copyBatch as copyTask } from '../helpers/copy-task.js';

const T = 32;
const B = 2;
const copyBatch = (seed: number) => copyTask(seed, B, T);
const train = [copyBatch(1), copyBatch(2), copyBatch(3)];
const val = [copyBatch(9)];
const data = arraySource(train, val);
const tiny = (seed = 1) => randomLlamaModel(tinyLlamaConfig(), { seed });

async function logits(model: LlamaModel, b: TokenBatch): Promise<Float32Array> {
  const l = model.forward(b).logits;
  try {
    return (await l.toArray()) as Float32Array;
  } finally {
    l.dispose();
  }
}

let tmp: string;
beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'ha-recipes-'));
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

describe('attention transfer', () => {
  it.each(['weight-ce', 'mse-la', 'mse-hybrid'] as const)('%s: the loss on a fixed batch falls; only feature maps (and gammas for the hybrid MSE) change', async (loss) => {
    const model = tiny();
    convertToHybrid(model, { window: 8, featureMap: loss === 'weight-ce' ? 'hedgecats' : 'lolcats' });
    const baseBefore = await model.params.get('model.layers.0.self_attn.q_proj.weight')!.toArray();
    const gammaBefore = await model.params.get('model.layers.1.self_attn.gamma_logit')!.toArray();
    const before = await transferLossOf(model, [train[0]!], { loss });
    const r = await attentionTransfer(model, arraySource([train[0]!]), { loss, steps: 15, lr: 1e-2 });
    const after = await transferLossOf(model, [train[0]!], { loss });
    expect(r.state.step).toBe(15);
    expect(after).toBeLessThan(before);
    expect(r.state.curve[0]!.loss).toBeCloseTo(before, 5);
    expect(await model.params.get('model.layers.0.self_attn.q_proj.weight')!.toArray()).toEqual(baseBefore);
    const gammaAfter = await model.params.get('model.layers.1.self_attn.gamma_logit')!.toArray();
    if (loss === 'mse-hybrid') expect(gammaAfter).not.toEqual(gammaBefore);
    else expect(gammaAfter).toEqual(gammaBefore);
    // kernels are back in place after the stage
    expect(hybridKernels(model).length).toBe(2);
    model.dispose();
  });
});

describe('recipes', () => {
  it.each(RECIPES)('%s end to end: transfer and fine-tuning losses fall, JSON-serialisable result, inference mode', async (method) => {
    const model = tiny();
    const progress: ProgressInfo[] = [];
    const r = await runRecipe(method, model, data, {
      window: 8,
      transfer: { steps: 8 },
      finetune: method === 'linear-only' ? { steps: 12, lr: 1e-2, earlyStopping: false } : { steps: 12, lr: 1e-2, earlyStopping: false, gapGuard: false },
      onProgress: (p) => progress.push(p),
    });
    expect(JSON.parse(JSON.stringify(r)).method).toBe(method);
    expect(r.transfer!.curve.length).toBe(8);
    const ft = r.finetune!.curve.map((c) => c.loss);
    expect(ft.length).toBe(12);
    expect(Math.min(...ft.slice(-3))).toBeLessThan(ft[0]! - 0.2);
    expect(progress.every((p) => p.tokensPerSec > 0 && Number.isFinite(p.loss))).toBe(true);
    if (method === 'ssd') {
      expect(r.finetune!.curve.map((c) => c.ssd_p)).toEqual([0.9, 0.9, 0.9, 0.9, 0.75, 0.75, 0.75, 0.75, 0.5, 0.5, 0.5, 0.5]);
    }
    const modes = model.attentionModes();
    expect(modes.every((m) => m === 'hybrid')).toBe(true);
    if (method === 'linear-only') {
      const g = hybridKernels(model)[0]!.kernel.gamma();
      expect(Array.from(await g.toArray())).toEqual([1, 1, 1, 1]);
      g.dispose();
      expect(r.conversion.inference).toEqual({ gamma: 1, overlap: false });
    }
    model.dispose();
  });

  it('hedgecats: the gap guard stops fine-tuning and the best adapters are restored', async () => {
    const model = tiny();
    const r = await runRecipe('hedgecats', model, data, { window: 8, transfer: { steps: 2 }, finetune: { steps: 30, lr: 1e-2, evalEvery: 1, gapGuard: { patience: 1, minDelta: 1e9 } } });
    expect(r.finetune!.stopReason).toMatch(/gap guard/);
    expect(r.finetune!.steps).toBeLessThan(30);
    expect(r.finetune!.val.every((v) => Number.isFinite(v.gap) && Number.isFinite(v.swaLoss))).toBe(true);
    model.dispose();
  });

  it('checkpoints resume bit-exactly (ssd: abort mid fine-tuning, resume, same losses and parameters)', async () => {
    const opts = { window: 8, seed: 3, transfer: { steps: 4 }, finetune: { steps: 8, lr: 1e-2, evalEvery: 2, ssd: { granularity: 'head' as const } } };
    const ref = tiny();
    const r0 = await runRecipe('ssd', ref, data, opts);
    const dir = join(tmp, 'resume');
    const ac = new AbortController();
    const m1 = tiny();
    const r1 = await runRecipe('ssd', m1, data, { ...opts, checkpointDir: dir, signal: ac.signal, onProgress: (p) => p.stage === 'finetune' && p.step === 3 && ac.abort() });
    expect(r1.interrupted).toBe(true);
    expect(r1.finetune!.steps).toBe(3);
    m1.dispose();
    const m2 = tiny();
    const r2 = await runRecipe('ssd', m2, data, { ...opts, checkpointDir: dir, resume: true });
    expect(r2.interrupted).toBe(false);
    expect(r2.transfer!.curve).toEqual(r0.transfer!.curve);
    expect(r2.finetune!.curve.map((c) => [c.loss, c.gradNorm, c.ssd_p])).toEqual(r0.finetune!.curve.map((c) => [c.loss, c.gradNorm, c.ssd_p]));
    for (const [n, t] of ref.params) expect(await m2.params.get(n)!.toArray(), n).toEqual(await t.toArray());
    ref.dispose();
    m2.dispose();
  });

  it('a converted model saves and loads (LoRA merged or not) with identical outputs in every mode', async () => {
    const model = tiny();
    const r = await runRecipe('lolcats', model, data, { window: 8, transfer: { steps: 3 }, finetune: { steps: 3, lr: 1e-2 } });
    for (const merge of [false, true]) {
      const dir = join(tmp, `saved-${merge}`);
      await saveConvertedModel(dir, model, r.conversion, { merge });
      const { model: loaded, info } = await loadConvertedModel(dir);
      expect(info!.method).toBe('lolcats');
      expect(info!.lora?.merged).toBe(merge);
      for (const mode of ['hybrid', 'swa', 'la-full'] as const) {
        model.setAttentionMode(mode);
        loaded.setAttentionMode(mode);
        const a = await logits(model, train[0]!);
        const b = await logits(loaded, train[0]!);
        let err = 0;
        for (let i = 0; i < a.length; i++) err = Math.max(err, Math.abs(a[i]! - b[i]!));
        expect(err, `${mode} merge=${merge}`).toBeLessThan(merge ? 1e-4 : 1e-6);
      }
      loaded.dispose();
    }
    model.dispose();
  });

  it('bad options are clear errors', async () => {
    const model = tiny();
    await expect(runRecipe('magic' as never, model, data)).rejects.toThrow(/unknown method 'magic'/);
    await expect(attentionTransfer(model, data, { loss: 'weight-ce' })).rejects.toThrow(/convert it first/);
    convertToHybrid(model, { window: 8 });
    await expect(runRecipe('lolcats', model, data)).rejects.toThrow(/already converted/);
    await expect(loraFinetune(model, data, { ssd: { stages: [2] } })).rejects.toThrow(/probabilities/);
    model.dispose();
  });
});

describe('diagnostics on converted models', () => {
  it("diagnose's modes are the kernels' modes (same perplexity as switching the kernels by hand)", async () => {
    const model = tiny();
    convertToHybrid(model, { window: 8 });
    const control = modeControlFor(model);
    expect(control.modes).toEqual([...DIAGNOSTIC_MODES]);
    const seqs = [Array.from(train[0]!.ids.slice(0, T))];
    const report = await diagnose(scorerFromModel(model), control, { sequences: seqs }, { window: 8 });
    for (const mode of DIAGNOSTIC_MODES) {
      await control.set(mode);
      expect(hybridKernels(model).every((k) => k.kernel.mode === mode)).toBe(true);
      for (const { kernel } of hybridKernels(model)) kernel.setMode(mode);
      const p = await perplexity(scorerFromModel(model), seqs, { window: 8 });
      expect(report.modes.find((m) => m.mode === mode)!.metrics.ppl).toBeCloseTo(p.perplexity, 10);
    }
    await control.restore?.();
    expect(model.attentionModes()).toEqual(['hybrid', 'hybrid']);
    // none removes attention: hybrid and none differ; early positions: hybrid = swa
    const m = Object.fromEntries(report.modes.map((x) => [x.mode, x.metrics]));
    expect(m.hybrid!.ppl_early).toBeCloseTo(m.swa!.ppl_early!, 4);
    expect(m.hybrid!.ppl).not.toBeCloseTo(m.none!.ppl!, 4);
    model.dispose();
  });

  it('a passkey beyond the window: answered with full context, missed by a window-limited mode, scored per mode', async () => {
    // Constructed character-level model: it retrieves the pass key from the context it can see;
    // mode 'swa' sees only the last w characters, so the key (further back) is out of reach.
    const window = 24;
    const tok = { encode: (s: string) => Array.from(s, (c) => c.charCodeAt(0) & 127), eosId: null };
    const items = passkeyItems({ tokenizer: tok, window, count: 20, seed: 5 });
    expect(items.every((it) => it.distance > window)).toBe(true);
    const V = 128;
    const kernel = { mode: 'hybrid', setMode(m: string) { this.mode = m; } };
    const model = {
      blocks: [{ attention: kernel }],
      forward(rows: number[][]) {
        const T2 = rows[0]!.length;
        const out = new Float32Array(rows.length * T2 * V);
        rows.forEach((row, b) => {
          const text = String.fromCharCode(...row);
          for (let t = 0; t < T2; t++) {
            const from = kernel.mode === 'swa' ? Math.max(0, t + 1 - window) : 0;
            const seen = text.slice(from, t + 1);
            const tail = text.slice(0, t + 1);
            const q = tail.lastIndexOf('The pass key is');
            const known = /The pass key is (\d+)\./.exec(seen);
            let next = -1;
            if (q >= 0 && known) {
              const typed = tail.slice(q + 'The pass key is'.length);
              const want = ` ${known[1]}`;
              if (want.startsWith(typed) && typed.length < want.length) next = want.charCodeAt(typed.length);
            }
            if (next >= 0) out[(b * T2 + t) * V + next] = 20;
          }
        });
        return Tensor.fromArray(out, [rows.length, T2, V]);
      },
    };
    const control = modeControlFor(model, ['hybrid', 'swa']);
    const report = await diagnose(scorerFromModel(model), control, { passkey: items }, { window, tokenizer: tok });
    const by = Object.fromEntries(report.modes.map((x) => [x.mode, x.metrics]));
    expect(by.hybrid!.passkey_acc).toBe(1);
    expect(by.hybrid!.passkey_em).toBe(1);
    expect(by.swa!.passkey_em).toBe(0);
    expect(by.swa!.passkey_acc).toBeLessThan(0.5);
    expect(report.gaps.passkey_acc!.hybridMinusSwa).toBeGreaterThan(0.4);
  });
});
