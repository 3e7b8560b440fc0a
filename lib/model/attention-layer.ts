/**
 * The per-layer attention hook. The Llama block computes q, k, v (after RoPE) and hands them to
 * the layer's AttentionKernel; softmax is the default, and hybrid/linear kernels plug in here
 * with their own parameters (feature maps, gammas) without touching the block.
 */
import { Tensor } from '../tensor.js';
import { accumDType, type DType } from '../dtype.js';
import type { Device } from '../device.js';
import { InvalidArgumentError } from '../errors.js';
import { softmaxAttention, softmaxAttentionBackward, type SoftmaxAttentionSaved } from '../ops/softmax-attention.js';
import { HybridDecodeState } from '../ops/hybrid-decode.js';
import type { HybridMode } from '../ops/hybrid-attention.js';

export interface AttentionShape {
  batch: number;
  seqlen: number;
  heads: number;
  kvHeads: number;
  headDim: number;
}

/** What a kernel's forward keeps for its backward; dispose() frees it. */
export interface AttentionSaved {
  dispose(): void;
}

export interface AttentionGrads {
  dq: Tensor;
  dk: Tensor;
  dv: Tensor;
  /** Gradients of the kernel's own parameters, keyed like parameters(). */
  params?: Map<string, Tensor>;
}

/** Incremental attention for generation: the first call is the prompt, later calls one token each. */
export interface AttentionCache {
  /** q [B, H, T, d], k/v [B, Hkv, T, d] of the new tokens -> y [B, H, T, d]. */
  attend(q: Tensor, k: Tensor, v: Tensor): Tensor;
  dispose(): void;
}

export interface CacheShape {
  batch: number;
  /** Prompt + every generated token. */
  maxLength: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  dtype: DType;
  device: Device;
}

/** Per-pass options a kernel may use (kernels without the feature ignore them). */
export interface AttentionPassOptions {
  /** SSD keep mask in {0, 1} per (batch, head): [B, H] tensor (accumulator dtype) or B*H numbers, row-major. */
  keep?: Tensor | ArrayLike<number>;
}

export interface AttentionKernel {
  /** 'softmax', 'hybrid', ... (diagnostics, checkpoints). */
  readonly kind: string;
  /**
   * q [B, H, T, d], k [B, Hkv, T, d], v [B, Hkv, T, d] (after RoPE) -> y [B, H, T, d].
   * With `train`, `saved` holds what backward needs (the caller disposes it).
   */
  forward(q: Tensor, k: Tensor, v: Tensor, train: boolean, pass?: AttentionPassOptions): { y: Tensor; saved?: AttentionSaved };
  backward(saved: AttentionSaved, dy: Tensor): AttentionGrads;
  /** Current mode of kernels that have modes (hybrid/linear layers, SPEC sec. 2). */
  readonly mode?: HybridMode;
  /** Switches the mode for later passes (and later decode steps). */
  setMode?(mode: HybridMode): void;
  /** A decode cache (KV cache, recurrent state); absent: generation recomputes the prefix. */
  createCache?(shape: CacheShape): AttentionCache;
  /** Trainable parameters owned by the kernel, names relative to the layer's self_attn. */
  parameters(): Map<string, Tensor>;
  dispose(): void;
}

class SoftmaxSaved implements AttentionSaved {
  constructor(readonly s: SoftmaxAttentionSaved) {}
  dispose(): void {
    // q, k, v belong to the block (it disposes them); y and lse were made by the forward.
    this.s.y.dispose();
    this.s.lse.dispose();
  }
}

/** Causal softmax attention with GQA (the pretrained model's own attention). */
export class SoftmaxAttentionKernel implements AttentionKernel {
  readonly kind = 'softmax';
  constructor(private readonly scale?: number) {}

  forward(q: Tensor, k: Tensor, v: Tensor, train: boolean): { y: Tensor; saved?: AttentionSaved } {
    const r = softmaxAttention({ q, k, v }, this.scale === undefined ? {} : { scale: this.scale });
    if (!train) {
      r.lse.dispose();
      return { y: r.y };
    }
    // The saved y is the returned y: the block must not dispose y before backward.
    return { y: r.y, saved: new SoftmaxSaved(r.saved) };
  }

  backward(saved: AttentionSaved, dy: Tensor): AttentionGrads {
    return softmaxAttentionBackward((saved as SoftmaxSaved).s, dy);
  }

  parameters(): Map<string, Tensor> {
    return new Map();
  }

  createCache(shape: CacheShape): AttentionCache {
    return new SoftmaxKvCache(shape, this.scale);
  }

  dispose(): void {}
}

/**
 * KV cache for causal softmax: the hybrid decode state in mode 'swa' with a window covering the
 * whole sequence is exact softmax attention over the cached keys/values (no token ever leaves
 * the window, so the linear-attention part stays empty).
 */
class SoftmaxKvCache implements AttentionCache {
  private readonly state: HybridDecodeState;
  private started = false;
  // Zero feature maps (featureDim 1: no linear-attention part) and a gamma that cancels in mode
  // swa; the prompt's are freed after the prefill, the step's are made once and reused.
  private stepFeatures: Tensor | undefined;
  private gamma: Tensor | undefined;
  constructor(
    readonly shape: CacheShape,
    private readonly scale?: number,
  ) {
    this.state = HybridDecodeState.create(
      { heads: shape.heads, kvHeads: shape.kvHeads, headDim: shape.headDim, valueDim: shape.headDim, featureDim: 1, window: shape.maxLength, dtype: shape.dtype, device: shape.device },
      shape.batch,
    );
  }

  private zeros(shape: number[]): Tensor {
    return Tensor.zeros(shape, { dtype: this.shape.dtype, device: this.shape.device });
  }

  attend(q: Tensor, k: Tensor, v: Tensor): Tensor {
    const { batch: B, heads: H, headDim: d } = this.shape;
    const T = q.shape[2]!;
    if (!this.started) {
      // The prompt: flash-style causal attention for its outputs, and the cache filled in
      // parallel (no token-by-token walk over the prompt).
      const fk = this.zeros([B, H, T, 1]);
      this.state.prefillState({ k, v, fk });
      fk.dispose(); // queued work keeps its storage
      this.started = true;
      const r = softmaxAttention({ q, k, v }, this.scale === undefined ? {} : { scale: this.scale });
      r.lse.dispose();
      return r.y;
    }
    if (T !== 1) throw new InvalidArgumentError('after the prompt, the KV cache takes one token per step', 'q');
    const gamma = this.gamma ?? (this.gamma = Tensor.full([H], 0.5, { dtype: accumDType(this.shape.dtype), device: this.shape.device }));
    const f = this.stepFeatures ?? (this.stepFeatures = this.zeros([B, H, 1]));
    const tok = (t: Tensor) => t.reshape([B, t.shape[1]!, d]); // [B, h, 1, d] is [B, h, d] in memory
    const out = this.state.step({ q: tok(q), k: tok(k), v: tok(v), fq: f, fk: f, gamma }, { mode: 'swa', ...(this.scale === undefined ? {} : { scale: this.scale }) });
    for (const s of Object.values(out.stats)) s.dispose();
    return out.y.reshape([B, H, T, d]);
  }

  dispose(): void {
    this.state.dispose();
    this.stepFeatures?.dispose();
    this.gamma?.dispose();
  }
}
