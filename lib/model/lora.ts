/**
 * LoRA (Hu et al.; PEFT semantics): y = x W^T + b + s * B(A(dropout(x))), s = alpha / rank,
 * A [r, in] (Kaiming-uniform like PEFT), B [out, r] = 0, so a fresh adapter changes nothing.
 * Adapters sit on any subset of q, k, v, o, gate, up, down; merge() folds s*BA into W for
 * inference, unmerge() takes it out again.
 */
import { InvalidArgumentError } from '../errors.js';
import { Tensor } from '../tensor.js';
import { accumulate, mul } from '../ops/elementwise.js';
import { linearBackward, linear, matmul } from '../ops/matmul.js';
import { PlainProjection, projectionName, type BlockProjections, type ParamMap, type Projection } from './llama-block.js';
import type { LlamaModel } from './llama.js';

export const LORA_TARGETS = ['q', 'k', 'v', 'o', 'gate', 'up', 'down'] as const;
export type LoraTarget = (typeof LORA_TARGETS)[number];

export interface LoraOptions {
  /** Default 8. */
  rank?: number;
  /** Default 16. */
  alpha?: number;
  /** Dropout on the adapter's input, default 0. */
  dropout?: number;
  /** Default q, k, v, o (SPEC sec. 4). */
  targets?: readonly LoraTarget[];
  /** Seed of the A init and the dropout masks. */
  seed?: number;
}

/** Deterministic uniform draws (mulberry32); its state goes into checkpoints. */
export class LoraRng {
  constructor(public state: number) {}
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
}

interface LoraSaved {
  xd: Tensor; // dropout(x) (or x itself)
  mask?: Tensor;
  u: Tensor; // xd A^T [N, r]
  dispose(): void;
}

export class LoraProjection implements Projection {
  merged = false;
  constructor(
    readonly base: PlainProjection,
    readonly scaling: number,
    readonly dropout: number,
    readonly rng: LoraRng,
  ) {}

  get aName(): string {
    return `${this.base.name}.lora_A.weight`;
  }
  get bName(): string {
    return `${this.base.name}.lora_B.weight`;
  }
  private get A(): Tensor {
    return this.base.params.get(this.aName)!;
  }
  private get B(): Tensor {
    return this.base.params.get(this.bName)!;
  }

  forward(x: Tensor, train: boolean): { y: Tensor; saved?: unknown } {
    const y = this.base.forward(x).y;
    if (this.merged) return { y };
    let xd = x;
    let mask: Tensor | undefined;
    if (train && this.dropout > 0) {
      const keep = 1 / (1 - this.dropout);
      const m = new Float64Array(x.numel);
      for (let i = 0; i < m.length; i++) m[i] = this.rng.next() < this.dropout ? 0 : keep;
      mask = Tensor.fromArray(m, x.shape, { dtype: x.dtype, device: x.device });
      xd = mul(x, mask);
    }
    const u = linear(xd, this.A);
    const z = linear(u, this.B);
    const out = addScaled(y, z, this.scaling);
    if (!train) {
      u.dispose();
      if (mask) {
        mask.dispose();
        xd.dispose();
      }
      return { y: out };
    }
    const saved: LoraSaved = {
      xd,
      u,
      ...(mask ? { mask } : {}),
      dispose() {
        u.dispose();
        if (mask) {
          mask.dispose();
          xd.dispose();
        }
      },
    };
    return { y: out, saved };
  }

  backward(x: Tensor, dy: Tensor, saved: unknown, grads: ParamMap, dxInto?: Tensor): Tensor {
    const dx = this.base.backward(x, dy, undefined, grads, dxInto);
    if (this.merged) return dx;
    const s = saved as LoraSaved;
    const dA = grads.get(this.aName);
    const dB = grads.get(this.bName);
    // z = u B^T: dB += s dy^T u, du = s dy B ; u = xd A^T: dA += du^T xd, dxd = du A.
    const r = this.B.shape[1]!;
    const N = dy.numel / dy.shape[dy.rank - 1]!;
    const dy2 = dy.reshape([N, dy.shape[dy.rank - 1]!]);
    const u2 = s.u.reshape([N, r]);
    if (dB) matmul(dy2, u2, { transA: true, alpha: this.scaling, out: dB });
    const du = matmul(dy2, this.B, { alpha: this.scaling });
    // Without dropout dA and dx accumulate in one call; with it, dxd is masked first.
    const dxd = linearBackward(s.xd, this.A, du, { needWeight: dA !== undefined, ...(dA ? { dw: dA } : {}), ...(s.mask ? {} : { dx }) }).dx!;
    if (s.mask) {
      const dxm = mul(dxd, s.mask);
      accumulate(dx, dxm);
      dxd.dispose();
      dxm.dispose();
    }
    du.dispose();
    return dx;
  }

  /** W += s B A (or -=, to unmerge). */
  fold(sign: 1 | -1): void {
    matmul(this.B, this.A, { alpha: sign * this.scaling, out: this.base.weight, beta: 1 });
    this.merged = sign === 1;
  }
}

function addScaled(y: Tensor, z: Tensor, s: number): Tensor {
  accumulate(y, z, s);
  z.dispose();
  return y;
}

export interface LoraHandle {
  readonly names: string[];
  readonly rng: LoraRng;
  readonly options: Required<LoraOptions>;
  merge(): void;
  unmerge(): void;
}

/**
 * Adds adapters to `model` and makes them the only trainable parameters (the base is frozen;
 * unfreeze more through model.trainable). Returns the adapter names and merge/unmerge.
 */
export function applyLora(model: LlamaModel, options: LoraOptions = {}): LoraHandle {
  const o: Required<LoraOptions> = {
    rank: options.rank ?? 8,
    alpha: options.alpha ?? 16,
    dropout: options.dropout ?? 0,
    targets: options.targets ?? ['q', 'k', 'v', 'o'],
    seed: options.seed ?? 0,
  };
  if (!Number.isInteger(o.rank) || o.rank < 1) throw new InvalidArgumentError(`rank must be an integer >= 1, got ${String(o.rank)}`, 'rank');
  if (typeof o.alpha !== 'number' || !Number.isFinite(o.alpha)) throw new InvalidArgumentError('alpha must be a finite number', 'alpha');
  if (typeof o.dropout !== 'number' || !(o.dropout >= 0 && o.dropout < 1)) throw new InvalidArgumentError('dropout must be in [0, 1)', 'dropout');
  for (const t of o.targets) if (!LORA_TARGETS.includes(t)) throw new InvalidArgumentError(`unknown LoRA target '${String(t)}' (use ${LORA_TARGETS.join(', ')})`, 'targets');
  const rng = new LoraRng(o.seed >>> 0);
  const scaling = o.alpha / o.rank;
  const names: string[] = [];
  const adapters: LoraProjection[] = [];
  model.trainable.clear();
  for (const block of model.blocks) {
    for (const key of o.targets) {
      const cur = block.proj[key as keyof BlockProjections];
      if (!(cur instanceof PlainProjection)) throw new InvalidArgumentError(`layer ${block.index} ${key} already has an adapter`, 'targets');
      const w = cur.weight;
      const [out, inp] = w.shape as [number, number];
      const name = projectionName(block.index, key as keyof BlockProjections);
      // PEFT: kaiming_uniform_(a=sqrt(5)) on A -> U(-1/sqrt(in), 1/sqrt(in)); B = 0.
      const bound = 1 / Math.sqrt(inp);
      const a = Float64Array.from({ length: o.rank * inp }, () => (2 * rng.next() - 1) * bound);
      model.params.set(`${name}.lora_A.weight`, Tensor.fromArray(a, [o.rank, inp], { dtype: w.dtype, device: w.device }));
      model.params.set(`${name}.lora_B.weight`, Tensor.zeros([out, o.rank], { dtype: w.dtype, device: w.device }));
      const p = new LoraProjection(cur, scaling, o.dropout, rng);
      block.proj[key as keyof BlockProjections] = p;
      adapters.push(p);
      names.push(p.aName, p.bName);
      model.trainable.add(p.aName).add(p.bName);
    }
  }
  model.zeroGrad();
  return {
    names,
    rng,
    options: o,
    merge: () => adapters.forEach((p) => !p.merged && p.fold(1)),
    unmerge: () => adapters.forEach((p) => p.merged && p.fold(-1)),
  };
}
