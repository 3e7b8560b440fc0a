/** LoRA (gradients, merge/unmerge), AdamW training on llama-tiny, and bit-exact save/resume. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Tensor } from '../../lib/index.js';
import { LlamaModel } from '../../lib/model/llama.js';
import { applyLora } from '../../lib/model/lora.js';
import { AdamWOptimizer } from '../../lib/model/optimizer.js';
import { loadTrainingState, saveTrainingState } from '../../lib/model/checkpoint.js';
import { copyInto } from '../../lib/ops/elementwise.js';
import { fixturesDir, haveFixtures, relErr, Rng } from '../helpers/fixtures.js';

const dir = resolve(fixturesDir, 'llama-tiny');
const rng = new Rng(3);
const batch = () => Array.from({ length: 2 }, (_, b) => Array.from({ length: 24 }, (_, t) => (b * 97 + t * 31 + ((t * t) % 7)) % 2048));
let tmp: string;

async function setParam(model: LlamaModel, name: string, data: Float64Array): Promise<void> {
  const p = model.params.get(name)!;
  const src = Tensor.fromArray(data, p.shape, { dtype: p.dtype });
  copyInto(p, src);
  src.dispose();
}

describe.skipIf(!haveFixtures)('llama training', () => {
  beforeAll(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'llama-train-'));
  });
  afterAll(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  it('LoRA gradients match central differences (f64)', async () => {
    const model = await LlamaModel.load(dir, { dtype: 'f64' });
    const lora = applyLora(model, { rank: 4, alpha: 8, targets: ['q', 'v', 'down'], seed: 1 });
    const ids = batch();
    for (const n of lora.names.filter((x) => x.includes('lora_B'))) {
      await setParam(model, n, rng.normals(model.params.get(n)!.numel, 0.05)); // B = 0 would make dA vanish
    }
    await model.loss(ids);
    model.zeroGrad();
    const grads = model.backward();
    expect([...grads.keys()].sort()).toEqual([...lora.names].sort());
    for (const name of ['model.layers.0.self_attn.q_proj.lora_A.weight', 'model.layers.1.mlp.down_proj.lora_B.weight', 'model.layers.0.self_attn.v_proj.lora_B.weight']) {
      const g = await grads.get(name)!.toArray();
      const base = Float64Array.from(await model.params.get(name)!.toArray());
      for (const i of [0, 5, base.length - 1]) {
        const h = 1e-5;
        const at = async (d: number) => {
          const x = Float64Array.from(base);
          x[i]! += d;
          await setParam(model, name, x);
          const l = await model.loss(ids);
          model.clearPending();
          return l;
        };
        const fd = ((await at(h)) - (await at(-h))) / (2 * h);
        await setParam(model, name, base);
        expect(Math.abs(fd - g[i]!), `${name}[${i}] fd ${fd} vs ${g[i]}`).toBeLessThan(1e-7 + 1e-5 * Math.abs(fd));
      }
    }
    model.dispose();
  });

  it('AdamW + clipping: the loss falls; merge/unmerge preserve the function', async () => {
    const model = await LlamaModel.load(dir);
    const lora = applyLora(model, { rank: 8, alpha: 16, dropout: 0.05, seed: 2 });
    const opt = new AdamWOptimizer(model.params, lora.names, { lr: 1e-2, weightDecay: 0, maxGradNorm: 1 });
    const ids = batch();
    const losses: number[] = [];
    for (let s = 0; s < 8; s++) {
      losses.push(await model.loss(ids));
      model.zeroGrad();
      await opt.step(model.backward());
    }
    losses.push(await model.loss(ids));
    model.clearPending();
    console.log('LoRA fine-tuning losses:', losses.map((l) => l.toFixed(4)).join(' '));
    expect(losses.at(-1)!).toBeLessThan(losses[0]! - 0.5);
    const logitsOf = async () => {
      const { logits } = model.forward(ids);
      try {
        return await logits.toArray();
      } finally {
        logits.dispose();
      }
    };
    const before = await logitsOf();
    const w0 = await model.params.get('model.layers.0.self_attn.q_proj.weight')!.toArray();
    lora.merge();
    const merged = await logitsOf();
    expect(relErr(merged, before)).toBeLessThan(1e-5);
    lora.unmerge();
    expect(relErr(await model.params.get('model.layers.0.self_attn.q_proj.weight')!.toArray(), w0)).toBeLessThan(1e-6);
    opt.dispose();
    model.dispose();
  });

  it('save, drop everything, resume: bit-identical next steps', async () => {
    const run = async (resumeFrom?: string) => {
      const model = await LlamaModel.load(dir);
      const lora = applyLora(model, { rank: 4, alpha: 8, dropout: 0.1, targets: ['q', 'k', 'v', 'o', 'up'], seed: 5 });
      const opt = new AdamWOptimizer(model.params, lora.names, { lr: 5e-3, weightDecay: 0.01, maxGradNorm: 1 });
      const ids = batch();
      const step = async () => {
        const l = await model.loss(ids);
        model.zeroGrad();
        await opt.step(model.backward());
        return l;
      };
      if (resumeFrom) {
        const meta = await loadTrainingState(resumeFrom, opt);
        lora.rng.state = Number(meta.loraRng); // dropout masks continue where they stopped
      } else {
        for (let s = 0; s < 3; s++) await step();
        await saveTrainingState(join(tmp, 'ckpt.safetensors'), opt, { loraRng: String(lora.rng.state) });
      }
      const next = [await step(), await step()];
      const bytes = await Promise.all(lora.names.map((n) => model.params.get(n)!.toBytes()));
      opt.dispose();
      model.dispose();
      return { next, bytes };
    };
    const a = await run();
    const b = await run(join(tmp, 'ckpt.safetensors'));
    expect(b.next).toEqual(a.next);
    b.bytes.forEach((x, i) => expect(Buffer.compare(Buffer.from(x), Buffer.from(a.bytes[i]!))).toBe(0));
  });
});
