/** SwiGLU gate of the Llama MLP: y = silu(gate) * up, and its backward. */
import { callNative } from '../errors.js';
import { native } from '../native.js';
import { Tensor } from '../tensor.js';
import { expectShape } from './validate.js';
import { leadTensor, opBase, sameAs } from './op-args.js';

function prepare(gate: Tensor, up: Tensor) {
  const tg = leadTensor(gate, 'gate');
  const base = opBase(tg);
  const tu = sameAs(up, 'up', base);
  expectShape(tu, 'up', tg.shape, 'same as gate');
  return { tg, tu, base, args: { ...base.codes, n: tg.numel, gate: tg.handle, up: tu.handle } };
}

export function swiglu(gate: Tensor, up: Tensor): Tensor {
  const p = prepare(gate, up);
  const res = callNative(() => native.swigluForward(p.args));
  return new Tensor(res.y, p.tg.shape, p.base.dtype, p.base.device);
}

export function swigluBackward(gate: Tensor, up: Tensor, dy: Tensor): { dgate: Tensor; dup: Tensor } {
  const p = prepare(gate, up);
  const tdy = sameAs(dy, 'dy', p.base);
  expectShape(tdy, 'dy', p.tg.shape);
  const res = callNative(() => native.swigluBackward({ ...p.args, dy: tdy.handle }));
  return {
    dgate: new Tensor(res.dgate, p.tg.shape, p.base.dtype, p.base.device),
    dup: new Tensor(res.dup, p.tg.shape, p.base.dtype, p.base.device),
  };
}
