/**
 * `pretrain`: causal-LM training of a Llama-family model on a corpus: from a checkpoint
 * directory (continued pretraining) or from a config.json with seeded random init. Streams and
 * packs the corpus, AdamW with warmup + cosine, periodic validation, checkpoints every
 * --save-every steps and on SIGINT/abort (exit 130), --resume continues bit-exactly where the
 * checkpoint left off (same data position, optimizer moments and step). The output directory
 * then holds a loadable checkpoint (config.json, model.safetensors), metrics.jsonl and loss.svg.
 */
import { copyFile, mkdir, readFile, appendFile, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { InvalidArgumentError } from '../../errors.js';
import { Tensor } from '../../tensor.js';
import { LlamaModel } from '../../model/llama.js';
import { loadConfig, parseConfig, type LlamaConfig } from '../../model/config.js';
import { parameterSpecs } from '../../model/weights.js';
import { AdamWOptimizer } from '../../model/optimizer.js';
import { cosineLr } from '../../model/lr-schedule.js';
import { loadTrainingState, saveTrainingState } from '../../model/checkpoint.js';
import { writeSafetensors } from '../../io/safetensors.js';
import { PackedDataset, type TokenBatch } from '../../data/pack.js';
import { Rng } from '../../data/random.js';
import { lineChartSvg } from '../../eval/svg.js';
import { UsageError, bool, num, str } from '../args.js';
import { DATA_OPTIONS, RUNTIME_OPTIONS, corpusFromFlags, loadTokenizer, runtimeFromFlags } from '../common.js';
import { EXIT, type CliCommand, type CliContext } from '../context.js';
import { Progress } from '../progress.js';

export const STATE_FILE = 'train-state.safetensors';
export const METRICS_FILE = 'metrics.jsonl';

/** Seeded init as transformers' LlamaPreTrainedModel: N(0, std) linears/embeddings, ones for norms. */
export function randomLlamaParams(config: LlamaConfig, seed: number, std = 0.02): Map<string, Tensor> {
  const rng = new Rng(seed);
  const normal = () => {
    const u = Math.max(rng.next(), 1e-12);
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rng.next());
  };
  const out = new Map<string, Tensor>();
  for (const s of parameterSpecs(config)) {
    const n = s.shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    if (s.name.endsWith('norm.weight')) data.fill(1);
    else if (!s.name.endsWith('.bias')) for (let i = 0; i < n; i++) data[i] = std * normal();
    out.set(s.name, Tensor.fromArray(data, s.shape, { dtype: 'f32' }));
  }
  return out;
}

/** Writes config.json + model.safetensors (f32) so that LlamaModel.load / inspect / generate read it. */
export async function saveModelDir(dir: string, model: LlamaModel, configJson: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  const tensors = [];
  for (const s of parameterSpecs(model.config)) {
    const t = model.params.get(s.name)!;
    const f32 = t.dtype === 'f32' ? t : t.cast('f32');
    tensors.push({ name: s.name, dtype: 'F32' as const, shape: s.shape, data: await f32.toBytes() });
    if (f32 !== t) f32.dispose();
  }
  await writeSafetensors(join(dir, 'model.safetensors'), tensors, { format: 'pt' });
  const cfg = JSON.parse(configJson) as Record<string, unknown>;
  cfg.dtype = 'float32';
  delete cfg.torch_dtype;
  await writeFile(join(dir, 'config.json'), JSON.stringify(cfg, null, 2) + '\n');
}

interface RunState {
  step: number;
  epoch: number;
  /** Training sequences consumed in the current epoch. */
  sequences: number;
  tokens: number;
}

export const pretrainCommand: CliCommand = {
  spec: {
    name: 'pretrain',
    summary: 'Train a Llama-family causal LM on a corpus (from a checkpoint, or from a config with random init), with resumable checkpoints.',
    options: {
      model: { type: 'string', value: 'DIR', description: 'start from this checkpoint directory (continued pretraining)' },
      config: { type: 'string', value: 'FILE', description: 'start from random init with this config.json' },
      'init-seed': { type: 'string', value: 'N', description: 'seed of the random init (--config)', default: '0' },
      ...DATA_OPTIONS,
      tokenizer: { type: 'string', value: 'PATH', description: 'tokenizer.json (default: <model>/tokenizer.json)' },
      out: { type: 'string', short: 'o', value: 'DIR', description: 'output directory: checkpoints, metrics.jsonl, final model' },
      resume: { type: 'boolean', description: 'continue from <out>/train-state.safetensors' },
      steps: { type: 'string', value: 'N', description: 'total optimizer steps', default: '1000' },
      'seq-len': { type: 'string', value: 'T', description: 'tokens per packed sequence', default: '1024' },
      'batch-size': { type: 'string', short: 'b', value: 'B', description: 'sequences per step', default: '8' },
      lr: { type: 'string', value: 'LR', description: 'peak learning rate', default: '3e-4' },
      'min-lr': { type: 'string', value: 'LR', description: 'final learning rate of the cosine', default: '0' },
      warmup: { type: 'string', value: 'N', description: 'linear warmup steps', default: '0' },
      'weight-decay': { type: 'string', value: 'WD', description: 'AdamW weight decay', default: '0' },
      'max-grad-norm': { type: 'string', value: 'N', description: 'gradient clipping (0: none)', default: '1' },
      'val-fraction': { type: 'string', value: 'F', description: 'documents held out for validation (hash split)', default: '0.01' },
      'eval-every': { type: 'string', value: 'N', description: 'validation loss every N steps (0: never)', default: '0' },
      'eval-batches': { type: 'string', value: 'N', description: 'validation batches per evaluation', default: '4' },
      'save-every': { type: 'string', value: 'N', description: 'checkpoint every N steps (0: only on stop and at the end)', default: '100' },
      seed: { type: 'string', value: 'N', description: 'seed of the split and the shuffle', default: '0' },
      'shuffle-buffer': { type: 'string', value: 'N', description: 'shuffle training sequences through a buffer of N (0: corpus order)', default: '0' },
      ...RUNTIME_OPTIONS,
    },
    notes: ['Ctrl-C stops after the current step and writes a checkpoint (exit code 130); rerun with --resume to continue.'],
  },
  async run({ values }, ctx) {
    return pretrain(values, ctx);
  },
};

async function pretrain(values: Record<string, unknown>, ctx: CliContext): Promise<number> {
  const v = values as Parameters<typeof str>[0];
  const modelDir = str(v, 'model');
  const configFile = str(v, 'config');
  if (!modelDir === !configFile) throw new UsageError('give exactly one of --model DIR or --config FILE');
  const outArg = str(v, 'out');
  if (!outArg) throw new UsageError('--out DIR is required');
  const out = resolve(ctx.cwd, outArg);
  const steps = num(v, 'steps', { int: true, min: 1 })!;
  const seqLen = num(v, 'seq-len', { int: true, min: 2 })!;
  const batchSize = num(v, 'batch-size', { int: true, min: 1 })!;
  const lr = num(v, 'lr', { positive: true })!;
  const minLr = num(v, 'min-lr', { min: 0 })!;
  const warmup = num(v, 'warmup', { int: true, min: 0 })!;
  const weightDecay = num(v, 'weight-decay', { min: 0 })!;
  const maxGradNorm = num(v, 'max-grad-norm', { min: 0 })!;
  const valFraction = num(v, 'val-fraction', { min: 0, max: 0.999 })!;
  const evalEvery = num(v, 'eval-every', { int: true, min: 0 })!;
  const evalBatches = num(v, 'eval-batches', { int: true, min: 1 })!;
  const saveEvery = num(v, 'save-every', { int: true, min: 0 })!;
  const seed = num(v, 'seed', { int: true })!;
  const shuffle = num(v, 'shuffle-buffer', { int: true, min: 0 })!;
  const initSeed = num(v, 'init-seed', { int: true })!;
  const { device, dtype } = runtimeFromFlags(v, ctx);
  if (warmup >= steps) throw new UsageError(`--warmup (${warmup}) must be below --steps (${steps})`);
  const resume = bool(v, 'resume');
  const statePath = join(out, STATE_FILE);
  if (resume && !existsSync(statePath)) throw new UsageError(`--resume: no checkpoint at ${statePath}`);
  if (!resume && existsSync(statePath)) throw new UsageError(`${statePath} exists: pass --resume to continue it, or choose another --out`);

  const corpus = corpusFromFlags(v, ctx.cwd);
  const tokenizer = await loadTokenizer(modelDir ? resolve(ctx.cwd, modelDir) : undefined, str(v, 'tokenizer'), ctx.cwd);
  const dataset = new PackedDataset(corpus, tokenizer, {
    seqLen,
    split: { validationFraction: valFraction, seed },
    ...(shuffle > 0 ? { shuffleBuffer: shuffle, shuffleSeed: seed } : {}),
  });

  let model: LlamaModel;
  let configJson: string;
  if (modelDir) {
    const dir = resolve(ctx.cwd, modelDir);
    configJson = await readFile(join(dir, 'config.json'), 'utf8');
    model = await LlamaModel.load(dir, { dtype, device });
  } else {
    const path = resolve(ctx.cwd, configFile!);
    configJson = await readFile(path, 'utf8');
    const config = await loadConfig(path);
    parseConfig(JSON.parse(configJson)); // validates
    const params = randomLlamaParams(config, initSeed);
    // The seeded init is made in f32 on the host, then moved and cast: the same start on every device.
    for (const [k, t] of params) {
      const moved = device === 'cpu' ? t : t.to(device);
      const cast = moved.dtype === dtype ? moved : moved.cast(dtype);
      if (moved !== t) t.dispose();
      if (cast !== moved) moved.dispose();
      params.set(k, cast);
    }
    model = new LlamaModel(config, params, dtype, device);
  }
  if (tokenizer.vocabSize > model.config.vocabSize) throw new InvalidArgumentError(`tokenizer vocabulary (${tokenizer.vocabSize}) exceeds the model's (${model.config.vocabSize})`, 'tokenizer');

  const opt = new AdamWOptimizer(model.params, [...model.trainable], { lr, weightDecay, ...(maxGradNorm > 0 ? { maxGradNorm } : {}) });
  const schedule = cosineLr(lr, steps, { warmup, minLr });
  const state: RunState = { step: 0, epoch: 0, sequences: 0, tokens: 0 };
  await mkdir(out, { recursive: true });
  if (resume) {
    const meta = await loadTrainingState(statePath, opt);
    state.step = opt.stepCount;
    state.epoch = Number(meta.epoch ?? 0);
    state.sequences = Number(meta.sequences ?? 0);
    state.tokens = Number(meta.tokens ?? 0);
    ctx.json.emit('resumed', { from_step: state.step, epoch: state.epoch, sequences: state.sequences, checkpoint: statePath });
    if (!ctx.json.enabled) ctx.stderr.write(`resuming from step ${state.step} (${statePath})\n`);
    if (state.step >= steps) ctx.stderr.write(`checkpoint is already at step ${state.step} >= --steps ${steps}\n`);
  } else if (!existsSync(join(out, 'tokenizer.json')) && str(v, 'tokenizer')) {
    await copyFile(resolve(ctx.cwd, str(v, 'tokenizer')!), join(out, 'tokenizer.json')).catch(() => {});
  } else if (modelDir && existsSync(join(resolve(ctx.cwd, modelDir), 'tokenizer.json'))) {
    await copyFile(join(resolve(ctx.cwd, modelDir), 'tokenizer.json'), join(out, 'tokenizer.json')).catch(() => {});
  }

  const save = async () => {
    await saveTrainingState(statePath, opt, {
      kind: 'pretrain',
      epoch: String(state.epoch),
      sequences: String(state.sequences),
      tokens: String(state.tokens),
      args: JSON.stringify({ steps, seqLen, batchSize, lr, seed }),
    });
    ctx.json.emit('checkpoint', { step: state.step, path: statePath });
  };

  const validate = async (): Promise<number> => {
    let sum = 0;
    let n = 0;
    // bounded (eval-batches) and not interrupted midway: a stop request is honoured after the step
    for await (const b of dataset.batches('validation', batchSize, { keepLast: true })) {
      sum += await model.loss(b);
      model.clearPending();
      if (++n >= evalBatches) break;
    }
    return n > 0 ? sum / n : Number.NaN;
  };

  const progress = new Progress(ctx, { label: 'pretrain', total: steps, initial: state.step, unit: 'steps', json: ctx.json });
  const startTokens = state.tokens;
  let lastLoss = Number.NaN;
  let interrupted = false;
  try {
    let iter: AsyncGenerator<TokenBatch> = dataset.batches('train', batchSize, { skip: state.sequences, epoch: state.epoch, signal: ctx.signal });
    let emptyEpoch = true;
    while (state.step < steps) {
      if (ctx.signal.aborted) {
        interrupted = true;
        break;
      }
      let next: IteratorResult<TokenBatch>;
      try {
        next = await iter.next();
      } catch (e) {
        if (ctx.signal.aborted) {
          interrupted = true;
          break;
        }
        throw e;
      }
      if (next.done) {
        if (emptyEpoch && state.sequences === 0) throw new InvalidArgumentError(`the training split holds no full batch of ${batchSize} x ${seqLen} tokens`, 'data');
        state.epoch++;
        state.sequences = 0;
        emptyEpoch = true;
        iter = dataset.batches('train', batchSize, { epoch: state.epoch, signal: ctx.signal });
        continue;
      }
      emptyEpoch = false;
      const batch = next.value;
      const rate = schedule(state.step);
      const loss = await model.loss(batch);
      model.zeroGrad();
      const gradNorm = await opt.step(model.backward(), rate);
      state.step = opt.stepCount;
      state.sequences += batch.batch;
      state.tokens += batch.batch * batch.seqlen;
      lastLoss = loss;
      const rec: Record<string, number> = { step: state.step, loss, lr: rate, grad_norm: gradNorm, tokens: state.tokens };
      if (evalEvery > 0 && state.step % evalEvery === 0) rec.val_loss = await validate();
      await appendFile(join(out, METRICS_FILE), JSON.stringify(rec) + '\n');
      progress.update({ done: state.step, tokens: state.tokens - startTokens, loss, lr: rate, ...(rec.val_loss !== undefined ? { val_loss: rec.val_loss } : {}) });
      if (saveEvery > 0 && state.step % saveEvery === 0 && state.step < steps) await save();
    }
    await save();
    if (interrupted) {
      progress.finish(`pretrain interrupted at step ${state.step}; checkpoint ${statePath}; continue with --resume`);
      ctx.json.emit('interrupted', { step: state.step, checkpoint: statePath });
      return EXIT.interrupted;
    }
    progress.finish();
    await saveModelDir(out, model, configJson);
    await writeCurve(out);
    ctx.json.emit('result', { command: 'pretrain', step: state.step, loss: lastLoss, out });
    if (!ctx.json.enabled) ctx.stdout.write(`trained to step ${state.step} (loss ${lastLoss.toFixed(4)}); model written to ${out}\n`);
    return EXIT.ok;
  } finally {
    opt.dispose();
    model.dispose();
  }
}

/** loss.svg from metrics.jsonl (the last record of each step wins, so resumed runs plot once). */
export async function writeCurve(dir: string): Promise<void> {
  const text = await readFile(join(dir, METRICS_FILE), 'utf8').catch(() => '');
  const byStep = new Map<number, Record<string, number>>();
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    try {
      const r = JSON.parse(line) as Record<string, number>;
      byStep.set(r.step!, r);
    } catch {
      /* a torn last line after a crash */
    }
  }
  const recs = [...byStep.values()].sort((a, b) => a.step! - b.step!);
  if (recs.length === 0) return;
  const series = [{ name: 'train', points: recs.map((r) => ({ x: r.step!, y: r.loss! })) }];
  const val = recs.filter((r) => r.val_loss !== undefined && r.val_loss !== null);
  if (val.length) series.push({ name: 'validation', points: val.map((r) => ({ x: r.step!, y: r.val_loss! })) });
  await writeFile(join(dir, 'loss.svg'), lineChartSvg(series, { title: 'training loss', xLabel: 'step', yLabel: 'loss' }));
}
