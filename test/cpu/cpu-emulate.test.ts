// HYBRID_ATTENTION_CPU_EMULATE=bf16 (the naive-bf16 baseline of the GPU model tests): every f32
// output of a CPU op is rounded to bf16 after the kernel. Set before the addon loads (the test
// pool runs each file in its own process).
process.env.HYBRID_ATTENTION_CPU_EMULATE = 'bf16';
import { describe, expect, it } from 'vitest';
import { Tensor } from '../../lib/index.js';
import { linear } from '../../lib/ops/matmul.js';

describe('CPU bf16 emulation', () => {
  it('rounds each op output to bf16, leaves inputs and uploads alone', async () => {
    const x = Tensor.fromArray([1 + 2 ** -12, 3, -0.1], [1, 3]); // an upload is not an op
    expect((await x.toArray())[0]).toBe(1 + 2 ** -12);
    const w = Tensor.fromArray([1, 0, 0, 1 / 3, 1 / 3, 1 / 3], [2, 3]);
    const y = await linear(x, w).toArray();
    const exact = [1 + 2 ** -12, (1 + 2 ** -12 + 3 - 0.1) / 3];
    const bf16 = async (v: number) => (await Tensor.fromArray([v], [1]).cast('bf16').cast('f32').toArray())[0]!;
    expect(y[0]).toBe(await bf16(exact[0]!)); // 1 + 2^-12 rounds to 1 in bf16
    expect(y[0]).toBe(1);
    expect(Math.abs(y[1]! - exact[1]!)).toBeLessThan(2 ** -8 * Math.abs(exact[1]!));
    expect(y[1]).toBe(await bf16(y[1]!));
  });
});
