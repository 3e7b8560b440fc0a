/**
 * Shared checks of the Llama runtime ops: the first tensor fixes dtype and device (the device is
 * a property of the tensors, never an argument).
 */
import { DTYPE_CODE, type DType } from '../dtype.js';
import { DEVICE_CODE, type Device } from '../device.js';
import { InvalidArgumentError } from '../errors.js';
import { Tensor } from '../tensor.js';
import { expectBackendDType, expectTensor } from './validate.js';

export interface OpBase {
  dtype: DType;
  device: Device;
  /** device/dtype codes for the addon. */
  codes: { device: number; dtype: number };
}

/** Validates the leading float tensor of an op and returns its dtype/device. */
export function leadTensor(value: unknown, name: string, rank?: number): Tensor {
  const t = expectTensor(value, name, rank === undefined ? {} : { rank });
  expectBackendDType(t.dtype, t.device, name);
  return t;
}

export function opBase(t: Tensor): OpBase {
  return { dtype: t.dtype, device: t.device, codes: { device: DEVICE_CODE[t.device], dtype: DTYPE_CODE[t.dtype] } };
}

/** A tensor that must match the lead's dtype and device. */
export function sameAs(value: unknown, name: string, base: OpBase, rank?: number): Tensor {
  return expectTensor(value, name, { dtype: base.dtype, device: base.device, ...(rank === undefined ? {} : { rank }) });
}

/** An int32 tensor on the op's device (token ids, targets, positions). */
export function int32On(value: unknown, name: string, base: OpBase): Tensor {
  return expectTensor(value, name, { dtype: 'i32', device: base.device });
}

export function expectFinite(value: unknown, name: string): number {
  if (typeof value !== 'number' || !Number.isFinite(value)) throw new InvalidArgumentError(`${name} must be a finite number, got ${String(value)}`, name);
  return value;
}

export function expectNumel(t: Tensor, name: string, n: number, what: string): void {
  if (t.numel !== n) throw new InvalidArgumentError(`${name} has ${t.numel} elements, expected ${n} (${what})`, name);
}
