/**
 * `npm run bench -- --gemm [--gemm-peers FILE] [--json]`: times the CUDA GEMM (lib/ops/matmul.ts ->
 * native/ops/matmul/matmul.cu; on an H100/H200 with sm_90a code, the wgmma kernel of
 * matmul_sm90.cu) on the Llama-sized shapes in bf16, median of CUDA-event intervals
 * after a warm-up, and prints TFLOP/s (2 M N K / time). bench/gemm_peer.py times torch.matmul
 * (cuBLAS) on the same shapes and layouts and prints JSON keyed like this table
 * ("M4096_N4096_K4096_nn"); with --gemm-peers its numbers are printed side by side with the ratio.
 * Layouts: nn = A [M, K] B [K, N]; nt = A B^T with B [N, K] (a linear layer's forward);
 * tn = A^T B with A [K, M] (a weight gradient).
 */
import { readFileSync } from 'node:fs';
import { Tensor, disposeAll, runtimeInfo, synchronize } from '../lib/index.js';
import type { DType } from '../lib/index.js';
import { matmul } from '../lib/ops/matmul.js';
import { timeCuda } from './cuda-timer.js';
import { peakFor } from './flops.js';

export interface GemmShape {
  m: number;
  n: number;
  k: number;
  layout: 'nn' | 'nt' | 'tn';
}

export const GEMM_SHAPES: GemmShape[] = [
  { m: 4096, n: 4096, k: 4096, layout: 'nn' },
  { m: 8192, n: 8192, k: 4096, layout: 'nn' },
  { m: 4096, n: 4096, k: 4096, layout: 'nt' },
  { m: 8192, n: 8192, k: 4096, layout: 'nt' },
  { m: 4096, n: 4096, k: 4096, layout: 'tn' },
  { m: 8192, n: 8192, k: 4096, layout: 'tn' },
];

export function gemmKey(s: GemmShape): string {
  return `M${s.m}_N${s.n}_K${s.k}_${s.layout}`;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

/** Uniform(-1, 1) values (never zeros: they can run faster than real data). */
function randomTensor(shape: number[], dtype: DType, seed: number): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  let s = (seed * 2654435761) >>> 0;
  for (let i = 0; i < n; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    data[i] = (s / 4294967296 - 0.5) * 2;
  }
  const host = Tensor.fromArray(data, shape, { dtype: 'f32' });
  const dev = host.to('cuda');
  host.dispose();
  const cast = dev.cast(dtype);
  dev.dispose();
  return cast;
}

export interface GemmRow {
  key: string;
  shape: GemmShape;
  ms: number;
  tflops: number;
  peer?: { ms: number; tflops: number };
}

export async function runGemmBench(options: { peers?: string; json?: boolean; runs?: number } = {}): Promise<GemmRow[]> {
  const info = runtimeInfo();
  if (!info.cudaAvailable) throw new Error(`bench --gemm needs a GPU (${info.cudaUnavailableReason ?? 'no CUDA'})`);
  const dtype: DType = 'bf16';
  const runs = options.runs ?? 30;
  const peers = options.peers ? (JSON.parse(readFileSync(options.peers, 'utf8')) as Record<string, { ms?: number; tflops?: number }>) : undefined;
  const rows: GemmRow[] = [];
  for (const s of GEMM_SHAPES) {
    const a = randomTensor(s.layout === 'tn' ? [s.k, s.m] : [s.m, s.k], dtype, 1);
    const b = randomTensor(s.layout === 'nt' ? [s.n, s.k] : [s.k, s.n], dtype, 2);
    const fn = () => [matmul(a, b, { transA: s.layout === 'tn', transB: s.layout === 'nt' })];
    for (let i = 0; i < 5; i++) disposeAll(fn());
    await synchronize('cuda');
    const ms = median(await timeCuda(fn, runs));
    disposeAll([a, b]);
    const flops = 2 * s.m * s.n * s.k;
    const row: GemmRow = { key: gemmKey(s), shape: s, ms, tflops: flops / (ms * 1e-3) / 1e12 };
    const p = peers?.[row.key];
    if (p && typeof p.ms === 'number') row.peer = { ms: p.ms, tflops: flops / (p.ms * 1e-3) / 1e12 };
    rows.push(row);
  }
  const card = info.gpu?.name ?? 'unknown GPU';
  if (options.json) {
    console.log(JSON.stringify({ card, dtype, runs, rows }, null, 2));
    return rows;
  }
  const peak = peakFor(card);
  console.log(`GEMM (${dtype}, fp32 accumulation) on ${card}; median of ${runs} runs${peak ? `; dense peak ${peak.tflops} TFLOP/s` : ''}`);
  console.log('shape                       |   ours ms  TFLOP/s | torch.matmul ms  TFLOP/s | ours/torch TFLOP/s');
  for (const r of rows) {
    const ours = `${r.ms.toFixed(3).padStart(9)}  ${r.tflops.toFixed(1).padStart(7)}`;
    const peer = r.peer ? `${r.peer.ms.toFixed(3).padStart(15)}  ${r.peer.tflops.toFixed(1).padStart(7)}` : `${'-'.padStart(15)}  ${'-'.padStart(7)}`;
    const ratio = r.peer ? `${((100 * r.tflops) / r.peer.tflops).toFixed(0)}%` : '-';
    console.log(`${r.key.padEnd(27)} | ${ours} | ${peer} | ${ratio.padStart(6)}`);
  }
  return rows;
}
