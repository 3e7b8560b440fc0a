// safetensors reader/writer: headers are parsed through a file handle and each tensor is read
// on demand, so a multi-GB checkpoint never sits in JS memory whole.
// Format: u64 LE header length N, N bytes of JSON {name: {dtype, shape, data_offsets}, __metadata__?},
// then the data section; data_offsets are relative to the start of the data section.
import { open, rename, stat, unlink, readFile } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { endianness } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { bf16ToF32, f16ToF32 } from './half.js';
import { HybridAttentionError } from '../errors.js';

export type SafetensorsErrorCode =
  | 'TRUNCATED' // file shorter than its header says
  | 'BAD_HEADER' // header length insane, not UTF-8 JSON, or malformed entries
  | 'BAD_DTYPE' // dtype not known to this reader
  | 'BAD_OFFSETS' // data_offsets reversed or overlapping
  | 'SHAPE_MISMATCH' // byte size != numel * dtype size, or not the shape the caller expected
  | 'DTYPE_MISMATCH' // not the dtype the caller expected
  | 'MISSING_TENSOR'
  | 'DUPLICATE_TENSOR'
  | 'BAD_INDEX' // model.safetensors.index.json malformed
  | 'NOT_FOUND' // no checkpoint file where one was asked for
  | 'CLOSED'
  | 'WRITE_FAILED';

/** A malformed or mismatched safetensors file/checkpoint; `code` says which way, the message names file and tensor. */
export class SafetensorsError extends HybridAttentionError {
  readonly code: SafetensorsErrorCode;
  readonly file: string | undefined;
  readonly tensor: string | undefined;
  constructor(
    code: SafetensorsErrorCode,
    message: string,
    where: { file?: string; tensor?: string; cause?: unknown } = {},
  ) {
    const prefix = (where.file ? `${where.file}: ` : '') + (where.tensor !== undefined ? `tensor "${where.tensor}": ` : '');
    super(`${prefix}${message} [${code}]`);
    if (where.cause !== undefined) this.cause = where.cause;
    this.code = code;
    this.file = where.file;
    this.tensor = where.tensor;
  }
}

/** Bytes per element. Sub-byte formats (F4, F6...) are not supported and read as BAD_DTYPE. */
export const DTYPE_SIZE = {
  F64: 8, F32: 4, F16: 2, BF16: 2,
  I64: 8, I32: 4, I16: 2, I8: 1,
  U64: 8, U32: 4, U16: 2, U8: 1,
  BOOL: 1, F8_E4M3: 1, F8_E5M2: 1,
} as const;
export type SafetensorsDtype = keyof typeof DTYPE_SIZE;

export function isDtype(s: unknown): s is SafetensorsDtype {
  return typeof s === 'string' && Object.prototype.hasOwnProperty.call(DTYPE_SIZE, s);
}

export interface TensorInfo {
  readonly name: string;
  readonly dtype: SafetensorsDtype;
  readonly shape: readonly number[];
  /** Absolute offset of the first byte in `file` (8 + header length + data_offsets[0]). */
  readonly byteOffset: number;
  readonly byteLength: number;
  /** The .safetensors file holding the tensor (the shard, for sharded checkpoints). */
  readonly file: string;
}

export interface Expect {
  dtype?: SafetensorsDtype | readonly SafetensorsDtype[];
  shape?: readonly number[];
}

/** Typed array matching a dtype; F16/BF16 come back as raw Uint16Array bits, F8/BOOL as Uint8Array. */
export type DtypeArray =
  | Float64Array | Float32Array | Uint16Array | BigInt64Array | Int32Array | Int16Array | Int8Array
  | BigUint64Array | Uint32Array | Uint8Array;

const MAX_HEADER = 100 * 1024 * 1024; // the reference implementation's limit
const LITTLE_ENDIAN = endianness() === 'LE';

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

const isCount = (x: unknown): x is number => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;

/** Common reading API over one file or a sharded checkpoint. */
export abstract class TensorReader {
  abstract readonly tensors: readonly TensorInfo[];
  abstract readonly metadata: Readonly<Record<string, unknown>> | null;
  protected abstract lookup(name: string): TensorInfo | undefined;
  protected abstract readBytes(info: TensorInfo): Promise<Buffer>;
  abstract close(): Promise<void>;
  protected closed = false;

  get names(): string[] {
    return this.tensors.map((t) => t.name);
  }

  has(name: string): boolean {
    return this.lookup(name) !== undefined;
  }

  /** Tensor description; throws MISSING_TENSOR, or SHAPE_MISMATCH / DTYPE_MISMATCH against `expect`. */
  info(name: string, expect?: Expect): TensorInfo {
    const t = this.lookup(name);
    if (!t) throw new SafetensorsError('MISSING_TENSOR', 'no such tensor', { file: this.describe(), tensor: name });
    if (expect?.dtype !== undefined) {
      const ok = typeof expect.dtype === 'string' ? [expect.dtype] : expect.dtype;
      if (!ok.includes(t.dtype)) {
        throw new SafetensorsError('DTYPE_MISMATCH', `dtype ${t.dtype}, expected ${ok.join(' or ')}`, { file: t.file, tensor: name });
      }
    }
    if (expect?.shape && !sameShape(t.shape, expect.shape)) {
      throw new SafetensorsError('SHAPE_MISMATCH', `shape [${t.shape}], expected [${expect.shape}]`, { file: t.file, tensor: name });
    }
    return t;
  }

  /** Raw little-endian bytes of one tensor, in a fresh 8-byte-aligned Buffer. */
  async read(name: string, expect?: Expect): Promise<Buffer> {
    const t = this.info(name, expect);
    if (this.closed) throw new SafetensorsError('CLOSED', 'read after close', { file: t.file, tensor: name });
    return this.readBytes(t);
  }

  /** The tensor as a typed array of its own dtype (see DtypeArray). */
  async readArray(name: string, expect?: Expect): Promise<DtypeArray> {
    const t = this.info(name, expect);
    return viewAs(t.dtype, await this.read(name));
  }

  /** Floating tensor widened to float32 (exact for F32/F16/BF16; F64 is rounded). */
  async readF32(name: string, expect?: Omit<Expect, 'dtype'>): Promise<Float32Array> {
    const t = this.info(name, { ...expect, dtype: ['F32', 'F16', 'BF16', 'F64'] });
    const a = viewAs(t.dtype, await this.read(name));
    if (t.dtype === 'F32') return a as Float32Array;
    if (t.dtype === 'BF16') return bf16ToF32(a as Uint16Array);
    if (t.dtype === 'F16') return f16ToF32(a as Uint16Array);
    return Float32Array.from(a as Float64Array);
  }

  /** Floating tensor widened to float64 (exact for all float dtypes). */
  async readF64(name: string, expect?: Omit<Expect, 'dtype'>): Promise<Float64Array> {
    const t = this.info(name, { ...expect, dtype: ['F64', 'F32', 'F16', 'BF16'] });
    if (t.dtype === 'F64') return viewAs('F64', await this.read(name)) as Float64Array;
    return Float64Array.from(await this.readF32(name));
  }

  protected abstract describe(): string;
}

function viewAs(dtype: SafetensorsDtype, b: Buffer): DtypeArray {
  if (!LITTLE_ENDIAN && DTYPE_SIZE[dtype] > 1) throw new Error('big-endian hosts are not supported');
  const n = b.byteLength / DTYPE_SIZE[dtype];
  const ab = b.buffer;
  const o = b.byteOffset;
  switch (dtype) {
    case 'F64': return new Float64Array(ab, o, n);
    case 'F32': return new Float32Array(ab, o, n);
    case 'F16': case 'BF16': case 'U16': return new Uint16Array(ab, o, n);
    case 'I64': return new BigInt64Array(ab, o, n);
    case 'U64': return new BigUint64Array(ab, o, n);
    case 'I32': return new Int32Array(ab, o, n);
    case 'U32': return new Uint32Array(ab, o, n);
    case 'I16': return new Int16Array(ab, o, n);
    case 'I8': return new Int8Array(ab, o, n);
    default: return new Uint8Array(ab, o, n);
  }
}

/** Validates a parsed header against the data section size; returns the tensor list. */
function parseHeader(
  file: string,
  header: unknown,
  dataStart: number,
  dataSize: number,
): { tensors: TensorInfo[]; metadata: Record<string, string> | null } {
  const bad = (msg: string, tensor?: string) =>
    new SafetensorsError('BAD_HEADER', msg, tensor === undefined ? { file } : { file, tensor });
  if (typeof header !== 'object' || header === null || Array.isArray(header)) throw bad('header is not a JSON object');
  let metadata: Record<string, string> | null = null;
  const tensors: TensorInfo[] = [];
  for (const [name, entry] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) throw bad('__metadata__ is not an object');
      for (const [k, v] of Object.entries(entry)) {
        if (typeof v !== 'string') throw bad(`__metadata__.${k} is not a string`);
      }
      metadata = entry as Record<string, string>;
      continue;
    }
    if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) throw bad('entry is not an object', name);
    const { dtype, shape, data_offsets: off } = entry as Record<string, unknown>;
    if (!isDtype(dtype)) {
      throw new SafetensorsError('BAD_DTYPE', `unknown dtype ${JSON.stringify(dtype)}`, { file, tensor: name });
    }
    if (!Array.isArray(shape) || !shape.every(isCount)) throw bad(`shape ${JSON.stringify(shape)} is not a list of non-negative integers`, name);
    if (!Array.isArray(off) || off.length !== 2 || !off.every(isCount)) throw bad(`data_offsets ${JSON.stringify(off)} is not a [begin, end] pair`, name);
    const [begin, end] = off as [number, number];
    if (begin > end) throw new SafetensorsError('BAD_OFFSETS', `data_offsets [${begin}, ${end}] are reversed`, { file, tensor: name });
    if (end > dataSize) {
      throw new SafetensorsError('TRUNCATED', `data_offsets end ${end} is past the data section (${dataSize} bytes)`, { file, tensor: name });
    }
    const n = numel(shape);
    if (!Number.isSafeInteger(n * DTYPE_SIZE[dtype])) throw bad(`shape [${shape}] is too large`, name);
    if (end - begin !== n * DTYPE_SIZE[dtype]) {
      throw new SafetensorsError('SHAPE_MISMATCH', `${end - begin} bytes for shape [${shape}] of ${dtype} (needs ${n * DTYPE_SIZE[dtype]})`, { file, tensor: name });
    }
    tensors.push({ name, dtype, shape: shape as number[], byteOffset: dataStart + begin, byteLength: end - begin, file });
  }
  // Overlap check on byte ranges sorted by start; empty tensors occupy nothing.
  const byStart = tensors.filter((t) => t.byteLength > 0).sort((a, b) => a.byteOffset - b.byteOffset);
  for (let i = 1; i < byStart.length; i++) {
    const prev = byStart[i - 1]!;
    const cur = byStart[i]!;
    if (cur.byteOffset < prev.byteOffset + prev.byteLength) {
      throw new SafetensorsError('BAD_OFFSETS', `data overlaps tensor "${prev.name}"`, { file, tensor: cur.name });
    }
  }
  return { tensors, metadata };
}

export class SafetensorsFile extends TensorReader {
  readonly tensors: readonly TensorInfo[];
  readonly metadata: Readonly<Record<string, string>> | null;
  private readonly byName: Map<string, TensorInfo>;

  private constructor(
    readonly path: string,
    private readonly fh: FileHandle,
    parsed: { tensors: TensorInfo[]; metadata: Record<string, string> | null },
  ) {
    super();
    this.tensors = parsed.tensors;
    this.metadata = parsed.metadata;
    this.byName = new Map(parsed.tensors.map((t) => [t.name, t]));
  }

  static async open(path: string): Promise<SafetensorsFile> {
    let fh: FileHandle;
    try {
      fh = await open(path, 'r');
    } catch (e) {
      throw new SafetensorsError('NOT_FOUND', `cannot open: ${(e as Error).message}`, { file: path, cause: e });
    }
    try {
      const size = (await fh.stat()).size;
      if (size < 8) throw new SafetensorsError('TRUNCATED', `file is ${size} bytes, too short for the header length`, { file: path });
      const lenBuf = Buffer.alloc(8);
      await readExactly(fh, lenBuf, 0, path);
      const n64 = lenBuf.readBigUInt64LE(0);
      if (n64 > BigInt(MAX_HEADER)) throw new SafetensorsError('BAD_HEADER', `header length ${n64} exceeds ${MAX_HEADER}`, { file: path });
      const n = Number(n64);
      if (n < 2) throw new SafetensorsError('BAD_HEADER', `header length ${n} is too small`, { file: path });
      if (8 + n > size) {
        throw new SafetensorsError('TRUNCATED', `header length ${n} runs past the end of the ${size}-byte file`, { file: path });
      }
      const hb = Buffer.alloc(n);
      await readExactly(fh, hb, 8, path);
      let header: unknown;
      try {
        header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(hb));
      } catch (e) {
        throw new SafetensorsError('BAD_HEADER', `header is not UTF-8 JSON: ${(e as Error).message}`, { file: path, cause: e });
      }
      return new SafetensorsFile(path, fh, parseHeader(path, header, 8 + n, size - 8 - n));
    } catch (e) {
      await fh.close().catch(() => {});
      throw e;
    }
  }

  protected lookup(name: string): TensorInfo | undefined {
    return this.byName.get(name);
  }
  protected async readBytes(t: TensorInfo): Promise<Buffer> {
    const buf = Buffer.from(new ArrayBuffer(t.byteLength)); // own ArrayBuffer: offset 0, so typed views are aligned
    let done = 0;
    while (done < t.byteLength) {
      const { bytesRead } = await this.fh.read(buf, done, t.byteLength - done, t.byteOffset + done);
      if (bytesRead === 0) {
        throw new SafetensorsError('TRUNCATED', `file ended after ${done} of ${t.byteLength} bytes`, { file: t.file, tensor: t.name });
      }
      done += bytesRead;
    }
    return buf;
  }
  protected describe(): string {
    return this.path;
  }
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.fh.close();
  }
}

async function readExactly(fh: FileHandle, buf: Buffer, position: number, file: string): Promise<void> {
  let done = 0;
  while (done < buf.length) {
    const { bytesRead } = await fh.read(buf, done, buf.length - done, position + done);
    if (bytesRead === 0) throw new SafetensorsError('TRUNCATED', `unexpected end of file at byte ${position + done}`, { file });
    done += bytesRead;
  }
}

export function openSafetensors(path: string): Promise<SafetensorsFile> {
  return SafetensorsFile.open(path);
}

/** Sharded checkpoint (model.safetensors.index.json): one reader over all shards. */
export class ShardedCheckpoint extends TensorReader {
  readonly tensors: readonly TensorInfo[];
  private readonly byName: Map<string, TensorInfo>;
  private readonly byFile: Map<string, SafetensorsFile>;

  private constructor(
    readonly indexPath: string,
    readonly metadata: Readonly<Record<string, unknown>> | null,
    readonly shards: readonly SafetensorsFile[],
    tensors: TensorInfo[],
  ) {
    super();
    this.tensors = tensors;
    this.byName = new Map(tensors.map((t) => [t.name, t]));
    this.byFile = new Map(shards.map((s) => [s.path, s]));
  }

  static async open(indexPath: string): Promise<ShardedCheckpoint> {
    const dir = dirname(indexPath);
    let index: unknown;
    try {
      index = JSON.parse(await readFile(indexPath, 'utf8'));
    } catch (e) {
      throw new SafetensorsError('BAD_INDEX', `cannot read index: ${(e as Error).message}`, { file: indexPath, cause: e });
    }
    const weightMap = (index as { weight_map?: unknown } | null)?.weight_map;
    if (typeof weightMap !== 'object' || weightMap === null || Array.isArray(weightMap)) {
      throw new SafetensorsError('BAD_INDEX', 'no weight_map object', { file: indexPath });
    }
    const shardNames = new Set<string>();
    for (const [name, shard] of Object.entries(weightMap)) {
      // Shards must sit beside the index: refuse paths that could point elsewhere.
      if (typeof shard !== 'string' || shard !== basename(shard) || shard === '..' || shard === '.' || shard.includes('\\')) {
        throw new SafetensorsError('BAD_INDEX', `weight_map entry ${JSON.stringify(shard)} is not a shard file name`, { file: indexPath, tensor: name });
      }
      shardNames.add(shard);
    }
    const shards: SafetensorsFile[] = [];
    try {
      const byFile = new Map<string, SafetensorsFile>();
      for (const s of shardNames) {
        const f = await SafetensorsFile.open(join(dir, s));
        shards.push(f);
        byFile.set(s, f);
      }
      const tensors: TensorInfo[] = [];
      for (const [name, shard] of Object.entries(weightMap as Record<string, string>)) {
        const f = byFile.get(shard)!;
        if (!f.has(name)) {
          throw new SafetensorsError('MISSING_TENSOR', `index maps it to ${shard}, which does not hold it`, { file: indexPath, tensor: name });
        }
        tensors.push(f.info(name));
      }
      const meta = (index as { metadata?: unknown }).metadata;
      const metadata = typeof meta === 'object' && meta !== null && !Array.isArray(meta) ? (meta as Record<string, unknown>) : null;
      return new ShardedCheckpoint(indexPath, metadata, shards, tensors);
    } catch (e) {
      await Promise.all(shards.map((s) => s.close().catch(() => {})));
      throw e;
    }
  }

  /** Path of the shard that holds `name`. */
  shardOf(name: string): string {
    return this.info(name).file;
  }

  protected lookup(name: string): TensorInfo | undefined {
    return this.byName.get(name);
  }
  protected readBytes(t: TensorInfo): Promise<Buffer> {
    return this.byFile.get(t.file)!.read(t.name);
  }
  protected describe(): string {
    return this.indexPath;
  }
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all(this.shards.map((s) => s.close()));
  }
}

export const CHECKPOINT_FILE = 'model.safetensors';
export const CHECKPOINT_INDEX = 'model.safetensors.index.json';

/**
 * Opens a checkpoint: a .safetensors file, or a directory holding model.safetensors.index.json
 * (sharded; preferred when both exist, as transformers does) or model.safetensors.
 */
export async function openCheckpoint(path: string): Promise<TensorReader> {
  const st = await stat(path).catch((e: unknown) => {
    throw new SafetensorsError('NOT_FOUND', `cannot stat: ${(e as Error).message}`, { file: path, cause: e });
  });
  if (!st.isDirectory()) return SafetensorsFile.open(path);
  const index = join(path, CHECKPOINT_INDEX);
  if (await exists(index)) return ShardedCheckpoint.open(index);
  const single = join(path, CHECKPOINT_FILE);
  if (await exists(single)) return SafetensorsFile.open(single);
  throw new SafetensorsError('NOT_FOUND', `neither ${CHECKPOINT_INDEX} nor ${CHECKPOINT_FILE} in this directory`, { file: path });
}

async function exists(p: string): Promise<boolean> {
  return stat(p).then((s) => s.isFile(), () => false);
}

// ---------------------------------------------------------------- writing

/** A whole buffer, or chunks (sync or async) whose total must equal the tensor's byte size. */
export type TensorData = ArrayBufferView | Iterable<ArrayBufferView> | AsyncIterable<ArrayBufferView>;

export interface TensorToWrite {
  name: string;
  dtype: SafetensorsDtype;
  shape: readonly number[];
  data: TensorData;
}

const asBuffer = (v: ArrayBufferView): Buffer => Buffer.from(v.buffer, v.byteOffset, v.byteLength);

/** Serialises the header: JSON padded with spaces so the data section starts 8-byte aligned. */
function buildHeader(file: string, tensors: readonly TensorToWrite[], metadata?: Record<string, string>): Buffer {
  const header: Record<string, unknown> = {};
  if (metadata) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') throw new SafetensorsError('BAD_HEADER', `metadata value for "${k}" is not a string`, { file });
    }
    header.__metadata__ = metadata;
  }
  let offset = 0;
  const seen = new Set<string>();
  for (const t of tensors) {
    const where = { file, tensor: t.name };
    if (t.name === '__metadata__') throw new SafetensorsError('BAD_HEADER', 'reserved tensor name', where);
    if (seen.has(t.name)) throw new SafetensorsError('DUPLICATE_TENSOR', 'name given twice', where);
    seen.add(t.name);
    if (!isDtype(t.dtype)) throw new SafetensorsError('BAD_DTYPE', `unknown dtype ${JSON.stringify(t.dtype)}`, where);
    if (!t.shape.every(isCount)) throw new SafetensorsError('BAD_HEADER', `shape [${t.shape}] is not non-negative integers`, where);
    const bytes = numel(t.shape) * DTYPE_SIZE[t.dtype];
    if (ArrayBuffer.isView(t.data) && t.data.byteLength !== bytes) {
      throw new SafetensorsError('SHAPE_MISMATCH', `data has ${t.data.byteLength} bytes, shape [${t.shape}] of ${t.dtype} needs ${bytes}`, where);
    }
    header[t.name] = { dtype: t.dtype, shape: [...t.shape], data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const padded = Buffer.alloc(8 + Math.ceil(json.length / 8) * 8, 0x20);
  padded.writeBigUInt64LE(BigInt(padded.length - 8), 0);
  json.copy(padded, 8);
  return padded;
}

async function writeAll(fh: FileHandle, buf: Buffer): Promise<void> {
  let done = 0;
  while (done < buf.length) done += (await fh.write(buf, done, buf.length - done)).bytesWritten;
}

/**
 * Writes a safetensors file atomically: temp file in the same directory, fsync, rename over the
 * target, fsync the directory. On any failure the temp file is removed and the old file is untouched.
 */
export async function writeSafetensors(
  path: string,
  tensors: readonly TensorToWrite[],
  metadata?: Record<string, string>,
): Promise<void> {
  if (!LITTLE_ENDIAN) throw new Error('big-endian hosts are not supported');
  const header = buildHeader(path, tensors, metadata); // validate everything before touching disk
  const dir = dirname(path);
  const tmp = join(dir, `.${basename(path)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  let fh: FileHandle | undefined;
  let current: string | undefined;
  try {
    fh = await open(tmp, 'wx');
    await writeAll(fh, header);
    for (const t of tensors) {
      current = t.name;
      const bytes = numel(t.shape) * DTYPE_SIZE[t.dtype];
      if (ArrayBuffer.isView(t.data)) {
        await writeAll(fh, asBuffer(t.data));
        continue;
      }
      let written = 0;
      for await (const chunk of t.data as AsyncIterable<ArrayBufferView>) {
        written += chunk.byteLength;
        if (written > bytes) break;
        await writeAll(fh, asBuffer(chunk));
      }
      if (written !== bytes) {
        throw new SafetensorsError('SHAPE_MISMATCH', `data chunks give ${written > bytes ? 'more than' : written} bytes, shape [${t.shape}] of ${t.dtype} needs ${bytes}`, { file: path, tensor: t.name });
      }
    }
    current = undefined;
    await fh.sync();
    await fh.close();
    fh = undefined;
    await rename(tmp, path);
  } catch (e) {
    await fh?.close().catch(() => {});
    await unlink(tmp).catch(() => {});
    if (e instanceof SafetensorsError) throw e;
    throw new SafetensorsError('WRITE_FAILED', `write failed: ${(e as Error)?.message ?? String(e)}`, {
      file: path,
      ...(current === undefined ? {} : { tensor: current }),
      cause: e,
    });
  }
  await syncDir(dir);
}

/** Makes the rename durable. Platforms that cannot fsync a directory (Windows) skip it. */
async function syncDir(dir: string): Promise<void> {
  let d: FileHandle | undefined;
  try {
    d = await open(dir, 'r');
    await d.sync();
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (!['EISDIR', 'EPERM', 'EINVAL', 'ENOTSUP', 'EACCES'].includes(code ?? '')) throw e;
  } finally {
    await d?.close().catch(() => {});
  }
}
