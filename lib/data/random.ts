/**
 * Seeded, platform-independent randomness for data splits, shuffling and probe generation:
 * a 32-bit string hash (FNV-1a with a murmur3 finaliser) and the mulberry32 generator.
 * Same seed, same numbers, on every machine and Node version.
 */

/** 32-bit hash of a string (UTF-16 code units) mixed with a seed; uniform enough for splits. */
export function hashString(text: string, seed = 0): number {
  let h = (0x811c9dc5 ^ Math.imul(seed | 0, 0x9e3779b1)) >>> 0;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  // murmur3 fmix32: spreads FNV's weak low bits
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** hashString mapped to [0, 1). */
export function hashUnit(text: string, seed = 0): number {
  return hashString(text, seed) / 4294967296;
}

/** mulberry32: a small, fast, seeded PRNG (period 2^32). */
export class Rng {
  private state: number;
  constructor(seed: number) {
    this.state = (seed | 0) ^ 0x6d2b79f5;
  }
  /** Uniform in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) | 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** Integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  /** Integer in [lo, hi] (inclusive). */
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)]!;
  }
  /** Fisher-Yates, in place. */
  shuffle<T>(xs: T[]): T[] {
    for (let i = xs.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      [xs[i], xs[j]] = [xs[j]!, xs[i]!];
    }
    return xs;
  }
}
