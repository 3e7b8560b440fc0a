/** Learning-rate schedules: constant, cosine with linear warmup, reduce-on-plateau. */
import { InvalidArgumentError } from '../errors.js';

export type LrSchedule = (step: number) => number;

export function constantLr(lr: number): LrSchedule {
  return () => lr;
}

/** Linear warmup over `warmup` steps, then cosine from lr to minLr at totalSteps (step is 0-based). */
export function cosineLr(lr: number, totalSteps: number, o: { warmup?: number; minLr?: number } = {}): LrSchedule {
  const warmup = o.warmup ?? 0;
  const minLr = o.minLr ?? 0;
  if (!(totalSteps > warmup)) throw new InvalidArgumentError('totalSteps must exceed warmup', 'totalSteps');
  return (step) => {
    if (step < warmup) return (lr * (step + 1)) / warmup;
    const t = Math.min(1, (step - warmup) / (totalSteps - warmup));
    return minLr + 0.5 * (lr - minLr) * (1 + Math.cos(Math.PI * t));
  };
}

/** torch.optim.lr_scheduler.ReduceLROnPlateau (mode 'min', relative threshold). */
export class ReduceLrOnPlateau {
  lr: number;
  private best = Infinity;
  private bad = 0;
  constructor(lr: number, readonly o: { factor?: number; patience?: number; threshold?: number; minLr?: number } = {}) {
    this.lr = lr;
  }
  /** Reports a validation metric; returns the learning rate to use next. */
  observe(metric: number): number {
    const threshold = this.o.threshold ?? 1e-4;
    if (metric < this.best * (1 - threshold)) {
      this.best = metric;
      this.bad = 0;
    } else if (++this.bad > (this.o.patience ?? 10)) {
      this.lr = Math.max(this.o.minLr ?? 0, this.lr * (this.o.factor ?? 0.1));
      this.bad = 0;
    }
    return this.lr;
  }
}
