/**
 * GPU timing with CUDA events recorded on the library's stream between runs: each interval is
 * the device time of one run, independent of the host's launch overhead as long as the host
 * queues work faster than the GPU runs it.
 */
import { disposeAll } from '../lib/index.js';
import { awaitNative, callNative } from '../lib/errors.js';
import { native } from '../lib/native.js';

export async function timeCuda(fn: () => unknown[], runs: number): Promise<number[]> {
  const timeline = callNative(() => native.eventTimeline(runs + 1));
  native.recordEvent(timeline, 0);
  for (let i = 0; i < runs; i++) {
    // disposing at once is safe: queued work keeps its storages alive, and their memory returns
    // to the stream-ordered pool after the kernels that use it
    disposeAll(fn());
    native.recordEvent(timeline, i + 1);
  }
  return awaitNative(native.elapsed(timeline));
}
