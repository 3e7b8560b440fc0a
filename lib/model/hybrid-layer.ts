/**
 * Hybrid and linear attention layers (SPEC sec. 2, 3) as AttentionKernels: per layer, per q head
 * feature maps phi_q, phi_k (Hedgehog [act(xW+b), act(-(xW+b))], T2R relu(xW+b), or elu+1 on
 * raw x), a per-head gamma = sigmoid(w_h), the window and every mode, with forward, backward
 * (dq, dk, dv into the projections; dphi params; dgamma through the sigmoid) and a recurrent
 * decode cache (HybridDecodeState). GQA: phi_k is per q head, so keys are repeated to the q heads
 * before the feature map, and the backward sums dk over each group.
 *
 * Parameters (relative to the layer's self_attn, in the model's params under
 * `model.layers.{i}.self_attn.`): feature_map_q.weight [H, d, f], feature_map_q.bias [H, f]
 * (optional), feature_map_k.weight, feature_map_k.bias, gamma_logit [H].
 */
import { InvalidArgumentError } from '../errors.js';
import { Tensor } from '../tensor.js';
import { accumDType, type DType } from '../dtype.js';
import type { Device } from '../device.js';
import { accumulate, copyInto, scale, transpose12 } from '../ops/elementwise.js';
import { FEATURE_ACTS, FEATURE_MAP_KINDS, featureMap, featureMapBackward, type FeatureAct, type FeatureMapKind, type FeatureMapResult } from '../ops/feature-map.js';
import {
  HYBRID_MODES,
  LAMBDA_KINDS,
  WINDOW_GEOMETRIES,
  hybridAttention,
  hybridAttentionBackward,
  type HybridAttentionResult,
  type HybridAttentionStats,
  type HybridMode,
  type LambdaKind,
  type WindowGeometry,
} from '../ops/hybrid-attention.js';
import { HybridDecodeState } from '../ops/hybrid-decode.js';
import { repeatKv, repeatKvBackward, sigmoid, sigmoidBackward } from '../ops/repeat-kv.js';
import { expectChoice, expectInteger } from '../ops/validate.js';
import type { AttentionCache, AttentionGrads, AttentionKernel, AttentionPassOptions, AttentionSaved, CacheShape } from './attention-layer.js';
import type { ParamMap } from './llama-block.js';
import { LoraRng } from './lora.js';

/** Feature-map family and size. */
export interface FeatureMapSpec {
  /** Default 'hedgehog'. */
  kind?: FeatureMapKind;
  /** Hedgehog activation (default 'softmax'). */
  act?: FeatureAct;
  /**
   * Projection size f (hedgehog F = 2f, t2r F = f; elu has no parameters and F = d):
   * 'lolcats' f = d/2 (default), 'hedgecats' f = d, or a number.
   */
  size?: number | 'lolcats' | 'hedgecats';
  /** Learn a bias b [H, f] (default false for hedgehog, true for t2r). */
  bias?: boolean;
  /** Init: 'random' W ~ N(0, initStd^2) (default), or 'identity' (eye(d, f) plus that noise). */
  init?: 'random' | 'identity';
  /** Default 1 / sqrt(d). */
  initStd?: number;
}

/** Named presets: 'lolcats' (hedgehog softmax f = d/2), 'hedgecats' (f = d), 't2r', 'elu'. */
export type FeatureMapPreset = 'lolcats' | 'hedgecats' | 't2r' | 'elu';

export function resolveFeatureMapSpec(spec: FeatureMapSpec | FeatureMapPreset | undefined): Required<Omit<FeatureMapSpec, 'initStd'>> & { initStd?: number } {
  const s: FeatureMapSpec =
    spec === undefined || spec === 'lolcats'
      ? { kind: 'hedgehog', size: 'lolcats' }
      : spec === 'hedgecats'
        ? { kind: 'hedgehog', size: 'hedgecats' }
        : spec === 't2r'
          ? { kind: 't2r', size: 'hedgecats' }
          : spec === 'elu'
            ? { kind: 'elu' }
            : typeof spec === 'object' && spec !== null
              ? spec
              : (() => {
                  throw new InvalidArgumentError(`featureMap must be a spec object or one of lolcats, hedgecats, t2r, elu; got '${String(spec)}'`, 'featureMap');
                })();
  const kind = expectChoice(s.kind ?? 'hedgehog', 'featureMap.kind', FEATURE_MAP_KINDS);
  const act = expectChoice(s.act ?? 'softmax', 'featureMap.act', FEATURE_ACTS);
  const init = expectChoice(s.init ?? 'random', 'featureMap.init', ['random', 'identity'] as const);
  const out = { kind, act, size: s.size ?? 'lolcats', bias: s.bias ?? kind === 't2r', init } as Required<Omit<FeatureMapSpec, 'initStd'>> & { initStd?: number };
  if (s.initStd !== undefined) {
    if (typeof s.initStd !== 'number' || !(s.initStd >= 0)) throw new InvalidArgumentError('featureMap.initStd must be a number >= 0', 'featureMap.initStd');
    out.initStd = s.initStd;
  }
  return out;
}

export interface HybridLayerOptions {
  featureMap?: FeatureMapSpec | FeatureMapPreset;
  /** Window w (default 64). */
  window?: number;
  /** Default 'hybrid'. */
  mode?: HybridMode;
  /** Default 'sliding'. */
  geometry?: WindowGeometry;
  /** Default 'one'. */
  lambda?: LambdaKind;
  /** Sink count for mode 'sinks' (default 8). */
  sinks?: number;
  /** Initial gamma (all heads; default 0.1), or one value per head. */
  gammaInit?: number | readonly number[];
  /** Softmax scale (default 1/sqrt(d)). */
  scale?: number;
  /** Seed of the feature-map init (default 0). */
  seed?: number;
  /** 'hybrid' (default) or 'linear' (kind label; a linear layer defaults to mode 'la-full'). */
  kind?: 'hybrid' | 'linear';
}

export interface HybridLayerShape {
  heads: number;
  kvHeads: number;
  headDim: number;
  dtype: DType;
  device: Device;
}

/** Relative parameter names of a hybrid layer. */
export const HYBRID_PARAM_NAMES = {
  qWeight: 'feature_map_q.weight',
  qBias: 'feature_map_q.bias',
  kWeight: 'feature_map_k.weight',
  kBias: 'feature_map_k.bias',
  gamma: 'gamma_logit',
} as const;

function normals(rng: LoraRng, n: number, std: number): Float64Array {
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const u = Math.max(rng.next(), 1e-300);
    out[i] = Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rng.next()) * std;
  }
  return out;
}

class HybridSaved implements AttentionSaved {
  constructor(
    readonly r: HybridAttentionResult,
    readonly fq: FeatureMapResult,
    readonly fk: FeatureMapResult,
    readonly kRep: Tensor,
    readonly gamma: Tensor,
    readonly groups: number,
  ) {}
  dispose(): void {
    this.r.dispose();
    this.fq.dispose();
    this.fk.dispose();
    this.kRep.dispose();
    this.gamma.dispose();
  }
}

/**
 * Hybrid (or linear) attention over the model's parameter map. Mode, window, geometry, lambda
 * and sinks are public fields: change them between passes (diagnostics, inference-time
 * hybridisation, window schedules).
 */
export class HybridAttentionKernel implements AttentionKernel {
  readonly kind: 'hybrid' | 'linear';
  mode: HybridMode;
  window: number;
  geometry: WindowGeometry;
  lambda: LambdaKind;
  sinks: number;
  scale: number | undefined;
  readonly featureKind: FeatureMapKind;
  readonly act: FeatureAct;
  /** Projection size f (d for elu). */
  readonly projDim: number;
  /** Feature dimension F of phi's output. */
  readonly featureDim: number;
  readonly hasBias: boolean;
  /** When true, each forward keeps its statistics in lastStats (the previous ones are disposed). */
  recordStats = false;
  lastStats: HybridAttentionStats | undefined;

  /**
   * `params` holds the tensors under `${prefix}${relative name}` (prefix e.g.
   * 'model.layers.3.self_attn.'); create them with HybridAttentionKernel.init.
   */
  constructor(
    readonly params: ParamMap,
    readonly prefix: string,
    readonly shape: HybridLayerShape,
    options: HybridLayerOptions = {},
  ) {
    const spec = resolveFeatureMapSpec(options.featureMap);
    this.kind = options.kind ?? 'hybrid';
    expectChoice(this.kind, 'kind', ['hybrid', 'linear'] as const);
    this.mode = expectChoice(options.mode ?? (this.kind === 'linear' ? 'la-full' : 'hybrid'), 'mode', HYBRID_MODES);
    this.window = expectInteger(options.window ?? 64, 'window', 1);
    this.geometry = expectChoice(options.geometry ?? 'sliding', 'geometry', WINDOW_GEOMETRIES);
    this.lambda = expectChoice(options.lambda ?? 'one', 'lambda', LAMBDA_KINDS);
    this.sinks = expectInteger(options.sinks ?? 8, 'sinks', 1);
    this.scale = options.scale;
    this.featureKind = spec.kind;
    this.act = spec.act;
    const d = shape.headDim;
    if (spec.kind === 'elu') this.projDim = d;
    else {
      const f = spec.size === 'lolcats' ? d / 2 : spec.size === 'hedgecats' ? d : spec.size;
      this.projDim = expectInteger(f, 'featureMap.size', 1);
    }
    this.featureDim = spec.kind === 'hedgehog' ? 2 * this.projDim : this.projDim;
    this.hasBias = spec.kind !== 'elu' && spec.bias;
    if (shape.heads % shape.kvHeads !== 0) throw new InvalidArgumentError('heads must be a multiple of kvHeads', 'kvHeads');
    for (const rel of this.parameterNames())
      if (!params.has(prefix + rel)) throw new InvalidArgumentError(`missing parameter '${prefix + rel}' (create it with HybridAttentionKernel.init)`, 'params');
  }

  /** Creates fresh parameters in `params` and returns the kernel over them. */
  static init(params: ParamMap, prefix: string, shape: HybridLayerShape, options: HybridLayerOptions = {}): HybridAttentionKernel {
    const spec = resolveFeatureMapSpec(options.featureMap);
    const { heads: H, headDim: d } = shape;
    const rng = new LoraRng((options.seed ?? 0) >>> 0);
    const opts = { dtype: shape.dtype, device: shape.device };
    const created: string[] = [];
    const put = (rel: string, data: ArrayLike<number>, dims: number[]) => {
      const name = prefix + rel;
      params.get(name)?.dispose();
      params.set(name, Tensor.fromArray(data, dims, opts));
      created.push(name);
    };
    try {
      if (spec.kind !== 'elu') {
        const f = spec.size === 'lolcats' ? d / 2 : spec.size === 'hedgecats' ? d : spec.size;
        expectInteger(f, 'featureMap.size', 1);
        const std = spec.initStd ?? 1 / Math.sqrt(d);
        for (const which of ['q', 'k'] as const) {
          const w = normals(rng, H * d * f, std);
          if (spec.init === 'identity') for (let h = 0; h < H; h++) for (let i = 0; i < Math.min(d, f); i++) w[(h * d + i) * f + i]! += 1;
          put(which === 'q' ? HYBRID_PARAM_NAMES.qWeight : HYBRID_PARAM_NAMES.kWeight, w, [H, d, f]);
          if (spec.bias) put(which === 'q' ? HYBRID_PARAM_NAMES.qBias : HYBRID_PARAM_NAMES.kBias, new Float64Array(H * f), [H, f]);
        }
      }
      const g0 = options.gammaInit ?? 0.1;
      const gammas = typeof g0 === 'number' ? new Array<number>(H).fill(g0) : Array.from(g0);
      if (gammas.length !== H) throw new InvalidArgumentError(`gammaInit has ${gammas.length} values, expected ${H}`, 'gammaInit');
      for (const g of gammas) if (!(g > 0 && g < 1)) throw new InvalidArgumentError(`gammaInit ${g} is outside (0, 1)`, 'gammaInit');
      put(HYBRID_PARAM_NAMES.gamma, gammas.map((g) => Math.log(g / (1 - g))), [H]);
      return new HybridAttentionKernel(params, prefix, shape, options);
    } catch (e) {
      for (const n of created) {
        params.get(n)?.dispose();
        params.delete(n);
      }
      throw e;
    }
  }

  /** Relative names of this kernel's parameters. */
  parameterNames(): string[] {
    const out: string[] = [];
    if (this.featureKind !== 'elu') {
      out.push(HYBRID_PARAM_NAMES.qWeight);
      if (this.hasBias) out.push(HYBRID_PARAM_NAMES.qBias);
      out.push(HYBRID_PARAM_NAMES.kWeight);
      if (this.hasBias) out.push(HYBRID_PARAM_NAMES.kBias);
    }
    out.push(HYBRID_PARAM_NAMES.gamma);
    return out;
  }

  parameters(): Map<string, Tensor> {
    return new Map(this.parameterNames().map((n) => [n, this.params.get(this.prefix + n)!]));
  }

  private p(rel: string): Tensor {
    const t = this.params.get(this.prefix + rel);
    if (!t) throw new InvalidArgumentError(`missing parameter '${this.prefix + rel}'`, 'params');
    return t;
  }

  setMode(mode: HybridMode): void {
    this.mode = expectChoice(mode, 'mode', HYBRID_MODES);
  }

  /**
   * Overwrites gamma (one value for every head, or one per head; each in (0, 1)) through its
   * logit, e.g. a fixed gamma for inference-time hybridisation of a linear layer.
   */
  setGamma(values: number | readonly number[]): void {
    const H = this.shape.heads;
    const g = typeof values === 'number' ? new Array<number>(H).fill(values) : Array.from(values);
    if (g.length !== H) throw new InvalidArgumentError(`gamma has ${g.length} values, expected ${H}`, 'gamma');
    // gamma = 1 (logit +inf, sigmoid exactly 1) is the fixed gamma of inference-time
    // hybridisation; it needs lambda 'one', as the op requires
    const allowOne = this.lambda === 'one';
    for (const x of g)
      if (!(x > 0 && (x < 1 || (allowOne && x === 1))))
        throw new InvalidArgumentError(`gamma ${x} is outside ${allowOne ? '(0, 1]' : '(0, 1) with lambda affine'}`, 'gamma');
    const dst = this.p(HYBRID_PARAM_NAMES.gamma);
    const src = Tensor.fromArray(g.map((x) => (x === 1 ? Infinity : Math.log(x / (1 - x)))), [H], { dtype: dst.dtype, device: dst.device });
    copyInto(dst, src);
    src.dispose();
  }

  /**
   * gamma = sigmoid(gamma_logit) [H] (a new tensor) in the accumulator dtype the attention kernels
   * take (f32 for bf16/f16 models: the logit is widened before the sigmoid).
   */
  gamma(): Tensor {
    const logit = this.p(HYBRID_PARAM_NAMES.gamma);
    const acc = accumDType(logit.dtype);
    if (logit.dtype === acc) return sigmoid(logit);
    const wide = logit.cast(acc);
    const g = sigmoid(wide);
    wide.dispose();
    return g;
  }

  /** phi_q(q) for q [B, H, T, d] (or phi_k of keys already repeated to the q heads). */
  phi(which: 'q' | 'k', x: Tensor): FeatureMapResult {
    if (this.featureKind === 'elu') return featureMap({ x }, { kind: 'elu' });
    const w = this.p(which === 'q' ? HYBRID_PARAM_NAMES.qWeight : HYBRID_PARAM_NAMES.kWeight);
    const inputs = this.hasBias ? { x, w, b: this.p(which === 'q' ? HYBRID_PARAM_NAMES.qBias : HYBRID_PARAM_NAMES.kBias) } : { x, w };
    return featureMap(inputs, { kind: this.featureKind, act: this.act });
  }

  /** The hybridAttention options of this layer (its window, mode, geometry, sinks, lambda, scale). */
  options() {
    return { window: this.window, mode: this.mode, geometry: this.geometry, sinks: this.sinks, lambda: this.lambda, ...(this.scale === undefined ? {} : { scale: this.scale }) };
  }

  private keepStats(stats: HybridAttentionStats, copy: boolean): void {
    if (this.lastStats) Object.values(this.lastStats).forEach((t: Tensor) => t.dispose());
    this.lastStats = copy ? { c: scale(stats.c, 1), denSwa: scale(stats.denSwa, 1), denLa: scale(stats.denLa, 1) } : stats;
  }

  forward(q: Tensor, k: Tensor, v: Tensor, train: boolean, pass: AttentionPassOptions = {}): { y: Tensor; saved?: AttentionSaved } {
    const groups = q.shape[1]! / k.shape[1]!;
    const fq = this.phi('q', q);
    const kRep = repeatKv(k, groups);
    const fk = this.phi('k', kRep);
    const gamma = this.gamma();
    let r: HybridAttentionResult;
    try {
      r = hybridAttention({ q, k, v, fq: fq.phi, fk: fk.phi, gamma, ...(pass.keep !== undefined ? { keep: pass.keep } : {}) }, this.options());
    } catch (e) {
      for (const t of [fq, fk, kRep, gamma]) t.dispose();
      throw e;
    }
    if (train) {
      if (this.recordStats) this.keepStats(r.stats, true);
      return { y: r.y, saved: new HybridSaved(r, fq, fk, kRep, gamma, groups) };
    }
    for (const t of [fq, fk, kRep, gamma]) t.dispose();
    r.saved.owned.forEach((t) => t.dispose());
    if (this.recordStats) this.keepStats(r.stats, false);
    else Object.values(r.stats).forEach((t: Tensor) => t.dispose());
    return { y: r.y };
  }

  backward(saved: AttentionSaved, dy: Tensor): AttentionGrads {
    const s = saved as HybridSaved;
    const g = hybridAttentionBackward(s.r.saved, dy);
    const params = new Map<string, Tensor>();
    const gq = featureMapBackward(s.fq.saved, g.dfq);
    accumulate(g.dq, gq.dx);
    const gk = featureMapBackward(s.fk.saved, g.dfk);
    const dk = repeatKvBackward(gk.dx, s.groups);
    accumulate(g.dk, dk);
    for (const t of [gq.dx, gk.dx, dk, g.dfq, g.dfk]) t.dispose();
    if (gq.dw) params.set(HYBRID_PARAM_NAMES.qWeight, gq.dw);
    if (gq.db) params.set(HYBRID_PARAM_NAMES.qBias, gq.db);
    if (gk.dw) params.set(HYBRID_PARAM_NAMES.kWeight, gk.dw);
    if (gk.db) params.set(HYBRID_PARAM_NAMES.kBias, gk.db);
    // gamma and dgamma are in the accumulator dtype; the logit's gradient takes the logit's dtype.
    const dlogit = sigmoidBackward(s.gamma, g.dgamma);
    g.dgamma.dispose();
    const logitDType = this.p(HYBRID_PARAM_NAMES.gamma).dtype;
    if (dlogit.dtype === logitDType) params.set(HYBRID_PARAM_NAMES.gamma, dlogit);
    else {
      params.set(HYBRID_PARAM_NAMES.gamma, dlogit.cast(logitDType));
      dlogit.dispose();
    }
    return { dq: g.dq, dk: g.dk, dv: g.dv, params };
  }

  createCache(shape: CacheShape): AttentionCache {
    return new HybridDecodeCache(this, shape);
  }

  dispose(): void {
    if (this.lastStats) Object.values(this.lastStats).forEach((t: Tensor) => t.dispose());
    this.lastStats = undefined;
  }
}

/**
 * The recurrent decode cache of a hybrid layer: a HybridDecodeState with the layer's window,
 * sinks, geometry and feature dimension. Each attend() uses the kernel's current mode; the
 * prompt is a prefill, later calls append any number of tokens per sequence.
 */
export class HybridDecodeCache implements AttentionCache {
  readonly state: HybridDecodeState;
  private started = false;
  constructor(
    readonly kernel: HybridAttentionKernel,
    readonly shape: CacheShape,
  ) {
    this.state = HybridDecodeState.create(
      {
        heads: shape.heads,
        kvHeads: shape.kvHeads,
        headDim: shape.headDim,
        valueDim: shape.headDim,
        featureDim: kernel.featureDim,
        window: kernel.window,
        sinks: kernel.sinks,
        geometry: kernel.geometry,
        dtype: shape.dtype,
        device: shape.device,
      },
      shape.batch,
    );
  }

  attend(q: Tensor, k: Tensor, v: Tensor): Tensor {
    const kr = this.kernel;
    const c = this.state.config;
    if (kr.window !== c.window || kr.sinks !== c.sinks || kr.geometry !== c.geometry)
      throw new InvalidArgumentError('the layer window, sinks or geometry changed after the decode cache was created', 'cache');
    const [B, H, T, d] = q.shape as [number, number, number, number];
    const Hkv = k.shape[1]!;
    const fq = kr.phi('q', q);
    const kRep = repeatKv(k, H / Hkv);
    const fk = kr.phi('k', kRep);
    const gamma = kr.gamma();
    const opts = { mode: kr.mode, lambda: kr.lambda, ...(kr.scale === undefined ? {} : { scale: kr.scale }) };
    const temps: Tensor[] = [kRep, gamma, fq.phi, fk.phi];
    try {
      if (!this.started) {
        // The prompt: the parallel (chunked) kernel for its outputs, the state built in parallel.
        this.state.prefillState({ k, v, fk: fk.phi });
        this.started = true;
        const r = hybridAttention({ q, k, v, fq: fq.phi, fk: fk.phi, gamma }, kr.options());
        r.saved.owned.forEach((t) => t.dispose());
        Object.values(r.stats).forEach((t: Tensor) => t.dispose());
        return r.y;
      }
      // Token-major packing for step(): [B, h, T, x] -> [B, T, h, x] -> [B*T, h, x].
      const pack = (t: Tensor) => {
        const m = transpose12(t);
        temps.push(m);
        return m.reshape([B * T, t.shape[1]!, t.shape[3]!]);
      };
      const out = this.state.step({ q: pack(q), k: pack(k), v: pack(v), fq: pack(fq.phi), fk: pack(fk.phi), gamma }, { ...opts, tokensPerSeq: T });
      Object.values(out.stats).forEach((t: Tensor) => t.dispose());
      const y = transpose12(out.y.reshape([B, T, H, d]));
      out.y.dispose();
      return y;
    } finally {
      temps.forEach((t) => t.dispose());
    }
  }

  dispose(): void {
    this.state.dispose();
  }
}
