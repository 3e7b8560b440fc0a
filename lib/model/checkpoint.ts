/**
 * Training checkpoints: trainable parameters and AdamW state as one safetensors file, written
 * atomically (temp file + rename), restored bit-exactly into existing tensors.
 * Tensors: param.<name> (the fp32 master weight of a 16-bit parameter), exp_avg.<name>,
 * exp_avg_sq.<name>; metadata: step, options, extra.
 */
import type { DType } from '../dtype.js';
import { InvalidArgumentError } from '../errors.js';
import { openSafetensors, writeSafetensors, SafetensorsError, type SafetensorsDtype, type TensorToWrite } from '../io/safetensors.js';
import { Tensor } from '../tensor.js';
import { copyInto } from '../ops/elementwise.js';
import type { AdamWOptimizer } from './optimizer.js';

const FORMAT = 'hybrid-attention-train-v1';
const ST_DTYPE: Partial<Record<DType, SafetensorsDtype>> = { f32: 'F32', f64: 'F64' };

function groups(opt: AdamWOptimizer): [string, Map<string, Tensor>][] {
  return [
    ['param', opt.masters],
    ['exp_avg', opt.expAvg],
    ['exp_avg_sq', opt.expAvgSq],
  ];
}

/** Writes the optimizer's parameters and state; `extra` (strings) rides in the metadata. */
export async function saveTrainingState(path: string, opt: AdamWOptimizer, extra: Record<string, string> = {}): Promise<void> {
  const tensors: TensorToWrite[] = [];
  for (const [prefix, map] of groups(opt))
    for (const n of opt.names) {
      const t = map.get(n)!;
      const dtype = ST_DTYPE[t.dtype];
      if (!dtype) throw new InvalidArgumentError(`cannot checkpoint ${t.dtype} tensor '${n}'`, n);
      tensors.push({ name: `${prefix}.${n}`, dtype, shape: t.shape, data: await t.toBytes() });
    }
  await writeSafetensors(path, tensors, {
    ...extra,
    format: FORMAT,
    step: String(opt.stepCount),
    options: JSON.stringify(opt.options),
  });
}

/** Restores parameters, moments and the step count; returns the metadata (for `extra`). */
export async function loadTrainingState(path: string, opt: AdamWOptimizer): Promise<Record<string, string>> {
  const f = await openSafetensors(path);
  try {
    const meta = f.metadata ?? {};
    if (meta.format !== FORMAT) throw new SafetensorsError('BAD_HEADER', `not a training checkpoint (format ${JSON.stringify(meta.format)})`, { file: path });
    const pending: [Tensor, Tensor][] = [];
    try {
      for (const [prefix, map] of groups(opt))
        for (const n of opt.names) {
          const dst = map.get(n)!;
          const name = `${prefix}.${n}`;
          const bytes = await f.read(name, { dtype: ST_DTYPE[dst.dtype]!, shape: dst.shape });
          pending.push([dst, Tensor.fromBytes(bytes, dst.shape, { dtype: dst.dtype, device: dst.device })]);
        }
      // Everything read and checked before anything is overwritten.
      for (const [dst, src] of pending) copyInto(dst, src);
      for (const n of opt.names) opt.syncParam(n);
    } finally {
      for (const [, src] of pending) src.dispose();
    }
    opt.stepCount = Number(meta.step);
    opt.options = JSON.parse(meta.options ?? '{}');
    return { ...meta };
  } finally {
    await f.close();
  }
}

