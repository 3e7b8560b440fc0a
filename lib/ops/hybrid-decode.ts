/**
 * Recurrent decode (SPEC sec. 7): a fixed-size state per sequence — S = sum fk v^T and
 * z = sum fk over the tokens that left the window, the window's keys/values/feature keys, and
 * the sink tokens — built by a prefill and advanced by ragged steps, with the same outputs as
 * the parallel form for every mode and geometry. One state serves every mode.
 */
import { accumDType, DTYPE_CODE, type DType } from '../dtype.js';
import { DEVICE_CODE, type Device } from '../device.js';
import { DisposedError, InvalidArgumentError, NotImplementedError, callNative } from '../errors.js';
import { native } from '../native.js';
import { Tensor } from '../tensor.js';
import { copyInto } from './elementwise.js';
import { HYBRID_MODES, LAMBDA_KINDS, WINDOW_GEOMETRIES, type HybridAttentionStats, type HybridMode, type LambdaKind, type WindowGeometry } from './hybrid-attention.js';
import { expectBackendDType, expectChoice, expectInteger, expectShape, expectTensor, gammaArg, keepArg, resolveScale } from './validate.js';

export interface DecodeConfig {
  heads: number;
  kvHeads: number;
  headDim: number;
  valueDim: number;
  featureDim: number;
  window: number;
  /** Sink tokens kept for mode 'sinks' (default 8). */
  sinks?: number;
  geometry?: WindowGeometry;
  dtype?: DType;
  device?: Device;
}

export interface DecodeOptions {
  mode?: HybridMode;
  lambda?: LambdaKind;
  scale?: number;
}

/**
 * The new tokens of a prefill or step, as the parallel form's inputs but laid out per call:
 * `prefill` takes [B, heads, T0, dim]; `step` and `captureStep` take [N, heads, dim], the N
 * tokens of all sequences in order (`tokensPerSeq` each, or split by `cuSeqlens`).
 */
export interface DecodeTokens {
  /** [.., H, .., d], after RoPE at the tokens' positions. */
  q: Tensor;
  /** [.., Hkv, .., d]. */
  k: Tensor;
  /** [.., Hkv, .., dv]. */
  v: Tensor;
  /** phi_q(q): [.., H, .., F]. */
  fq: Tensor;
  /** phi_k(k) per q head: [.., H, .., F]. */
  fk: Tensor;
  /** Per-head gamma, as for the parallel form. */
  gamma: Tensor | ArrayLike<number>;
  /** Optional SSD keep mask per (batch, head). */
  keep?: Tensor | ArrayLike<number>;
}

export interface DecodeOutput {
  y: Tensor;
  stats: HybridAttentionStats;
  dispose(): void;
}

type GraphTokenName = 'q' | 'k' | 'v' | 'fq' | 'fk';

/**
 * One decode step captured in a CUDA graph (HybridDecodeState.captureStep): each replay() runs
 * the step again with no host work beyond one graph launch, reading the captured token tensors
 * as they are at that moment and overwriting the same output tensors `y` and `stats`. Pass new
 * tokens to replay() to copy them into the captured tensors first (stream-ordered, on the GPU).
 * Every replay advances each sequence by `tokensPerSeq` tokens, exactly like step(). The graph
 * keeps the state and the captured tensors alive until it is disposed (a finalizer frees a
 * forgotten one).
 */
export class DecodeStepGraph {
  readonly y: Tensor;
  readonly stats: HybridAttentionStats;
  readonly tokensPerSeq: number;
  private handle: object | null;
  private readonly tokens: Record<GraphTokenName, Tensor>;

  /** @internal created by HybridDecodeState.captureStep */
  constructor(handle: object, y: Tensor, stats: HybridAttentionStats, tokens: Record<GraphTokenName, Tensor>, tokensPerSeq: number) {
    this.handle = handle;
    this.y = y;
    this.stats = stats;
    this.tokens = tokens;
    this.tokensPerSeq = tokensPerSeq;
  }

  get disposed(): boolean {
    return this.handle === null;
  }

  /** Runs one more step; `tokens` (optional, any subset) first replace the captured inputs' contents. */
  replay(tokens: Partial<Record<GraphTokenName, Tensor>> = {}): { y: Tensor; stats: HybridAttentionStats } {
    if (!this.handle) throw new DisposedError('the decode step graph was disposed', 'graph');
    for (const name of ['q', 'k', 'v', 'fq', 'fk'] as const) {
      const t = tokens[name];
      if (t === undefined || t === this.tokens[name]) continue;
      const want = this.tokens[name];
      expectTensor(t, name, { dtype: want.dtype, device: want.device });
      expectShape(t, name, want.shape as number[]);
    }
    for (const name of ['q', 'k', 'v', 'fq', 'fk'] as const) {
      const t = tokens[name];
      if (t !== undefined && t !== this.tokens[name]) copyInto(this.tokens[name], t);
    }
    const handle = this.handle;
    callNative(() => native.decodeReplayGraph(handle));
    return { y: this.y, stats: this.stats };
  }

  dispose(): void {
    if (!this.handle) return;
    const handle = this.handle;
    this.handle = null;
    native.decodeDisposeGraph(handle);
    this.y.dispose();
    Object.values(this.stats).forEach((t) => t.dispose());
  }
}

/** The decode states of a batch of sequences. */
export class HybridDecodeState {
  readonly config: Required<DecodeConfig>;
  readonly batch: number;
  /** Bytes of one sequence's state. */
  readonly bytesPerSequence: number;
  private readonly storage: Tensor;
  /** Whether each sequence holds a state (prefilled or restored): a step needs all of them. */
  private readonly ready: boolean[];

  private constructor(config: Required<DecodeConfig>, batch: number, bytes: number, storage: Tensor) {
    this.config = config;
    this.batch = batch;
    this.bytesPerSequence = bytes;
    this.storage = storage;
    this.ready = new Array<boolean>(batch).fill(false);
  }

  /** Allocates the states of `batch` sequences (empty until prefill). */
  static create(config: DecodeConfig, batch: number): HybridDecodeState {
    const full: Required<DecodeConfig> = {
      sinks: 8,
      geometry: 'sliding',
      dtype: 'f32',
      device: 'cpu',
      ...config,
    };
    for (const key of ['heads', 'kvHeads', 'headDim', 'valueDim', 'window'] as const) expectInteger(full[key], key, 1);
    expectInteger(full.featureDim, 'featureDim', 0);
    expectInteger(full.sinks, 'sinks', 1);
    expectInteger(batch, 'batch', 1);
    expectChoice(full.geometry, 'geometry', WINDOW_GEOMETRIES);
    expectBackendDType(full.dtype, full.device, 'dtype');
    if (full.heads % full.kvHeads !== 0) throw new InvalidArgumentError('heads must be a multiple of kvHeads', 'kvHeads');
    const bytes = callNative(() => native.decodeStateBytes(HybridDecodeState.nativeConfig(full)));
    const storage = Tensor.empty([batch, bytes / 4], { dtype: 'i32', device: full.device });
    return new HybridDecodeState(full, batch, bytes, storage);
  }

  private static nativeConfig(c: Required<DecodeConfig>) {
    return {
      device: DEVICE_CODE[c.device],
      dtype: DTYPE_CODE[c.dtype],
      heads: c.heads,
      kvHeads: c.kvHeads,
      headDim: c.headDim,
      valueDim: c.valueDim,
      featureDim: c.featureDim,
      window: c.window,
      sinks: c.sinks,
      geometry: WINDOW_GEOMETRIES.indexOf(c.geometry),
    };
  }

  private args(tokens: DecodeTokens, options: DecodeOptions, rows: number[], owned: Tensor[]) {
    if (this.storage.disposed) throw new DisposedError('the decode state was disposed', 'state');
    const c = this.config;
    const shapeOf = (heads: number, dim: number) => (rows.length === 2 ? [rows[0]!, heads, rows[1]!, dim] : [rows[0]!, heads, dim]);
    const get = (name: 'q' | 'k' | 'v' | 'fq' | 'fk', heads: number, dim: number) => {
      const t = expectTensor(tokens[name], name, { dtype: c.dtype, device: c.device });
      expectShape(t, name, shapeOf(heads, dim));
      return t.handle;
    };
    const lambda = expectChoice(options.lambda ?? 'one', 'lambda', LAMBDA_KINDS);
    const gamma = gammaArg(tokens.gamma, c.heads, c.dtype, c.device, lambda);
    if (gamma.owned) owned.push(gamma.tensor);
    let keep: Tensor | undefined;
    if (tokens.keep !== undefined) {
      const k = keepArg(tokens.keep, this.batch, c.heads, c.dtype, c.device);
      if (k.owned) owned.push(k.tensor);
      keep = k.tensor;
    }
    const mode = expectChoice(options.mode ?? 'hybrid', 'mode', HYBRID_MODES);
    return {
      ...HybridDecodeState.nativeConfig(c),
      batch: this.batch,
      mode: HYBRID_MODES.indexOf(mode),
      lambda: LAMBDA_KINDS.indexOf(lambda),
      scale: resolveScale(options.scale, c.headDim),
      state: this.storage.handle,
      q: get('q', c.heads, c.headDim),
      k: get('k', c.kvHeads, c.headDim),
      v: get('v', c.kvHeads, c.valueDim),
      fq: get('fq', c.heads, c.featureDim),
      fk: get('fk', c.heads, c.featureDim),
      gamma: gamma.tensor.handle,
      keep: keep?.handle,
    };
  }

  private wrap(out: Record<'y' | 'c' | 'denSwa' | 'denLa', import('../native.js').NativeTensorHandle>, yShape: number[], statShape: number[], owned: Tensor[]): DecodeOutput {
    const c = this.config;
    const acc = accumDType(c.dtype);
    const y = new Tensor(out.y, yShape, c.dtype, c.device);
    const stats = {
      c: new Tensor(out.c, statShape, acc, c.device),
      denSwa: new Tensor(out.denSwa, statShape, acc, c.device),
      denLa: new Tensor(out.denLa, statShape, acc, c.device),
    };
    return {
      y,
      stats,
      dispose() {
        y.dispose();
        Object.values(stats).forEach((t) => t.dispose());
        owned.forEach((t) => t.dispose());
      },
    };
  }

  /**
   * Resets every sequence and feeds it the same number T0 >= 0 of tokens, in the parallel
   * form's layout ([B, H, T0, *]); returns y and statistics for those tokens.
   */
  prefill(tokens: DecodeTokens, options: DecodeOptions = {}): DecodeOutput {
    const q = expectTensor(tokens.q, 'q', { rank: 4 });
    const T0 = q.shape[2]!;
    const owned: Tensor[] = [];
    const args = { ...this.args(tokens, options, [this.batch, T0], owned), seqlen: T0 };
    const out = callNative(() => native.decodePrefill(args)) as Record<'y' | 'c' | 'denSwa' | 'denLa', never>;
    this.ready.fill(true);
    const c = this.config;
    return this.wrap(out, [this.batch, c.heads, T0, c.valueDim], [this.batch, c.heads, T0], owned);
  }

  /**
   * Builds the states from T0 >= 0 tokens without computing their outputs (only k, v, fk, in the
   * parallel form's layout [B, heads, T0, *]): the same state as prefill, built in parallel on
   * CUDA (S = sum fk v^T as a reduction over tokens) instead of token by token.
   */
  prefillState(tokens: Pick<DecodeTokens, 'k' | 'v' | 'fk'>): void {
    if (this.storage.disposed) throw new DisposedError('the decode state was disposed', 'state');
    const c = this.config;
    const k = expectTensor(tokens.k, 'k', { dtype: c.dtype, device: c.device, rank: 4 });
    const T0 = k.shape[2]!;
    const get = (name: 'k' | 'v' | 'fk', heads: number, dim: number) => {
      const t = expectTensor(tokens[name], name, { dtype: c.dtype, device: c.device });
      expectShape(t, name, [this.batch, heads, T0, dim]);
      return t.handle;
    };
    const args = {
      ...HybridDecodeState.nativeConfig(c),
      batch: this.batch,
      mode: 0,
      lambda: 0,
      scale: resolveScale(undefined, c.headDim),
      state: this.storage.handle,
      k: get('k', c.kvHeads, c.headDim),
      v: get('v', c.kvHeads, c.valueDim),
      fk: get('fk', c.heads, c.featureDim),
      seqlen: T0,
      outputs: false,
    };
    callNative(() => native.decodePrefill(args));
    this.ready.fill(true);
  }

  /**
   * Appends tokens to every sequence: packed token-major tensors q [N, H, d], k [N, Hkv, d], ...
   * Sequence b owns rows cuSeqlens[b] .. cuSeqlens[b+1]-1 (ragged), or `tokensPerSeq` rows each
   * when cuSeqlens is omitted (default 1: one decode step).
   */
  step(tokens: DecodeTokens, options: DecodeOptions & { cuSeqlens?: number[]; tokensPerSeq?: number } = {}): DecodeOutput {
    const N = options.cuSeqlens ? options.cuSeqlens[options.cuSeqlens.length - 1]! : this.batch * (options.tokensPerSeq ?? 1);
    if (options.cuSeqlens) {
      if (!Array.isArray(options.cuSeqlens) || options.cuSeqlens.length !== this.batch + 1)
        throw new InvalidArgumentError(`cuSeqlens needs ${this.batch + 1} entries`, 'cuSeqlens');
    } else expectInteger(options.tokensPerSeq ?? 1, 'tokensPerSeq', 1);
    const missing = this.ready.indexOf(false);
    if (missing >= 0 && !this.storage.disposed)
      throw new InvalidArgumentError(`sequence ${missing} has no state: prefill or restore it before stepping`, 'state');
    const owned: Tensor[] = [];
    const args = {
      ...this.args(tokens, options, [N], owned),
      ...(options.cuSeqlens ? { cuSeqlens: options.cuSeqlens } : { tokensPerSeq: options.tokensPerSeq ?? 1 }),
    };
    const out = callNative(() => native.decodeStep(args));
    const c = this.config;
    return this.wrap(out, [N, c.heads, c.valueDim], [N, c.heads], owned);
  }

  /**
   * Captures one step (tokensPerSeq tokens per sequence, default 1) with these exact token
   * tensors into a CUDA graph, without running it: see DecodeStepGraph. CUDA only
   * (NotImplementedError on the CPU); cuSeqlens is not capturable (its host array is copied at
   * each call), so ragged steps stay with step().
   */
  captureStep(tokens: DecodeTokens, options: DecodeOptions & { tokensPerSeq?: number } = {}): DecodeStepGraph {
    if (this.config.device !== 'cuda')
      throw new NotImplementedError(`CUDA-graph capture needs device 'cuda' (this state is on '${this.config.device}'; call step())`, 'device');
    if ((options as { cuSeqlens?: unknown }).cuSeqlens !== undefined)
      throw new InvalidArgumentError('a captured step takes tokensPerSeq, not cuSeqlens', 'cuSeqlens');
    const perSeq = options.tokensPerSeq ?? 1;
    expectInteger(perSeq, 'tokensPerSeq', 1);
    const missing = this.ready.indexOf(false);
    if (missing >= 0 && !this.storage.disposed)
      throw new InvalidArgumentError(`sequence ${missing} has no state: prefill or restore it before capturing a step`, 'state');
    const owned: Tensor[] = [];
    const N = this.batch * perSeq;
    try {
      const args = { ...this.args(tokens, options, [N], owned), tokensPerSeq: perSeq };
      const out = callNative(() => native.decodeCaptureStep(args));
      const c = this.config;
      const acc = accumDType(c.dtype);
      const y = new Tensor(out.y, [N, c.heads, c.valueDim], c.dtype, c.device);
      const statShape = [N, c.heads];
      const stats = { c: new Tensor(out.c, statShape, acc, c.device), denSwa: new Tensor(out.denSwa, statShape, acc, c.device), denLa: new Tensor(out.denLa, statShape, acc, c.device) };
      const { q, k, v, fq, fk } = tokens;
      return new DecodeStepGraph(out.graph, y, stats, { q, k, v, fq, fk }, perSeq);
    } finally {
      owned.forEach((t) => t.dispose()); // the graph holds their storages natively
    }
  }

  /** Tokens seen by each sequence (after queued work). */
  async positions(): Promise<number[]> {
    const bytes = await this.storage.toBytes();
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    return Array.from({ length: this.batch }, (_, b) => Number(view.getBigInt64(b * this.bytesPerSequence + 16, true)));
  }

  /** One sequence's state as bytes (versioned: magic, layout version and config in its header). */
  async save(sequence: number): Promise<Uint8Array> {
    expectInteger(sequence, 'sequence', 0);
    if (sequence >= this.batch) throw new InvalidArgumentError(`sequence ${sequence} >= batch ${this.batch}`, 'sequence');
    const bytes = await this.storage.toBytes();
    return bytes.slice(sequence * this.bytesPerSequence, (sequence + 1) * this.bytesPerSequence);
  }

  /** Restores a saved state into sequence slot `sequence`; a state of another configuration is a typed error. */
  restore(sequence: number, data: Uint8Array): void {
    expectInteger(sequence, 'sequence', 0);
    if (sequence >= this.batch) throw new InvalidArgumentError(`sequence ${sequence} >= batch ${this.batch}`, 'sequence');
    if (!(data instanceof Uint8Array)) throw new InvalidArgumentError('data must be a Uint8Array', 'data');
    if (this.storage.disposed) throw new DisposedError('the decode state was disposed', 'state');
    callNative(() => native.decodeWriteState({ ...HybridDecodeState.nativeConfig(this.config), state: this.storage.handle, slot: sequence, data }));
    this.ready[sequence] = true;
  }

  dispose(): void {
    this.storage.dispose();
  }
}
