/**
 * One Llama decoder layer with an explicit forward and backward (llm.c style): the forward keeps
 * exactly the activations the backward reads; gradients are added into the model's gradient
 * tensors in place (so micro-batches accumulate).
 *
 *   h1 = rms(x) ; q,k,v = h1 Wq,Wk,Wv (+b) ; rope(q,k) ; y = attn(q,k,v) ; x1 = x + y Wo (+b)
 *   h2 = rms(x1); a = silu(h2 Wg) * (h2 Wu) ; x2 = x1 + a Wd (+b)
 */
import { Tensor } from '../tensor.js';
import { accumulate, add, transpose12 } from '../ops/elementwise.js';
import { linear, linearBackward } from '../ops/matmul.js';
import { rmsNorm, rmsNormBackward, type RmsNormSaved } from '../ops/rms-norm.js';
import { rope, ropeBackward, type RopeTables } from '../ops/rope.js';
import { swiglu, swigluBackward } from '../ops/swiglu.js';
import type { AttentionCache, AttentionKernel, AttentionPassOptions, AttentionSaved } from './attention-layer.js';
import type { LlamaConfig } from './config.js';
import { layerPrefix } from './weights.js';

/** Parameter (or gradient) lookup by Hugging Face name. */
export type ParamMap = Map<string, Tensor>;

/** A projection's weight, with an optional adapter (LoRA) layered on top. */
export interface Projection {
  forward(x: Tensor, train: boolean): { y: Tensor; saved?: unknown };
  /** Adds dW (and db) into grads, returns dx (or adds it into `dxInto`). */
  backward(x: Tensor, dy: Tensor, saved: unknown, grads: ParamMap, dxInto?: Tensor): Tensor;
}

/** Plain y = x W^T + b over the model's parameters (gradients only for names present in grads). */
export class PlainProjection implements Projection {
  constructor(
    readonly params: ParamMap,
    readonly name: string,
    readonly bias: boolean,
  ) {}
  get weight(): Tensor {
    return this.params.get(`${this.name}.weight`)!;
  }
  forward(x: Tensor): { y: Tensor } {
    return { y: linear(x, this.weight, this.bias ? this.params.get(`${this.name}.bias`) : undefined) };
  }
  backward(x: Tensor, dy: Tensor, _saved: unknown, grads: ParamMap, dxInto?: Tensor): Tensor {
    const dw = grads.get(`${this.name}.weight`);
    const db = this.bias ? grads.get(`${this.name}.bias`) : undefined;
    // Frozen weights (no entry in grads) skip their dW; dx is always needed upstream.
    const r = linearBackward(x, this.weight, dy, {
      needWeight: dw !== undefined,
      ...(dw ? { dw } : {}),
      ...(db ? { db } : {}),
      ...(dxInto ? { dx: dxInto } : {}),
    });
    return r.dx!;
  }
}

export interface BlockProjections {
  q: Projection;
  k: Projection;
  v: Projection;
  o: Projection;
  gate: Projection;
  up: Projection;
  down: Projection;
}

const PROJ_NAMES: Record<keyof BlockProjections, string> = {
  q: 'self_attn.q_proj',
  k: 'self_attn.k_proj',
  v: 'self_attn.v_proj',
  o: 'self_attn.o_proj',
  gate: 'mlp.gate_proj',
  up: 'mlp.up_proj',
  down: 'mlp.down_proj',
};

export function plainProjections(params: ParamMap, config: LlamaConfig, layer: number): BlockProjections {
  const out = {} as BlockProjections;
  for (const key of Object.keys(PROJ_NAMES) as (keyof BlockProjections)[]) {
    const bias = key === 'gate' || key === 'up' || key === 'down' ? config.mlpBias : config.attentionBias;
    out[key] = new PlainProjection(params, `${layerPrefix(layer)}.${PROJ_NAMES[key]}`, bias);
  }
  return out;
}

export function projectionName(layer: number, key: keyof BlockProjections): string {
  return `${layerPrefix(layer)}.${PROJ_NAMES[key]}`;
}

/** Activations of one layer's forward, kept for its backward. */
export interface BlockActivations {
  norm1: RmsNormSaved;
  h1: Tensor;
  q: Tensor; // [B, H, T, d] after rope
  k: Tensor;
  v: Tensor;
  attn?: AttentionSaved;
  yFlat: Tensor; // [N, H*d]
  x1: Tensor;
  norm2: RmsNormSaved;
  h2: Tensor;
  gate: Tensor;
  up: Tensor;
  a: Tensor;
  proj: Partial<Record<keyof BlockProjections, unknown>>;
}

export class LlamaBlock {
  readonly prefix: string;
  constructor(
    readonly index: number,
    readonly config: LlamaConfig,
    readonly params: ParamMap,
    public proj: BlockProjections,
    public attention: AttentionKernel,
  ) {
    this.prefix = layerPrefix(index);
  }

  private p(name: string): Tensor {
    return this.params.get(`${this.prefix}.${name}`)!;
  }

  /** x [B, T, D] -> x2 [B, T, D]; with `train`, also the activations (x stays the caller's). */
  forward(x: Tensor, tables: RopeTables, train: boolean, cache?: AttentionCache, pass?: AttentionPassOptions): { out: Tensor; acts?: BlockActivations } {
    const c = this.config;
    const [B, T] = x.shape as [number, number, number];
    const hd = c.headDim;
    const proj: BlockActivations['proj'] = {};
    const run = (key: keyof BlockProjections, input: Tensor) => {
      const r = this.proj[key].forward(input, train);
      if (r.saved !== undefined) proj[key] = r.saved;
      return r.y;
    };
    const n1 = rmsNorm(x, this.p('input_layernorm.weight'), c.rmsNormEps);
    const heads = (t: Tensor, h: number) => {
      const moved = transpose12(t.reshape([B, T, h, hd]));
      t.dispose();
      const r = rope(moved, tables);
      moved.dispose();
      return r;
    };
    const q = heads(run('q', n1.y), c.numHeads);
    const k = heads(run('k', n1.y), c.numKvHeads);
    const vFlat = run('v', n1.y);
    const v = transpose12(vFlat.reshape([B, T, c.numKvHeads, hd]));
    vFlat.dispose();
    const att = cache ? { y: cache.attend(q, k, v), saved: undefined } : this.attention.forward(q, k, v, train, pass);
    const yFlat = transpose12(att.y).reshape([B, T, c.numHeads * hd]);
    if (!att.saved) att.y.dispose();
    const o = run('o', yFlat);
    const x1 = add(x, o);
    o.dispose();
    const n2 = rmsNorm(x1, this.p('post_attention_layernorm.weight'), c.rmsNormEps);
    const gate = run('gate', n2.y);
    const up = run('up', n2.y);
    const a = swiglu(gate, up);
    const m = run('down', a);
    const out = add(x1, m);
    m.dispose();
    if (!train) {
      for (const t of [n1.y, n1.saved.rstd, q, k, v, yFlat, x1, n2.y, n2.saved.rstd, gate, up, a]) t.dispose();
      return { out };
    }
    const acts: BlockActivations = { norm1: n1.saved, h1: n1.y, q, k, v, yFlat, x1, norm2: n2.saved, h2: n2.y, gate, up, a, proj };
    if (att.saved) acts.attn = att.saved;
    return { out, acts };
  }

  /** dOut = dL/dx2 -> dL/dx; parameter gradients are added into `grads`. Consumes `acts`. */
  backward(acts: BlockActivations, dOut: Tensor, tables: RopeTables, grads: ParamMap): Tensor {
    const c = this.config;
    const [B, T] = dOut.shape as [number, number, number];
    const hd = c.headDim;
    const g = (name: string) => grads.get(`${this.prefix}.${name}`);
    // MLP
    const da = this.proj.down.backward(acts.a, dOut, acts.proj.down, grads);
    const { dgate, dup } = swigluBackward(acts.gate, acts.up, da);
    da.dispose();
    const dh2 = this.proj.gate.backward(acts.h2, dgate, acts.proj.gate, grads);
    this.proj.up.backward(acts.h2, dup, acts.proj.up, grads, dh2);
    dgate.dispose();
    dup.dispose();
    const n2 = rmsNormBackward(acts.norm2, dh2, weightGrad(g('post_attention_layernorm.weight')));
    dh2.dispose();
    if (!g('post_attention_layernorm.weight')) n2.dw.dispose();
    const dx1 = accumulate(n2.dx, dOut);
    // attention
    const dyFlat = this.proj.o.backward(acts.yFlat, dx1, acts.proj.o, grads);
    const dy = transpose12(dyFlat.reshape([B, T, c.numHeads, hd]));
    dyFlat.dispose();
    const ag = this.attention.backward(acts.attn!, dy);
    dy.dispose();
    if (ag.params) {
      for (const [name, t] of ag.params) {
        const dst = grads.get(`${this.prefix}.self_attn.${name}`);
        if (dst) accumulate(dst, t);
        t.dispose();
      }
    }
    const flat = (t: Tensor, h: number, roped: boolean) => {
      const r = roped ? ropeBackward(t, tables) : t;
      if (roped) t.dispose();
      const moved = transpose12(r);
      r.dispose();
      return moved.reshape([B, T, h * hd]);
    };
    const dq = flat(ag.dq, c.numHeads, true);
    const dk = flat(ag.dk, c.numKvHeads, true);
    const dv = flat(ag.dv, c.numKvHeads, false);
    const dh1 = this.proj.q.backward(acts.h1, dq, acts.proj.q, grads);
    this.proj.k.backward(acts.h1, dk, acts.proj.k, grads, dh1);
    this.proj.v.backward(acts.h1, dv, acts.proj.v, grads, dh1);
    for (const t of [dq, dk, dv]) t.dispose();
    const n1 = rmsNormBackward(acts.norm1, dh1, weightGrad(g('input_layernorm.weight')));
    dh1.dispose();
    if (!g('input_layernorm.weight')) n1.dw.dispose();
    const dx = accumulate(n1.dx, dx1);
    dx1.dispose();
    disposeActivations(acts);
    return dx;
  }
}

function weightGrad(dw: Tensor | undefined): { dw?: Tensor } {
  return dw ? { dw } : {};
}

export function disposeActivations(acts: BlockActivations): void {
  for (const t of [acts.norm1.rstd, acts.h1, acts.q, acts.k, acts.v, acts.yFlat, acts.x1, acts.norm2.rstd, acts.h2, acts.gate, acts.up, acts.a]) t.dispose();
  acts.attn?.dispose();
  for (const s of Object.values(acts.proj)) (s as { dispose?: () => void } | undefined)?.dispose?.();
}
