/**
 * The LA share of the normaliser, den_la / (den_swa + den_la) (SPEC sec. 2): the direct measure
 * of how much a head uses linear attention. Summarised per head, overall and split by position
 * (n < w, where the window holds the whole prefix, vs n >= w).
 */
import type { HybridAttentionStats } from './hybrid-attention.js';
import { expectInteger, expectTensor } from './validate.js';

export interface LaShareSummary {
  /** Mean LA share per head over batch and positions with a non-zero normaliser. */
  mean: Float64Array;
  /** The same over positions n < window. */
  early: Float64Array;
  /** The same over positions n >= window (NaN where T <= window). */
  late: Float64Array;
}

export async function laShare(stats: HybridAttentionStats, window: number): Promise<LaShareSummary> {
  const denSwa = expectTensor(stats.denSwa, 'denSwa', { rank: 3 });
  const denLa = expectTensor(stats.denLa, 'denLa', { rank: 3, dtype: denSwa.dtype, device: denSwa.device });
  expectInteger(window, 'window', 1);
  const [B, H, T] = denSwa.shape as [number, number, number];
  const [swa, la] = await Promise.all([denSwa.toArray(), denLa.toArray()]);
  const sums = { mean: new Float64Array(H), early: new Float64Array(H), late: new Float64Array(H) };
  const counts = { mean: new Float64Array(H), early: new Float64Array(H), late: new Float64Array(H) };
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++)
      for (let n = 0; n < T; n++) {
        const i = (b * H + h) * T + n;
        const den = swa[i]! + la[i]!;
        if (!(den > 0)) continue;
        const share = la[i]! / den;
        const part = n < window ? 'early' : 'late';
        sums.mean[h]! += share;
        counts.mean[h]! += 1;
        sums[part][h]! += share;
        counts[part][h]! += 1;
      }
  const divide = (s: Float64Array, c: Float64Array) => s.map((x, h) => (c[h]! > 0 ? x / c[h]! : Number.NaN));
  return { mean: divide(sums.mean, counts.mean), early: divide(sums.early, counts.early), late: divide(sums.late, counts.late) };
}
