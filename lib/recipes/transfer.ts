/**
 * Stage 1, attention transfer (SPEC sec. 4): the base model is frozen and runs as the teacher
 * (causal softmax in every layer); while its forward passes each converted layer, that layer's
 * post-RoPE q, k, v and softmax output are captured and the student (the layer's hybrid/linear
 * kernel: feature maps, gammas) is scored against them on the spot, its gradients added, and the
 * captured tensors released, so memory holds one layer's activations at a time. Later layers
 * see the teacher's hidden states (as LoLCATs). Losses:
 * - 'weight-ce': attention-weight cross-entropy of LA alone over the full prefix (transferLoss).
 * - 'mse-la':     output MSE of the student in mode 'la-full' against the softmax output.
 * - 'mse-hybrid': output MSE of the student hybrid (its window, gammas trained too).
 * MSE is weighted (default x1000, LoLCATs); the per-layer losses are summed and divided by the
 * number of converted layers.
 */
import { InvalidArgumentError } from '../errors.js';
import { Tensor } from '../tensor.js';
import { accumulate, add, mul, scale, sumRows } from '../ops/elementwise.js';
import { featureMapBackward } from '../ops/feature-map.js';
import { repeatKv } from '../ops/repeat-kv.js';
import { softmaxAttention } from '../ops/softmax-attention.js';
import { transferLoss, transferLossBackward } from '../ops/transfer-loss.js';
import type { AttentionGrads, AttentionKernel, AttentionSaved } from '../model/attention-layer.js';
import { HYBRID_PARAM_NAMES, HybridAttentionKernel } from '../model/hybrid-layer.js';
import type { LlamaModel } from '../model/llama.js';
import type { HybridMode } from '../ops/hybrid-attention.js';
import type { BatchSource } from './data.js';
import { stageLoopSettings, trainLoop, type LoopResult, type StageLoopOptions } from './loop.js';

export const TRANSFER_LOSSES = ['weight-ce', 'mse-la', 'mse-hybrid'] as const;
export type TransferLossKind = (typeof TRANSFER_LOSSES)[number];

export interface TransferOptions extends StageLoopOptions {
  loss: TransferLossKind;
  /** MSE weight (default 1000, LoLCATs). */
  mseWeight?: number;
  /** Train the gammas (default: true for 'mse-hybrid', which is the only loss that depends on them). */
  trainGamma?: boolean;
}

/** Per-layer losses of the latest teacher pass (device scalars until read). */
interface Pending {
  losses: Tensor[];
}

/**
 * Wraps a layer during transfer: the forward returns the teacher's softmax output (so the next
 * layer sees teacher states) and, on the side, scores the student against it.
 */
class TransferKernel implements AttentionKernel {
  readonly kind = 'transfer';
  constructor(
    readonly student: HybridAttentionKernel,
    readonly model: LlamaModel,
    readonly loss: TransferLossKind,
    readonly weight: number,
    readonly pending: Pending,
    readonly active: { on: boolean },
  ) {}

  private addGrad(rel: string, g: Tensor): void {
    const dst = this.model.grads.get(this.student.prefix + rel);
    if (dst) accumulate(dst, g);
    g.dispose();
  }

  forward(q: Tensor, k: Tensor, v: Tensor): { y: Tensor; saved?: AttentionSaved } {
    const teacher = softmaxAttention({ q, k, v }, this.student.scale === undefined ? {} : { scale: this.student.scale });
    teacher.lse.dispose();
    if (!this.active.on) return { y: teacher.y };
    const s = this.student;
    if (this.loss === 'weight-ce') {
      if (s.featureKind === 'elu') return { y: teacher.y };
      const groups = q.shape[1]! / k.shape[1]!;
      const fq = s.phi('q', q);
      const kRep = repeatKv(k, groups);
      const fk = s.phi('k', kRep);
      const tl = transferLoss({ q, k, fq: fq.phi, fk: fk.phi }, s.scale === undefined ? {} : { scale: s.scale });
      const g = transferLossBackward(tl.saved, this.weight);
      const gq = featureMapBackward(fq.saved, g.dfq);
      const gk = featureMapBackward(fk.saved, g.dfk);
      if (gq.dw) this.addGrad(HYBRID_PARAM_NAMES.qWeight, gq.dw);
      if (gq.db) this.addGrad(HYBRID_PARAM_NAMES.qBias, gq.db);
      if (gk.dw) this.addGrad(HYBRID_PARAM_NAMES.kWeight, gk.dw);
      if (gk.db) this.addGrad(HYBRID_PARAM_NAMES.kBias, gk.db);
      for (const t of [gq.dx, gk.dx, g.dfq, g.dfk, kRep]) t.dispose();
      fq.dispose();
      fk.dispose();
      this.pending.losses.push(scale(tl.loss, this.weight));
      tl.loss.dispose();
      return { y: teacher.y };
    }
    const mode: HybridMode = this.loss === 'mse-la' ? 'la-full' : 'hybrid';
    const before = s.mode;
    s.setMode(mode);
    let out: { y: Tensor; saved?: AttentionSaved };
    try {
      out = s.forward(q, k, v, true);
    } finally {
      s.setMode(before);
    }
    const n = teacher.y.numel;
    const diff = add(out.y, teacher.y, -1);
    const sq = mul(diff, diff);
    const sum = sumRows(sq.reshape([n, 1]));
    sq.dispose();
    // loss_l = weight * mean(diff^2) / L (the 1/L is in this.weight)
    this.pending.losses.push(scale(sum, this.weight / n));
    sum.dispose();
    const dy = scale(diff, (2 * this.weight) / n);
    diff.dispose();
    const g: AttentionGrads = s.backward(out.saved!, dy);
    dy.dispose();
    out.saved!.dispose();
    for (const t of [g.dq, g.dk, g.dv]) t.dispose();
    for (const [rel, t] of g.params ?? []) this.addGrad(rel, t);
    return { y: teacher.y };
  }

  backward(): AttentionGrads {
    throw new InvalidArgumentError('the transfer teacher is frozen (no backward)', 'backward');
  }
  parameters(): Map<string, Tensor> {
    return new Map();
  }
  dispose(): void {}
}

/** The hybrid/linear kernels of a model, by layer (softmax layers are skipped). */
export function hybridKernels(model: LlamaModel): { layer: number; kernel: HybridAttentionKernel }[] {
  const out: { layer: number; kernel: HybridAttentionKernel }[] = [];
  model.blocks.forEach((b, i) => {
    if (b.attention instanceof HybridAttentionKernel) out.push({ layer: i, kernel: b.attention });
  });
  return out;
}

/**
 * Attention transfer of every hybrid/linear layer of `model` (converted with convertToHybrid).
 * Trains the feature maps (and the gammas for 'mse-hybrid' unless trainGamma is false); the
 * base model stays frozen. Resolves when the steps are done or the signal aborted.
 */
export async function attentionTransfer(model: LlamaModel, data: BatchSource, o: TransferOptions): Promise<LoopResult> {
  const loss = o.loss;
  if (!(TRANSFER_LOSSES as readonly string[]).includes(loss)) throw new InvalidArgumentError(`loss must be one of ${TRANSFER_LOSSES.join(', ')}`, 'loss');
  const layers = hybridKernels(model);
  if (layers.length === 0) throw new InvalidArgumentError('the model has no hybrid/linear layers: convert it first (convertToHybrid)', 'model');
  const trainGamma = o.trainGamma ?? loss === 'mse-hybrid';
  const names: string[] = [];
  for (const { kernel } of layers)
    for (const rel of kernel.parameterNames()) if (rel !== HYBRID_PARAM_NAMES.gamma || trainGamma) names.push(kernel.prefix + rel);
  if (names.length === 0) throw new InvalidArgumentError('nothing to train: the feature maps have no parameters (elu) and gamma is frozen', 'featureMap');
  const base = loss === 'weight-ce' ? 1 : (o.mseWeight ?? 1000);
  const pending: Pending = { losses: [] };
  const active = { on: true };
  const wrappers = layers.map(({ layer, kernel }) => [layer, new TransferKernel(kernel, model, loss, base / layers.length, pending, active)] as const);
  for (const [layer, w] of wrappers) model.blocks[layer]!.attention = w;
  try {
    return await trainLoop({
      stage: 'transfer',
      model,
      names,
      data,
      steps: o.steps ?? 100,
      lr: o.lr ?? 1e-2,
      ...stageLoopSettings(o),
      step: async (batch) => {
        pending.losses.length = 0;
        model.forward(batch).logits.dispose();
        let total = 0;
        for (const t of pending.losses) {
          total += (await t.toArray())[0]!;
          t.dispose();
        }
        pending.losses.length = 0;
        return { loss: total };
      },
    });
  } finally {
    for (const { layer, kernel } of layers) model.blocks[layer]!.attention = kernel;
    pending.losses.forEach((t) => t.dispose());
  }
}

/** The transfer loss of the current feature maps on `batches` (no update): the same number training reports. */
export async function transferLossOf(model: LlamaModel, batches: Iterable<import('./data.js').TokenBatch>, o: { loss: TransferLossKind; mseWeight?: number }): Promise<number> {
  const layers = hybridKernels(model);
  const pending: Pending = { losses: [] };
  const base = o.loss === 'weight-ce' ? 1 : (o.mseWeight ?? 1000);
  // gradients are computed into a scratch map nobody reads
  const wrappers = layers.map(({ layer, kernel }) => [layer, new TransferKernel(kernel, model, o.loss, base / layers.length, pending, { on: true })] as const);
  for (const [layer, w] of wrappers) model.blocks[layer]!.attention = w;
  const saved = new Set(model.trainable);
  model.trainable.clear();
  model.zeroGrad();
  let sum = 0;
  let n = 0;
  try {
    for (const b of batches) {
      model.forward(b).logits.dispose();
      for (const t of pending.losses) {
        sum += (await t.toArray())[0]!;
        t.dispose();
      }
      pending.losses.length = 0;
      n++;
    }
  } finally {
    for (const { layer, kernel } of layers) model.blocks[layer]!.attention = kernel;
    saved.forEach((x) => model.trainable.add(x));
    model.zeroGrad();
  }
  return n > 0 ? sum / n : Number.NaN;
}
