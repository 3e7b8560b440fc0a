/**
 * Llama-family causal LM (LlamaForCausalLM, MistralForCausalLM) on the library's ops, with an
 * explicit forward and backward: forward({train}) keeps the activations, loss() adds the
 * next-token cross-entropy, backward() adds every parameter's gradient (HF names) into grads.
 */
import { join } from 'node:path';
import type { DType } from '../dtype.js';
import type { Device } from '../device.js';
import { InvalidArgumentError, NotImplementedError } from '../errors.js';
import { Tensor } from '../tensor.js';
import { fillLike, scale } from '../ops/elementwise.js';
import { checkTokenIds, embedding, embeddingBackward } from '../ops/embedding.js';
import { linear, linearBackward } from '../ops/matmul.js';
import { rmsNorm, rmsNormBackward, type RmsNormSaved } from '../ops/rms-norm.js';
import type { RopeTables } from '../ops/rope.js';
import {
  chunkedCrossEntropy,
  chunkedCrossEntropyBackward,
  crossEntropy,
  crossEntropyBackward,
  nextTokenTargets,
  type ChunkedCrossEntropySaved,
  type CrossEntropySaved,
} from '../ops/cross-entropy.js';
import { SoftmaxAttentionKernel, type AttentionCache, type AttentionKernel } from './attention-layer.js';
import { HYBRID_MODES, type HybridMode } from '../ops/hybrid-attention.js';
import { expectChoice } from '../ops/validate.js';
import { loadConfig, ropeInvFreq, type LlamaConfig } from './config.js';
import { LlamaBlock, disposeActivations, plainProjections, type BlockActivations, type ParamMap } from './llama-block.js';
import { loadWeights, parameterSpecs } from './weights.js';
import { modelDType, type ModelDType } from './model-dtype.js';

export interface LlamaLoadOptions {
  /** Compute dtype (f32/f64 on the CPU; bf16/f16/f32 on CUDA); checkpoints of any float dtype are converted to it. Default f32 on the CPU, bf16 on CUDA. */
  dtype?: ModelDType;
  device?: Device;
  /** Attention kernel per layer (default causal softmax): where hybrid/linear layers plug in. */
  attention?: (layer: number, config: LlamaConfig) => AttentionKernel;
}

/** Token ids: rows of equal length, or a flat array with an explicit [B, T]. */
export type TokenBatch = readonly (readonly number[])[] | { ids: Int32Array | readonly number[]; batch: number; seqlen: number };

export interface ForwardOptions {
  /** Keep activations for backward(). */
  train?: boolean;
  /** Also return hidden states: embeddings, each layer's output but the last, the final norm's output (HF's hidden_states). */
  hiddenStates?: boolean;
  /** Position of the first token (default 0). */
  positionOffset?: number;
  /** One decode cache per layer (createCaches): the tokens continue the cached prefix. */
  caches?: readonly AttentionCache[];
  /** SSD keep masks for this pass, one entry per layer ([B, H] tensor or B*H numbers; undefined keeps every head). */
  keep?: SsdKeep;
  /** Logits of each row's last position only ([B, 1, V]): generation skips the [B, T, V] lm_head of a prompt. Not with train. */
  lastPositionOnly?: boolean;
}

/** Per-layer SSD keep masks (see drawSsdKeep). */
export type SsdKeep = readonly (Tensor | ArrayLike<number> | undefined)[];

export interface LossOptions {
  /** Fused lm_head + cross-entropy in vocabulary chunks (no [N, V] logits). Default false. */
  chunked?: boolean;
  vocabChunk?: number;
  /** Targets [B*T] already aligned with positions; default next-token targets from the ids. */
  targets?: Int32Array;
  ignoreIndex?: number;
  /** > 0: loss = sum / normalizer (gradient accumulation over micro-batches). */
  normalizer?: number;
  /** SSD keep masks for this pass (as ForwardOptions.keep). */
  keep?: SsdKeep;
}

interface Pending {
  ids: Tensor;
  tables: RopeTables;
  inputs: Tensor[]; // residual input of each block (inputs[0] = embeddings)
  acts: BlockActivations[];
  final: RmsNormSaved;
  hf: Tensor; // final norm output [B, T, D]
  loss?: { kind: 'plain'; saved: CrossEntropySaved; logits: Tensor } | { kind: 'chunked'; saved: ChunkedCrossEntropySaved };
  targets?: Tensor;
}

function toBatch(input: TokenBatch): { ids: Int32Array; batch: number; seqlen: number } {
  if (Array.isArray(input)) {
    const rows = input as readonly (readonly number[])[];
    if (rows.length === 0 || !Array.isArray(rows[0])) throw new InvalidArgumentError('inputIds must be a non-empty array of token rows', 'inputIds');
    const T = rows[0]!.length;
    if (T === 0) throw new InvalidArgumentError('inputIds rows must not be empty', 'inputIds');
    const ids = new Int32Array(rows.length * T);
    rows.forEach((r, b) => {
      if (!Array.isArray(r) || r.length !== T) throw new InvalidArgumentError(`inputIds[${b}] has ${r?.length} tokens, expected ${T}`, 'inputIds');
      r.forEach((v, t) => (ids[b * T + t] = v));
    });
    return { ids, batch: rows.length, seqlen: T };
  }
  const o = input as { ids: Int32Array | readonly number[]; batch: number; seqlen: number };
  if (!o || !Number.isInteger(o.batch) || !Number.isInteger(o.seqlen) || o.batch < 1 || o.seqlen < 1 || o.ids?.length !== o.batch * o.seqlen)
    throw new InvalidArgumentError('inputIds must be number[][] or { ids, batch, seqlen } with ids.length = batch * seqlen', 'inputIds');
  return { ids: Int32Array.from(o.ids), batch: o.batch, seqlen: o.seqlen };
}

export class LlamaModel {
  readonly blocks: LlamaBlock[];
  /** Gradients by parameter name (allocated on the first backward; frozen params have none). */
  readonly grads: ParamMap = new Map();
  /** Names of parameters that receive gradients (default: all). */
  readonly trainable = new Set<string>();
  private readonly invFreq: Tensor;
  private pending: Pending | undefined;

  constructor(
    readonly config: LlamaConfig,
    readonly params: ParamMap,
    readonly dtype: DType,
    readonly device: Device,
    attention: (layer: number, config: LlamaConfig) => AttentionKernel = () => new SoftmaxAttentionKernel(),
  ) {
    this.blocks = [];
    for (let i = 0; i < config.numLayers; i++)
      this.blocks.push(new LlamaBlock(i, config, params, plainProjections(params, config, i), attention(i, config)));
    for (const name of params.keys()) this.trainable.add(name);
    this.invFreq = Tensor.fromArray(ropeInvFreq(config), [config.headDim / 2], { dtype: 'f64', device });
  }

  /** Reads config.json and model.safetensors(.index.json) from `dir`, tensor by tensor. */
  static async load(dir: string, options: LlamaLoadOptions = {}): Promise<LlamaModel> {
    const device = options.device ?? 'cpu';
    const dtype = modelDType(options.dtype, device);
    const config = await loadConfig(join(dir, 'config.json'));
    const params = await loadWeights(dir, parameterSpecs(config), { dtype, device });
    return new LlamaModel(config, params, dtype, device, options.attention);
  }

  get lmHeadName(): string {
    return this.config.tieWordEmbeddings ? 'model.embed_tokens.weight' : 'lm_head.weight';
  }

  private tables(batch: number, seqlen: number, offset: number): RopeTables {
    const pos = new Int32Array(batch * seqlen);
    for (let b = 0; b < batch; b++) for (let t = 0; t < seqlen; t++) pos[b * seqlen + t] = offset + t;
    return { positions: Tensor.fromArray(pos, [batch, seqlen], { dtype: 'i32', device: this.device }), invFreq: this.invFreq };
  }

  /** Runs the decoder; returns the final-norm output [B, T, D] and, with train, the pending state. */
  private trunk(input: TokenBatch, o: ForwardOptions): { hf: Tensor; hidden?: Tensor[]; pending?: Pending; shape: [number, number] } {
    const { ids, batch: B, seqlen: T } = toBatch(input);
    checkTokenIds(ids, this.config.vocabSize);
    const offset = o.positionOffset ?? 0;
    if (!Number.isInteger(offset) || offset < 0) throw new InvalidArgumentError('positionOffset must be an integer >= 0', 'positionOffset');
    const train = o.train ?? false;
    if (o.caches && (train || o.caches.length !== this.blocks.length))
      throw new InvalidArgumentError(`caches must hold one cache per layer (${this.blocks.length}) and cannot be used with train`, 'caches');
    if (o.keep !== undefined) this.checkKeep(o.keep, B);
    // Mistral's sliding-window softmax is not implemented for softmax layers: refuse rather than
    // silently attend beyond the window.
    const sw = this.config.slidingWindow;
    if (sw !== null && offset + T > sw)
      throw new NotImplementedError(
        `sliding_window = ${sw} (Mistral) attention is not implemented for softmax layers; sequences must stay within ${sw} tokens`,
        'sliding_window',
      );
    this.clearPending();
    const idT = Tensor.fromArray(ids, [B, T], { dtype: 'i32', device: this.device });
    const tables = this.tables(B, T, offset);
    const hidden: Tensor[] | undefined = o.hiddenStates ? [] : undefined;
    let x = embedding(idT, this.params.get('model.embed_tokens.weight')!);
    const inputs: Tensor[] = [];
    const acts: BlockActivations[] = [];
    for (const [i, block] of this.blocks.entries()) {
      if (hidden) hidden.push(scale(x, 1));
      const keep = o.keep?.[i];
      const r = block.forward(x, tables, train, o.caches?.[i], keep === undefined ? undefined : { keep });
      if (train) {
        inputs.push(x);
        acts.push(r.acts!);
      } else x.dispose();
      x = r.out;
    }
    const fin = rmsNorm(x, this.params.get('model.norm.weight')!, this.config.rmsNormEps);
    if (hidden) hidden.push(scale(fin.y, 1));
    if (!train) {
      x.dispose();
      fin.saved.rstd.dispose();
      idT.dispose();
      tables.positions.dispose();
      return { hf: fin.y, ...(hidden ? { hidden } : {}), shape: [B, T] };
    }
    inputs.push(x);
    const pending: Pending = { ids: idT, tables, inputs, acts, final: fin.saved, hf: fin.y };
    return { hf: fin.y, ...(hidden ? { hidden } : {}), pending, shape: [B, T] };
  }

  /**
   * Logits [B, T, V]. With hiddenStates, also L + 1 tensors [B, T, D]. With train, the
   * activations are kept for backward({dlogits}). The caller owns the returned tensors.
   */
  forward(input: TokenBatch, o: ForwardOptions = {}): { logits: Tensor; hiddenStates?: Tensor[] } {
    if (o.lastPositionOnly && o.train) throw new InvalidArgumentError('lastPositionOnly cannot be combined with train', 'lastPositionOnly');
    const r = this.trunk(input, o);
    const [B, T] = r.shape;
    let head = r.hf;
    if (o.lastPositionOnly && T > 1) {
      // Rows b*T + T-1 of [B*T, D], gathered by the embedding kernel (a row lookup).
      const last = Tensor.fromArray(Int32Array.from({ length: B }, (_, b) => b * T + T - 1), [B, 1], { dtype: 'i32', device: this.device });
      head = embedding(last, r.hf.reshape([B * T, this.config.hiddenSize]));
      last.dispose();
    }
    const logits = linear(head, this.params.get(this.lmHeadName)!);
    if (head !== r.hf) head.dispose();
    if (r.pending) this.pending = r.pending;
    else r.hf.dispose();
    return { logits, ...(r.hidden ? { hiddenStates: r.hidden } : {}) };
  }

  /** Validates per-layer SSD keep masks before anything is allocated. */
  private checkKeep(keep: SsdKeep, batch: number): void {
    if (!Array.isArray(keep) || keep.length !== this.blocks.length)
      throw new InvalidArgumentError(`keep must hold one mask (or undefined) per layer (${this.blocks.length})`, 'keep');
    const n = batch * this.config.numHeads;
    keep.forEach((m, i) => {
      if (m === undefined || m instanceof Tensor) return;
      if (m === null || typeof (m as ArrayLike<number>).length !== 'number' || (m as ArrayLike<number>).length !== n)
        throw new InvalidArgumentError(`keep[${i}] must hold batch * heads = ${n} values`, 'keep');
      for (let j = 0; j < n; j++) {
        const v = (m as ArrayLike<number>)[j];
        if (v !== 0 && v !== 1) throw new InvalidArgumentError(`keep[${i}][${j}] = ${String(v)} is not 0 or 1`, 'keep');
      }
    });
  }

  /** Mean next-token cross-entropy; keeps what backward() needs. */
  async loss(input: TokenBatch, o: LossOptions = {}): Promise<number> {
    const r = this.trunk(input, { train: true, ...(o.keep ? { keep: o.keep } : {}) });
    const p = r.pending!;
    this.pending = p;
    const [B, T] = r.shape;
    const ignoreIndex = o.ignoreIndex ?? -100;
    let targets = o.targets;
    if (targets === undefined) targets = nextTokenTargets(toBatch(input).ids, B, T, ignoreIndex);
    else if (!(targets instanceof Int32Array) || targets.length !== B * T)
      throw new InvalidArgumentError(`targets must be an Int32Array of ${B * T} ids`, 'targets');
    p.targets = Tensor.fromArray(targets, [B * T], { dtype: 'i32', device: this.device });
    const ce = { ignoreIndex, normalizer: o.normalizer ?? 0 };
    const hf2 = p.hf.reshape([B * T, this.config.hiddenSize]);
    let loss: Tensor;
    if (o.chunked) {
      const c = chunkedCrossEntropy(hf2, this.params.get(this.lmHeadName)!, p.targets, { ...ce, vocabChunk: o.vocabChunk ?? 0 });
      p.loss = { kind: 'chunked', saved: c.saved };
      loss = c.loss;
    } else {
      const logits = linear(hf2, this.params.get(this.lmHeadName)!);
      const c = crossEntropy(logits, p.targets, ce);
      p.loss = { kind: 'plain', saved: c.saved, logits };
      loss = c.loss;
    }
    try {
      return (await loss.toArray())[0]!;
    } finally {
      loss.dispose();
    }
  }

  /** Per-layer decode caches for `batch` sequences of up to maxLength tokens; undefined when a layer's kernel has none. */
  createCaches(batch: number, maxLength: number): AttentionCache[] | undefined {
    if (!this.blocks.every((b) => b.attention.createCache)) return undefined;
    const c = this.config;
    return this.blocks.map((b) =>
      b.attention.createCache!({ batch, maxLength, heads: c.numHeads, kvHeads: c.numKvHeads, headDim: c.headDim, dtype: this.dtype, device: this.device }),
    );
  }

  /**
   * Sets the attention mode (SPEC sec. 2) of every layer whose kernel has modes (hybrid/linear
   * layers), or of `layers` only (each must have modes). Softmax layers are left alone.
   * Returns the indices of the layers changed.
   */
  setAttentionMode(mode: HybridMode, o: { layers?: readonly number[] } = {}): number[] {
    expectChoice(mode, 'mode', HYBRID_MODES);
    const chosen = o.layers ?? this.blocks.map((_, i) => i);
    const changed: number[] = [];
    for (const i of chosen) {
      const k: AttentionKernel | undefined = this.blocks[i]?.attention;
      if (!k) throw new InvalidArgumentError(`no layer ${i}`, 'layers');
      if (typeof k.setMode !== 'function') {
        if (o.layers) throw new InvalidArgumentError(`layer ${i} (${k.kind}) has no attention modes`, 'layers');
        continue;
      }
      k.setMode(mode);
      changed.push(i);
    }
    return changed;
  }

  /** Each layer's attention mode ('softmax' for plain softmax layers). */
  attentionModes(): (HybridMode | 'softmax')[] {
    return this.blocks.map((b) => b.attention.mode ?? 'softmax');
  }

  /** Allocates zero gradients for the trainable parameters that have none, and zeroes the rest. */
  zeroGrad(): void {
    for (const name of this.trainable) {
      this.grads.get(name)?.dispose();
      this.grads.set(name, fillLike(this.params.get(name)!, 0));
    }
    for (const [name, g] of this.grads)
      if (!this.trainable.has(name)) {
        g.dispose();
        this.grads.delete(name);
      }
  }

  /**
   * Adds d(loss)/d(param) into grads (after loss(), or after forward({train}) with dlogits
   * [B, T, V]), frees the activations, and returns grads.
   */
  backward(o: { dlogits?: Tensor; dloss?: number } = {}): ParamMap {
    const p = this.pending;
    if (!p) throw new InvalidArgumentError('backward() needs a preceding loss() or forward({ train: true })', 'backward');
    this.pending = undefined;
    if (this.grads.size === 0) this.zeroGrad();
    const lmName = this.lmHeadName;
    const N = p.hf.numel / this.config.hiddenSize;
    const hf2 = p.hf.reshape([N, this.config.hiddenSize]);
    let dhf: Tensor;
    try {
      if (o.dlogits) {
        dhf = this.lmHeadBackward(hf2, o.dlogits.reshape([N, this.config.vocabSize]));
      } else if (p.loss?.kind === 'chunked') {
        const dw = this.grads.get(lmName);
        const r = chunkedCrossEntropyBackward(p.loss.saved, { dloss: o.dloss ?? 1, ...(dw ? { dweight: dw } : {}) });
        if (!dw) r.dweight.dispose();
        dhf = r.dhidden;
      } else if (p.loss?.kind === 'plain') {
        const dlogits = crossEntropyBackward(p.loss.saved, o.dloss ?? 1);
        dhf = this.lmHeadBackward(hf2, dlogits);
        dlogits.dispose();
      } else throw new InvalidArgumentError('backward() after forward({ train: true }) needs dlogits', 'dlogits');
      const gNorm = this.grads.get('model.norm.weight');
      const fin = rmsNormBackward(p.final, dhf.reshape(p.hf.shape), gNorm ? { dw: gNorm } : {});
      if (!gNorm) fin.dw.dispose();
      dhf.dispose();
      let dx = fin.dx;
      for (let i = this.blocks.length - 1; i >= 0; i--) {
        const next = this.blocks[i]!.backward(p.acts[i]!, dx, p.tables, this.grads);
        dx.dispose();
        dx = next;
      }
      p.acts.length = 0;
      const gEmb = this.grads.get('model.embed_tokens.weight');
      if (gEmb) embeddingBackward(p.ids, dx, this.config.vocabSize, { dweight: gEmb });
      dx.dispose();
    } finally {
      this.disposePending(p);
    }
    return this.grads;
  }

  private lmHeadBackward(hf2: Tensor, dlogits: Tensor): Tensor {
    const dw = this.grads.get(this.lmHeadName);
    return linearBackward(hf2, this.params.get(this.lmHeadName)!, dlogits, { needWeight: dw !== undefined, ...(dw ? { dw } : {}) }).dx!;
  }

  private disposePending(p: Pending): void {
    for (const a of p.acts) disposeActivations(a);
    for (const t of p.inputs) t.dispose();
    p.final.rstd.dispose();
    p.hf.dispose();
    p.ids.dispose();
    p.tables.positions.dispose();
    p.targets?.dispose();
    if (p.loss) {
      p.loss.saved.lse.dispose();
      if (p.loss.kind === 'plain') p.loss.logits.dispose();
    }
  }

  /** Drops kept activations (a forward without backward). */
  clearPending(): void {
    if (this.pending) this.disposePending(this.pending);
    this.pending = undefined;
  }

  dispose(): void {
    this.clearPending();
    for (const t of this.params.values()) t.dispose();
    for (const t of this.grads.values()) t.dispose();
    this.grads.clear();
    for (const b of this.blocks) b.attention.dispose();
    this.invFreq.dispose();
  }
}
