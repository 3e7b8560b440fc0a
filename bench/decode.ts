/**
 * Decode benchmark (`npm run bench -- --decode [--json] [--device cpu|cuda|auto] [--quick]
 * [--decode-peers peers.json]`): per-step latency of
 * HybridDecodeState.step at B = 1 and throughput at B = 16, 64, 256 (H = 32, d = F = dv = 128,
 * w = 64, bf16, mode hybrid, sliding window) as % of the HBM bandwidth on the compulsory bytes,
 * both for step() (one op call per step: validation, output allocation, launch) and for the same
 * step captured once in a CUDA graph and replayed (captureStep / replay: the kernel alone), and
 * the per-token time at contexts of 1k, 8k and 64k tokens (B = 1), which must stay flat: the
 * state has a fixed size. GPU times are CUDA events on the library's stream (bench/cuda-timer.ts).
 * With --decode-peers (the JSON of `python3 bench/decode_peer.py`, an eager PyTorch step of the
 * same maths) the table adds the peer's time and the speed-up. On a CPU-only machine it times
 * the CPU decode at small sizes.
 *
 * Compulsory bytes of one single-token step, per sequence (E = element size, fp32 state sums):
 *   S      read + write          2 * H * F * dv * 4      (the fold S += fk v^T runs every step
 *   z      read + write          2 * H * F * 4            once pos >= w, sliding geometry)
 *   window keys / values read    Hkv * (w - 1) * (d + dv) * E   (the ring; the new token is an input)
 *   folded feature key read      H * F * E               (its value is one of the window's)
 *   ring writes                  (Hkv * (d + dv) + H * F) * E
 *   inputs q, k, v, fq, fk read  (H * d + Hkv * (d + dv) + 2 * H * F) * E
 *   outputs y, c, den_swa, den_la (H * dv) * E + 3 * H * 4
 * At H = Hkv = 32, d = F = dv = 128, w = 64, bf16: 5.342 MB, of which S is 4.194 MB and the
 * window 1.032 MB. Bytes that are not compulsory are not counted: the kernel re-reads the
 * window's keys once per dv slice of a head (from L2), and GQA groups read one kv ring.
 */
import { readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { HybridDecodeState, Tensor, disposeAll, runtimeInfo, synchronize } from '../lib/index.js';
import type { DType, Device } from '../lib/index.js';
import { timeCuda } from './cuda-timer.js';
import { peakFor } from './flops.js';

interface DecodeShape {
  H: number;
  Hkv: number;
  d: number;
  dv: number;
  F: number;
  w: number;
}

export function decodeStepBytes(s: DecodeShape, elem: number): number {
  const { H, Hkv, d, dv, F, w } = s;
  return (
    2 * H * F * dv * 4 +
    2 * H * F * 4 +
    Hkv * (w - 1) * (d + dv) * elem +
    H * F * elem +
    (Hkv * (d + dv) + H * F) * elem +
    (H * d + Hkv * (d + dv) + 2 * H * F) * elem +
    H * dv * elem +
    3 * H * 4
  );
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

function random(shape: number[], dtype: DType, device: Device, seed: number, positive = false): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  let x = (seed * 2654435761) >>> 0;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    const u = x / 4294967296;
    data[i] = positive ? (0.5 + u) / 64 : (u - 0.5) * 2;
  }
  const host = Tensor.fromArray(data, shape, { dtype: 'f32' });
  const moved = device === 'cpu' ? host : host.to(device);
  if (moved !== host) host.dispose();
  const cast = dtype === 'f32' ? moved : moved.cast(dtype);
  if (cast !== moved) moved.dispose();
  return cast;
}

/** A state of B sequences at context T0 (built in parallel from random tokens). */
function makeState(s: DecodeShape, B: number, T0: number, dtype: DType, device: Device): HybridDecodeState {
  const state = HybridDecodeState.create({ heads: s.H, kvHeads: s.Hkv, headDim: s.d, valueDim: s.dv, featureDim: s.F, window: s.w, dtype, device }, B);
  const toks = {
    k: random([B, s.Hkv, T0, s.d], dtype, device, 1),
    v: random([B, s.Hkv, T0, s.dv], dtype, device, 2),
    fk: random([B, s.H, T0, s.F], dtype, device, 3, true),
  };
  state.prefillState(toks);
  disposeAll(toks);
  return state;
}

/** Median milliseconds of one single-token step of all B sequences, and of its CUDA-graph replay (GPU). */
async function timeSteps(state: HybridDecodeState, s: DecodeShape, B: number, dtype: DType, device: Device, runs: number): Promise<{ ms: number; graphMs: number | null }> {
  const toks = {
    q: random([B, s.H, s.d], dtype, device, 4),
    k: random([B, s.Hkv, s.d], dtype, device, 5),
    v: random([B, s.Hkv, s.dv], dtype, device, 6),
    fq: random([B, s.H, s.F], dtype, device, 7, true),
    fk: random([B, s.H, s.F], dtype, device, 8, true),
  };
  const gamma = Tensor.fromArray(new Float32Array(s.H).fill(0.1), [s.H], { dtype: 'f32', device });
  const step = () => [state.step({ ...toks, gamma })];
  const warmup = device === 'cpu' ? 2 : 10;
  for (let i = 0; i < warmup; i++) disposeAll(step());
  await synchronize(device);
  let ms: number;
  if (device === 'cuda') ms = median(await timeCuda(step, runs));
  else {
    const times: number[] = [];
    for (let i = 0; i < runs; i++) {
      const t0 = performance.now();
      const out = step();
      await synchronize(device);
      times.push(performance.now() - t0);
      disposeAll(out);
    }
    ms = median(times);
  }
  let graphMs: number | null = null;
  if (device === 'cuda') {
    const graph = state.captureStep({ ...toks, gamma });
    for (let i = 0; i < warmup; i++) graph.replay();
    graphMs = median(await timeCuda(() => (graph.replay(), []), runs));
    graph.dispose();
  }
  disposeAll([toks, gamma]);
  return { ms, graphMs };
}

/** Peer times from bench/decode_peer.py (`{"B64": {"ms": ...}, "_card": ...}`). */
function readPeers(file: string | undefined): { card: string; ms: Record<number, number> } | null {
  if (!file) return null;
  const raw = JSON.parse(readFileSync(file, 'utf8')) as Record<string, { ms?: number } | string>;
  const ms: Record<number, number> = {};
  for (const [k, v] of Object.entries(raw)) if (/^B\d+$/.test(k) && typeof v === 'object' && typeof v.ms === 'number') ms[Number(k.slice(1))] = v.ms;
  return { card: typeof raw._card === 'string' ? raw._card : 'unknown', ms };
}

export async function runDecodeBench(args: { json: boolean; device: Device; quick: boolean; decodePeers?: string }): Promise<void> {
  const device = args.device;
  const info = runtimeInfo();
  const card = device === 'cuda' ? info.gpu!.name : `CPU (${cpus()[0]?.model ?? 'unknown'}, ${info.cpuThreads} threads)`;
  const gpu = device === 'cuda';
  const shape: DecodeShape = gpu ? { H: 32, Hkv: 32, d: 128, dv: 128, F: 128, w: 64 } : { H: 4, Hkv: 4, d: 64, dv: 64, F: 64, w: 64 };
  const dtype: DType = gpu ? 'bf16' : 'f32';
  const elem = dtype === 'f32' ? 4 : 2;
  const batches = gpu ? (args.quick ? [1, 64] : [1, 16, 64, 256]) : args.quick ? [1, 4] : [1, 4, 16];
  const contexts = gpu ? (args.quick ? [1024, 8192] : [1024, 8192, 65536]) : args.quick ? [1024] : [1024, 8192];
  const runs = gpu ? 200 : args.quick ? 5 : 20;
  const peak = gpu && info.gpu ? peakFor(info.gpu.name) : null;
  const bytes = decodeStepBytes(shape, elem);

  const peers = gpu ? readPeers(args.decodePeers) : null;
  const pct = (GBps: number) => (peak ? (100 * GBps) / peak.gbps : null);
  const batchRows: {
    B: number;
    stepMs: number;
    graphMs: number | null;
    tokensPerS: number;
    GBps: number;
    hbmPct: number | null;
    graphGBps: number | null;
    graphHbmPct: number | null;
    peerMs: number | null;
    speedup: number | null;
    graphSpeedup: number | null;
  }[] = [];
  for (const B of batches) {
    const state = makeState(shape, B, 2 * shape.w, dtype, device); // past the window: the fold runs every step
    const { ms, graphMs } = await timeSteps(state, shape, B, dtype, device, runs);
    state.dispose();
    const GBps = (B * bytes) / (ms * 1e-3) / 1e9;
    const graphGBps = graphMs === null ? null : (B * bytes) / (graphMs * 1e-3) / 1e9;
    const peerMs = peers?.ms[B] ?? null;
    const best = graphMs === null ? ms : Math.min(ms, graphMs);
    batchRows.push({
      B,
      stepMs: ms,
      graphMs,
      tokensPerS: B / (best * 1e-3),
      GBps,
      hbmPct: pct(GBps),
      graphGBps,
      graphHbmPct: graphGBps === null ? null : pct(graphGBps),
      peerMs,
      speedup: peerMs === null ? null : peerMs / ms,
      graphSpeedup: peerMs === null || graphMs === null ? null : peerMs / graphMs,
    });
  }
  const contextRows: { context: number; stepMs: number; graphMs: number | null }[] = [];
  for (const T0 of contexts) {
    const state = makeState(shape, 1, T0, dtype, device);
    const { ms, graphMs } = await timeSteps(state, shape, 1, dtype, device, runs);
    contextRows.push({ context: T0, stepMs: ms, graphMs });
    state.dispose();
  }

  if (args.json) {
    console.log(JSON.stringify({ card, device, dtype, shape, bytesPerSequenceStep: bytes, runs, peerCard: peers?.card ?? null, batches: batchRows, contexts: contextRows }, null, 2));
    return;
  }
  const s = shape;
  const f = (x: number | null, digits = 4) => (x === null ? '-' : x.toFixed(digits));
  const p = (x: number | null) => (x === null ? '-' : x.toFixed(0) + '%');
  console.log(`hybrid decode step (${dtype}, mode hybrid, sliding, H=${s.H} Hkv=${s.Hkv} d=${s.d} F=${s.F} dv=${s.dv} w=${s.w}) on ${card}; median of ${runs} steps`);
  console.log(`compulsory bytes per sequence and step: ${(bytes / 1e6).toFixed(3)} MB (S read+write ${((2 * s.H * s.F * s.dv * 4) / 1e6).toFixed(3)} MB)`);
  if (peers) console.log(`peer: eager PyTorch step (bench/decode_peer.py) on ${peers.card}; speed-up = peer ms / our ms (step() | graph replay)`);
  console.log('B     | step() ms     GB/s  % HBM | graph ms     GB/s  % HBM |  tokens/s | peer ms  speed-up (step() | graph)');
  for (const r of batchRows)
    console.log(
      `${String(r.B).padEnd(5)} | ${f(r.stepMs).padStart(9)} ${r.GBps.toFixed(1).padStart(8)} ${p(r.hbmPct).padStart(6)} | ${f(r.graphMs).padStart(8)} ${f(r.graphGBps, 1).padStart(8)} ${p(r.graphHbmPct).padStart(6)} | ${r.tokensPerS.toFixed(0).padStart(9)} | ${f(r.peerMs).padStart(7)} ${r.speedup === null ? '-' : r.speedup.toFixed(2) + 'x'} | ${r.graphSpeedup === null ? '-' : r.graphSpeedup.toFixed(2) + 'x'}`,
    );
  console.log('context | step() ms per token  graph ms (B=1; must stay flat)');
  for (const r of contextRows) console.log(`${String(r.context).padEnd(7)} | ${r.stepMs.toFixed(4).padStart(8)}  ${f(r.graphMs).padStart(8)}`);
}
