/**
 * Whole-model benchmarks of the Llama runtime on CUDA (bf16):
 *
 * `npm run bench -- --model [--model-peers FILE]`: forward+backward tokens/s of a ~110M-parameter
 *   Llama (every parameter trainable, plain next-token cross-entropy), wall-clock median per
 *   step after warm-up (each step ends with the loss read back, as a training loop does).
 *   bench/model_peer.py runs the same config in PyTorch eager (bf16, SDPA attention) and prints
 *   JSON; with --model-peers the two are put side by side.
 * `npm run bench -- --scale`: a Llama-3-8B-shaped model (weights synthesised on the GPU from
 *   its config with Tensor.randn: none can be downloaded here): build time, greedy generation
 *   with the KV cache (prefill of a 1024-token prompt, then per-token decode), and a LoRA
 *   training step at T = 1024 (rank 16 on q, k, v, o; chunked cross-entropy; AdamW with fp32
 *   masters), with the pool's peak GPU memory (cudaMemoryStats) after each phase.
 */
import { readFileSync } from 'node:fs';
import { cudaMemoryStats, runtimeInfo, synchronize } from '../lib/index.js';
import { parseConfig, type LlamaConfig } from '../lib/model/config.js';
import { randomLlamaModel } from '../lib/model/random-init.js';
import { greedyGenerate } from '../lib/model/generate.js';
import { applyLora } from '../lib/model/lora.js';
import { AdamWOptimizer } from '../lib/model/optimizer.js';
import type { LlamaModel } from '../lib/model/llama.js';

/** ~110M parameters: 12 layers of width 768 (GQA 12/4), SwiGLU 2048, vocabulary 16384. */
export const MODEL_100M = {
  architectures: ['LlamaForCausalLM'], model_type: 'llama', vocab_size: 16384, hidden_size: 768, intermediate_size: 2048,
  num_hidden_layers: 12, num_attention_heads: 12, num_key_value_heads: 4, max_position_embeddings: 2048,
  rms_norm_eps: 1e-5, rope_theta: 10000, tie_word_embeddings: false,
};
export const MODEL_100M_BATCH = { batch: 8, seqlen: 1024 };

/** Meta-Llama-3-8B's config.json (transformers 4 layout). */
export const LLAMA3_8B = {
  architectures: ['LlamaForCausalLM'], model_type: 'llama', vocab_size: 128256, hidden_size: 4096, intermediate_size: 14336,
  num_hidden_layers: 32, num_attention_heads: 32, num_key_value_heads: 8, max_position_embeddings: 8192,
  rms_norm_eps: 1e-5, rope_theta: 500000, tie_word_embeddings: false,
  rope_scaling: { rope_type: 'llama3', factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 8192 },
};

const GiB = 2 ** 30;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

function paramCount(m: LlamaModel): number {
  let n = 0;
  for (const t of m.params.values()) n += t.numel;
  return n;
}

/** Deterministic token rows (a fixed hash of position and row; no zeros-only shortcut). */
function tokenRows(batch: number, seqlen: number, vocab: number, salt = 0): number[][] {
  return Array.from({ length: batch }, (_, b) => Array.from({ length: seqlen }, (_, t) => (Math.imul(t + 1, 2654435761) ^ Math.imul(b + 17 + salt, 40503)) >>> 0).map((x) => x % vocab));
}

async function now(): Promise<number> {
  await synchronize('cuda');
  return performance.now();
}

export interface ModelBenchResult {
  card: string;
  params: number;
  batch: number;
  seqlen: number;
  stepMs: number;
  tokensPerSecond: number;
  peer?: { tokensPerSecond: number; stepMs: number; torch?: string };
}

export async function runModelBench(o: { json: boolean; peers?: string; runs?: number }): Promise<ModelBenchResult> {
  const card = runtimeInfo().gpu?.name ?? 'unknown GPU';
  const config: LlamaConfig = parseConfig(MODEL_100M);
  const { batch, seqlen } = MODEL_100M_BATCH;
  const model = randomLlamaModel(config, { device: 'cuda', dtype: 'bf16', seed: 1, std: 0.02 });
  const rows = tokenRows(batch, seqlen, config.vocabSize);
  const times: number[] = [];
  try {
    for (let i = 0; i < 2 + (o.runs ?? 6); i++) {
      const t0 = await now();
      model.zeroGrad();
      await model.loss(rows);
      model.backward();
      const t1 = await now();
      if (i >= 2) times.push(t1 - t0);
    }
    const stepMs = median(times);
    const res: ModelBenchResult = { card, params: paramCount(model), batch, seqlen, stepMs, tokensPerSecond: (batch * seqlen) / (stepMs / 1000) };
    if (o.peers) res.peer = JSON.parse(readFileSync(o.peers, 'utf8'));
    if (o.json) console.log(JSON.stringify(res, null, 1));
    else {
      console.log(`~${(res.params / 1e6).toFixed(0)}M-parameter Llama, bf16, B=${batch} T=${seqlen}, forward+backward (all parameters trainable), ${card}`);
      console.log(`  hybrid-attention: ${stepMs.toFixed(1)} ms/step, ${Math.round(res.tokensPerSecond)} tokens/s`);
      if (res.peer)
        console.log(`  PyTorch eager:    ${res.peer.stepMs.toFixed(1)} ms/step, ${Math.round(res.peer.tokensPerSecond)} tokens/s  -> ours / peer = ${(res.tokensPerSecond / res.peer.tokensPerSecond).toFixed(2)}x`);
    }
    return res;
  } finally {
    model.dispose();
  }
}

export interface ScaleBenchResult {
  card: string;
  params: number;
  buildSeconds: number;
  prefillMs: number;
  decodeMsPerToken: number;
  loraStepMs: number;
  loraTokensPerSecond: number;
  peakGiB: { afterBuild: number; generate: number; loraStep: number };
}

export async function runScaleBench(o: { json: boolean; promptLength?: number; newTokens?: number; loraSteps?: number }): Promise<ScaleBenchResult> {
  const card = runtimeInfo().gpu?.name ?? 'unknown GPU';
  const config = parseConfig(LLAMA3_8B);
  const T = o.promptLength ?? 1024;
  const log = (s: string) => !o.json && console.log(s);
  cudaMemoryStats({ resetPeaks: true });
  const t0 = await now();
  const model = randomLlamaModel(config, { device: 'cuda', dtype: 'bf16', seed: 8, std: 0.02 });
  const buildSeconds = ((await now()) - t0) / 1000;
  const params = paramCount(model);
  const afterBuild = cudaMemoryStats({ resetPeaks: true }).reservedPeak / GiB;
  log(`Llama-3-8B shape: ${(params / 1e9).toFixed(2)}B parameters in bf16, synthesised on ${card} in ${buildSeconds.toFixed(1)} s (pool peak ${afterBuild.toFixed(1)} GiB)`);
  try {
    // Generation: the first forward is the prefill; each later one decodes one token.
    const prompt = tokenRows(1, T, config.vocabSize, 5)[0]!;
    const newTokens = o.newTokens ?? 16;
    const tp = await now();
    await greedyGenerate(model, prompt, { maxNewTokens: 1 });
    const prefillMs = (await now()) - tp;
    const tg = await now();
    await greedyGenerate(model, prompt, { maxNewTokens: 1 + newTokens });
    const decodeMsPerToken = ((await now()) - tg - prefillMs) / newTokens;
    const generate = cudaMemoryStats({ resetPeaks: true }).reservedPeak / GiB;
    log(`  generate: prefill ${T} tokens ${prefillMs.toFixed(0)} ms, then ${decodeMsPerToken.toFixed(1)} ms/token (pool peak ${generate.toFixed(1)} GiB)`);

    // LoRA training step at T tokens.
    const lora = applyLora(model, { rank: 16, alpha: 32, targets: ['q', 'k', 'v', 'o'] });
    const opt = new AdamWOptimizer(model.params, lora.names, { lr: 1e-4, maxGradNorm: 1 });
    const rows = tokenRows(1, T, config.vocabSize, 9);
    const times: number[] = [];
    const losses: number[] = [];
    for (let i = 0; i < 1 + (o.loraSteps ?? 3); i++) {
      const ts = await now();
      model.zeroGrad();
      losses.push(await model.loss(rows, { chunked: true, vocabChunk: 16384 }));
      model.backward();
      await opt.step(model.grads);
      const te = await now();
      if (i > 0) times.push(te - ts);
    }
    const loraStepMs = median(times);
    const loraStep = cudaMemoryStats().reservedPeak / GiB;
    log(`  LoRA step (rank 16, q/k/v/o, T=${T}): ${loraStepMs.toFixed(0)} ms, ${Math.round(T / (loraStepMs / 1000))} tokens/s, losses ${losses.map((l) => l.toFixed(3)).join(' ')} (pool peak ${loraStep.toFixed(1)} GiB)`);
    opt.dispose();
    const res: ScaleBenchResult = {
      card, params, buildSeconds, prefillMs, decodeMsPerToken, loraStepMs,
      loraTokensPerSecond: T / (loraStepMs / 1000),
      peakGiB: { afterBuild, generate, loraStep },
    };
    if (o.json) console.log(JSON.stringify(res, null, 1));
    return res;
  } finally {
    model.dispose();
  }
}
