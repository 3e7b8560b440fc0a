/** Host data moved to a device in a dtype, and back, for the GPU op tests (SPEC sec. 8 rule). */
import { Tensor } from '../../lib/index.js';
import type { DType, Device } from '../../lib/index.js';

/** Rounding unit of each GPU dtype. */
export const UNIT: Record<string, number> = { f32: 2 ** -23, bf16: 2 ** -8, f16: 2 ** -11 };

/** Uploads host data in `dtype` to `device` (through a rounding cast). */
export function put(x: Float64Array, shape: number[], dtype: DType, device: Device): Tensor {
  const host = Tensor.fromArray(x, shape, { dtype: 'f64' });
  const cast = host.cast(dtype);
  host.dispose();
  if (device === 'cpu') return cast;
  const moved = cast.to(device);
  cast.dispose();
  return moved;
}

/** x rounded to `dtype` (the inputs every backend then sees), back in f64. */
export async function rounded(x: Float64Array, dtype: DType): Promise<Float64Array> {
  const t = put(x, [x.length], dtype, 'cpu');
  const out = Float64Array.from(await t.toArray());
  t.dispose();
  return out;
}

export async function read(t: Tensor): Promise<Float64Array> {
  return Float64Array.from(await t.toArray());
}
