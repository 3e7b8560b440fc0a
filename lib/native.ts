/**
 * Loads the addon built by `npm install` (cmake-js into build/, or node-gyp into build/) and
 * describes its surface. HYBRID_ATTENTION_ADDON points at another .node file.
 */
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface NativeTensorHandle {
  dispose(): void;
  readonly disposed: boolean;
}

export interface NativeCudaInfo {
  compiled: boolean;
  available: boolean;
  reason: string;
  name: string;
  deviceCount: number;
  computeCapability: string;
  smCount: number;
  totalMemory: number;
  freeMemory: number;
  runtimeVersion: number;
  driverVersion: number;
}

type Handles<K extends string> = { [P in K]: NativeTensorHandle };

/** Bytes of the CUDA memory pool (see native/core/cuda_memory.h). */
export interface CudaMemoryStats {
  used: number;
  usedPeak: number;
  reserved: number;
  reservedPeak: number;
}

export interface NativeAddon {
  compiledWithCuda: boolean;
  cpuThreads: number;
  empty(a: { device: number; dtype: number; numel: number }): NativeTensorHandle;
  fromBytes(a: { device: number; dtype: number; numel: number; data: ArrayBufferView }): NativeTensorHandle;
  read(t: NativeTensorHandle): Promise<ArrayBuffer>;
  copyTo(a: { tensor: NativeTensorHandle; device: number }): NativeTensorHandle;
  cast(a: { tensor: NativeTensorHandle; dtype: number }): NativeTensorHandle;
  synchronize(a: { device: number }): Promise<void>;
  liveCounters(a: { device: number }): { tensors: number; bytes: number };
  cudaInfo(): NativeCudaInfo;
  cudaMemoryStats(a?: { reset?: boolean }): CudaMemoryStats;
  eventTimeline(n: number): object;
  recordEvent(timeline: object, i: number): void;
  elapsed(timeline: object): Promise<number[]>;
  hybridAttentionForward(a: object): Handles<'y' | 'c' | 'denSwa' | 'denLa'>;
  hybridAttentionBackward(a: object): Handles<'dq' | 'dk' | 'dv' | 'dfq' | 'dfk' | 'dgamma'>;
  hybridAttentionForwardNaive(a: object): Handles<'y' | 'c' | 'denSwa' | 'denLa'>;
  hybridAttentionBackwardNaive(a: object): Handles<'dq' | 'dk' | 'dv' | 'dfq' | 'dfk' | 'dgamma'>;
  decodeStateBytes(a: object): number;
  decodePrefill(a: object): Partial<Handles<'y' | 'c' | 'denSwa' | 'denLa'>>;
  decodeStep(a: object): Handles<'y' | 'c' | 'denSwa' | 'denLa'>;
  decodeWriteState(a: object): void;
  decodeCaptureStep(a: object): Handles<'y' | 'c' | 'denSwa' | 'denLa'> & { graph: object };
  decodeReplayGraph(graph: object): void;
  decodeDisposeGraph(graph: object): void;
  featureMapForward(a: object): Handles<'phi'>;
  featureMapBackward(a: object): Handles<'dx'> & Partial<Handles<'dw' | 'db'>>;
  transferLossForward(a: object): Handles<'loss'>;
  transferLossBackward(a: object): Handles<'dfq' | 'dfk'>;
  softmaxAttentionForward(a: object): Handles<'y' | 'lse'>;
  softmaxAttentionBackward(a: object): Handles<'dq' | 'dk' | 'dv'>;
  // Llama runtime (native/binding/llama_ops_binding.cpp)
  matmul(a: object): Partial<Handles<'c'>>;
  linear(a: object): Handles<'y'>;
  rmsNormForward(a: object): Handles<'y' | 'rstd'>;
  rmsNormBackward(a: object): Handles<'dx'> & Partial<Handles<'dw'>>;
  ropeForward(a: object): Handles<'y'>;
  ropeBackward(a: object): Handles<'dx'>;
  swigluForward(a: object): Handles<'y'>;
  swigluBackward(a: object): Handles<'dgate' | 'dup'>;
  embeddingForward(a: object): Handles<'out'>;
  embeddingBackward(a: object): Partial<Handles<'dweight'>>;
  crossEntropyForward(a: object): Handles<'loss' | 'lse'>;
  crossEntropyBackward(a: object): Handles<'dlogits'>;
  chunkedCrossEntropyForward(a: object): Handles<'loss' | 'lse'>;
  chunkedCrossEntropyBackward(a: object): Handles<'dhidden'> & Partial<Handles<'dweight'>>;
  adamwStep(a: object): Record<string, never>;
  gradNorm(a: object): Handles<'norm'>;
  elementwise(a: object): Handles<'y'>;
  accumulate(a: object): Record<string, never>;
  copyInto(a: object): Record<string, never>;
  sumRows(a: object): Partial<Handles<'y'>>;
  transpose12(a: object): Handles<'y'>;
  randomNormal(a: object): Handles<'y'>;
}

function packageRoot(): string {
  // lib/native.ts (tsx, vitest) and dist/native.js both sit one level below the package root.
  return resolve(dirname(fileURLToPath(import.meta.url)), '..');
}

function load(): NativeAddon {
  const require = createRequire(import.meta.url);
  const root = packageRoot();
  const candidates = [
    process.env.HYBRID_ATTENTION_ADDON,
    join(root, 'build', 'Release', 'hybrid_attention.node'),
    join(root, 'build', 'Debug', 'hybrid_attention.node'),
  ].filter((p): p is string => !!p);
  for (const path of candidates) {
    if (existsSync(path)) return require(path) as NativeAddon;
  }
  throw new Error(
    `hybrid-attention: native addon not found (looked in ${candidates.join(', ')}); run \`npm install\` or \`npm run build:native\``,
  );
}

export const native: NativeAddon = load();
