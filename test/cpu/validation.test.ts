// Every bad input is rejected with a typed error naming the argument, before any work is queued.
import { describe, expect, it } from 'vitest';
import {
  DTypeError,
  DeviceError,
  DisposedError,
  InvalidArgumentError,
  Tensor,
  disposeAll,
  hybridAttention,
  hybridAttentionBackward,
  liveTensors,
  runtimeInfo,
  synchronize,
} from '../../lib/index.js';
import type { HybridAttentionInputs, HybridAttentionOptions } from '../../lib/index.js';
import { hybridTensors, randomHybrid } from '../helpers/hybrid.js';

function good() {
  return hybridTensors(randomHybrid({ B: 2, H: 4, Hkv: 2, T: 9, d: 4, dv: 3, F: 5, seed: 1 }), 'f64');
}

function expectError(fn: () => unknown, cls: new (...a: never[]) => Error, argument: string) {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(caught, `expected ${cls.name} for ${argument}`).toBeInstanceOf(cls);
  expect((caught as { argument?: string }).argument).toBe(argument);
}

describe('hybridAttention argument validation', () => {
  const opts: HybridAttentionOptions = { window: 4 };
  const cases: [string, (t: ReturnType<typeof good>) => [HybridAttentionInputs, HybridAttentionOptions], new (...a: never[]) => Error, string][] = [
    ['q of wrong rank', (t) => [{ ...t, q: t.q.reshape([2, 4, 36]) }, opts], InvalidArgumentError, 'q'],
    ['k with other seqlen', (t) => [{ ...t, k: Tensor.zeros([2, 2, 8, 4], { dtype: 'f64' }) }, opts], InvalidArgumentError, 'k'],
    ['heads not a multiple of kv heads', (t) => [{ ...t, k: Tensor.zeros([2, 3, 9, 4], { dtype: 'f64' }), v: Tensor.zeros([2, 3, 9, 3], { dtype: 'f64' }) }, opts], InvalidArgumentError, 'k'],
    ['v with other kv heads', (t) => [{ ...t, v: Tensor.zeros([2, 4, 9, 3], { dtype: 'f64' }) }, opts], InvalidArgumentError, 'v'],
    ['fq per kv head', (t) => [{ ...t, fq: Tensor.zeros([2, 2, 9, 5], { dtype: 'f64' }) }, opts], InvalidArgumentError, 'fq'],
    ['fk with other F', (t) => [{ ...t, fk: Tensor.zeros([2, 4, 9, 6], { dtype: 'f64' }) }, opts], InvalidArgumentError, 'fk'],
    ['mixed dtypes', (t) => [{ ...t, v: t.v.cast('f32') }, opts], DTypeError, 'v'],
    ['bf16 on the cpu', (t) => [{ ...t, q: t.q.cast('bf16') }, opts], DTypeError, 'q'],
    ['gamma of wrong dtype', (t) => [{ ...t, gamma: Tensor.full([4], 0.5, { dtype: 'f32' }) }, opts], DTypeError, 'gamma'],
    ['gamma of wrong length', (t) => [{ ...t, gamma: [0.5, 0.5] }, opts], InvalidArgumentError, 'gamma'],
    ['gamma > 1', (t) => [{ ...t, gamma: [0.5, 1.01, 0.5, 0.5] }, opts], InvalidArgumentError, 'gamma'],
    ['gamma = 1 with lambda affine', (t) => [{ ...t, gamma: [0.5, 1, 0.5, 0.5] }, { window: 4, lambda: 'affine' }], InvalidArgumentError, 'gamma'],
    ['gamma = 0', (t) => [{ ...t, gamma: [0, 0.5, 0.5, 0.5] }, opts], InvalidArgumentError, 'gamma'],
    ['gamma NaN', (t) => [{ ...t, gamma: [NaN, 0.5, 0.5, 0.5] }, opts], InvalidArgumentError, 'gamma'],
    ['keep not 0/1', (t) => [{ ...t, keep: [1, 1, 0.5, 1, 1, 1, 1, 1] }, opts], InvalidArgumentError, 'keep'],
    ['keep of wrong shape', (t) => [{ ...t, keep: Tensor.full([4], 1, { dtype: 'f64' }) }, opts], InvalidArgumentError, 'keep'],
    ['window 0', (t) => [t, { window: 0 }], InvalidArgumentError, 'window'],
    ['window 2.5', (t) => [t, { window: 2.5 }], InvalidArgumentError, 'window'],
    ['sinks 0', (t) => [t, { window: 4, mode: 'sinks', sinks: 0 }], InvalidArgumentError, 'sinks'],
    ['unknown mode', (t) => [t, { window: 4, mode: 'softmax' as never }], InvalidArgumentError, 'mode'],
    ['unknown geometry', (t) => [t, { window: 4, geometry: 'blocky' as never }], InvalidArgumentError, 'geometry'],
    ['unknown lambda', (t) => [t, { window: 4, lambda: 'two' as never }], InvalidArgumentError, 'lambda'],
    ['negative scale', (t) => [t, { window: 4, scale: -1 }], InvalidArgumentError, 'scale'],
    ['not a tensor', (t) => [{ ...t, q: [1, 2, 3] as never }, opts], InvalidArgumentError, 'q'],
  ];
  for (const [name, make, cls, argument] of cases)
    it(name, async () => {
      const t = good();
      const [inputs, options] = make(t);
      await synchronize('cpu'); // storages of earlier tests' queued work are released by now
      const before = liveTensors('cpu');
      expectError(() => hybridAttention(inputs, options), cls, argument);
      await synchronize('cpu');
      expect(liveTensors('cpu').tensors, 'nothing allocated by a rejected call').toBe(before.tensors);
      disposeAll([t, inputs]);
    });

  it('gamma = 1 is accepted with lambda one (inference-time hybridisation)', async () => {
    const t = good();
    const out = hybridAttention({ ...t, gamma: [1, 1, 1, 1] }, opts);
    expect((await out.y.toArray()).every(Number.isFinite)).toBe(true);
    disposeAll([t, out]);
  });

  it('a disposed input', () => {
    const t = good();
    t.fk.dispose();
    expectError(() => hybridAttention(t, opts), DisposedError, 'fk');
    disposeAll(t);
  });

  it('an input disposed between forward and backward', () => {
    const t = good();
    const fwd = hybridAttention(t, opts);
    t.v.dispose();
    expectError(() => hybridAttentionBackward(fwd.saved, t.dy), DisposedError, 'v');
    disposeAll([t, fwd]);
  });

  it('dy of wrong shape', () => {
    const t = good();
    const fwd = hybridAttention(t, opts);
    expectError(() => hybridAttentionBackward(fwd.saved, t.q), InvalidArgumentError, 'dy');
    disposeAll([t, fwd]);
  });

  it('device cuda without a usable GPU', () => {
    if (runtimeInfo().cudaAvailable) return; // covered by the GPU suite
    expectError(() => Tensor.zeros([2], { device: 'cuda' }), DeviceError, 'device');
  });

  it('an out-of-range gamma tensor fails at the next read, typed, and the process lives on', async () => {
    const t = good();
    const bad = Tensor.fromArray([0.5, 1.5, 0.5, 0.5], [4], { dtype: 'f64' });
    const fwd = hybridAttention({ ...t, gamma: bad }, opts);
    await expect(fwd.y.toArray()).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(fwd.y.toArray()).rejects.toMatchObject({ argument: 'gamma' });
    // the error flows into work that consumes the failed output
    const grads = hybridAttentionBackward(fwd.saved, t.dy);
    await expect(grads.dq.toArray()).rejects.toBeInstanceOf(InvalidArgumentError);
    // and the queue keeps working afterwards
    const ok = hybridAttention(t, opts);
    expect((await ok.y.toArray()).every(Number.isFinite)).toBe(true);
    disposeAll([t, bad, fwd, grads, ok]);
  });
});
