/** Random hybrid-attention problems for sweeps and gradient checks. */
import { Tensor, type DType } from '../../lib/index.js';
import type { HybridAttentionInputs } from '../../lib/index.js';
import { Rng } from './fixtures.js';

export interface HybridCase {
  B: number;
  H: number;
  Hkv: number;
  T: number;
  d: number;
  dv: number;
  F: number;
  seed: number;
  withKeep?: boolean;
}

export interface HostHybrid {
  q: Float64Array;
  k: Float64Array;
  v: Float64Array;
  fq: Float64Array;
  fk: Float64Array;
  gamma: Float64Array;
  keep?: Float64Array;
  dy: Float64Array;
  shapes: Record<'q' | 'k' | 'v' | 'fq' | 'fk' | 'dy', number[]>;
}

/** Softmax-normalised positive features, as a Hedgehog map produces. */
function features(rng: Rng, rows: number, F: number): Float64Array {
  const out = new Float64Array(rows * F);
  for (let r = 0; r < rows; r++) {
    let s = 0;
    for (let f = 0; f < F; f++) s += out[r * F + f] = Math.exp(rng.normal());
    for (let f = 0; f < F; f++) out[r * F + f]! /= s;
  }
  return out;
}

export function randomHybrid(c: HybridCase): HostHybrid {
  const rng = new Rng(c.seed);
  const rows = c.B * c.H * c.T;
  const kvRows = c.B * c.Hkv * c.T;
  const gamma = Float64Array.from({ length: c.H }, () => 0.05 + 0.9 * rng.uniform());
  const out: HostHybrid = {
    q: rng.normals(rows * c.d),
    k: rng.normals(kvRows * c.d),
    v: rng.normals(kvRows * c.dv),
    fq: features(rng, rows, c.F),
    fk: features(rng, rows, c.F),
    gamma,
    dy: rng.normals(rows * c.dv),
    shapes: {
      q: [c.B, c.H, c.T, c.d],
      k: [c.B, c.Hkv, c.T, c.d],
      v: [c.B, c.Hkv, c.T, c.dv],
      fq: [c.B, c.H, c.T, c.F],
      fk: [c.B, c.H, c.T, c.F],
      dy: [c.B, c.H, c.T, c.dv],
    },
  };
  if (c.withKeep) {
    out.keep = Float64Array.from({ length: c.B * c.H }, (_, i) => (i % 3 === 1 ? 0 : 1));
  }
  return out;
}

export function hybridTensors(h: HostHybrid, dtype: DType = 'f64'): HybridAttentionInputs & { dy: Tensor } {
  const t = (name: 'q' | 'k' | 'v' | 'fq' | 'fk' | 'dy') => Tensor.fromArray(h[name], h.shapes[name], { dtype });
  const acc = dtype === 'f64' ? 'f64' : 'f32';
  const inputs: HybridAttentionInputs & { dy: Tensor } = {
    q: t('q'),
    k: t('k'),
    v: t('v'),
    fq: t('fq'),
    fk: t('fk'),
    gamma: Tensor.fromArray(h.gamma, [h.gamma.length], { dtype: acc }),
    dy: t('dy'),
  };
  if (h.keep) inputs.keep = Tensor.fromArray(h.keep, [h.shapes.q[0]!, h.shapes.q[1]!], { dtype: acc });
  return inputs;
}
