/** The llama-tiny fixtures' expected.safetensors (float64 PyTorch/transformers; see ../shared/fixtures/README.md). */
import { resolve } from 'node:path';
import { openSafetensors } from '../../lib/io/safetensors.js';
import { fixturesDir, type HostTensor } from './fixtures.js';

/** Every tensor as f64 on the host, int32 ones (input_ids, greedy_ids) included. */
export async function loadExpected(rel: string): Promise<Map<string, HostTensor>> {
  const f = await openSafetensors(resolve(fixturesDir, rel));
  try {
    const out = new Map<string, HostTensor>();
    for (const name of f.names) {
      const info = f.info(name);
      const data = info.dtype === 'I32' ? Float64Array.from((await f.readArray(name)) as Int32Array) : await f.readF64(name);
      out.set(name, { shape: [...info.shape], data });
    }
    return out;
  } finally {
    await f.close();
  }
}

/** input_ids [B, T] as token rows. */
export function tokenRows(x: HostTensor): number[][] {
  const [B, T] = x.shape as [number, number];
  return Array.from({ length: B }, (_, b) => Array.from(x.data.subarray(b * T, (b + 1) * T)));
}
