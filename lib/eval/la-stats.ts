/**
 * LA-share statistics and learned gammas per layer x head (SPEC sec. 2, 6), read from a model's
 * hybrid/linear layers by duck typing: kernels with `recordStats` / `lastStats` ({denSwa, denLa}),
 * `window` and `gamma()` (lib/model/hybrid-layer.ts's HybridAttentionKernel). Softmax layers give
 * rows of NaN, so the heatmap keeps one row per layer.
 */
import type { Tensor } from '../tensor.js';
import { laShare } from '../ops/la-share.js';
import type { HybridAttentionStats } from '../ops/hybrid-attention.js';

interface StatsKernel {
  recordStats: boolean;
  lastStats: HybridAttentionStats | undefined;
  window?: number;
  gamma?: () => Tensor;
}

type AnyObj = Record<string, unknown>;

function kernelsOf(model: unknown): (AnyObj | undefined)[] {
  const blocks = (model as AnyObj).blocks;
  return Array.isArray(blocks) ? blocks.map((b: AnyObj) => b?.attention as AnyObj | undefined) : [];
}

const isStatsKernel = (k: AnyObj | undefined): k is AnyObj & StatsKernel => !!k && typeof k.recordStats === 'boolean' && 'lastStats' in k;

export interface LaStats {
  /** Mean LA share [layer][head] over all positions (NaN: softmax layer). */
  mean: number[][];
  /** Over positions n < w and n >= w. */
  early: number[][];
  late: number[][];
}

/** Whether any layer can report LA statistics. */
export function hasLaStats(model: unknown): boolean {
  return kernelsOf(model).some(isStatsKernel);
}

/**
 * Runs `forward(ids)` once per sequence with statistics recording on (in the model's current
 * mode; use 'hybrid') and averages each layer's LA share per head over the sequences.
 */
export async function collectLaShare(
  model: unknown,
  forward: (ids: number[][]) => Promise<void> | void,
  sequences: readonly ArrayLike<number>[],
  heads: number,
): Promise<LaStats | undefined> {
  const kernels = kernelsOf(model);
  if (!kernels.some(isStatsKernel)) return undefined;
  const L = kernels.length;
  const zero = () => Array.from({ length: L }, () => new Array<number>(heads).fill(0));
  const sums = { mean: zero(), early: zero(), late: zero() };
  const counts = { mean: zero(), early: zero(), late: zero() };
  const before = kernels.map((k) => (isStatsKernel(k) ? k.recordStats : false));
  try {
    kernels.forEach((k) => isStatsKernel(k) && (k.recordStats = true));
    for (const seq of sequences) {
      await forward([Array.from(seq)]);
      for (const [i, k] of kernels.entries()) {
        if (!isStatsKernel(k) || !k.lastStats) continue;
        const s = await laShare(k.lastStats, k.window ?? 1);
        for (const part of ['mean', 'early', 'late'] as const)
          s[part].forEach((x, h) => {
            if (Number.isFinite(x)) {
              sums[part][i]![h]! += x;
              counts[part][i]![h]! += 1;
            }
          });
      }
    }
  } finally {
    kernels.forEach((k, i) => isStatsKernel(k) && (k.recordStats = before[i]!));
  }
  const div = (part: keyof LaStats) => sums[part].map((row, i) => row.map((x, h) => (counts[part][i]![h]! > 0 ? x / counts[part][i]![h]! : Number.NaN)));
  return { mean: div('mean'), early: div('early'), late: div('late') };
}

/** gamma per [layer][head] from layers with gamma() (NaN rows for the others); undefined when none has one. */
export async function collectGammas(model: unknown, heads: number): Promise<number[][] | undefined> {
  const kernels = kernelsOf(model);
  if (!kernels.some((k) => k && typeof k.gamma === 'function')) return undefined;
  const out: number[][] = [];
  for (const k of kernels) {
    if (k && typeof k.gamma === 'function') {
      const t = (k.gamma as () => Tensor)();
      try {
        out.push(Array.from(await t.toArray()));
      } finally {
        t.dispose();
      }
    } else out.push(new Array<number>(heads).fill(Number.NaN));
  }
  return out;
}

/** The attention window of the model's hybrid layers (the first one found), if any. */
export function modelWindow(model: unknown): number | undefined {
  for (const k of kernelsOf(model)) if (k && typeof k.window === 'number' && Number.isInteger(k.window)) return k.window;
  return undefined;
}
