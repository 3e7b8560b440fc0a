/**
 * Llama parameter names/shapes (Hugging Face names) and streaming them from a checkpoint: one
 * tensor read, converted (bf16/f16 -> f32 on the CPU; bytes as they are when the file already
 * holds the model's dtype) and uploaded at a time.
 */
import type { DType } from '../dtype.js';
import type { Device } from '../device.js';
import { openCheckpoint, type TensorReader } from '../io/safetensors.js';
import { Tensor } from '../tensor.js';
import type { LlamaConfig } from './config.js';
import { modelDType } from './model-dtype.js';

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
  modelDType(o.dtype, o.device);
  const reader = typeof path === 'string' ? await openCheckpoint(path) : path;
  const out = new Map<string, Tensor>();
  try {
    for (const s of specs) reader.info(s.name, { shape: s.shape, dtype: ['F32', 'BF16', 'F16', 'F64'] }); // fail fast, before reading
    for (const s of specs) {
      out.set(s.name, await readParam(reader, s, o));
    }
    return out;
  } catch (e) {
    for (const t of out.values()) t.dispose();
    throw e;
  } finally {
    if (typeof path === 'string') await reader.close();
  }
}

const FILE_DTYPE: Partial<Record<DType, string>> = { f64: 'F64', f32: 'F32', bf16: 'BF16', f16: 'F16' };

/** One parameter in the model's dtype: raw bytes when the file matches it, else one rounding. */
async function readParam(reader: TensorReader, s: ParamSpec, o: LoadWeightsOptions): Promise<Tensor> {
  const info = reader.info(s.name, { shape: s.shape });
  if (info.dtype === FILE_DTYPE[o.dtype]) return Tensor.fromBytes(await reader.read(s.name), s.shape, { dtype: o.dtype, device: o.device });
  const host = o.dtype === 'f64' ? await reader.readF64(s.name, { shape: s.shape }) : await reader.readF32(s.name, { shape: s.shape });
  return Tensor.fromArray(host, s.shape, { dtype: o.dtype, device: o.device });
}
