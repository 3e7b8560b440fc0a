/**
 * The compute dtype of a model: what each backend computes in (the CPU backend f64 or f32, CUDA
 * bf16, f16 or f32). Default: f32 on the CPU, bf16 on CUDA (tensor cores, half the memory).
 */
import { BACKEND_DTYPES } from '../dtype.js';
import { DTypeError } from '../errors.js';
import type { Device } from '../device.js';

export type ModelDType = 'f64' | 'f32' | 'bf16' | 'f16';
export const MODEL_DTYPES: readonly ModelDType[] = ['f32', 'f64', 'bf16', 'f16'];

export function modelDType(dtype: unknown, device: Device, name = 'dtype'): ModelDType {
  const allowed = BACKEND_DTYPES[device] as readonly ModelDType[];
  if (dtype === undefined) return allowed[0]!;
  if (!allowed.includes(dtype as ModelDType))
    throw new DTypeError(`dtype must be one of ${allowed.join(', ')} on ${device}, got '${String(dtype)}'`, name);
  return dtype as ModelDType;
}

/** 16-bit compute dtypes: trainable parameters get fp32 master weights in the optimizer. */
export function isHalfPrecision(dtype: string): boolean {
  return dtype === 'bf16' || dtype === 'f16';
}
