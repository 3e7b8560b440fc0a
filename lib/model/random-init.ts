/**
 * Randomly initialised Llama models (tests, examples, smoke runs): a config.json-style object
 * through parseConfig, and N(0, std^2) weights (norm weights around 1) from a seeded generator.
 */
import type { Device } from '../device.js';
import { Tensor } from '../tensor.js';
import { parseConfig, type LlamaConfig } from './config.js';
import { LlamaModel, type LlamaLoadOptions } from './llama.js';
import { modelDType, type ModelDType } from './model-dtype.js';
import { InvalidArgumentError } from '../errors.js';
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
  /** Default f32 on the CPU, bf16 on CUDA (see modelDType). */
  dtype?: ModelDType;
  device?: Device;
  seed?: number;
  /** Weight std (default 0.1); biases use std too, norms 1 + std * N(0, 1). */
  std?: number;
  attention?: LlamaLoadOptions['attention'];
}

/**
 * Weights drawn on the model's device (Tensor.randn: parameter k of the checkpoint order uses
 * seed * 2^20 + k), so even an 8B-parameter shape is synthesised without host traffic.
 */
export function randomLlamaModel(config: LlamaConfig, o: RandomModelOptions = {}): LlamaModel {
  const device = o.device ?? 'cpu';
  const dtype = modelDType(o.dtype, device);
  const std = o.std ?? 0.1;
  const seed = o.seed ?? 0;
  if (!Number.isInteger(seed) || seed < 0 || seed >= 2 ** 32) throw new InvalidArgumentError(`seed must be an integer in [0, 2^32), got ${String(seed)}`, 'seed');
  const params = new Map<string, Tensor>();
  try {
    parameterSpecs(config).forEach((s, k) => {
      const mean = /norm\.weight$/.test(s.name) ? 1 : 0;
      params.set(s.name, Tensor.randn(s.shape, { dtype, device, mean, std, seed: seed * 2 ** 20 + k }));
    });
  } catch (e) {
    for (const t of params.values()) t.dispose();
    throw e;
  }
  return new LlamaModel(config, params, dtype, device, o.attention);
}
