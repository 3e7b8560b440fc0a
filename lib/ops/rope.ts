/**
 * Rotary position embedding, Hugging Face "rotate_half" convention, on [B, H, T, D].
 * Positions (i32 [B, T]) and inverse frequencies (f64 [D/2], see ropeInvFreq) are tensors on the
 * same device; angles and rotations are computed in f64.
 */
import { callNative, InvalidArgumentError } from '../errors.js';
import { native } from '../native.js';
import { Tensor } from '../tensor.js';
import { expectShape, expectTensor } from './validate.js';
import { leadTensor, opBase, type OpBase } from './op-args.js';

export interface RopeTables {
  /** i32 [B, T]. */
  positions: Tensor;
  /** f64 [D/2]. */
  invFreq: Tensor;
}

function prepare(x: Tensor, name: string, tables: RopeTables) {
  const tx = leadTensor(x, name, 4);
  const base: OpBase = opBase(tx);
  const [B, H, T, D] = tx.shape as [number, number, number, number];
  if (D % 2 !== 0) throw new InvalidArgumentError(`${name} has head dim ${D}; rope needs an even one`, name);
  const positions = expectTensor(tables.positions, 'positions', { dtype: 'i32', device: base.device });
  expectShape(positions, 'positions', [B, T], 'one position per (batch, token)');
  const invFreq = expectTensor(tables.invFreq, 'invFreq', { dtype: 'f64', device: base.device });
  expectShape(invFreq, 'invFreq', [D / 2]);
  return { tx, base, args: { ...base.codes, batch: B, heads: H, seqlen: T, headDim: D, positions: positions.handle, invFreq: invFreq.handle } };
}

/** Rotates x [B, H, T, D] by pos * invFreq. */
export function rope(x: Tensor, tables: RopeTables): Tensor {
  const p = prepare(x, 'x', tables);
  const res = callNative(() => native.ropeForward({ ...p.args, x: p.tx.handle }));
  return new Tensor(res.y, p.tx.shape, p.base.dtype, p.base.device);
}

/** The backward is the inverse rotation of dy. */
export function ropeBackward(dy: Tensor, tables: RopeTables): Tensor {
  const p = prepare(dy, 'dy', tables);
  const res = callNative(() => native.ropeBackward({ ...p.args, dy: p.tx.handle }));
  return new Tensor(res.dx, p.tx.shape, p.base.dtype, p.base.device);
}

