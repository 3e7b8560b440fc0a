/** Test helpers: golden fixtures from ../shared/fixtures, seeded random data, error measures. */
import { existsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { openSafetensors } from '../../lib/io/safetensors.js';
import { Tensor, type DType, type Device } from '../../lib/index.js';

export const projectRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
/** ../shared/fixtures, or HYBRID_ATTENTION_FIXTURES (the GPU machine gets a copy: ../shared does not travel there). */
export const fixturesDir = process.env.HYBRID_ATTENTION_FIXTURES ? resolve(process.env.HYBRID_ATTENTION_FIXTURES) : resolve(projectRoot, '..', 'shared', 'fixtures');
export const haveFixtures = existsSync(fixturesDir);
if (!haveFixtures) console.warn(`test fixtures not found at ${fixturesDir} (../shared/fixtures or HYBRID_ATTENTION_FIXTURES): golden-fixture tests skipped`);

export interface HostTensor {
  shape: number[];
  data: Float64Array;
}

/** Loads every tensor of a fixture file as f64. */
export async function loadFixture(relPath: string): Promise<Map<string, HostTensor>> {
  const file = await openSafetensors(resolve(fixturesDir, relPath));
  try {
    const out = new Map<string, HostTensor>();
    for (const name of file.names) out.set(name, { shape: [...file.info(name).shape], data: await file.readF64(name) });
    return out;
  } finally {
    await file.close();
  }
}

export function toTensor(h: HostTensor, dtype: DType = 'f64', device: Device = 'cpu'): Tensor {
  return Tensor.fromArray(h.data, h.shape, { dtype, device });
}

/** max |a - b| / max(max |b|, floor). */
export function relErr(a: ArrayLike<number>, b: ArrayLike<number>, floor = 1e-300): number {
  if (a.length !== b.length) throw new Error(`length mismatch ${a.length} vs ${b.length}`);
  let num = 0;
  let den = floor;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    if (!(d <= num)) num = Number.isNaN(d) ? Infinity : d;
    den = Math.max(den, Math.abs(b[i]!));
  }
  return num / den;
}

export function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
}

/** Deterministic generator (mulberry32) with normal and uniform draws. */
export class Rng {
  private state: number;
  constructor(seed: number) {
    this.state = seed >>> 0;
  }
  uniform(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  normal(): number {
    const u = Math.max(this.uniform(), 1e-300);
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * this.uniform());
  }
  normals(n: number, scale = 1): Float64Array {
    const out = new Float64Array(n);
    for (let i = 0; i < n; i++) out[i] = this.normal() * scale;
    return out;
  }
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.uniform() * (hi - lo + 1));
  }
}
