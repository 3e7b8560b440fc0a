/**
 * Progress on stderr (a redrawn bar with ETA, tokens/s and loss on a TTY; plain lines at most
 * every few seconds otherwise) and JSON logs (one object per line, --log-json) on stdout.
 */
import type { Writable } from 'node:stream';

export interface Output {
  stdout: Writable & { isTTY?: boolean };
  stderr: Writable & { isTTY?: boolean; columns?: number };
}

/** One JSON object per line: {"time": ISO, "event": ..., ...fields}. */
export class JsonLog {
  constructor(private readonly out: Writable | undefined) {}
  get enabled(): boolean {
    return this.out !== undefined;
  }
  emit(event: string, fields: Record<string, unknown> = {}): void {
    if (!this.out) return;
    this.out.write(JSON.stringify({ time: new Date().toISOString(), event, ...fields }, (_k, v) => (typeof v === 'number' && !Number.isFinite(v) ? null : v)) + '\n');
  }
}

export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '--:--';
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}

export function formatRate(x: number): string {
  if (!Number.isFinite(x)) return '-';
  if (x >= 1e6) return `${(x / 1e6).toFixed(2)}M`;
  if (x >= 1e3) return `${(x / 1e3).toFixed(1)}k`;
  return x.toFixed(1);
}

export interface ProgressUpdate {
  /** Units done so far (steps, sequences, items), counted from the start of the job (resumed ones too). */
  done: number;
  /** Tokens processed in this process (for tokens/s). */
  tokens?: number;
  loss?: number;
  [key: string]: unknown;
}

export interface ProgressOptions {
  label: string;
  total?: number;
  /** Units already done when this process started (resume): excluded from rates and ETA. */
  initial?: number;
  unit?: string;
  /** Minimum time between plain (non-TTY) lines, ms (default 2000; the first and last always print). */
  plainIntervalMs?: number;
  /** Force TTY / plain rendering (default: stderr.isTTY). */
  tty?: boolean;
  /** JSON log: progress events go there instead of the bar. */
  json?: JsonLog;
}

export class Progress {
  private readonly start = Date.now();
  private lastDraw = 0;
  private lastLine = '';
  private readonly tty: boolean;
  private last: ProgressUpdate | undefined;

  constructor(
    private readonly out: Output,
    private readonly o: ProgressOptions,
  ) {
    this.tty = o.tty ?? !!out.stderr.isTTY;
  }

  private line(u: ProgressUpdate, final: boolean): string {
    const elapsed = (Date.now() - this.start) / 1000;
    const fresh = u.done - (this.o.initial ?? 0);
    const total = this.o.total;
    const parts: string[] = [];
    if (total !== undefined && total > 0) {
      const frac = Math.min(1, u.done / total);
      const count = `${u.done}/${total} ${this.o.unit ?? ''}`.trimEnd();
      const width = 24;
      const fill = Math.round(frac * width);
      parts.push(this.tty ? `[${'#'.repeat(fill)}${'-'.repeat(width - fill)}] ${count}` : count, `${(frac * 100).toFixed(0)}%`);
    } else parts.push(`${u.done} ${this.o.unit ?? ''}`.trimEnd());
    if (u.tokens !== undefined && elapsed > 0) parts.push(`${formatRate(u.tokens / elapsed)} tok/s`);
    if (u.loss !== undefined && Number.isFinite(u.loss)) parts.push(`loss ${u.loss.toFixed(4)}`);
    if (final) parts.push(`done in ${formatDuration(elapsed)}`);
    else if (total !== undefined && fresh > 0) parts.push(`ETA ${formatDuration(((total - u.done) * elapsed) / fresh)}`);
    return `${this.o.label} ${parts.join(' | ')}`;
  }

  update(u: ProgressUpdate): void {
    this.last = u;
    if (this.o.json?.enabled) {
      this.o.json.emit('progress', { label: this.o.label, total: this.o.total, elapsed_s: (Date.now() - this.start) / 1000, ...u });
      return;
    }
    const now = Date.now();
    if (this.tty) {
      if (now - this.lastDraw < 100 && u.done !== this.o.total) return;
      const cols = this.out.stderr.columns ?? 120;
      this.lastLine = this.line(u, false).slice(0, cols - 1);
      this.out.stderr.write(`\r${this.lastLine}\x1b[K`);
      this.lastDraw = now;
    } else {
      if (this.lastDraw !== 0 && now - this.lastDraw < (this.o.plainIntervalMs ?? 2000)) return;
      this.out.stderr.write(this.line(u, false) + '\n');
      this.lastDraw = now;
    }
  }

  /** Clears the bar line (TTY) before other output. */
  clear(): void {
    if (this.tty && this.lastLine) this.out.stderr.write('\r\x1b[K');
  }

  finish(message?: string): void {
    if (this.o.json?.enabled) {
      this.o.json.emit('progress_end', { label: this.o.label, elapsed_s: (Date.now() - this.start) / 1000, ...(this.last ?? {}), ...(message ? { message } : {}) });
      return;
    }
    const text = message ?? (this.last ? this.line(this.last, true) : `${this.o.label} done`);
    if (this.tty) this.out.stderr.write(`\r${text}\x1b[K\n`);
    else this.out.stderr.write(text + '\n');
  }
}
