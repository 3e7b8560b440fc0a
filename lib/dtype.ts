/** Element types. Codes match native/core/dtype.h. */
export type DType = 'f64' | 'f32' | 'bf16' | 'f16' | 'i32';

export const DTYPE_CODE: Record<DType, number> = { f64: 0, f32: 1, bf16: 2, f16: 3, i32: 4 };
export const DTYPE_BYTES: Record<DType, number> = { f64: 8, f32: 4, bf16: 2, f16: 2, i32: 4 };
export const DTYPES: readonly DType[] = ['f64', 'f32', 'bf16', 'f16', 'i32'];

/** The float dtypes each backend computes in, its default first (f32 on the CPU, bf16 on CUDA). */
export const BACKEND_DTYPES: Readonly<Record<'cpu' | 'cuda', readonly DType[]>> = { cpu: ['f32', 'f64'], cuda: ['bf16', 'f32', 'f16'] };

/** Statistics, gamma, keep masks and dgamma use this type: f64 for f64 work, else f32. */
export function accumDType(dtype: DType): DType {
  return dtype === 'f64' ? 'f64' : 'f32';
}

export function isFloat(dtype: DType): boolean {
  return dtype !== 'i32';
}

/** What toArray() returns for each dtype (bf16/f16 widen to f32). */
export type HostArray<D extends DType = DType> = D extends 'f64'
  ? Float64Array
  : D extends 'i32'
    ? Int32Array
    : Float32Array;
