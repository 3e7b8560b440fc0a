/**
 * The hybrid-attention command line: `hybrid-attention <command> [options]`.
 * Exit codes: 0 ok, 1 runtime error, 2 bad command line, 130 stopped by SIGINT/abort (a
 * checkpoint was written where the command keeps one; --resume continues).
 * Development: `npx tsx lib/cli/main.ts <command> ...`; installed: bin/hybrid-attention.js.
 */
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { HybridAttentionError, NotImplementedError } from '../errors.js';
import { UsageError, helpText, parseCommand, type Parsed } from './args.js';
import { EXIT, type CliCommand, type CliContext } from './context.js';
import { JsonLog, type Output } from './progress.js';
import { benchCommand } from './commands/bench.js';
import { convertCommand } from './commands/convert.js';
import { diagnoseCommand } from './commands/diagnose.js';
import { finetuneCommand } from './commands/finetune.js';
import { generateCommand } from './commands/generate.js';
import { inspectCommand } from './commands/inspect.js';
import { pretrainCommand } from './commands/pretrain.js';

export const PROG = 'hybrid-attention';

export const COMMANDS: readonly CliCommand[] = [pretrainCommand, convertCommand, finetuneCommand, diagnoseCommand, generateCommand, benchCommand, inspectCommand];

export function mainHelp(): string {
  const lines = [
    `usage: ${PROG} <command> [options]`,
    '',
    'Hybrid linear / sliding-window attention: convert, train, diagnose and run models.',
    '',
    'commands:',
    ...COMMANDS.map((c) => `  ${c.spec.name.padEnd(10)} ${c.spec.summary}`),
    '',
    `Run '${PROG} <command> --help' for a command's options.`,
    'Exit codes: 0 ok, 1 error, 2 bad arguments, 130 interrupted (checkpoint written; continue with --resume).',
  ];
  return lines.join('\n') + '\n';
}

export interface RunOptions extends Partial<Output> {
  /** Aborting it stops long jobs cleanly (the CLI wires SIGINT/SIGTERM to one). */
  signal?: AbortSignal;
  cwd?: string;
}

const isAbort = (e: unknown) => e instanceof Error && (e.name === 'AbortError' || (e as { code?: string }).code === 'ABORT_ERR');

/** Runs one command line; resolves to the exit code (never calls process.exit). */
export async function run(argv: readonly string[], o: RunOptions = {}): Promise<number> {
  const stdout = o.stdout ?? process.stdout;
  const stderr = o.stderr ?? process.stderr;
  const [name, ...rest] = argv;
  if (name === undefined) {
    stderr.write(`${PROG}: missing command\n\n${mainHelp()}`);
    return EXIT.usage;
  }
  if (name === '--help' || name === '-h' || name === 'help') {
    stdout.write(mainHelp());
    return EXIT.ok;
  }
  if (name === '--version' || name === '-V') {
    const { readFileSync } = await import('node:fs');
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
    stdout.write(pkg.version + '\n');
    return EXIT.ok;
  }
  const cmd = COMMANDS.find((c) => c.spec.name === name);
  if (!cmd) {
    stderr.write(`${PROG}: unknown command '${name}' (commands: ${COMMANDS.map((c) => c.spec.name).join(', ')}; see '${PROG} --help')\n`);
    return EXIT.usage;
  }
  let parsed: Parsed;
  try {
    parsed = cmd.strict === false ? { values: {}, positionals: [...rest] } : parseCommand(cmd.spec, rest);
  } catch (e) {
    if (e instanceof UsageError) {
      stderr.write(`${PROG} ${name}: ${e.message}\n(see '${PROG} ${name} --help')\n`);
      return EXIT.usage;
    }
    throw e;
  }
  if (parsed.values.help) {
    stdout.write(helpText(cmd.spec, PROG));
    return EXIT.ok;
  }
  const json = new JsonLog(parsed.values['log-json'] === true ? stdout : undefined);
  const ctx: CliContext = { stdout, stderr, json, signal: o.signal ?? new AbortController().signal, cwd: o.cwd ?? process.cwd() };
  try {
    return await cmd.run(parsed, ctx, rest);
  } catch (e) {
    if (e instanceof UsageError) {
      stderr.write(`${PROG} ${name}: ${e.message}\n(see '${PROG} ${name} --help')\n`);
      return EXIT.usage;
    }
    if (isAbort(e) || (ctx.signal.aborted && !(e instanceof HybridAttentionError))) {
      stderr.write(`${PROG} ${name}: interrupted\n`);
      json.emit('interrupted', { command: name });
      return EXIT.interrupted;
    }
    const msg = e instanceof NotImplementedError ? `not implemented: ${e.message}` : e instanceof Error ? `${e.name === 'Error' ? '' : `${e.name}: `}${e.message}` : String(e);
    stderr.write(`${PROG} ${name}: ${msg}\n`);
    if (process.env.HYBRID_ATTENTION_DEBUG && e instanceof Error && e.stack) stderr.write(e.stack + '\n');
    json.emit('error', { command: name, error: e instanceof Error ? e.name : 'Error', message: e instanceof Error ? e.message : String(e) });
    return EXIT.error;
  }
}

/**
 * The process entry: SIGINT/SIGTERM abort the running command (a second SIGINT exits at once
 * with 130), then the process exits with the command's code.
 */
export async function main(argv: readonly string[] = process.argv.slice(2)): Promise<void> {
  const ac = new AbortController();
  let signals = 0;
  const onSignal = (sig: NodeJS.Signals) => {
    if (++signals > 1) {
      process.stderr.write(`\n${PROG}: second ${sig}, exiting without cleanup\n`);
      process.exit(EXIT.interrupted);
    }
    process.stderr.write(`\n${PROG}: ${sig} received, stopping cleanly (press Ctrl-C again to force)\n`);
    ac.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  let code: number;
  try {
    code = await run(argv, { signal: ac.signal });
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  process.exitCode = code;
  // Let stdout drain, then exit even if a handle (a worker of the addon) keeps the loop alive.
  await new Promise<void>((res) => (process.stdout.writableLength > 0 ? process.stdout.once('drain', res) : res()));
  process.exit(code);
}

function isEntry(): boolean {
  const script = process.argv[1];
  if (!script) return false;
  try {
    return realpathSync(script) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isEntry()) void main();
