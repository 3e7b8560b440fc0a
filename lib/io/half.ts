// bfloat16 / float16 <-> float32 conversion on raw bit patterns.
// f32 -> half rounds to nearest, ties to even (what torch's .to(bfloat16/float16) does);
// NaN stays NaN (quiet, sign kept), overflow goes to +-inf, f16 subnormals are exact.

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** Bits of Math.fround(x) as an unsigned 32-bit integer. */
export function f32Bits(x: number): number {
  f32[0] = x;
  return u32[0]!;
}

/** The float32 value whose bits are `bits`. */
export function f32FromBits(bits: number): number {
  u32[0] = bits >>> 0;
  return f32[0]!;
}

/** float32 bit pattern -> bfloat16 bit pattern, round to nearest even. */
export function bf16BitsFromF32Bits(x: number): number {
  x >>>= 0;
  if ((x & 0x7fffffff) > 0x7f800000) return ((x >>> 16) | 0x40) & 0xffff; // NaN: keep quiet
  // Adding 0x7fff plus the lsb of the kept half rounds to nearest with ties to even;
  // a carry out of the mantissa correctly bumps the exponent (up to inf).
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

/** float32 bit pattern -> float16 bit pattern, round to nearest even, subnormals, inf, NaN. */
export function f16BitsFromF32Bits(x: number): number {
  x >>>= 0;
  const sign = (x >>> 16) & 0x8000;
  const e = (x >>> 23) & 0xff;
  const m = x & 0x7fffff;
  if (e === 0xff) return m ? sign | 0x7e00 | (m >>> 13) : sign | 0x7c00;
  const E = e - 127;
  if (E > 15) return sign | 0x7c00;
  if (E >= -14) {
    // Normal half: keep 10 mantissa bits; a carry may run into the exponent (-> inf), as it should.
    let h = ((E + 15) << 10) | (m >>> 13);
    const rem = m & 0x1fff;
    if (rem > 0x1000 || (rem === 0x1000 && (h & 1))) h++;
    return sign | h;
  }
  if (E < -25) return sign; // below half the smallest subnormal (2^-24): rounds to zero
  // Subnormal half: value = M * 2^(E-23) with the implicit bit; unit is 2^-24.
  const M = m | 0x800000;
  const shift = -E - 1; // 14..24
  let h = M >>> shift;
  const rem = M & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  if (rem > half || (rem === half && (h & 1))) h++; // may round up to the smallest normal: correct
  return sign | h;
}

/** float16 bit pattern -> float32 bit pattern (exact). */
export function f32BitsFromF16Bits(h: number): number {
  const sign = (h & 0x8000) << 16;
  const e = (h >>> 10) & 0x1f;
  let m = h & 0x3ff;
  if (e === 0x1f) return (sign | 0x7f800000 | (m << 13)) >>> 0;
  if (e === 0) {
    if (m === 0) return sign >>> 0;
    // Normalise the subnormal: every f16 subnormal is a normal f32.
    let E = -14;
    while ((m & 0x400) === 0) {
      m <<= 1;
      E--;
    }
    return (sign | ((E + 127) << 23) | ((m & 0x3ff) << 13)) >>> 0;
  }
  return (sign | ((e - 15 + 127) << 23) | (m << 13)) >>> 0;
}

export const bf16ToNumber = (bits: number): number => f32FromBits((bits & 0xffff) << 16);
export const f16ToNumber = (bits: number): number => f32FromBits(f32BitsFromF16Bits(bits & 0xffff));
/** x is first rounded to float32 (the values these formats are converted from in practice). */
export const numberToBf16 = (x: number): number => bf16BitsFromF32Bits(f32Bits(x));
/** x is first rounded to float32 (the values these formats are converted from in practice). */
export const numberToF16 = (x: number): number => f16BitsFromF32Bits(f32Bits(x));

function u32View(a: Float32Array): Uint32Array {
  return new Uint32Array(a.buffer, a.byteOffset, a.length);
}

export function bf16ToF32(src: Uint16Array, out: Float32Array = new Float32Array(src.length)): Float32Array {
  const o = u32View(out);
  for (let i = 0; i < src.length; i++) o[i] = src[i]! << 16;
  return out;
}

export function f32ToBf16(src: Float32Array, out: Uint16Array = new Uint16Array(src.length)): Uint16Array {
  const s = u32View(src);
  for (let i = 0; i < s.length; i++) out[i] = bf16BitsFromF32Bits(s[i]!);
  return out;
}

// f16 -> f32 through a 64K-entry table (256 KiB, built on first use): exact and branch-free.
let f16Table: Uint32Array | null = null;
function table(): Uint32Array {
  if (!f16Table) {
    f16Table = new Uint32Array(65536);
    for (let h = 0; h < 65536; h++) f16Table[h] = f32BitsFromF16Bits(h);
  }
  return f16Table;
}

export function f16ToF32(src: Uint16Array, out: Float32Array = new Float32Array(src.length)): Float32Array {
  const o = u32View(out);
  const t = table();
  for (let i = 0; i < src.length; i++) o[i] = t[src[i]!]!;
  return out;
}

export function f32ToF16(src: Float32Array, out: Uint16Array = new Uint16Array(src.length)): Uint16Array {
  const s = u32View(src);
  for (let i = 0; i < s.length; i++) out[i] = f16BitsFromF32Bits(s[i]!);
  return out;
}
