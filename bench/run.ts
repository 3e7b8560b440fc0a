/**
 * `npm run bench [-- --json] [--device cpu|cuda|auto] [--quick]`: times hybrid attention
 * forward, backward and forward+backward per shape (median of many runs after warm-up), with
 * TFLOP/s, GB/s and % of the roofline on a known GPU. On a CPU-only machine it times the CPU
 * backend on smaller shapes. bench/peers.py measures PyTorch peers on the GPU machine;
 * `--peers FILE` merges its JSON output into the table as ratios from the same run.
 */
import { readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import {
  Tensor,
  disposeAll,
  hybridAttention,
  hybridAttentionBackward,
  resolveDevice,
  runtimeInfo,
  synchronize,
} from '../lib/index.js';
import type { DType, Device } from '../lib/index.js';
import { timeCuda } from './cuda-timer.js';
import { runDecodeBench } from './decode.js';
import { hybridBackwardBytes, hybridBackwardFlops, hybridForwardBytes, hybridForwardFlops, peakFor, type HybridShape } from './flops.js';

interface Args {
  json: boolean;
  device: Device;
  quick: boolean;
  peers?: string;
  gemm?: boolean;
  gemmPeers?: string;
  decode?: boolean;
  decodePeers?: string;
  model?: boolean;
  modelPeers?: string;
  scale?: boolean;
}

function parseArgs(argv: string[]): Args {
  const args: Args = { json: false, device: 'cpu', quick: false };
  let request = 'auto';
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--json') args.json = true;
    else if (a === '--quick') args.quick = true;
    else if (a === '--decode') args.decode = true; // the recurrent decode step instead (bench/decode.ts)
    else if (a === '--decode-peers') args.decodePeers = argv[++i]; // python3 bench/decode_peer.py > FILE
    else if (a === '--device') request = argv[++i] ?? 'auto';
    else if (a === '--peers') args.peers = argv[++i];
    else if (a === '--gemm') args.gemm = true; // the CUDA GEMM vs torch.matmul instead (bench/gemm.ts)
    else if (a === '--gemm-peers') args.gemmPeers = argv[++i];
    else if (a === '--model') args.model = true; // ~110M-parameter Llama forward+backward tokens/s (bench/model.ts)
    else if (a === '--model-peers') args.modelPeers = argv[++i];
    else if (a === '--scale') args.scale = true; // Llama-3-8B-shaped build, generation and LoRA step (bench/model.ts)
    else if (a === '--help') {
      console.log('usage: npm run bench -- [--json] [--device auto|cpu|cuda] [--quick] [--peers peers.json] | --decode [--decode-peers d.json] | --gemm [--gemm-peers g.json] | --model [--model-peers m.json] | --scale');
      process.exit(0);
    } else {
      console.error(`bench: unknown argument ${a}`);
      process.exit(2);
    }
  }
  args.device = resolveDevice(request as Device | 'auto', (l) => console.error(l));
  return args;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

function randomTensor(shape: number[], dtype: DType, device: Device, positive = false): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  let seed = 12345 + n;
  for (let i = 0; i < n; i++) {
    seed = (seed * 1103515245 + 12345) >>> 0;
    const u = seed / 4294967296;
    data[i] = positive ? (0.5 + u) / 64 : (u - 0.5) * 2;
  }
  const host = Tensor.fromArray(data, shape, { dtype: 'f32' });
  const onDevice = device === 'cpu' ? host : host.to(device);
  const cast = dtype === 'f32' ? onDevice : onDevice.cast(dtype);
  if (cast !== host) host.dispose();
  if (cast !== onDevice && onDevice !== host) onDevice.dispose();
  return cast;
}

async function timeIt(fn: () => unknown[], device: Device, warmup: number, runs: number): Promise<number> {
  for (let i = 0; i < warmup; i++) disposeAll(fn());
  await synchronize(device);
  if (device === 'cuda') return median(await timeCuda(fn, runs));
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    const out = fn();
    await synchronize(device);
    times.push(performance.now() - t0);
    disposeAll(out);
  }
  return median(times);
}

interface Row {
  shape: HybridShape;
  dtype: DType;
  forwardMs: number;
  backwardMs: number;
  forwardBackwardMs: number;
  forwardTflops: number;
  forwardGBps: number;
  forwardRooflinePct: number | null;
  backwardTflops: number;
  backwardGBps: number;
}

async function benchShape(shape: HybridShape, dtype: DType, device: Device, runs: number): Promise<Row> {
  const { B, H, Hkv, T, d, dv, F, w } = shape;
  const inputs = {
    q: randomTensor([B, H, T, d], dtype, device),
    k: randomTensor([B, Hkv, T, d], dtype, device),
    v: randomTensor([B, Hkv, T, dv], dtype, device),
    fq: randomTensor([B, H, T, F], dtype, device, true),
    fk: randomTensor([B, H, T, F], dtype, device, true),
    // uploaded once: host numbers would be copied to the device (a synchronous copy) every call
    gamma: Tensor.full([H], 0.1, { dtype: 'f32', device }),
  };
  const dy = randomTensor([B, H, T, dv], dtype, device);
  const options = { window: w };
  const warmup = device === 'cpu' ? 1 : 5;
  const forwardMs = await timeIt(() => [hybridAttention(inputs, options)], device, warmup, runs);
  const saved = hybridAttention(inputs, options);
  const backwardMs = await timeIt(() => [hybridAttentionBackward(saved.saved, dy)], device, warmup, runs);
  const forwardBackwardMs = await timeIt(
    () => {
      const f = hybridAttention(inputs, options);
      return [f, hybridAttentionBackward(f.saved, dy)];
    },
    device,
    warmup,
    runs,
  );
  disposeAll([inputs, dy, saved]);
  const bytes = dtype === 'f64' ? 8 : dtype === 'f32' ? 4 : 2;
  const fwdFlops = hybridForwardFlops(shape);
  const fwdBytes = hybridForwardBytes(shape, bytes);
  const info = runtimeInfo();
  const peak = device === 'cuda' && info.gpu ? peakFor(info.gpu.name) : null;
  const forwardTflops = fwdFlops / (forwardMs * 1e-3) / 1e12;
  const forwardGBps = fwdBytes / (forwardMs * 1e-3) / 1e9;
  return {
    shape,
    dtype,
    forwardMs,
    backwardMs,
    forwardBackwardMs,
    forwardTflops,
    forwardGBps,
    // % of the roofline: time the bound (max of compute and bandwidth time) over measured time
    forwardRooflinePct: peak ? (100 * Math.max(fwdFlops / (peak.tflops * 1e12), fwdBytes / (peak.gbps * 1e9))) / (forwardMs * 1e-3) : null,
    backwardTflops: hybridBackwardFlops(shape) / (backwardMs * 1e-3) / 1e12,
    backwardGBps: hybridBackwardBytes(shape, bytes) / (backwardMs * 1e-3) / 1e9,
  };
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  if (args.gemm) return void (await (await import('./gemm.js')).runGemmBench({ peers: args.gemmPeers, json: args.json }));
  if (args.decode) return runDecodeBench(args);
  if (args.model || args.scale) {
    if (args.device !== 'cuda') throw new Error('--model and --scale run on CUDA (--device cuda)');
    const m = await import('./model.js');
    if (args.model) await m.runModelBench({ json: args.json, ...(args.modelPeers ? { peers: args.modelPeers } : {}) });
    if (args.scale) await m.runScaleBench({ json: args.json });
    return;
  }
  const info = runtimeInfo();
  const card = args.device === 'cuda' ? info.gpu!.name : `CPU (${cpus()[0]?.model ?? 'unknown'}, ${info.cpuThreads} threads)`;
  const shapes: HybridShape[] =
    args.device === 'cuda'
      ? [
          { B: 4, H: 32, Hkv: 32, T: 2048, d: 128, dv: 128, F: 128, w: 64 },
          { B: 1, H: 32, Hkv: 32, T: 16384, d: 128, dv: 128, F: 128, w: 64 },
        ]
      : args.quick
        ? [{ B: 1, H: 2, Hkv: 2, T: 512, d: 64, dv: 64, F: 64, w: 64 }]
        : [
            { B: 1, H: 4, Hkv: 4, T: 2048, d: 64, dv: 64, F: 64, w: 64 },
            { B: 1, H: 8, Hkv: 8, T: 1024, d: 128, dv: 128, F: 128, w: 64 },
          ];
  const dtype: DType = args.device === 'cuda' ? 'bf16' : 'f32';
  const runs = args.device === 'cuda' ? 50 : args.quick ? 3 : 5;
  const rows: Row[] = [];
  for (const s of shapes) rows.push(await benchShape(s, dtype, args.device, runs));
  const peers = args.peers ? (JSON.parse(readFileSync(args.peers, 'utf8')) as Record<string, Record<string, unknown>>) : undefined;
  if (args.json) {
    console.log(JSON.stringify({ card, device: args.device, dtype, runs, rows, peers }, null, 2));
    return;
  }
  console.log(`hybrid attention (${dtype}, mode hybrid, sliding window) on ${card}; median of ${runs} runs`);
  console.log('B  H  T      d   F   w  | fwd ms   bwd ms   fwd+bwd ms | fwd TFLOP/s  fwd GB/s  roofline');
  for (const r of rows) {
    const s = r.shape;
    console.log(
      `${String(s.B).padEnd(2)} ${String(s.H).padEnd(2)} ${String(s.T).padEnd(6)} ${String(s.d).padEnd(3)} ${String(s.F).padEnd(3)} ${String(s.w).padEnd(2)} | ` +
        `${r.forwardMs.toFixed(3).padStart(7)}  ${r.backwardMs.toFixed(3).padStart(7)}  ${r.forwardBackwardMs.toFixed(3).padStart(10)} | ` +
        `${r.forwardTflops.toFixed(3).padStart(11)}  ${r.forwardGBps.toFixed(1).padStart(8)}  ${r.forwardRooflinePct === null ? '-' : r.forwardRooflinePct.toFixed(0) + '%'}`,
    );
    const key = `B${s.B}_H${s.H}_T${s.T}`;
    const p = peers?.[key];
    if (p)
      for (const [peer, ms] of Object.entries(p)) {
        if (typeof ms !== 'number' || !/_(fwd|fwdbwd)$/.test(peer)) continue;
        const ours = peer.endsWith('_fwdbwd') ? r.forwardBackwardMs : r.forwardMs;
        console.log(`    vs ${peer.padEnd(28)} ${ms.toFixed(3).padStart(8)} ms   ours/peer = ${(ours / ms).toFixed(2)}x`);
      }
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
