/**
 * Greedy generation. With a decode cache per layer (softmax layers: a KV cache) the prompt is
 * prefilled once and each new token costs one single-token forward; without one (a kernel that
 * has no cache), every step recomputes the full forward over the sequence so far.
 */
import { InvalidArgumentError } from '../errors.js';
import type { LlamaModel } from './llama.js';

export interface GenerateOptions {
  maxNewTokens: number;
  /** Stop after emitting one of these (default: none). */
  eosTokenIds?: readonly number[];
  /** Default true (falls back to recomputation when a layer has no cache). */
  useCache?: boolean;
}

function argmaxLast(all: ArrayLike<number>, rows: number, V: number): number {
  const off = (rows - 1) * V;
  let best = 0;
  for (let j = 1; j < V; j++) if (all[off + j]! > all[off + best]!) best = j; // ties: lowest id (torch.argmax)
  return best;
}

/** Prompt + greedily chosen tokens. */
export async function greedyGenerate(model: LlamaModel, prompt: readonly number[], o: GenerateOptions): Promise<number[]> {
  if (!Number.isInteger(o.maxNewTokens) || o.maxNewTokens < 0) throw new InvalidArgumentError('maxNewTokens must be an integer >= 0', 'maxNewTokens');
  if (prompt.length === 0) throw new InvalidArgumentError('prompt must not be empty', 'prompt');
  const seq = [...prompt];
  const V = model.config.vocabSize;
  const caches = o.useCache === false ? undefined : model.createCaches(1, prompt.length + o.maxNewTokens);
  try {
    for (let step = 0; step < o.maxNewTokens; step++) {
      const input = caches && step > 0 ? [seq.slice(-1)] : [seq];
      const { logits } = model.forward(input, { lastPositionOnly: true, ...(caches ? { caches, positionOffset: step > 0 ? seq.length - 1 : 0 } : {}) });
      const all = await logits.toArray();
      logits.dispose();
      const next = argmaxLast(all, 1, V);
      seq.push(next);
      if (o.eosTokenIds?.includes(next)) break;
    }
  } finally {
    caches?.forEach((c) => c.dispose());
  }
  return seq;
}
