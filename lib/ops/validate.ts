/**
 * Argument checks shared by the ops. Each throws a typed error naming the argument, before any
 * work is queued.
 */
import { BACKEND_DTYPES, accumDType, type DType } from '../dtype.js';
import type { Device } from '../device.js';
import { DTypeError, DeviceError, InvalidArgumentError } from '../errors.js';
import { Tensor } from '../tensor.js';

/** Checks that `value` is a live tensor of the given rank, dtype and device. */
export function expectTensor(
  value: unknown,
  name: string,
  want: { rank?: number; dtype?: DType; device?: Device } = {},
): Tensor {
  if (!(value instanceof Tensor)) throw new InvalidArgumentError(`${name} must be a Tensor`, name);
  value.assertAlive(name);
  if (want.rank !== undefined && value.rank !== want.rank)
    throw new InvalidArgumentError(`${name} must have rank ${want.rank}, got shape [${value.shape.join(', ')}]`, name);
  if (want.dtype !== undefined && value.dtype !== want.dtype)
    throw new DTypeError(`${name} has dtype ${value.dtype}, expected ${want.dtype}`, name);
  if (want.device !== undefined && value.device !== want.device)
    throw new DeviceError(`${name} is on ${value.device}, expected ${want.device}`, name);
  return value;
}

/** Checks a shape against an expectation; null entries match anything. */
export function expectShape(t: Tensor, name: string, shape: readonly (number | null)[], what = ''): void {
  const ok = t.rank === shape.length && shape.every((s, i) => s === null || s === t.shape[i]);
  if (!ok)
    throw new InvalidArgumentError(
      `${name} has shape [${t.shape.join(', ')}], expected [${shape.map((s) => (s === null ? '*' : s)).join(', ')}]${what ? ` (${what})` : ''}`,
      name,
    );
}

export function expectInteger(value: unknown, name: string, min: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min)
    throw new InvalidArgumentError(`${name} must be an integer >= ${min}, got ${String(value)}`, name);
  return value;
}

export function expectChoice<T extends string>(value: unknown, name: string, choices: readonly T[]): T {
  if (!choices.includes(value as T))
    throw new InvalidArgumentError(`${name} must be one of ${choices.join(', ')}, got '${String(value)}'`, name);
  return value as T;
}

/** A positive finite softmax scale, defaulting to 1/sqrt(headDim). */
export function resolveScale(scale: unknown, headDim: number): number {
  if (scale === undefined) return 1 / Math.sqrt(headDim);
  if (typeof scale !== 'number' || !Number.isFinite(scale) || scale <= 0)
    throw new InvalidArgumentError(`scale must be a positive finite number, got ${String(scale)}`, 'scale');
  return scale;
}

/** Which dtypes each backend computes in. */
export function expectBackendDType(dtype: DType, device: Device, name: string): void {
  if (!BACKEND_DTYPES[device].includes(dtype))
    throw new DTypeError(
      `the ${device} backend computes in ${device === 'cpu' ? 'f64 or f32' : 'bf16, f16 or f32'}, got ${dtype} (cast first)`,
      name,
    );
}

/**
 * The query and key of an attention op: q [B, H, T, d] on a backend dtype, k [B, Hkv, T, d] of the
 * same dtype and device with H a multiple of Hkv (GQA).
 */
export function expectQueryKey(qValue: unknown, kValue: unknown) {
  const q = expectTensor(qValue, 'q', { rank: 4 });
  const { dtype, device } = q;
  expectBackendDType(dtype, device, 'q');
  const [B, H, T, d] = q.shape as [number, number, number, number];
  const k = expectTensor(kValue, 'k', { rank: 4, dtype, device });
  expectShape(k, 'k', [B, null, T, d], 'batch, sequence and head dim must match q');
  const Hkv = k.shape[1]!;
  if (Hkv < 1 || H % Hkv !== 0)
    throw new InvalidArgumentError(`k has ${Hkv} kv heads; q's ${H} heads must be a multiple of them`, 'k');
  return { q, k, dtype, device, B, H, Hkv, T, d };
}

/**
 * A per-head (or per-(batch, head)) parameter given either as a tensor of the accumulator dtype
 * or as host numbers, which are checked by `check` and uploaded (the caller owns the upload).
 */
export function hostOrTensor(
  value: unknown,
  name: string,
  shape: readonly number[],
  dtype: DType,
  device: Device,
  check: (x: number, i: number) => string | null,
): { tensor: Tensor; owned: boolean } {
  const acc = accumDType(dtype);
  if (value instanceof Tensor) {
    expectTensor(value, name, { dtype: acc, device });
    expectShape(value, name, shape);
    return { tensor: value, owned: false };
  }
  if (value === null || typeof value !== 'object' || typeof (value as ArrayLike<number>).length !== 'number')
    throw new InvalidArgumentError(`${name} must be a Tensor or an array of numbers`, name);
  const arr = value as ArrayLike<number>;
  const n = shape.reduce((a, b) => a * b, 1);
  if (arr.length !== n) throw new InvalidArgumentError(`${name} has ${arr.length} values, expected ${n}`, name);
  for (let i = 0; i < n; i++) {
    const x = arr[i];
    if (typeof x !== 'number' || Number.isNaN(x)) throw new InvalidArgumentError(`${name}[${i}] is not a number`, name);
    const problem = check(x, i);
    if (problem) throw new InvalidArgumentError(`${name}[${i}] = ${x} ${problem}`, name);
  }
  return { tensor: Tensor.fromArray(arr, shape, { dtype: acc, device }), owned: true };
}

/**
 * gamma per head: in (0, 1) as sigmoid(w) gives it; 1 is allowed with lambda 'one' (the fixed
 * gamma of inference-time hybridisation, SPEC sec. 5), never with 'affine' (lambda would be 0).
 */
export function gammaArg(value: unknown, heads: number, dtype: DType, device: Device, lambda: 'one' | 'affine') {
  const allowOne = lambda === 'one';
  return hostOrTensor(value, 'gamma', [heads], dtype, device, (x) =>
    x > 0 && (x < 1 || (allowOne && x === 1)) ? null : allowOne ? 'is outside (0, 1]' : 'is outside (0, 1) (lambda affine)',
  );
}

/** The SSD keep mask per (batch, head): values 0 or 1. */
export function keepArg(value: unknown, batch: number, heads: number, dtype: DType, device: Device) {
  return hostOrTensor(value, 'keep', [batch, heads], dtype, device, (x) => (x === 0 || x === 1 ? null : 'is not 0 or 1'));
}
