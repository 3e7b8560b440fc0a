/** A copy task for recipe tests: the second half of each row repeats the first (a dependency at distance T/2). */
import type { TokenBatch } from '../../lib/recipes/index.js';

export function copyBatch(seed: number, batch: number, seqlen: number): TokenBatch {
  const ids = new Int32Array(batch * seqlen);
  let s = seed;
  for (let i = 0; i < ids.length; i++) {
    s = (s * 1103515245 + 12345) & 0x7fffffff;
    ids[i] = i % seqlen < seqlen / 2 ? 1 + (s % 63) : ids[i - seqlen / 2]!;
  }
  return { ids, batch, seqlen };
}
