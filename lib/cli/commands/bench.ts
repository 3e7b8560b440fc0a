/** `bench [flags]`: runs the benchmark bench/run.ts through tsx, passing every flag through. */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NotImplementedError } from '../../errors.js';
import { helpText } from '../args.js';
import { EXIT, type CliCommand } from '../context.js';

/** The package root (lib/cli/commands/*.ts and dist/cli/commands/*.js both sit three levels below). */
export function packageRoot(): string {
  return resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
}

export function benchScript(): string {
  return join(packageRoot(), 'bench', 'run.ts');
}

/** Spawns `node <tsx cli> bench/run.ts ...args`; resolves to its exit code (SIGINT reaches it through the process group). */
export async function runBench(args: readonly string[], o: { signal?: AbortSignal; stdio?: 'inherit' | 'pipe'; onOutput?: (s: string) => void } = {}): Promise<number> {
  const script = benchScript();
  if (!existsSync(script)) throw new NotImplementedError(`bench: ${script} not found (the benchmark ships with the source repository, not the npm package)`);
  let tsxCli: string;
  try {
    tsxCli = createRequire(import.meta.url).resolve('tsx/cli');
  } catch {
    throw new NotImplementedError('bench: needs tsx (npm install --save-dev tsx)');
  }
  const child = spawn(process.execPath, [tsxCli, script, ...args], { cwd: packageRoot(), stdio: o.stdio ?? 'inherit', env: process.env });
  if (o.stdio === 'pipe') {
    child.stdout?.on('data', (d: Buffer) => o.onOutput?.(d.toString()));
    child.stderr?.on('data', (d: Buffer) => o.onOutput?.(d.toString()));
  }
  const onAbort = () => child.kill('SIGINT');
  o.signal?.addEventListener('abort', onAbort, { once: true });
  try {
    return await new Promise<number>((res, rej) => {
      child.on('error', rej);
      child.on('close', (code, sig) => res(code ?? (sig === 'SIGINT' ? EXIT.interrupted : EXIT.error)));
    });
  } finally {
    o.signal?.removeEventListener('abort', onAbort);
  }
}

export const benchCommand: CliCommand = {
  strict: false,
  spec: {
    name: 'bench',
    summary: 'Time hybrid attention forward/backward per shape (bench/run.ts via tsx); every flag is passed through.',
    options: {
      json: { type: 'boolean', description: 'machine-readable output (bench)' },
      device: { type: 'string', value: 'auto|cpu|cuda', description: 'device to time (bench)' },
      quick: { type: 'boolean', description: 'fewer shapes and repetitions (bench)' },
      peers: { type: 'string', value: 'FILE', description: 'merge PyTorch peer timings from bench/peers.py (bench)' },
    },
    notes: ['The flags are checked by bench/run.ts itself (unknown flags exit with code 2).'],
  },
  async run(_parsed, ctx, raw) {
    if (raw.includes('--help') || raw.includes('-h')) {
      ctx.stdout.write(helpText(benchCommand.spec));
      return EXIT.ok;
    }
    const out = ctx.stdout as unknown as { fd?: number };
    const inherit = out === (process.stdout as unknown) || out.fd === 1;
    return runBench(raw, { signal: ctx.signal, ...(inherit ? {} : { stdio: 'pipe' as const, onOutput: (s: string) => ctx.stdout.write(s) }) });
  },
};
