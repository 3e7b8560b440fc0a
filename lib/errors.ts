/**
 * Typed errors. Every failure the library reports is one of these classes; `argument` names the
 * offending argument where there is one. Native errors carry a `code` that maps onto a class.
 */
export class HybridAttentionError extends Error {
  readonly argument?: string;
  constructor(message: string, argument?: string) {
    super(message);
    this.name = new.target.name;
    if (argument !== undefined) this.argument = argument;
  }
}

/** A wrong shape, rank, value or option. */
export class InvalidArgumentError extends HybridAttentionError {}
/** A tensor of the wrong element type. */
export class DTypeError extends InvalidArgumentError {}
/** A tensor on the wrong device, or a device that cannot be used. */
export class DeviceError extends HybridAttentionError {}
/** A tensor used after dispose(). */
export class DisposedError extends HybridAttentionError {}
/** Host or GPU memory exhausted. */
export class OutOfMemoryError extends HybridAttentionError {}
/** The operation exists but not for this backend or dtype yet. */
export class NotImplementedError extends HybridAttentionError {}
/** A failure inside a queued kernel (surfaces at the next read or await). */
export class KernelError extends HybridAttentionError {}

const byCode: Record<string, new (message: string, argument?: string) => HybridAttentionError> = {
  InvalidArgument: InvalidArgumentError,
  OutOfMemory: OutOfMemoryError,
  DeviceError: DeviceError,
  NotImplemented: NotImplementedError,
  KernelError: KernelError,
  Disposed: DisposedError,
};

/** Converts an error thrown or rejected by the addon into its typed class. */
export function fromNative(err: unknown): unknown {
  if (err instanceof HybridAttentionError) return err;
  if (err instanceof Error && typeof (err as { code?: unknown }).code === 'string') {
    const ctor = byCode[(err as unknown as { code: string }).code];
    if (ctor) {
      const typed = new ctor(err.message, (err as { argument?: string }).argument);
      return typed;
    }
  }
  return err;
}

/** Calls into the addon, rethrowing its errors as typed ones. */
export function callNative<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    throw fromNative(err);
  }
}

/** Awaits an addon promise, rethrowing its rejection as a typed error. */
export async function awaitNative<T>(promise: Promise<T>): Promise<T> {
  try {
    return await promise;
  } catch (err) {
    throw fromNative(err);
  }
}
