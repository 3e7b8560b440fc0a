/** What a subcommand gets: output streams, the JSON log, and the signal that asks it to stop. */
import type { CommandSpec, Parsed } from './args.js';
import type { JsonLog, Output } from './progress.js';

export interface CliContext extends Output {
  /** Aborted on SIGINT/SIGTERM (or by the caller of run()): long jobs checkpoint and return EXIT.interrupted. */
  signal: AbortSignal;
  json: JsonLog;
  cwd: string;
}

export interface CliCommand {
  spec: CommandSpec;
  /** Parses strictly with spec (default); false passes raw argv through (bench). */
  strict?: boolean;
  run(args: Parsed, ctx: CliContext, rawArgv: readonly string[]): Promise<number>;
}

export const EXIT = {
  ok: 0,
  /** A runtime failure (typed library error, I/O, NotImplementedError). */
  error: 1,
  /** Bad command line. */
  usage: 2,
  /** Stopped by SIGINT/abort after writing a checkpoint (128 + SIGINT). */
  interrupted: 130,
} as const;
