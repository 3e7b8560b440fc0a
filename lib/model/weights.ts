/**
 * Llama parameter names/shapes (Hugging Face names) and streaming them from a checkpoint: one
 * tensor read, widened (bf16/f16 -> f32 on the CPU) and uploaded at a time.
 */
import type { DType } from '../dtype.js';
import type { Device } from '../device.js';
import { InvalidArgumentError } from '../errors.js';
import { openCheckpoint, type TensorReader } from '../io/safetensors.js';
import { Tensor } from '../tensor.js';
import type { LlamaConfig } from './config.js';

export interface ParamSpec {
  name: string;
  shape: number[];
}

export const layerPrefix = (i: number) => `model.layers.${i}`;

/** Every parameter of LlamaForCausalLM / MistralForCausalLM, in checkpoint order. */
export function parameterSpecs(c: LlamaConfig): ParamSpec[] {
  const D = c.hiddenSize;
  const qDim = c.numHeads * c.headDim;
  const kvDim = c.numKvHeads * c.headDim;
  const specs: ParamSpec[] = [{ name: 'model.embed_tokens.weight', shape: [c.vocabSize, D] }];
  for (let i = 0; i < c.numLayers; i++) {
    const p = layerPrefix(i);
    const lin = (name: string, out: number, inp: number, bias: boolean) => {
      specs.push({ name: `${p}.${name}.weight`, shape: [out, inp] });
      if (bias) specs.push({ name: `${p}.${name}.bias`, shape: [out] });
    };
    specs.push({ name: `${p}.input_layernorm.weight`, shape: [D] });
    lin('self_attn.q_proj', qDim, D, c.attentionBias);
    lin('self_attn.k_proj', kvDim, D, c.attentionBias);
    lin('self_attn.v_proj', kvDim, D, c.attentionBias);
    lin('self_attn.o_proj', D, qDim, c.attentionBias);
    specs.push({ name: `${p}.post_attention_layernorm.weight`, shape: [D] });
    lin('mlp.gate_proj', c.intermediateSize, D, c.mlpBias);
    lin('mlp.up_proj', c.intermediateSize, D, c.mlpBias);
    lin('mlp.down_proj', D, c.intermediateSize, c.mlpBias);
  }
  specs.push({ name: 'model.norm.weight', shape: [D] });
  if (!c.tieWordEmbeddings) specs.push({ name: 'lm_head.weight', shape: [c.vocabSize, D] });
  return specs;
}

export interface LoadWeightsOptions {
  dtype: DType;
  device: Device;
}

/**
 * Reads every spec'd tensor (SafetensorsError MISSING_TENSOR / SHAPE_MISMATCH / DTYPE_MISMATCH /
 * TRUNCATED name the tensor and file). Tensors the model does not use (e.g. a tied lm_head) are
 * ignored. On failure every tensor uploaded so far is freed.
 */
export async function loadWeights(path: string | TensorReader, specs: readonly ParamSpec[], o: LoadWeightsOptions): Promise<Map<string, Tensor>> {
  if (o.dtype !== 'f32' && o.dtype !== 'f64') throw new InvalidArgumentError(`dtype must be f32 or f64, got ${String(o.dtype)}`, 'dtype');
  const reader = typeof path === 'string' ? await openCheckpoint(path) : path;
  const out = new Map<string, Tensor>();
  try {
    for (const s of specs) reader.info(s.name, { shape: s.shape, dtype: ['F32', 'BF16', 'F16', 'F64'] }); // fail fast, before reading
    for (const s of specs) {
      const host = o.dtype === 'f64' ? await reader.readF64(s.name, { shape: s.shape }) : await reader.readF32(s.name, { shape: s.shape });
      out.set(s.name, Tensor.fromArray(host, s.shape, { dtype: o.dtype, device: o.device }));
    }
    return out;
  } catch (e) {
    for (const t of out.values()) t.dispose();
    throw e;
  } finally {
    if (typeof path === 'string') await reader.close();
  }
}
