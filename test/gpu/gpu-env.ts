/** Whether the GPU suite can run here, said once and visibly when it cannot. */
import { runtimeInfo } from '../../lib/index.js';

const info = runtimeInfo();
export const gpuAvailable = info.cudaAvailable;
export const gpuName = info.gpu?.name ?? '';
if (!gpuAvailable)
  console.warn(`test/gpu: skipped, no usable GPU (${info.compiledWithCuda ? info.cudaUnavailableReason : 'addon built without CUDA'})`);
