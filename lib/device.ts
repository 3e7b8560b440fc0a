/**
 * Devices and runtime information. Device selection: 'auto' | 'cpu' | 'cuda', overridable with
 * the HYBRID_ATTENTION_DEVICE environment variable.
 */
import { DeviceError } from './errors.js';
import { native } from './native.js';

export type Device = 'cpu' | 'cuda';
export type DeviceRequest = Device | 'auto';
export const DEVICE_CODE: Record<Device, number> = { cpu: 0, cuda: 1 };

export interface RuntimeInfo {
  /** The addon was compiled with nvcc. */
  compiledWithCuda: boolean;
  /** A usable GPU and driver were found. */
  cudaAvailable: boolean;
  /** Why CUDA cannot be used, when it cannot. */
  cudaUnavailableReason?: string;
  gpu?: { name: string; computeCapability: string; smCount: number; totalMemory: number; freeMemory: number; driverVersion: number; runtimeVersion: number };
  cpuThreads: number;
}

export function runtimeInfo(): RuntimeInfo {
  const c = native.cudaInfo();
  const info: RuntimeInfo = { compiledWithCuda: c.compiled, cudaAvailable: c.available, cpuThreads: native.cpuThreads };
  if (!c.available) info.cudaUnavailableReason = c.reason;
  else
    info.gpu = {
      name: c.name,
      computeCapability: c.computeCapability,
      smCount: c.smCount,
      totalMemory: c.totalMemory,
      freeMemory: c.freeMemory,
      driverVersion: c.driverVersion,
      runtimeVersion: c.runtimeVersion,
    };
  return info;
}

export function cudaAvailable(): boolean {
  return native.cudaInfo().available;
}

let warnedFallback = false;

/**
 * Resolves a device request. 'cuda' throws DeviceError where no GPU is usable; 'auto' picks the
 * GPU when usable and otherwise falls back to the CPU with one log line.
 */
export function resolveDevice(request: DeviceRequest = 'auto', log: (line: string) => void = (l) => console.warn(l)): Device {
  const env = process.env.HYBRID_ATTENTION_DEVICE;
  const wanted = (env && env.length > 0 ? env : request) as string;
  if (wanted !== 'auto' && wanted !== 'cpu' && wanted !== 'cuda')
    throw new DeviceError(`unknown device '${wanted}' (expected auto, cpu or cuda)`, env ? 'HYBRID_ATTENTION_DEVICE' : 'device');
  if (wanted === 'cpu') return 'cpu';
  const c = native.cudaInfo();
  if (wanted === 'cuda') {
    if (!c.available) throw new DeviceError(`device 'cuda' requested but unusable: ${c.reason}`, 'device');
    return 'cuda';
  }
  if (c.available) return 'cuda';
  if (!warnedFallback) {
    warnedFallback = true;
    log(`hybrid-attention: using the CPU (${c.reason})`);
  }
  return 'cpu';
}
