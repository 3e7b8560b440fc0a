/**
 * FLOP and byte counts the benchmark reports (documented here so the table can be checked).
 *
 * Hybrid attention forward, per query row (B*H*T rows):
 *   window part: scores q.k over the w window keys (2*d*w) and the weighted sum of values
 *     (2*dv*w) -> 2*w*(d + dv). The sliding window holds w keys for rows n >= w-1 (fewer
 *     before); we count w for every row, as FlexAttention's sliding-window benchmarks do.
 *   linear part: folding one token into the state S += fk v^T (2*F*dv) and reading it
 *     fq.S (2*F*dv), plus the normaliser fq.z (2*F) -> 4*F*dv + 2*F.
 * Backward = 2.5x forward (the usual flash-attention convention: recompute + two extra products
 * per product).
 * Compulsory bytes: read q, k, v, fq, fk once and write y once (forward); the backward also
 * reads y and dy and writes dq, dk, dv, dfq, dfk. Statistics (3 floats per row) are counted.
 */
export interface HybridShape {
  B: number;
  H: number;
  Hkv: number;
  T: number;
  d: number;
  dv: number;
  F: number;
  w: number;
}

export function hybridForwardFlops(s: HybridShape): number {
  const rows = s.B * s.H * s.T;
  return rows * (2 * s.w * (s.d + s.dv) + 4 * s.F * s.dv + 2 * s.F);
}

export function hybridBackwardFlops(s: HybridShape): number {
  return 2.5 * hybridForwardFlops(s);
}

export function hybridForwardBytes(s: HybridShape, elementBytes: number): number {
  const rows = s.B * s.H * s.T;
  const kvRows = s.B * s.Hkv * s.T;
  const elements = rows * (s.d + 2 * s.F + s.dv) + kvRows * (s.d + s.dv);
  return elements * elementBytes + rows * 3 * 4;
}

export function hybridBackwardBytes(s: HybridShape, elementBytes: number): number {
  const rows = s.B * s.H * s.T;
  const kvRows = s.B * s.Hkv * s.T;
  // read inputs + y + dy, write the five gradients
  const reads = rows * (s.d + 2 * s.F + 2 * s.dv) + kvRows * (s.d + s.dv);
  const writes = rows * (s.d + 2 * s.F) + kvRows * (s.d + s.dv);
  return (reads + writes) * elementBytes + rows * 3 * 4;
}

/** Peak numbers for the roofline column, by GPU name; null where unknown (CPU). */
export function peakFor(name: string): { tflops: number; gbps: number } | null {
  if (/H200/i.test(name)) return { tflops: 989, gbps: 4800 };
  if (/H100.*PCIe/i.test(name)) return { tflops: 756, gbps: 2000 };
  if (/H100/i.test(name)) return { tflops: 989, gbps: 3350 };
  if (/A100/i.test(name)) return { tflops: 312, gbps: 2039 };
  return null;
}
