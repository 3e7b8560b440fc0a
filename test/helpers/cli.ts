/** Helpers for in-process CLI tests: run the CLI with captured output and parse its JSON logs. */
import { writeFile } from 'node:fs/promises';
import { Writable } from 'node:stream';
import { run } from '../../lib/cli/main.js';
import { projectRoot } from './fixtures.js';

// The CPU suite runs the CLI on the CPU even where a GPU is usable (--device auto would pick it).
process.env.HYBRID_ATTENTION_DEVICE ??= 'cpu';

/** A Writable that collects text. */
export function sink(onWrite?: (all: string) => void): Writable & { text: string } {
  const w = new Writable({
    write(chunk: Buffer, _enc, cb) {
      w.text += chunk.toString();
      onWrite?.(w.text);
      cb();
    },
  }) as Writable & { text: string };
  w.text = '';
  return w;
}

/** Runs the CLI in this process; returns its exit code and what it printed. */
export async function runCli(args: string[], o: { signal?: AbortSignal; onStdout?: (all: string) => void } = {}) {
  const stdout = sink(o.onStdout);
  const stderr = sink();
  const code = await run(args, { stdout, stderr, cwd: projectRoot, ...(o.signal ? { signal: o.signal } : {}) });
  return { code, stdout: stdout.text, stderr: stderr.text };
}

/** The JSON-log events (--log-json) of a run's stdout. */
export const events = (stdout: string) =>
  stdout
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown> & { event: string });

/** A small English corpus of `paragraphs` paragraphs. */
export async function writeCorpus(path: string, paragraphs: number): Promise<void> {
  const para = 'The jury said the election was conducted well and the city deserves praise for the manner of it.';
  await writeFile(path, Array.from({ length: paragraphs }, (_, i) => `${para} Paragraph ${i}.`).join('\n\n'));
}
