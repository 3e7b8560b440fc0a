/**
 * Line-by-line reading of files of any size: the read stream is pulled chunk by chunk (64 KiB),
 * so memory stays bounded by the chunk size plus the longest line, never the file.
 */
import { createReadStream } from 'node:fs';
import { InvalidArgumentError } from '../errors.js';

export interface ReadLinesOptions {
  signal?: AbortSignal;
  /** Chunk size of the read stream (default 64 KiB). */
  chunkBytes?: number;
  /** A line longer than this throws (default 256 MiB of characters): guards against binary input. */
  maxLineChars?: number;
}

/** Lines of a UTF-8 file ('\n' or '\r\n' endings removed; a final line without '\n' is kept). */
export async function* readLines(path: string, o: ReadLinesOptions = {}): AsyncGenerator<string> {
  const maxLine = o.maxLineChars ?? 256 * 1024 * 1024;
  const stream = createReadStream(path, { encoding: 'utf8', highWaterMark: o.chunkBytes ?? 64 * 1024 });
  let rest = '';
  try {
    for await (const chunk of stream as AsyncIterable<string>) {
      o.signal?.throwIfAborted();
      let text = rest + chunk;
      let start = 0;
      let nl: number;
      while ((nl = text.indexOf('\n', start)) !== -1) {
        const end = nl > start && text.charCodeAt(nl - 1) === 13 ? nl - 1 : nl;
        yield text.slice(start, end);
        start = nl + 1;
      }
      rest = text.slice(start);
      text = '';
      if (rest.length > maxLine) throw new InvalidArgumentError(`${path}: a line is longer than ${maxLine} characters`, 'path');
    }
    if (rest.length > 0) yield rest.endsWith('\r') ? rest.slice(0, -1) : rest;
  } finally {
    stream.destroy();
  }
}
