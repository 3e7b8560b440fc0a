/**
 * Dependency-free SVG figures for reports: the LA-share heatmap (layer x head), a metric-by-mode
 * bar chart and training curves (loss vs step). Each returns a standalone SVG document string;
 * cells carry class="cell", bars class="bar", curves class="line" (and a <title> tooltip).
 */
import { InvalidArgumentError } from '../errors.js';

export function escapeXml(s: string): string {
  return s.replace(/[<>&"']/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;', "'": '&apos;' })[c]!);
}

const num = (x: number) => (Math.round(x * 100) / 100).toString();

function svgDoc(width: number, height: number, body: string[], title?: string): string {
  return [
    `<?xml version="1.0" encoding="UTF-8"?>`,
    `<svg xmlns="http://www.w3.org/2000/svg" width="${num(width)}" height="${num(height)}" viewBox="0 0 ${num(width)} ${num(height)}" font-family="sans-serif" font-size="12">`,
    `<rect x="0" y="0" width="${num(width)}" height="${num(height)}" fill="white"/>`,
    ...(title ? [`<text x="${num(width / 2)}" y="18" text-anchor="middle" font-size="14" font-weight="bold">${escapeXml(title)}</text>`] : []),
    ...body,
    `</svg>`,
    '',
  ].join('\n');
}

/** Blue scale from near-white (t = 0) to dark blue (t = 1). */
function blue(t: number): string {
  const c = Math.min(1, Math.max(0, t));
  const lerp = (a: number, b: number) => Math.round(a + (b - a) * c);
  return `rgb(${lerp(247, 8)},${lerp(251, 48)},${lerp(255, 107)})`;
}

const PALETTE = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'];

function niceTicks(lo: number, hi: number, n = 5): number[] {
  if (!(hi > lo)) return [lo];
  const step0 = (hi - lo) / n;
  const mag = 10 ** Math.floor(Math.log10(step0));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= step0)!;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

export interface HeatmapOptions {
  title?: string;
  rowLabel?: string;
  colLabel?: string;
  /** Colour scale bounds (default 0 .. 1, the range of an LA share). */
  min?: number;
  max?: number;
  cell?: number;
}

/** Heatmap of values[row][col] (e.g. LA share per layer x head); NaN cells are grey. */
export function heatmapSvg(values: readonly (readonly number[])[], o: HeatmapOptions = {}): string {
  if (!Array.isArray(values) || values.length === 0) throw new InvalidArgumentError('heatmap needs at least one row', 'values');
  const rows = values.length;
  const cols = Math.max(...values.map((r) => r.length));
  const cell = o.cell ?? (Math.max(rows, cols) > 24 ? 14 : 28);
  const min = o.min ?? 0;
  const max = o.max ?? 1;
  const left = 70;
  const top = 40;
  const width = left + cols * cell + 90;
  const height = top + rows * cell + 50;
  const body: string[] = [];
  values.forEach((row, i) =>
    row.forEach((v: number, j: number) => {
      const fill = Number.isFinite(v) ? blue((v - min) / (max - min || 1)) : '#cccccc';
      body.push(
        `<rect class="cell" x="${num(left + j * cell)}" y="${num(top + i * cell)}" width="${cell}" height="${cell}" fill="${fill}" stroke="white" stroke-width="1"><title>${escapeXml(`${o.rowLabel ?? 'layer'} ${i}, ${o.colLabel ?? 'head'} ${j}: ${Number.isFinite(v) ? v.toFixed(4) : 'n/a'}`)}</title></rect>`,
      );
    }),
  );
  const every = (n: number) => Math.max(1, Math.ceil(n / 16));
  for (let i = 0; i < rows; i += every(rows)) body.push(`<text x="${left - 6}" y="${num(top + (i + 0.5) * cell + 4)}" text-anchor="end">${i}</text>`);
  for (let j = 0; j < cols; j += every(cols)) body.push(`<text x="${num(left + (j + 0.5) * cell)}" y="${num(top + rows * cell + 16)}" text-anchor="middle">${j}</text>`);
  body.push(`<text x="${num(left + (cols * cell) / 2)}" y="${num(top + rows * cell + 36)}" text-anchor="middle">${escapeXml(o.colLabel ?? 'head')}</text>`);
  body.push(`<text x="16" y="${num(top + (rows * cell) / 2)}" text-anchor="middle" transform="rotate(-90 16 ${num(top + (rows * cell) / 2)})">${escapeXml(o.rowLabel ?? 'layer')}</text>`);
  // colour bar
  const bx = left + cols * cell + 20;
  const bh = Math.max(60, rows * cell);
  body.push(`<defs><linearGradient id="scale" x1="0" y1="1" x2="0" y2="0"><stop offset="0" stop-color="${blue(0)}"/><stop offset="1" stop-color="${blue(1)}"/></linearGradient></defs>`);
  body.push(`<rect x="${bx}" y="${top}" width="14" height="${bh}" fill="url(#scale)" stroke="#888"/>`);
  body.push(`<text x="${bx + 18}" y="${top + 10}">${escapeXml(String(max))}</text>`);
  body.push(`<text x="${bx + 18}" y="${top + bh}">${escapeXml(String(min))}</text>`);
  return svgDoc(width, height, body, o.title);
}

export interface BarSeries {
  name: string;
  values: readonly number[];
}

export interface BarChartOptions {
  title?: string;
  yLabel?: string;
  /** Y axis minimum (default min(0, smallest value)). */
  yMin?: number;
  yMax?: number;
}

/** Grouped bar chart: one group per category (e.g. mode), one bar per series (e.g. metric). */
export function barChartSvg(categories: readonly string[], series: readonly BarSeries[], o: BarChartOptions = {}): string {
  if (categories.length === 0 || series.length === 0) throw new InvalidArgumentError('bar chart needs categories and series', 'categories');
  for (const s of series)
    if (s.values.length !== categories.length) throw new InvalidArgumentError(`series '${s.name}' has ${s.values.length} values for ${categories.length} categories`, 'series');
  const finite = series.flatMap((s) => s.values.filter(Number.isFinite));
  const yMin = o.yMin ?? Math.min(0, ...finite);
  let yMax = o.yMax ?? Math.max(0, ...finite);
  if (!(yMax > yMin)) yMax = yMin + 1;
  const left = 60;
  const top = 40;
  const plotH = 240;
  const group = Math.max(40, series.length * 18 + 16);
  const plotW = categories.length * group;
  const width = left + plotW + (series.length > 1 ? 140 : 20);
  const height = top + plotH + 50;
  const y = (v: number) => top + plotH - ((v - yMin) / (yMax - yMin)) * plotH;
  const body: string[] = [];
  for (const t of niceTicks(yMin, yMax)) {
    body.push(`<line x1="${left}" y1="${num(y(t))}" x2="${num(left + plotW)}" y2="${num(y(t))}" stroke="#eee"/>`);
    body.push(`<text x="${left - 6}" y="${num(y(t) + 4)}" text-anchor="end">${escapeXml(String(t))}</text>`);
  }
  const barW = (group - 16) / series.length;
  categories.forEach((c, i) => {
    series.forEach((s, k) => {
      const v = s.values[i]!;
      if (!Number.isFinite(v)) return;
      const y0 = y(Math.min(yMax, Math.max(yMin, 0)));
      const y1 = y(Math.min(yMax, Math.max(yMin, v)));
      body.push(
        `<rect class="bar" x="${num(left + i * group + 8 + k * barW)}" y="${num(Math.min(y0, y1))}" width="${num(barW - 2)}" height="${num(Math.abs(y1 - y0))}" fill="${PALETTE[k % PALETTE.length]}"><title>${escapeXml(`${c} / ${s.name}: ${v}`)}</title></rect>`,
      );
    });
    body.push(`<text x="${num(left + (i + 0.5) * group)}" y="${top + plotH + 16}" text-anchor="middle">${escapeXml(c)}</text>`);
  });
  body.push(`<line x1="${left}" y1="${top}" x2="${left}" y2="${top + plotH}" stroke="black"/>`);
  body.push(`<line x1="${left}" y1="${top + plotH}" x2="${num(left + plotW)}" y2="${top + plotH}" stroke="black"/>`);
  if (o.yLabel) body.push(`<text x="14" y="${num(top + plotH / 2)}" text-anchor="middle" transform="rotate(-90 14 ${num(top + plotH / 2)})">${escapeXml(o.yLabel)}</text>`);
  if (series.length > 1)
    series.forEach((s, k) => {
      body.push(`<rect x="${num(left + plotW + 16)}" y="${top + k * 18}" width="12" height="12" fill="${PALETTE[k % PALETTE.length]}"/>`);
      body.push(`<text x="${num(left + plotW + 32)}" y="${top + k * 18 + 10}">${escapeXml(s.name)}</text>`);
    });
  return svgDoc(width, height, body, o.title);
}

export interface LineSeries {
  name: string;
  points: readonly { x: number; y: number }[];
}

export interface LineChartOptions {
  title?: string;
  xLabel?: string;
  yLabel?: string;
  /** Log-scale y (losses, perplexities). */
  logY?: boolean;
}

/** Line chart of one or more series (training curves: loss vs step, train and validation). */
export function lineChartSvg(series: readonly LineSeries[], o: LineChartOptions = {}): string {
  const pts = series.flatMap((s) => s.points).filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y) && (!o.logY || p.y > 0));
  if (pts.length === 0) throw new InvalidArgumentError('line chart needs at least one finite point', 'series');
  const fy = (v: number) => (o.logY ? Math.log10(v) : v);
  let [x0, x1] = [Math.min(...pts.map((p) => p.x)), Math.max(...pts.map((p) => p.x))];
  let [y0, y1] = [Math.min(...pts.map((p) => fy(p.y))), Math.max(...pts.map((p) => fy(p.y)))];
  if (!(x1 > x0)) x1 = x0 + 1;
  if (!(y1 > y0)) [y0, y1] = [y0 - 0.5, y1 + 0.5];
  const left = 64;
  const top = 40;
  const plotW = 480;
  const plotH = 260;
  const width = left + plotW + (series.length > 1 ? 150 : 20);
  const height = top + plotH + 50;
  const X = (v: number) => left + ((v - x0) / (x1 - x0)) * plotW;
  const Y = (v: number) => top + plotH - ((fy(v) - y0) / (y1 - y0)) * plotH;
  const body: string[] = [];
  for (const t of niceTicks(x0, x1)) {
    body.push(`<line x1="${num(X(t))}" y1="${top}" x2="${num(X(t))}" y2="${top + plotH}" stroke="#eee"/>`);
    body.push(`<text x="${num(X(t))}" y="${top + plotH + 16}" text-anchor="middle">${escapeXml(String(t))}</text>`);
  }
  for (const t of niceTicks(y0, y1)) {
    const v = o.logY ? 10 ** t : t;
    body.push(`<line x1="${left}" y1="${num(Y(v))}" x2="${left + plotW}" y2="${num(Y(v))}" stroke="#eee"/>`);
    body.push(`<text x="${left - 6}" y="${num(Y(v) + 4)}" text-anchor="end">${escapeXml(String(Number(v.toPrecision(4))))}</text>`);
  }
  series.forEach((s, k) => {
    const p = s.points.filter((q) => Number.isFinite(q.x) && Number.isFinite(q.y) && (!o.logY || q.y > 0));
    if (p.length === 0) return;
    const d = p.map((q, i) => `${i === 0 ? 'M' : 'L'}${num(X(q.x))},${num(Y(q.y))}`).join(' ');
    body.push(`<path class="line" d="${d}" fill="none" stroke="${PALETTE[k % PALETTE.length]}" stroke-width="1.5"><title>${escapeXml(s.name)}</title></path>`);
  });
  body.push(`<line x1="${left}" y1="${top}" x2="${left}" y2="${top + plotH}" stroke="black"/>`);
  body.push(`<line x1="${left}" y1="${top + plotH}" x2="${left + plotW}" y2="${top + plotH}" stroke="black"/>`);
  body.push(`<text x="${left + plotW / 2}" y="${top + plotH + 36}" text-anchor="middle">${escapeXml(o.xLabel ?? 'step')}</text>`);
  body.push(`<text x="14" y="${top + plotH / 2}" text-anchor="middle" transform="rotate(-90 14 ${top + plotH / 2})">${escapeXml((o.yLabel ?? 'loss') + (o.logY ? ' (log)' : ''))}</text>`);
  if (series.length > 1)
    series.forEach((s, k) => {
      body.push(`<line x1="${left + plotW + 14}" y1="${top + k * 18 + 6}" x2="${left + plotW + 30}" y2="${top + k * 18 + 6}" stroke="${PALETTE[k % PALETTE.length]}" stroke-width="2"/>`);
      body.push(`<text x="${left + plotW + 36}" y="${top + k * 18 + 10}">${escapeXml(s.name)}</text>`);
    });
  return svgDoc(width, height, body, o.title);
}

/** The figures of a diagnostics report: metric-by-mode bar charts and, when present, the LA-share heatmap. */
export function reportFigures(r: { modes: { mode: string; metrics: Record<string, number> }[]; metrics: string[]; laShare?: number[][]; gammas?: number[][]; model?: string }): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of r.metrics) {
    const values = r.modes.map((m) => m.metrics[k] ?? Number.NaN);
    if (!values.some(Number.isFinite)) continue;
    out[`${k.replace(/[^A-Za-z0-9_-]/g, '_')}-by-mode.svg`] = barChartSvg(
      r.modes.map((m) => m.mode),
      [{ name: k, values }],
      { title: `${k} by attention mode${r.model ? ` (${r.model})` : ''}`, yLabel: k },
    );
  }
  if (r.laShare && r.laShare.length > 0) out['la-share.svg'] = heatmapSvg(r.laShare, { title: 'LA share of the normaliser (layer x head)' });
  if (r.gammas && r.gammas.length > 0) out['gamma.svg'] = heatmapSvg(r.gammas, { title: 'gamma (layer x head)' });
  return out;
}
