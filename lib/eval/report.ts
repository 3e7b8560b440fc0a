/**
 * The paper-style diagnostics table (SPEC sec. 6): rows = attention modes, columns = metrics,
 * with recovered performance (metric / base-model metric) and the two gaps that decide whether
 * linear attention is used: (hybrid - swa) and (la - none), both oriented so that > 0 means
 * "better" (for lower-is-better metrics such as perplexity the sign is flipped: swa - hybrid).
 */
import { InvalidArgumentError } from '../errors.js';

/** The modes of SPEC sec. 2 that diagnostics evaluate, in table order. */
export const DIAGNOSTIC_MODES = ['hybrid', 'swa', 'la', 'la-full', 'sinks', 'none'] as const;

export interface MetricSpec {
  key: string;
  label: string;
  higherIsBetter: boolean;
  /** Digits after the point in the text table. */
  digits?: number;
}

/** Metrics diagnose() produces (any other key is shown with its own name, higher = better). */
export const METRICS: readonly MetricSpec[] = [
  { key: 'ppl', label: 'PPL', higherIsBetter: false, digits: 2 },
  { key: 'ppl_early', label: 'PPL n<w', higherIsBetter: false, digits: 2 },
  { key: 'ppl_late', label: 'PPL n>=w', higherIsBetter: false, digits: 2 },
  { key: 'mc_acc', label: 'MC acc', higherIsBetter: true, digits: 3 },
  { key: 'mc_acc_norm', label: 'MC acc_norm', higherIsBetter: true, digits: 3 },
  { key: 'passkey_em', label: 'passkey EM', higherIsBetter: true, digits: 3 },
  { key: 'passkey_acc', label: 'passkey acc', higherIsBetter: true, digits: 3 },
  { key: 'assoc_em', label: 'assoc EM', higherIsBetter: true, digits: 3 },
  { key: 'assoc_acc', label: 'assoc acc', higherIsBetter: true, digits: 3 },
];

export function metricSpec(key: string, extra: readonly MetricSpec[] = []): MetricSpec {
  return extra.find((m) => m.key === key) ?? METRICS.find((m) => m.key === key) ?? { key, label: key, higherIsBetter: true, digits: 3 };
}

export interface ModeMetrics {
  mode: string;
  metrics: Record<string, number>;
}

export interface Gap {
  /** quality(hybrid) - quality(swa): > 0 means the LA branch adds something. */
  hybridMinusSwa: number | null;
  /** quality(la) - quality(none): > 0 means LA alone does better than no attention. */
  laMinusNone: number | null;
}

export interface DiagnosticsReport {
  model?: string;
  window?: number;
  metrics: string[];
  modes: ModeMetrics[];
  /** The base (pretrained, softmax) model's metrics. */
  base?: Record<string, number>;
  /** metric / base metric per mode and metric (absent without base). */
  recovered?: Record<string, Record<string, number>>;
  gaps: Record<string, Gap>;
  /** LA share of the normaliser per [layer][head] (SPEC sec. 2), when measured. */
  laShare?: number[][];
  /** Learned gamma per [layer][head]. */
  gammas?: number[][];
  notes?: string[];
}

export interface BuildReportOptions {
  model?: string;
  window?: number;
  base?: Record<string, number>;
  laShare?: number[][];
  gammas?: number[][];
  metricSpecs?: readonly MetricSpec[];
  notes?: string[];
}

/** Assembles a report from per-mode metrics (metric columns: the union, in METRICS order first). */
export function buildReport(modes: readonly ModeMetrics[], o: BuildReportOptions = {}): DiagnosticsReport {
  if (!Array.isArray(modes)) throw new InvalidArgumentError('modes must be an array of { mode, metrics }', 'modes');
  const keys = new Set<string>();
  for (const m of modes) for (const k of Object.keys(m.metrics)) keys.add(k);
  const known = METRICS.map((m) => m.key).filter((k) => keys.has(k));
  const metrics = [...known, ...[...keys].filter((k) => !known.includes(k))];
  const by = new Map(modes.map((m) => [m.mode, m.metrics]));
  const quality = (mode: string, k: string): number | null => {
    const v = by.get(mode)?.[k];
    if (v === undefined || !Number.isFinite(v)) return null;
    return metricSpec(k, o.metricSpecs).higherIsBetter ? v : -v;
  };
  const diff = (a: string, b: string, k: string) => {
    const x = quality(a, k);
    const y = quality(b, k);
    return x === null || y === null ? null : x - y;
  };
  const gaps: Record<string, Gap> = {};
  for (const k of metrics) gaps[k] = { hybridMinusSwa: diff('hybrid', 'swa', k), laMinusNone: diff('la', 'none', k) };
  const report: DiagnosticsReport = { metrics, modes: modes.map((m) => ({ mode: m.mode, metrics: { ...m.metrics } })), gaps };
  if (o.model !== undefined) report.model = o.model;
  if (o.window !== undefined) report.window = o.window;
  if (o.base) {
    report.base = { ...o.base };
    report.recovered = {};
    for (const m of modes) {
      const r: Record<string, number> = {};
      for (const k of metrics) {
        const b = o.base[k];
        const v = m.metrics[k];
        if (b !== undefined && v !== undefined && b !== 0) r[k] = v / b;
      }
      report.recovered[m.mode] = r;
    }
  }
  if (o.laShare) report.laShare = o.laShare;
  if (o.gammas) report.gammas = o.gammas;
  if (o.notes) report.notes = o.notes;
  return report;
}

function fmt(v: number | undefined | null, digits: number): string {
  if (v === undefined || v === null) return '-';
  if (Number.isNaN(v)) return 'n/a';
  if (!Number.isFinite(v)) return v > 0 ? 'inf' : '-inf';
  return v.toFixed(digits);
}

function signed(v: number | null, digits: number): string {
  if (v === null) return '-';
  return (v > 0 ? '+' : '') + v.toFixed(digits);
}

/** The table as aligned text (one row per mode; "value (recovered %)" when a base is given). */
export function formatReport(r: DiagnosticsReport, o: { metricSpecs?: readonly MetricSpec[] } = {}): string {
  const specs = r.metrics.map((k) => metricSpec(k, o.metricSpecs));
  const header = ['mode', ...specs.map((s) => s.label + (s.higherIsBetter ? ' ↑' : ' ↓'))];
  const rows: string[][] = [];
  if (r.base) rows.push(['base', ...specs.map((s) => fmt(r.base![s.key], s.digits ?? 3))]);
  for (const m of r.modes)
    rows.push([
      m.mode,
      ...specs.map((s) => {
        const v = fmt(m.metrics[s.key], s.digits ?? 3);
        const rec = r.recovered?.[m.mode]?.[s.key];
        return rec === undefined || !Number.isFinite(rec) ? v : `${v} (${(100 * rec).toFixed(0)}%)`;
      }),
    ]);
  const widths = header.map((h, j) => Math.max(h.length, ...rows.map((row) => row[j]!.length)));
  const line = (cells: string[]) => cells.map((c, j) => (j === 0 ? c.padEnd(widths[j]!) : c.padStart(widths[j]!))).join('  ');
  const out: string[] = [];
  const title = ['Diagnostics', r.model ? `for ${r.model}` : '', r.window !== undefined ? `(window w = ${r.window})` : ''].filter(Boolean).join(' ');
  out.push(title, line(header), widths.map((w) => '-'.repeat(w)).join('  '));
  for (const row of rows) out.push(line(row));
  const gapRows = specs.filter((s) => r.gaps[s.key] && (r.gaps[s.key]!.hybridMinusSwa !== null || r.gaps[s.key]!.laMinusNone !== null));
  if (gapRows.length > 0) {
    out.push('', 'Is LA used? (quality gaps; > 0 = better; lower-is-better metrics sign-flipped)');
    for (const s of gapRows) {
      const g = r.gaps[s.key]!;
      out.push(`  ${s.label.padEnd(12)} hybrid - swa: ${signed(g.hybridMinusSwa, s.digits ?? 3).padStart(9)}   la - none: ${signed(g.laMinusNone, s.digits ?? 3).padStart(9)}`);
    }
  }
  if (r.recovered) out.push('', '(x%) = recovered performance: metric / base-model metric');
  for (const n of r.notes ?? []) out.push(`note: ${n}`);
  return out.join('\n') + '\n';
}

/** The report as pretty JSON (NaN and infinities become null). */
export function reportToJson(r: DiagnosticsReport): string {
  return JSON.stringify(r, (_k, v) => (typeof v === 'number' && !Number.isFinite(v) ? null : v), 2) + '\n';
}
