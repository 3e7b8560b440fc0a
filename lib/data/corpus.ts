/**
 * Corpora as re-iterable streams of documents: plain text (one document per line or per
 * blank-line-separated paragraph), JSONL (a text field, or Alpaca-style records rendered with a
 * template), or in-memory texts. Files are streamed line by line; nothing reads a whole file.
 */
import { InvalidArgumentError } from '../errors.js';
import { readLines } from './lines.js';

export interface Document {
  text: string;
  /** 0-based index of the document in its corpus. */
  index: number;
  /** File (and line) it came from, for messages. */
  source?: string;
}

/** A corpus can be iterated any number of times (train, then validation, next epoch, ...). */
export interface Corpus {
  documents(signal?: AbortSignal): AsyncIterable<Document>;
}

export interface TextCorpusOptions {
  /**
   * 'paragraph' (default): documents are separated by blank lines, the lines of one document
   * joined with '\n'. 'line': every non-empty line is a document.
   */
  split?: 'paragraph' | 'line';
  /** A paragraph longer than this is cut into several documents (default 1,000,000 chars). */
  maxDocChars?: number;
}

const asList = (paths: string | readonly string[]) => (typeof paths === 'string' ? [paths] : [...paths]);

/** Plain-text files, read line by line. */
export function textCorpus(paths: string | readonly string[], o: TextCorpusOptions = {}): Corpus {
  const files = asList(paths);
  const split = o.split ?? 'paragraph';
  if (split !== 'paragraph' && split !== 'line') throw new InvalidArgumentError(`split must be 'paragraph' or 'line', got '${String(split)}'`, 'split');
  const maxChars = o.maxDocChars ?? 1_000_000;
  return {
    async *documents(signal?: AbortSignal) {
      let index = 0;
      for (const file of files) {
        if (split === 'line') {
          for await (const line of readLines(file, signal ? { signal } : {})) if (line.trim() !== '') yield { text: line, index: index++, source: file };
          continue;
        }
        let parts: string[] = [];
        let chars = 0;
        const flush = () => {
          const text = parts.join('\n');
          parts = [];
          chars = 0;
          return text;
        };
        for await (const line of readLines(file, signal ? { signal } : {})) {
          if (line.trim() === '') {
            if (parts.length > 0) yield { text: flush(), index: index++, source: file };
            continue;
          }
          parts.push(line);
          chars += line.length + 1;
          if (chars >= maxChars) yield { text: flush(), index: index++, source: file };
        }
        if (parts.length > 0) yield { text: flush(), index: index++, source: file };
      }
    },
  };
}

/** An Alpaca-style record. */
export interface InstructionRecord {
  instruction?: string;
  input?: string;
  output?: string;
  [key: string]: unknown;
}

/** Stanford Alpaca's prompts (with and without an input), followed by the response. */
export const ALPACA_TEMPLATE = {
  withInput:
    'Below is an instruction that describes a task, paired with an input that provides further context. ' +
    'Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n{output}',
  withoutInput:
    'Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n' +
    '### Instruction:\n{instruction}\n\n### Response:\n{output}',
} as const;

export type RecordTemplate =
  | 'alpaca'
  | string
  | { withInput: string; withoutInput: string }
  | ((record: Record<string, unknown>) => string);

/** Replaces {name} with record[name] (missing -> ''); '{{' and '}}' are literal braces. */
export function fillTemplate(template: string, record: Record<string, unknown>): string {
  return template.replace(/\{\{|\}\}|\{([A-Za-z0-9_.]+)\}/g, (m, name: string | undefined) => {
    if (m === '{{') return '{';
    if (m === '}}') return '}';
    const v = getPath(record, name!);
    return v === undefined || v === null ? '' : String(v);
  });
}

/** Renders a record with a template ('alpaca', a '{field}' string, a with/without-input pair, or a function). */
export function renderRecord(record: Record<string, unknown>, template: RecordTemplate): string {
  if (typeof template === 'function') return template(record);
  const t = template === 'alpaca' ? ALPACA_TEMPLATE : template;
  if (typeof t === 'string') return fillTemplate(t, record);
  const input = record.input;
  const hasInput = typeof input === 'string' ? input.trim() !== '' : input !== undefined && input !== null;
  return fillTemplate(hasInput ? t.withInput : t.withoutInput, record);
}

function getPath(record: unknown, path: string): unknown {
  let v: unknown = record;
  for (const k of path.split('.')) {
    if (typeof v !== 'object' || v === null) return undefined;
    v = (v as Record<string, unknown>)[k];
  }
  return v;
}

export interface JsonlCorpusOptions {
  /** Field holding the text (dotted paths allowed), default 'text'. Ignored when template is set. */
  field?: string;
  /** Render each record with a template instead ('alpaca' for {instruction, input, output}). */
  template?: RecordTemplate;
  /** Invalid JSON or a missing field: 'throw' (default, naming file and line) or 'skip'. */
  onInvalid?: 'throw' | 'skip';
}

/** JSONL files: one JSON object per line (blank lines ignored). */
export function jsonlCorpus(paths: string | readonly string[], o: JsonlCorpusOptions = {}): Corpus {
  const files = asList(paths);
  const field = o.field ?? 'text';
  const skip = o.onInvalid === 'skip';
  return {
    async *documents(signal?: AbortSignal) {
      let index = 0;
      for (const file of files) {
        let lineNo = 0;
        for await (const line of readLines(file, signal ? { signal } : {})) {
          lineNo++;
          if (line.trim() === '') continue;
          let rec: unknown;
          try {
            rec = JSON.parse(line);
          } catch (e) {
            if (skip) continue;
            throw new InvalidArgumentError(`${file}:${lineNo}: invalid JSON (${(e as Error).message})`, 'path');
          }
          if (typeof rec !== 'object' || rec === null || Array.isArray(rec)) {
            if (skip) continue;
            throw new InvalidArgumentError(`${file}:${lineNo}: expected a JSON object`, 'path');
          }
          let text: string;
          if (o.template !== undefined) text = renderRecord(rec as Record<string, unknown>, o.template);
          else {
            const v = getPath(rec, field);
            if (typeof v !== 'string') {
              if (skip) continue;
              throw new InvalidArgumentError(`${file}:${lineNo}: field '${field}' is ${v === undefined ? 'missing' : 'not a string'}`, 'field');
            }
            text = v;
          }
          if (text === '') continue;
          yield { text, index: index++, source: `${file}:${lineNo}` };
        }
      }
    },
  };
}

/** Texts held in memory (tests, small prompts sets). */
export function arrayCorpus(texts: readonly string[]): Corpus {
  return {
    async *documents() {
      let index = 0;
      for (const text of texts) yield { text, index: index++ };
    },
  };
}

/** Picks textCorpus or jsonlCorpus by extension (.jsonl / .ndjson / .json -> JSONL). */
export function fileCorpus(paths: string | readonly string[], o: TextCorpusOptions & JsonlCorpusOptions & { format?: 'text' | 'jsonl' } = {}): Corpus {
  const files = asList(paths);
  const format = o.format ?? (files.every((f) => /\.(jsonl|ndjson|json)$/i.test(f)) ? 'jsonl' : 'text');
  return format === 'jsonl' ? jsonlCorpus(files, o) : textCorpus(files, o);
}
