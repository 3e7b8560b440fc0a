/** Bad checkpoints and bad inputs: typed errors that name the problem, and no leaked tensors. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { copyFile, mkdtemp, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { LlamaModel } from '../../lib/model/llama.js';
import { greedyGenerate } from '../../lib/model/generate.js';
import { ConfigError } from '../../lib/model/config.js';
import { openSafetensors, SafetensorsError, writeSafetensors, type TensorToWrite } from '../../lib/io/safetensors.js';
import { InvalidArgumentError, liveTensors, synchronize } from '../../lib/index.js';
import { fixturesDir, haveFixtures } from '../helpers/fixtures.js';

const src = resolve(fixturesDir, 'llama-tiny');
let root: string;

/** A copy of llama-tiny with the config edited and the tensors filtered/changed. */
async function variant(name: string, edit: { config?: (c: Record<string, unknown>) => void; tensors?: (t: TensorToWrite[]) => TensorToWrite[] }) {
  const dir = join(root, name);
  await rm(dir, { recursive: true, force: true });
  await import('node:fs/promises').then((fs) => fs.mkdir(dir));
  const config = JSON.parse(await readFile(join(src, 'config.json'), 'utf8'));
  edit.config?.(config);
  await writeFile(join(dir, 'config.json'), JSON.stringify(config));
  if (edit.tensors) {
    const f = await openSafetensors(join(src, 'model.safetensors'));
    const ts: TensorToWrite[] = [];
    for (const n of f.names) ts.push({ name: n, dtype: f.info(n).dtype, shape: f.info(n).shape, data: await f.read(n) });
    await f.close();
    await writeSafetensors(join(dir, 'model.safetensors'), edit.tensors(ts));
  } else await copyFile(join(src, 'model.safetensors'), join(dir, 'model.safetensors'));
  return dir;
}

async function loadError(dir: string): Promise<unknown> {
  const before = liveTensors();
  const err = await LlamaModel.load(dir).then(() => null, (e: unknown) => e);
  expect(liveTensors()).toEqual(before); // a failed load frees what it uploaded
  return err;
}

describe.skipIf(!haveFixtures)('llama loading errors', () => {
  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'llama-err-'));
  });
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('truncated model.safetensors', async () => {
    const dir = await variant('truncated', {});
    const size = (await import('node:fs/promises').then((fs) => fs.stat(join(dir, 'model.safetensors')))).size;
    await truncate(join(dir, 'model.safetensors'), Math.floor(size / 2));
    const e = await loadError(dir);
    expect(e).toBeInstanceOf(SafetensorsError);
    expect((e as SafetensorsError).code).toBe('TRUNCATED');
    expect(String((e as Error).message)).toContain('model.safetensors');
  });

  it('missing tensor', async () => {
    const dir = await variant('missing', { tensors: (t) => t.filter((x) => x.name !== 'model.layers.1.mlp.up_proj.weight') });
    const e = (await loadError(dir)) as SafetensorsError;
    expect(e).toBeInstanceOf(SafetensorsError);
    expect(e.code).toBe('MISSING_TENSOR');
    expect(e.tensor).toBe('model.layers.1.mlp.up_proj.weight');
  });

  it('shape mismatch', async () => {
    const dir = await variant('shape', { config: (c) => (c.intermediate_size = 340) });
    const e = (await loadError(dir)) as SafetensorsError;
    expect(e).toBeInstanceOf(SafetensorsError);
    expect(e.code).toBe('SHAPE_MISMATCH');
    expect(e.tensor).toBe('model.layers.0.mlp.gate_proj.weight');
  });

  it('wrong dtype', async () => {
    const dir = await variant('dtype', {
      tensors: (t) => t.map((x) => (x.name === 'model.norm.weight' ? { ...x, dtype: 'I32' as const } : x)),
    });
    const e = (await loadError(dir)) as SafetensorsError;
    expect(e).toBeInstanceOf(SafetensorsError);
    expect(e.code).toBe('DTYPE_MISMATCH');
    expect(e.tensor).toBe('model.norm.weight');
  });

  it('unknown architecture', async () => {
    const dir = await variant('arch', { config: (c) => (c.architectures = ['GPT2LMHeadModel']) });
    const e = await loadError(dir);
    expect(e).toBeInstanceOf(ConfigError);
    expect(String((e as Error).message)).toContain('GPT2LMHeadModel');
  });

  it('bad token ids and bad options name the argument', async () => {
    const model = await LlamaModel.load(src);
    try {
      const before = liveTensors();
      expect(() => model.forward([[1, 2, 5000]])).toThrow(InvalidArgumentError);
      expect(() => model.forward([[1, 2], [3]])).toThrow(/inputIds\[1\]/);
      expect(() => model.backward()).toThrow(InvalidArgumentError);
      await expect(LlamaModel.load(src, { dtype: 'bf16' as 'f32' })).rejects.toMatchObject({ argument: 'dtype' });
      expect(liveTensors()).toEqual(before);
    } finally {
      model.dispose();
    }
  });

  it('forward, loss and backward leak nothing', async () => {
    const before = liveTensors();
    const model = await LlamaModel.load(src);
    const ids = [Array.from({ length: 12 }, (_, i) => (i * 37) % 2048)];
    const f = model.forward(ids, { hiddenStates: true });
    f.logits.dispose();
    f.hiddenStates!.forEach((t) => t.dispose());
    await model.loss(ids);
    model.backward();
    await model.loss(ids, { chunked: true });
    model.clearPending();
    await greedyGenerate(model, ids[0]!.slice(0, 5), { maxNewTokens: 3 });
    await greedyGenerate(model, ids[0]!.slice(0, 5), { maxNewTokens: 2, useCache: false });
    model.dispose();
    await synchronize();
    expect(liveTensors()).toEqual(before);
  });
});
