/**
 * hybrid-attention: hybrid linear / sliding-window attention with an exact CPU reference and
 * CUDA kernels, for converting pretrained Transformers and proving which branch does the work.
 */
export { Tensor, cudaMemoryStats, liveTensors, synchronize, disposeAll } from './tensor.js';
export type { CudaMemoryStats } from './native.js';
export type { Shape, TensorOptions } from './tensor.js';
export { accumDType, DTYPES } from './dtype.js';
export type { DType, HostArray } from './dtype.js';
export { resolveDevice, runtimeInfo, cudaAvailable } from './device.js';
export type { Device, DeviceRequest, RuntimeInfo } from './device.js';
export * from './errors.js';
export {
  hybridAttention,
  hybridAttentionBackward,
  hybridAttentionNaive,
  hybridAttentionBackwardNaive,
  HYBRID_MODES,
  WINDOW_GEOMETRIES,
  LAMBDA_KINDS,
} from './ops/hybrid-attention.js';
export type {
  HybridMode,
  WindowGeometry,
  LambdaKind,
  HybridAttentionInputs,
  HybridAttentionOptions,
  HybridAttentionStats,
  HybridAttentionSaved,
  HybridAttentionResult,
  HybridAttentionGrads,
} from './ops/hybrid-attention.js';
export { laShare } from './ops/la-share.js';
export type { LaShareSummary } from './ops/la-share.js';
export { featureMap, featureMapBackward, FEATURE_MAP_KINDS, FEATURE_ACTS } from './ops/feature-map.js';
export type { FeatureMapKind, FeatureAct, FeatureMapInputs, FeatureMapOptions, FeatureMapResult, FeatureMapGrads, FeatureMapSaved } from './ops/feature-map.js';
export { transferLoss, transferLossBackward } from './ops/transfer-loss.js';
export type { TransferLossInputs, TransferLossSaved } from './ops/transfer-loss.js';
export { softmaxAttention, softmaxAttentionBackward } from './ops/softmax-attention.js';
export type { SoftmaxAttentionInputs, SoftmaxAttentionOptions, SoftmaxAttentionSaved } from './ops/softmax-attention.js';
export { HybridDecodeState, DecodeStepGraph } from './ops/hybrid-decode.js';
export type { DecodeConfig, DecodeOptions, DecodeTokens, DecodeOutput } from './ops/hybrid-decode.js';
export { LlamaModel } from './model/llama.js';
export { parseConfig, ropeInvFreq, ConfigError } from './model/config.js';
export type { LlamaConfig } from './model/config.js';
export { Tokenizer } from './model/tokenizer.js';
export { openSafetensors, openCheckpoint, writeSafetensors, SafetensorsError } from './io/safetensors.js';
export { greedyGenerate } from './model/generate.js';
export { applyLora } from './model/lora.js';
export { AdamWOptimizer } from './model/optimizer.js';
export { saveTrainingState, loadTrainingState } from './model/checkpoint.js';
export type { LlamaLoadOptions, ForwardOptions, LossOptions, TokenBatch, SsdKeep } from './model/llama.js';
export { SoftmaxAttentionKernel } from './model/attention-layer.js';
export type { AttentionKernel, AttentionPassOptions, AttentionCache } from './model/attention-layer.js';
export { HybridAttentionKernel, HybridDecodeCache, HYBRID_PARAM_NAMES, resolveFeatureMapSpec } from './model/hybrid-layer.js';
export type { HybridLayerOptions, HybridLayerShape, FeatureMapSpec, FeatureMapPreset } from './model/hybrid-layer.js';
export {
  convertToHybrid,
  paramGroup,
  parameterGroups,
  freeze,
  unfreeze,
  PARAM_GROUPS,
  drawSsdKeep,
  ssdSchedule,
  SSD_GRANULARITIES,
} from './model/convert.js';
export type { ConvertOptions, ConvertResult, ParamGroup, ParamSelector, SsdGranularity, SsdKeepOptions } from './model/convert.js';
export { generate, sampleToken, samplingDistribution, argmax, isGreedy, SamplingRng } from './model/sampling.js';
export type { SamplingOptions, GenerateOptions as SampleGenerateOptions } from './model/sampling.js';
export { constantLr, cosineLr, ReduceLrOnPlateau } from './model/lr-schedule.js';
export type { LrSchedule } from './model/lr-schedule.js';
export { randomLlamaModel, tinyLlamaConfig } from './model/random-init.js';
export { repeatKv, repeatKvBackward, sigmoid, sigmoidBackward } from './ops/repeat-kv.js';
export * from './data/index.js';
export * from './eval/index.js';
export * from './recipes/index.js';
