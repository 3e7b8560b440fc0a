/**
 * Tensor over native memory. Ops queue work on the tensor's device and return at once; reading
 * (toArray, toBytes) awaits the queued work. Call dispose() when done; a finalizer frees memory
 * of tensors that are garbage-collected undisposed, as a safety net only.
 */
import { BACKEND_DTYPES, DTYPE_BYTES, DTYPE_CODE, DTYPES, type DType, type HostArray } from './dtype.js';
import { DEVICE_CODE, type Device } from './device.js';
import { DTypeError, DisposedError, InvalidArgumentError, awaitNative, callNative } from './errors.js';
import { native, type CudaMemoryStats, type NativeTensorHandle } from './native.js';

export type Shape = readonly number[];

export interface TensorOptions {
  dtype?: DType;
  device?: Device;
}

function checkShape(shape: Shape, argument: string): number {
  if (!Array.isArray(shape)) throw new InvalidArgumentError(`${argument} must be an array of sizes`, argument);
  let n = 1;
  for (const s of shape) {
    if (!Number.isInteger(s) || s < 0) throw new InvalidArgumentError(`${argument} has an invalid size ${String(s)}`, argument);
    n *= s;
  }
  if (!Number.isSafeInteger(n)) throw new InvalidArgumentError(`${argument} has too many elements`, argument);
  return n;
}

function checkDType(dtype: unknown, argument: string): DType {
  if (!DTYPES.includes(dtype as DType)) throw new DTypeError(`unknown dtype '${String(dtype)}'`, argument);
  return dtype as DType;
}

function checkDevice(device: unknown, argument: string): Device {
  if (device !== 'cpu' && device !== 'cuda') throw new InvalidArgumentError(`unknown device '${String(device)}'`, argument);
  return device;
}

export class Tensor {
  readonly shape: Shape;
  readonly dtype: DType;
  readonly device: Device;
  /** @internal */
  readonly handle: NativeTensorHandle;

  /** @internal Wraps a native handle; use the static constructors. */
  constructor(handle: NativeTensorHandle, shape: Shape, dtype: DType, device: Device) {
    this.handle = handle;
    this.shape = Object.freeze([...shape]);
    this.dtype = dtype;
    this.device = device;
  }

  get numel(): number {
    return this.shape.reduce((a, b) => a * b, 1);
  }

  get rank(): number {
    return this.shape.length;
  }

  get byteLength(): number {
    return this.numel * DTYPE_BYTES[this.dtype];
  }

  get disposed(): boolean {
    return this.handle.disposed;
  }

  /** Throws DisposedError naming `argument` when this tensor was disposed. */
  assertAlive(argument = 'tensor'): void {
    if (this.handle.disposed) throw new DisposedError(`${argument} was disposed`, argument);
  }

  /**
   * Creates a tensor from host numbers. f64 takes any numbers; f32/bf16/f16 round to nearest
   * even (bf16/f16 through f32, as torch does); i32 requires integers.
   */
  static fromArray(data: ArrayLike<number>, shape: Shape, options: TensorOptions = {}): Tensor {
    const dtype = checkDType(options.dtype ?? 'f32', 'dtype');
    const device = checkDevice(options.device ?? 'cpu', 'device');
    const n = checkShape(shape, 'shape');
    if (data == null || typeof data.length !== 'number') throw new InvalidArgumentError('data must be an array of numbers', 'data');
    if (data.length !== n) throw new InvalidArgumentError(`data has ${data.length} elements, shape [${shape.join(', ')}] needs ${n}`, 'data');
    if (dtype === 'bf16' || dtype === 'f16') {
      const wide = Tensor.fromArray(data, shape, { dtype: 'f32', device });
      try {
        return wide.cast(dtype);
      } finally {
        wide.dispose();
      }
    }
    let host: ArrayBufferView;
    if (dtype === 'f64') host = data instanceof Float64Array ? data : Float64Array.from(data);
    else if (dtype === 'f32') host = data instanceof Float32Array ? data : Float32Array.from(data);
    else {
      for (let i = 0; i < n; i++) if (!Number.isInteger(data[i])) throw new InvalidArgumentError(`data[${i}] is not an integer`, 'data');
      host = data instanceof Int32Array ? data : Int32Array.from(data);
    }
    const handle = callNative(() => native.fromBytes({ device: DEVICE_CODE[device], dtype: DTYPE_CODE[dtype], numel: n, data: host }));
    return new Tensor(handle, shape, dtype, device);
  }

  /** Creates a tensor from raw little-endian bytes of `dtype` (e.g. bf16 bits from a checkpoint). */
  static fromBytes(bytes: ArrayBufferView, shape: Shape, options: TensorOptions & { dtype: DType }): Tensor {
    const dtype = checkDType(options.dtype, 'dtype');
    const device = checkDevice(options.device ?? 'cpu', 'device');
    const n = checkShape(shape, 'shape');
    const view = new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const handle = callNative(() => native.fromBytes({ device: DEVICE_CODE[device], dtype: DTYPE_CODE[dtype], numel: n, data: view }));
    return new Tensor(handle, shape, dtype, device);
  }

  /** Uninitialised storage (contents undefined until an op writes it). */
  static empty(shape: Shape, options: TensorOptions = {}): Tensor {
    const dtype = checkDType(options.dtype ?? 'f32', 'dtype');
    const device = checkDevice(options.device ?? 'cpu', 'device');
    const n = checkShape(shape, 'shape');
    const handle = callNative(() => native.empty({ device: DEVICE_CODE[device], dtype: DTYPE_CODE[dtype], numel: n }));
    return new Tensor(handle, shape, dtype, device);
  }

  static full(shape: Shape, value: number, options: TensorOptions = {}): Tensor {
    const n = checkShape(shape, 'shape');
    return Tensor.fromArray(new Float64Array(n).fill(value), shape, options);
  }

  /**
   * Normal random numbers mean + std * N(0, 1), generated on the tensor's device. Element i
   * depends only on (seed, i) (counter-based, see native/ops/random/random.h), so the CPU and
   * CUDA give the same values up to the last bit. dtype: f32/f64 on the CPU, bf16/f16/f32 on CUDA.
   */
  static randn(shape: Shape, options: TensorOptions & { mean?: number; std?: number; seed?: number } = {}): Tensor {
    const dtype = checkDType(options.dtype ?? 'f32', 'dtype');
    const device = checkDevice(options.device ?? 'cpu', 'device');
    const n = checkShape(shape, 'shape');
    if (!BACKEND_DTYPES[device].includes(dtype)) throw new DTypeError(`randn on ${device} makes ${device === 'cpu' ? 'f64 or f32' : 'bf16, f16 or f32'}, got ${dtype}`, 'dtype');
    const seed = options.seed ?? 0;
    if (!Number.isSafeInteger(seed) || seed < 0) throw new InvalidArgumentError(`seed must be a non-negative safe integer, got ${String(seed)}`, 'seed');
    const mean = options.mean ?? 0, std = options.std ?? 1;
    if (!Number.isFinite(mean)) throw new InvalidArgumentError(`mean must be finite, got ${String(mean)}`, 'mean');
    if (!Number.isFinite(std) || std < 0) throw new InvalidArgumentError(`std must be finite and >= 0, got ${String(std)}`, 'std');
    const r = callNative(() => native.randomNormal({ device: DEVICE_CODE[device], dtype: DTYPE_CODE[dtype], n, seed, mean, std }));
    return new Tensor(r.y, shape, dtype, device);
  }

  static zeros(shape: Shape, options: TensorOptions = {}): Tensor {
    return Tensor.full(shape, 0, options);
  }

  /** Reads the values back once every queued write finished (bf16/f16 widen to f32). */
  async toArray(): Promise<HostArray> {
    this.assertAlive();
    if (this.dtype === 'bf16' || this.dtype === 'f16') {
      const wide = this.cast('f32');
      try {
        return (await wide.toArray()) as Float32Array;
      } finally {
        wide.dispose();
      }
    }
    const buffer = await awaitNative(native.read(this.handle));
    if (this.dtype === 'f64') return new Float64Array(buffer);
    if (this.dtype === 'i32') return new Int32Array(buffer);
    return new Float32Array(buffer);
  }

  /** Raw little-endian bytes, after every queued write finished. */
  async toBytes(): Promise<Uint8Array> {
    this.assertAlive();
    return new Uint8Array(await awaitNative(native.read(this.handle)));
  }

  /** A copy converted to `dtype` (queued). */
  cast(dtype: DType): Tensor {
    this.assertAlive();
    checkDType(dtype, 'dtype');
    const handle = callNative(() => native.cast({ tensor: this.handle, dtype: DTYPE_CODE[dtype] }));
    return new Tensor(handle, this.shape, dtype, this.device);
  }

  /** A copy on `device` (queued; ordered after pending writes of this tensor). */
  to(device: Device): Tensor {
    this.assertAlive();
    checkDevice(device, 'device');
    const handle = callNative(() => native.copyTo({ tensor: this.handle, device: DEVICE_CODE[device] }));
    return new Tensor(handle, this.shape, this.dtype, device);
  }

  /** Same storage, another shape with the same element count (no copy). */
  reshape(shape: Shape): Tensor {
    this.assertAlive();
    const n = checkShape(shape, 'shape');
    if (n !== this.numel) throw new InvalidArgumentError(`cannot reshape [${this.shape.join(', ')}] to [${shape.join(', ')}]`, 'shape');
    return new Tensor(this.handle, shape, this.dtype, this.device);
  }

  /** Releases the memory now (queued ops that use it keep it alive until they ran). */
  dispose(): void {
    this.handle.dispose();
  }

  toString(): string {
    return `Tensor(${this.dtype}, [${this.shape.join(', ')}], ${this.device}${this.disposed ? ', disposed' : ''})`;
  }
}

/** Live tensors and bytes on a device: leak tests compare these before and after. */
/**
 * GPU memory of the library's pool in bytes: in live allocations (used) and held from the driver
 * (reserved), now and at the peak since the last reset (torch's max_memory_allocated /
 * max_memory_reserved). Queued work counts once it has run: synchronize('cuda') first for a
 * settled number. DeviceError without a usable GPU.
 */
export function cudaMemoryStats(o: { resetPeaks?: boolean } = {}): CudaMemoryStats {
  return callNative(() => native.cudaMemoryStats({ reset: o.resetPeaks === true }));
}

export function liveTensors(device: Device = 'cpu'): { tensors: number; bytes: number } {
  return native.liveCounters({ device: DEVICE_CODE[device] });
}

/** Resolves once every op queued so far on `device` has run (and the GPU stream drained). */
export async function synchronize(device: Device = 'cpu'): Promise<void> {
  await awaitNative(native.synchronize({ device: DEVICE_CODE[device] }));
}

/**
 * Disposes every tensor in a (nested) object or array; objects with their own dispose() (op
 * results) dispose themselves, which leaves their inputs alone.
 */
export function disposeAll(value: unknown): void {
  if (value instanceof Tensor) value.dispose();
  else if (Array.isArray(value)) value.forEach(disposeAll);
  else if (value && typeof (value as { dispose?: unknown }).dispose === 'function') (value as { dispose: () => void }).dispose();
  else if (value && typeof value === 'object') Object.values(value).forEach(disposeAll);
}
