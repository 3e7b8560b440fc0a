/**
 * Randomly initialised Llama models (tests, examples, smoke runs): a config.json-style object
 * through parseConfig, and N(0, std^2) weights (norm weights around 1) from a seeded generator.
 */
import type { Device } from '../device.js';
import { Tensor } from '../tensor.js';
import { parseConfig, type LlamaConfig } from './config.js';
import { LlamaModel, type LlamaLoadOptions } from './llama.js';
import { LoraRng } from './lora.js';
import { parameterSpecs } from './weights.js';

/** A small LlamaForCausalLM config; `overrides` are config.json keys (e.g. { attention_bias: true }). */
export function tinyLlamaConfig(overrides: Record<string, unknown> = {}): LlamaConfig {
  return parseConfig({
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    vocab_size: 64,
    hidden_size: 32,
    intermediate_size: 48,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    max_position_embeddings: 256,
    rms_norm_eps: 1e-6,
    rope_theta: 10000,
    tie_word_embeddings: false,
    ...overrides,
  });
}

export interface RandomModelOptions {
  dtype?: 'f32' | 'f64';
  device?: Device;
  seed?: number;
  /** Weight std (default 0.1); biases use std too, norms 1 + std * N(0, 1). */
  std?: number;
  attention?: LlamaLoadOptions['attention'];
}

export function randomLlamaModel(config: LlamaConfig, o: RandomModelOptions = {}): LlamaModel {
  const rng = new LoraRng((o.seed ?? 0) >>> 0);
  const std = o.std ?? 0.1;
  const dtype = o.dtype ?? 'f32';
  const device = o.device ?? 'cpu';
  const normal = () => {
    const u = Math.max(rng.next(), 1e-300);
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rng.next());
  };
  const params = new Map<string, Tensor>();
  for (const s of parameterSpecs(config)) {
    const n = s.shape.reduce((a, b) => a * b, 1);
    const isNorm = /norm\.weight$/.test(s.name);
    const data = Float64Array.from({ length: n }, () => (isNorm ? 1 + std * normal() : std * normal()));
    params.set(s.name, Tensor.fromArray(data, s.shape, { dtype, device }));
  }
  return new LlamaModel(config, params, dtype, device, o.attention);
}
