// Every golden file in ../shared/fixtures/hybrid (PyTorch float64 autograd) reproduced in f64,
// outputs and every gradient to 1e-9 relative, by both the chunked kernel and the naive one.
import { describe, expect, it } from 'vitest';
import { disposeAll, hybridAttention, hybridAttentionBackward, hybridAttentionBackwardNaive, hybridAttentionNaive } from '../../lib/index.js';
import type { HybridMode, WindowGeometry } from '../../lib/index.js';
import { haveFixtures, loadFixture, relErr, toTensor } from '../helpers/fixtures.js';

const files: [string, HybridMode][] = [
  ['hybrid-sliding', 'hybrid'],
  ['hybrid-terraced', 'hybrid'],
  ['hybrid-ssd', 'hybrid'],
  ['swa-sliding', 'swa'],
  ['la-sliding', 'la'],
  ['la-full-sliding', 'la-full'],
  ['overlap-sliding', 'overlap'],
  ['sinks-sliding', 'sinks'],
  ['none-sliding', 'none'],
];

describe.skipIf(!haveFixtures)('hybrid attention golden fixtures (f64)', () => {
  for (const [file, mode] of files) {
    for (const kernel of ['chunked', 'naive'] as const) {
      it(`${file} (${kernel})`, async () => {
        const fx = await loadFixture(`hybrid/${file}.safetensors`);
        const meta = fx.get('meta')!.data;
        const geometry: WindowGeometry = meta[2] === 1 ? 'terraced' : 'sliding';
        const inputs = {
          q: toTensor(fx.get('q')!),
          k: toTensor(fx.get('k')!),
          v: toTensor(fx.get('v')!),
          fq: toTensor(fx.get('fq')!),
          fk: toTensor(fx.get('fk')!),
          gamma: toTensor(fx.get('gamma')!),
          ...(fx.has('keep') ? { keep: toTensor(fx.get('keep')!) } : {}),
        };
        const options = { window: meta[0]!, sinks: meta[1]!, geometry, mode };
        const fwd = kernel === 'chunked' ? hybridAttention(inputs, options) : hybridAttentionNaive(inputs, options);
        const dy = toTensor(fx.get('dy')!);
        const grads = kernel === 'chunked' ? hybridAttentionBackward(fwd.saved, dy) : hybridAttentionBackwardNaive(fwd.saved, dy);
        const got: Record<string, ArrayLike<number>> = { y: await fwd.y.toArray() };
        for (const [name, t] of Object.entries(grads)) got[name] = await t.toArray();
        for (const name of ['y', 'dq', 'dk', 'dv', 'dfq', 'dfk', 'dgamma']) {
          const want = fx.get(name)!.data;
          const err = relErr(got[name]!, want, 1e-300);
          // all-zero references (mode none; structurally absent gradients) must be exact zeros
          if (want.every((x) => x === 0)) expect(Array.from(got[name]!).every((x) => x === 0), `${name} must be exactly 0`).toBe(true);
          else expect(err, `${file} ${name}`).toBeLessThan(1e-9);
        }
        disposeAll([inputs, fwd, grads, dy]);
      });
    }
  }
});
