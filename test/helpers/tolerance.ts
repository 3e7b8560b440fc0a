/** The SPEC tolerance rule (sec. 8) on host arrays, for whole-model comparisons. */
import { maxAbs } from './fixtures.js';

/** max |a - b|; NaN anywhere is Infinity. */
export function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    m = Number.isNaN(d) ? Infinity : Math.max(m, d);
  }
  return m;
}

/**
 * err(gpu vs ref) <= 2 err(naive vs ref) + 8 units x max(1, max |ref|): `naive` is the same
 * computation done naively in the low precision, `unit` that precision's rounding unit.
 */
export function withinRule(gpu: ArrayLike<number>, naive: ArrayLike<number>, ref: ArrayLike<number>, unit: number) {
  const eg = maxDiff(gpu, ref), en = maxDiff(naive, ref);
  const bound = 2 * en + 8 * unit * Math.max(1, maxAbs(ref));
  return { ok: eg <= bound, eg, en, msg: `err ${eg.toExponential(2)} vs bound ${bound.toExponential(2)} (naive ${en.toExponential(2)})` };
}
