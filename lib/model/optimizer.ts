/**
 * AdamW over a model's trainable parameters (by HF name), with global gradient-norm clipping.
 * f32/f64 parameters are their own master weights and moments have their dtype. 16-bit
 * parameters (bf16/f16 models on CUDA) get fp32 master weights and fp32 moments here: each step
 * widens the gradient, updates the master in fp32 and rounds it once into the parameter, so
 * small updates accumulate instead of vanishing in bf16's 8-bit mantissa.
 */
import { InvalidArgumentError } from '../errors.js';
import { Tensor } from '../tensor.js';
import { adamwStep, clipGradNorm, gradNorm, type AdamWHyper } from '../ops/adamw.js';
import { copyInto } from '../ops/elementwise.js';
import { isHalfPrecision } from './model-dtype.js';
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
  /** fp32 master weights: the parameter itself unless it is 16-bit. */
  readonly masters: ParamMap = new Map();

  constructor(
    readonly params: ParamMap,
    readonly names: readonly string[],
    public options: AdamWOptions,
  ) {
    if (names.length === 0) throw new InvalidArgumentError('no trainable parameters', 'names');
    for (const n of names) {
      const p = params.get(n);
      if (!p) throw new InvalidArgumentError(`unknown parameter '${n}'`, 'names');
      const master = isHalfPrecision(p.dtype) ? p.cast('f32') : p;
      this.masters.set(n, master);
      this.expAvg.set(n, Tensor.zeros(p.shape, { dtype: master.dtype, device: p.device }));
      this.expAvgSq.set(n, Tensor.zeros(p.shape, { dtype: master.dtype, device: p.device }));
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
    this.names.forEach((n, i) => {
      const param = this.params.get(n)!;
      const master = this.masters.get(n)!;
      const grad = master === param ? gs[i]! : gs[i]!.cast(master.dtype);
      adamwStep({ param: master, grad, expAvg: this.expAvg.get(n)!, expAvgSq: this.expAvgSq.get(n)! }, { ...this.options, lr }, this.stepCount);
      if (master !== param) {
        grad.dispose();
        this.syncParam(n);
      }
    });
    try {
      return (await normT.toArray())[0]!;
    } finally {
      normT.dispose();
    }
  }

  /** Rounds a master weight into its 16-bit parameter (after a step or a checkpoint restore). */
  syncParam(name: string): void {
    const param = this.params.get(name)!;
    const master = this.masters.get(name)!;
    if (master === param) return;
    const rounded = master.cast(param.dtype);
    copyInto(param, rounded);
    rounded.dispose();
  }

  dispose(): void {
    for (const t of [...this.expAvg.values(), ...this.expAvgSq.values()]) t.dispose();
    for (const [n, m] of this.masters) if (m !== this.params.get(n)) m.dispose();
    this.masters.clear();
  }
}
