/**
 * Argument parsing over node:util parseArgs (strict: unknown options and missing values are
 * errors), typed conversions and generated --help text. Every parse problem is a UsageError,
 * which the CLI reports on stderr with exit code 2.
 */
import { parseArgs } from 'node:util';
import { HybridAttentionError } from '../errors.js';

export class UsageError extends HybridAttentionError {
  constructor(
    message: string,
    readonly command?: string,
  ) {
    super(message);
  }
}

export interface OptionSpec {
  type: 'string' | 'boolean';
  short?: string;
  multiple?: boolean;
  /** Shown in help ('--seq-len N'). */
  value?: string;
  description: string;
  default?: string | boolean;
}

export interface CommandSpec {
  name: string;
  summary: string;
  /** e.g. '<checkpoint-dir>' */
  positionals?: { name: string; description: string; optional?: boolean; variadic?: boolean }[];
  options: Record<string, OptionSpec>;
  /** Extra help paragraphs. */
  notes?: string[];
}

/** Options every command takes. */
export const COMMON_OPTIONS: Record<string, OptionSpec> = {
  help: { type: 'boolean', short: 'h', description: 'show this help' },
  'log-json': { type: 'boolean', description: 'progress and results as JSON objects, one per line, on stdout' },
};

export type ParsedValues = Record<string, string | boolean | string[] | undefined>;

export interface Parsed {
  values: ParsedValues;
  positionals: string[];
}

export function parseCommand(spec: CommandSpec, argv: readonly string[]): Parsed {
  const all = { ...COMMON_OPTIONS, ...spec.options };
  const options: Record<string, { type: 'string' | 'boolean'; short?: string; multiple?: boolean }> = {};
  for (const [k, o] of Object.entries(all)) options[k] = { type: o.type, ...(o.short ? { short: o.short } : {}), ...(o.multiple ? { multiple: true } : {}) };
  let parsed;
  try {
    parsed = parseArgs({ args: [...argv], options, allowPositionals: true, strict: true });
  } catch (e) {
    // parseArgs messages are already clear ("Unknown option '--x'", "Option '--steps <value>' argument missing")
    throw new UsageError((e as Error).message.replace(/\. To specify a positional argument.*$/s, ''), spec.name);
  }
  const values: ParsedValues = { ...parsed.values } as ParsedValues;
  if (values.help) return { values, positionals: parsed.positionals };
  for (const [k, o] of Object.entries(all)) if (values[k] === undefined && o.default !== undefined) values[k] = o.default;
  const pos = spec.positionals ?? [];
  const required = pos.filter((p) => !p.optional).length;
  const variadic = pos.some((p) => p.variadic);
  if (parsed.positionals.length < required) throw new UsageError(`missing argument ${pos[parsed.positionals.length]!.name}`, spec.name);
  if (!variadic && parsed.positionals.length > pos.length) throw new UsageError(`unexpected argument '${parsed.positionals[pos.length]}'`, spec.name);
  return { values, positionals: parsed.positionals };
}

export function helpText(spec: CommandSpec, prog = 'hybrid-attention'): string {
  const pos = (spec.positionals ?? []).map((p) => (p.optional ? `[${p.name}${p.variadic ? '...' : ''}]` : `${p.name}${p.variadic ? '...' : ''}`));
  const lines = [`usage: ${prog} ${spec.name} [options] ${pos.join(' ')}`.trimEnd(), '', spec.summary, ''];
  if (spec.positionals?.length) {
    lines.push('arguments:');
    for (const p of spec.positionals) lines.push(`  ${p.name.padEnd(28)} ${p.description}`);
    lines.push('');
  }
  lines.push('options:');
  const all = { ...spec.options, ...COMMON_OPTIONS };
  for (const [k, o] of Object.entries(all)) {
    const flag = `${o.short ? `-${o.short}, ` : ''}--${k}${o.type === 'string' ? ` ${o.value ?? 'VALUE'}` : ''}`;
    const def = o.default !== undefined && o.type === 'string' ? ` (default ${o.default})` : '';
    lines.push(`  ${flag.padEnd(28)} ${o.description}${def}${o.multiple ? ' (repeatable)' : ''}`);
  }
  for (const n of spec.notes ?? []) lines.push('', n);
  return lines.join('\n') + '\n';
}

// ---- typed getters (UsageError naming the option)

export function str(v: ParsedValues, key: string): string | undefined {
  const x = v[key];
  if (Array.isArray(x)) return x.at(-1);
  return typeof x === 'string' ? x : undefined;
}

export function strs(v: ParsedValues, key: string): string[] {
  const x = v[key];
  if (x === undefined || typeof x === 'boolean') return [];
  return Array.isArray(x) ? x : [x];
}

export function bool(v: ParsedValues, key: string): boolean {
  return v[key] === true;
}

export function num(v: ParsedValues, key: string, o: { int?: boolean; min?: number; max?: number; positive?: boolean } = {}): number | undefined {
  const s = str(v, key);
  if (s === undefined) return undefined;
  const x = Number(s);
  const bad = (what: string) => new UsageError(`--${key} must be ${what}, got '${s}'`);
  if (s.trim() === '' || !Number.isFinite(x)) throw bad(o.int ? 'an integer' : 'a number');
  if (o.int && !Number.isInteger(x)) throw bad('an integer');
  if (o.positive && !(x > 0)) throw bad('> 0');
  if (o.min !== undefined && x < o.min) throw bad(`>= ${o.min}`);
  if (o.max !== undefined && x > o.max) throw bad(`<= ${o.max}`);
  return x;
}

export function choice<T extends string>(v: ParsedValues, key: string, allowed: readonly T[]): T | undefined {
  const s = str(v, key);
  if (s === undefined) return undefined;
  if (!(allowed as readonly string[]).includes(s)) throw new UsageError(`--${key} must be one of ${allowed.join(', ')}, got '${s}'`);
  return s as T;
}

export function required<T>(x: T | undefined, key: string): T {
  if (x === undefined) throw new UsageError(`--${key} is required`);
  return x;
}
