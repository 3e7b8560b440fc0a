/**
 * Saving and loading converted models. A converted model directory holds:
 * - config.json, model.safetensors: the base Llama (LoRA merged into it when saved merged), so
 *   LlamaModel.load and every tool that reads plain checkpoints still work (as softmax);
 * - hybrid.safetensors: feature maps and gamma logits of each converted layer, plus unmerged
 *   LoRA adapters (lora_A / lora_B);
 * - conversion.json: how the layers were converted (method, layers, feature map, window, ...,
 *   LoRA options, inference-time settings), so loadConvertedModel rebuilds the same model;
 * - tokenizer.json when given.
 */
import { copyFile, mkdir, readFile, writeFile, rename } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Device } from '../device.js';
import { InvalidArgumentError } from '../errors.js';
import type { ModelDType } from '../model/model-dtype.js';
import { Tensor } from '../tensor.js';
import { copyInto } from '../ops/elementwise.js';
import { openSafetensors, writeSafetensors, type TensorToWrite } from '../io/safetensors.js';
import type { LlamaConfig } from '../model/config.js';
import { convertToHybrid } from '../model/convert.js';
import { type FeatureMapSpec, type FeatureMapPreset, HybridAttentionKernel } from '../model/hybrid-layer.js';
import { LlamaModel } from '../model/llama.js';
import { applyLora, LoraProjection, type LoraTarget } from '../model/lora.js';
import { parameterSpecs } from '../model/weights.js';
import type { HybridMode, LambdaKind, WindowGeometry } from '../ops/hybrid-attention.js';
import { hybridKernels } from './transfer.js';

export const CONVERSION_FORMAT = 'hybrid-attention-conversion-v1';
export const CONVERSION_FILE = 'conversion.json';
export const HYBRID_WEIGHTS_FILE = 'hybrid.safetensors';

export interface ConversionInfo {
  format: typeof CONVERSION_FORMAT;
  /** Recipe name (lolcats, linear-only, hedgecats, ssd, or anything). */
  method: string;
  layers: number[];
  layer: {
    kind: 'hybrid' | 'linear';
    featureMap: FeatureMapSpec | FeatureMapPreset;
    window: number;
    geometry: WindowGeometry;
    lambda: LambdaKind;
    sinks: number;
    /** Mode the model is used in (diagnostics switch it). */
    mode: HybridMode;
  };
  lora?: { rank: number; alpha: number; dropout: number; targets: LoraTarget[]; merged: boolean };
  /** Inference-time hybridisation (linear-only): fixed gamma and overlap. */
  inference?: { gamma: number | number[]; overlap: boolean };
  /** Anything else worth keeping (results summary, base model path). */
  notes?: Record<string, unknown>;
}

/** A HF-style config.json for a parsed config (default RoPE only; pass the original text otherwise). */
export function configToJson(c: LlamaConfig): Record<string, unknown> {
  if (c.rope.type !== 'default') throw new InvalidArgumentError(`cannot re-create config.json for rope type ${c.rope.type}; pass configJson`, 'configJson');
  return {
    architectures: [c.architecture],
    model_type: c.architecture === 'MistralForCausalLM' ? 'mistral' : 'llama',
    vocab_size: c.vocabSize,
    hidden_size: c.hiddenSize,
    intermediate_size: c.intermediateSize,
    num_hidden_layers: c.numLayers,
    num_attention_heads: c.numHeads,
    num_key_value_heads: c.numKvHeads,
    head_dim: c.headDim,
    rms_norm_eps: c.rmsNormEps,
    rope_theta: c.rope.theta,
    max_position_embeddings: c.maxPositionEmbeddings,
    tie_word_embeddings: c.tieWordEmbeddings,
    attention_bias: c.attentionBias,
    mlp_bias: c.mlpBias,
    hidden_act: c.hiddenAct,
    bos_token_id: c.bosTokenId,
    eos_token_id: c.eosTokenIds.length === 1 ? c.eosTokenIds[0] : c.eosTokenIds,
    pad_token_id: c.padTokenId,
    ...(c.slidingWindow !== null ? { sliding_window: c.slidingWindow } : {}),
    dtype: 'float32',
  };
}

async function f32Bytes(t: Tensor): Promise<Uint8Array> {
  const f = t.dtype === 'f32' ? t : t.cast('f32');
  try {
    return await f.toBytes();
  } finally {
    if (f !== t) f.dispose();
  }
}

export interface SaveConvertedOptions {
  /** Fold LoRA into the base weights (default false: adapters saved separately). */
  merge?: boolean;
  /** Original config.json text/object (default: re-created from model.config). */
  configJson?: string | Record<string, unknown>;
  /** tokenizer.json to copy beside the model. */
  tokenizer?: string;
}

/** Writes a converted model directory (see the module comment). Files are written atomically. */
export async function saveConvertedModel(dir: string, model: LlamaModel, info: ConversionInfo, o: SaveConvertedOptions = {}): Promise<void> {
  await mkdir(dir, { recursive: true });
  const loraProj = model.blocks.flatMap((b) => Object.values(b.proj)).filter((p): p is LoraProjection => p instanceof LoraProjection);
  const merge = (o.merge ?? false) && loraProj.length > 0;
  const wasMerged = loraProj.map((p) => p.merged);
  if (merge) loraProj.forEach((p) => !p.merged && p.fold(1));
  else loraProj.forEach((p) => p.merged && p.fold(-1));
  try {
    const base: TensorToWrite[] = [];
    for (const s of parameterSpecs(model.config)) base.push({ name: s.name, dtype: 'F32', shape: s.shape, data: await f32Bytes(model.params.get(s.name)!) });
    const extra: TensorToWrite[] = [];
    const baseNames = new Set(parameterSpecs(model.config).map((s) => s.name));
    for (const [n, t] of model.params) {
      if (baseNames.has(n)) continue;
      if (merge && /\.lora_[AB]\.weight$/.test(n)) continue;
      extra.push({ name: n, dtype: 'F32', shape: t.shape, data: await f32Bytes(t) });
    }
    await writeSafetensors(join(dir, 'model.safetensors'), base, { format: 'pt' });
    await writeSafetensors(join(dir, HYBRID_WEIGHTS_FILE), extra, { format: CONVERSION_FORMAT });
  } finally {
    loraProj.forEach((p, i) => {
      if (p.merged !== wasMerged[i]) p.fold(wasMerged[i] ? 1 : -1);
    });
  }
  const full: ConversionInfo = { ...info, ...(info.lora ? { lora: { ...info.lora, merged: merge } } : {}) };
  const cfg = o.configJson === undefined ? configToJson(model.config) : typeof o.configJson === 'string' ? (JSON.parse(o.configJson) as Record<string, unknown>) : { ...o.configJson };
  cfg.dtype = 'float32';
  delete cfg.torch_dtype;
  await writeJsonAtomic(join(dir, 'config.json'), cfg);
  await writeJsonAtomic(join(dir, CONVERSION_FILE), full);
  if (o.tokenizer && existsSync(o.tokenizer) && o.tokenizer !== join(dir, 'tokenizer.json')) await copyFile(o.tokenizer, join(dir, 'tokenizer.json'));
}

async function writeJsonAtomic(path: string, value: unknown): Promise<void> {
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, JSON.stringify(value, (_k, v) => (typeof v === 'number' && !Number.isFinite(v) ? String(v) : v), 2) + '\n');
  await rename(tmp, path);
}

export function isConvertedModelDir(dir: string): boolean {
  return existsSync(join(dir, CONVERSION_FILE));
}

export async function readConversionInfo(dir: string): Promise<ConversionInfo> {
  const info = JSON.parse(await readFile(join(dir, CONVERSION_FILE), 'utf8')) as ConversionInfo;
  if (info.format !== CONVERSION_FORMAT) throw new InvalidArgumentError(`${join(dir, CONVERSION_FILE)}: not a conversion description (format ${JSON.stringify(info.format)})`, 'dir');
  return info;
}

/**
 * Loads a converted model directory: the base checkpoint, the hybrid/linear layers as
 * described, their feature maps and gammas, and unmerged LoRA adapters. A directory without
 * conversion.json loads as a plain (softmax) model.
 */
export async function loadConvertedModel(dir: string, o: { dtype?: ModelDType; device?: Device } = {}): Promise<{ model: LlamaModel; info?: ConversionInfo }> {
  const model = await LlamaModel.load(dir, o);
  if (!isConvertedModelDir(dir)) return { model };
  try {
    const info = await readConversionInfo(dir);
    const l = info.layer;
    convertToHybrid(model, { layers: info.layers, kind: l.kind, featureMap: l.featureMap, window: l.window, geometry: l.geometry, lambda: l.lambda, sinks: l.sinks, mode: l.mode });
    if (info.lora && !info.lora.merged) applyLora(model, { rank: info.lora.rank, alpha: info.lora.alpha, dropout: info.lora.dropout, targets: info.lora.targets });
    const f = await openSafetensors(join(dir, HYBRID_WEIGHTS_FILE));
    try {
      for (const [n, dst] of model.params) {
        if (!f.names.includes(n)) {
          if (/\.(feature_map_[qk]\.(weight|bias)|gamma_logit|lora_[AB]\.weight)$/.test(n)) throw new InvalidArgumentError(`${HYBRID_WEIGHTS_FILE} lacks '${n}'`, 'dir');
          continue;
        }
        const data = await f.readF64(n, { shape: dst.shape });
        const src = Tensor.fromArray(data, dst.shape, { dtype: dst.dtype, device: dst.device });
        copyInto(dst, src);
        src.dispose();
      }
    } finally {
      await f.close();
    }
    for (const { kernel } of hybridKernels(model)) kernel.setMode(l.mode);
    model.trainable.clear();
    model.zeroGrad();
    return { model, info };
  } catch (e) {
    model.dispose();
    throw e;
  }
}

/** The kernels' shared settings, for a ConversionInfo. */
export function layerSettings(model: LlamaModel, featureMap: FeatureMapSpec | FeatureMapPreset): ConversionInfo['layer'] & { layers: number[] } {
  const ks = hybridKernels(model);
  if (ks.length === 0) throw new InvalidArgumentError('the model has no hybrid/linear layers', 'model');
  const k: HybridAttentionKernel = ks[0]!.kernel;
  return { layers: ks.map((x) => x.layer), kind: k.kind, featureMap, window: k.window, geometry: k.geometry, lambda: k.lambda, sinks: k.sinks, mode: k.mode };
}

/** Folds every LoRA adapter into its base weight and removes the adapters (before another LoRA round). */
export function mergeAndRemoveLora(model: LlamaModel): number {
  let n = 0;
  for (const b of model.blocks)
    for (const [key, p] of Object.entries(b.proj)) {
      if (!(p instanceof LoraProjection)) continue;
      if (!p.merged) p.fold(1);
      (b.proj as unknown as Record<string, unknown>)[key] = p.base;
      for (const name of [p.aName, p.bName]) {
        model.params.get(name)?.dispose();
        model.params.delete(name);
        model.grads.get(name)?.dispose();
        model.grads.delete(name);
        model.trainable.delete(name);
      }
      n++;
    }
  return n;
}
