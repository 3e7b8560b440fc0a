/**
 * Runs the diagnostics of SPEC sec. 6 for every attention mode a model supports: perplexity
 * (overall / n < w / n >= w), multiple-choice accuracy, passkey and associative-recall probes,
 * then builds the report (recovered performance against a base model, the two gaps).
 *
 * Mode switching goes through a small ModeControl; modeControlFor(model) builds one by duck
 * typing: LlamaModel.setAttentionMode(mode) / attentionModes(), or any per-layer kernels with
 * setMode(mode). A model whose layers are all softmax has the single mode 'softmax'.
 */
import { InvalidArgumentError } from '../errors.js';
import type { TokenizerLike } from '../data/pack.js';
import { multipleChoice, type McItem } from './multiple-choice.js';
import { perplexity } from './perplexity.js';
import { probeAccuracy, type ProbeItem } from './probes.js';
import { buildReport, DIAGNOSTIC_MODES, type DiagnosticsReport, type ModeMetrics } from './report.js';
import { toScoreFn, type Scoreable } from './scoring.js';

export interface ModeControl {
  /** Modes to evaluate, in order. */
  modes: string[];
  /** Switches the model to a mode (before each mode's evaluation). */
  set(mode: string): void | Promise<void>;
  /** Restores the model's original mode (after diagnostics). */
  restore?(): void | Promise<void>;
}

type AnyObj = Record<string, unknown>;
const isFn = (x: unknown): x is (...a: unknown[]) => unknown => typeof x === 'function';

/** Finds how to switch a model's attention mode; falls back to the fixed mode 'softmax'. */
export function modeControlFor(model: unknown, wanted?: readonly string[]): ModeControl {
  const m = model as AnyObj;
  const pick = (all: readonly string[]) => {
    if (!wanted) return [...all];
    const bad = wanted.filter((w) => !all.includes(w));
    if (bad.length) throw new InvalidArgumentError(`mode(s) ${bad.join(', ')} not supported by this model (supported: ${all.join(', ')})`, 'modes');
    return [...wanted];
  };
  const kernels = Array.isArray(m.blocks) ? (m.blocks as AnyObj[]).map((b) => b?.attention as AnyObj | undefined) : [];
  const hasModes = (k: AnyObj | undefined): k is AnyObj => !!k && isFn(k.setMode);
  // LlamaModel: setAttentionMode(mode) switches every layer that has modes; attentionModes() lists each layer's current mode.
  if (isFn(m.setAttentionMode)) {
    const current = isFn(m.attentionModes) ? ((m.attentionModes as () => string[]).call(m) ?? []) : kernels.map((k) => (k?.mode as string | undefined) ?? 'softmax');
    if (current.length > 0 && current.every((x) => x === 'softmax')) return { modes: pick(['softmax']), set: () => {} };
    return {
      modes: pick(wanted ? [...new Set([...DIAGNOSTIC_MODES, 'overlap', ...wanted])] : DIAGNOSTIC_MODES),
      set: (mode) => void (m.setAttentionMode as (x: string) => unknown).call(m, mode),
      restore: () =>
        current.forEach((mode, i) => {
          if (mode !== 'softmax') (m.setAttentionMode as (x: string, o: object) => unknown).call(m, mode, { layers: [i] });
        }),
    };
  }
  // Anything else: kernels with setMode(mode).
  const switchable = kernels.filter(hasModes);
  if (switchable.length > 0) {
    const before = switchable.map((k) => k.mode as string | undefined);
    return {
      modes: pick(wanted ? [...new Set([...DIAGNOSTIC_MODES, 'overlap', ...wanted])] : DIAGNOSTIC_MODES),
      set: (mode) => switchable.forEach((k) => (k.setMode as (x: string) => void).call(k, mode)),
      restore: () => switchable.forEach((k, i) => before[i] !== undefined && (k.setMode as (x: string) => void).call(k, before[i])),
    };
  }
  return { modes: pick(['softmax']), set: () => {} };
}

export interface DiagnoseTasks {
  /** Held-out sequences for perplexity (each scored from position 0). */
  sequences?: readonly ArrayLike<number>[];
  mc?: readonly McItem[];
  passkey?: readonly ProbeItem[];
  associative?: readonly ProbeItem[];
}

export interface DiagnoseOptions {
  window: number;
  /** Needed for mc and probes. */
  tokenizer?: TokenizerLike;
  /** Base-model metrics (from a diagnose run of the unconverted model, mode 'softmax'). */
  base?: Record<string, number>;
  modelName?: string;
  batchSize?: number;
  laShare?: number[][];
  gammas?: number[][];
  signal?: AbortSignal;
  onMode?: (mode: string, metrics: Record<string, number>) => void;
  onProgress?: (p: { mode: string; task: string; done: number }) => void;
}

/** Metrics of the model in its current mode. */
export async function evaluateMetrics(model: Scoreable, tasks: DiagnoseTasks, o: DiagnoseOptions, mode = ''): Promise<Record<string, number>> {
  const score = toScoreFn(model, { maxBatch: o.batchSize ?? 4 });
  const metrics: Record<string, number> = {};
  const common = { ...(o.signal ? { signal: o.signal } : {}) };
  if (tasks.sequences && tasks.sequences.length > 0) {
    const p = await perplexity(score, tasks.sequences, {
      window: o.window,
      batchSize: o.batchSize ?? 1,
      ...common,
      onProgress: (q) => o.onProgress?.({ mode, task: 'perplexity', done: q.sequences }),
    });
    metrics.ppl = p.perplexity;
    metrics.ppl_early = p.early.perplexity;
    metrics.ppl_late = p.late.perplexity;
  }
  const needTok = () => {
    if (!o.tokenizer) throw new InvalidArgumentError('multiple-choice and probe tasks need a tokenizer', 'tokenizer');
    return o.tokenizer;
  };
  if (tasks.mc && tasks.mc.length > 0) {
    const r = await multipleChoice(score, tasks.mc, { tokenizer: needTok(), ...common, onProgress: (d) => o.onProgress?.({ mode, task: 'mc', done: d }) });
    metrics.mc_acc = r.accuracy;
    metrics.mc_acc_norm = r.accuracyNorm;
  }
  if (tasks.passkey && tasks.passkey.length > 0) {
    const r = await probeAccuracy(score, tasks.passkey, { tokenizer: needTok(), ...common });
    metrics.passkey_em = r.exactMatch;
    metrics.passkey_acc = r.choiceAccuracy;
  }
  if (tasks.associative && tasks.associative.length > 0) {
    const r = await probeAccuracy(score, tasks.associative, { tokenizer: needTok(), ...common });
    metrics.assoc_em = r.exactMatch;
    metrics.assoc_acc = r.choiceAccuracy;
  }
  return metrics;
}

/** Evaluates every mode of `control` and returns the report. */
export async function diagnose(model: Scoreable, control: ModeControl, tasks: DiagnoseTasks, o: DiagnoseOptions): Promise<DiagnosticsReport> {
  const results: ModeMetrics[] = [];
  try {
    for (const mode of control.modes) {
      o.signal?.throwIfAborted();
      await control.set(mode);
      const metrics = await evaluateMetrics(model, tasks, o, mode);
      results.push({ mode, metrics });
      o.onMode?.(mode, metrics);
    }
  } finally {
    await control.restore?.();
  }
  return buildReport(results, {
    window: o.window,
    ...(o.modelName !== undefined ? { model: o.modelName } : {}),
    ...(o.base ? { base: o.base } : {}),
    ...(o.laShare ? { laShare: o.laShare } : {}),
    ...(o.gammas ? { gammas: o.gammas } : {}),
  });
}
