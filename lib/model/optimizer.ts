/**
 * AdamW over a model's trainable parameters (by HF name), with global gradient-norm clipping.
 * On the CPU the parameters are computed in f32 (or f64), so they are their own fp32 master
 * weights; moments have the parameter's dtype. (A bf16 CUDA path would keep f32 masters here
 * and cast after each step.)
 */
import { InvalidArgumentError } from '../errors.js';
import { Tensor } from '../tensor.js';
import { adamwStep, clipGradNorm, gradNorm, type AdamWHyper } from '../ops/adamw.js';
import type { ParamMap } from './llama-block.js';

export interface AdamWOptions extends AdamWHyper {
  /** Clip the global gradient norm to this before the update (default none). */
  maxGradNorm?: number;
}

export class AdamWOptimizer {
  /** Updates done so far. */
  stepCount = 0;
  readonly expAvg: ParamMap = new Map();
  readonly expAvgSq: ParamMap = new Map();

  constructor(
    readonly params: ParamMap,
    readonly names: readonly string[],
    public options: AdamWOptions,
  ) {
    if (names.length === 0) throw new InvalidArgumentError('no trainable parameters', 'names');
    for (const n of names) {
      const p = params.get(n);
      if (!p) throw new InvalidArgumentError(`unknown parameter '${n}'`, 'names');
      this.expAvg.set(n, Tensor.zeros(p.shape, { dtype: p.dtype, device: p.device }));
      this.expAvgSq.set(n, Tensor.zeros(p.shape, { dtype: p.dtype, device: p.device }));
    }
  }

  /**
   * Clips (when maxGradNorm is set) and applies one update with learning rate `lr` (default
   * options.lr). Resolves to the gradient norm before clipping.
   */
  async step(grads: ParamMap, lr = this.options.lr): Promise<number> {
    const gs = this.names.map((n) => {
      const g = grads.get(n);
      if (!g) throw new InvalidArgumentError(`no gradient for '${n}' (call backward first)`, 'grads');
      return g;
    });
    const normT = this.options.maxGradNorm !== undefined ? clipGradNorm(gs, this.options.maxGradNorm) : gradNorm(gs);
    this.stepCount++;
    this.names.forEach((n, i) =>
      adamwStep(
        { param: this.params.get(n)!, grad: gs[i]!, expAvg: this.expAvg.get(n)!, expAvgSq: this.expAvgSq.get(n)! },
        { ...this.options, lr },
        this.stepCount,
      ),
    );
    try {
      return (await normT.toArray())[0]!;
    } finally {
      normT.dispose();
    }
  }

  dispose(): void {
    for (const t of [...this.expAvg.values(), ...this.expAvgSq.values()]) t.dispose();
  }
}
