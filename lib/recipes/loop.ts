/**
 * The training loop both recipe stages share: AdamW over named parameters, LR schedule, gradient
 * clipping, progress callbacks (step, loss, tokens/s), periodic validation with a stop decision,
 * AbortSignal (stops after the current step, writes a checkpoint), and resumable checkpoints
 * (lib/model/checkpoint.ts: atomic safetensors with the parameters, AdamW moments, and this
 * loop's state as JSON metadata: step, data position, RNG state, curves, early-stopping state).
 */
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { InvalidArgumentError } from '../errors.js';
import { AdamWOptimizer } from '../model/optimizer.js';
import { loadTrainingState, saveTrainingState } from '../model/checkpoint.js';
import { constantLr, cosineLr, type LrSchedule } from '../model/lr-schedule.js';
import type { LlamaModel } from '../model/llama.js';
import { BatchCursor, type BatchSource, type TokenBatch } from './data.js';

export type Stage = 'transfer' | 'finetune';

export interface ProgressInfo {
  stage: Stage;
  step: number;
  totalSteps: number;
  loss: number;
  lr: number;
  gradNorm: number;
  /** Tokens trained on in this stage (resumed runs included). */
  tokens: number;
  /** Tokens per second in this process. */
  tokensPerSec: number;
  valLoss?: number;
  /** Validation (swa - hybrid) loss gap, where measured. */
  gap?: number;
  /** Extra per-step values (SSD drop probability, window). */
  [key: string]: unknown;
}

export interface CurvePoint {
  step: number;
  loss: number;
  lr: number;
  gradNorm: number;
  [key: string]: number;
}

export interface ValPoint {
  step: number;
  loss: number;
  [key: string]: number;
}

export interface LoopOptions {
  /** Optimizer steps of this stage. */
  steps: number;
  lr: number;
  /** AdamW weight decay (default 0, as LoLCATs). */
  weightDecay?: number;
  /** Global gradient-norm clip (default 1.0; 0: none). */
  maxGradNorm?: number;
  /** 'constant' (default) or 'cosine' (with warmup). */
  schedule?: 'constant' | 'cosine';
  warmup?: number;
  /** Checkpoint every N steps (0: only when stopped and at the end). Needs checkpointDir. Default 0. */
  saveEvery?: number;
  /** Validate every N steps (0: never). */
  evalEvery?: number;
  signal?: AbortSignal;
  onProgress?: (p: ProgressInfo) => void;
}

/** What a stage's options (transfer, fine-tuning) hand to trainLoop beyond its steps, lr and evalEvery. */
export interface StageLoopOptions extends Partial<LoopOptions> {
  /** Checkpoint file of the stage. */
  checkpoint?: string;
  resume?: boolean;
}

/** The optional loop settings a stage passes through as they are (absent ones stay absent). */
export function stageLoopSettings(o: StageLoopOptions): Partial<LoopSpec> {
  return {
    ...(o.weightDecay !== undefined ? { weightDecay: o.weightDecay } : {}),
    ...(o.maxGradNorm !== undefined ? { maxGradNorm: o.maxGradNorm } : {}),
    ...(o.schedule ? { schedule: o.schedule } : {}),
    ...(o.warmup !== undefined ? { warmup: o.warmup } : {}),
    ...(o.saveEvery !== undefined ? { saveEvery: o.saveEvery } : {}),
    ...(o.signal ? { signal: o.signal } : {}),
    ...(o.onProgress ? { onProgress: o.onProgress } : {}),
    ...(o.checkpoint ? { checkpoint: o.checkpoint } : {}),
    ...(o.resume ? { resume: true } : {}),
  };
}

export interface LoopSpec extends LoopOptions {
  stage: Stage;
  model: LlamaModel;
  /** Trainable parameter names (also what the checkpoint holds). */
  names: readonly string[];
  data: BatchSource;
  /** Computes the loss of one batch and adds its gradients into model.grads (already zeroed). */
  step(batch: TokenBatch, step: number): Promise<{ loss: number; extra?: Record<string, number> }>;
  /** Validation at evalEvery: returns the point to record and whether to stop (with a reason). */
  validate?(step: number, state: LoopState): Promise<{ point: ValPoint; stop?: string }>;
  /** Checkpoint file (absent: no checkpoints). */
  checkpoint?: string;
  /** Continue from `checkpoint` when it exists. */
  resume?: boolean;
  /** Extra state saved with each checkpoint (RNG states, ...) and restored on resume. */
  extra?: { get(): Record<string, unknown>; set(x: Record<string, unknown>): void };
  /** Called after each validation improves (e.g. to snapshot the best parameters). */
  onBest?(step: number, opt: AdamWOptimizer): Promise<void>;
}

export interface LoopState {
  stage: Stage;
  step: number;
  epoch: number;
  consumed: number;
  tokens: number;
  curve: CurvePoint[];
  val: ValPoint[];
  /** Early-stopping / guard bookkeeping owned by the validate callback. */
  guard: Record<string, number>;
  done: boolean;
  stopReason?: string;
  extra?: Record<string, unknown>;
}

export interface LoopResult {
  state: LoopState;
  /** Stopped by the AbortSignal (a checkpoint was written when checkpointing). */
  interrupted: boolean;
  /** Seconds this process spent in the loop. */
  seconds: number;
}

const STATE_KEY = 'recipe_state';

/** Reads a stage checkpoint's loop state (undefined when there is none). */
export async function readLoopState(path: string): Promise<LoopState | undefined> {
  if (!existsSync(path)) return undefined;
  const { openSafetensors } = await import('../io/safetensors.js');
  const f = await openSafetensors(path);
  try {
    const s = f.metadata?.[STATE_KEY];
    return s ? (JSON.parse(s) as LoopState) : undefined;
  } finally {
    await f.close();
  }
}

export async function trainLoop(spec: LoopSpec): Promise<LoopResult> {
  if (!Number.isInteger(spec.steps) || spec.steps < 0) throw new InvalidArgumentError(`steps must be an integer >= 0, got ${String(spec.steps)}`, 'steps');
  if (!(spec.lr > 0)) throw new InvalidArgumentError('lr must be > 0', 'lr');
  const model = spec.model;
  const maxGradNorm = spec.maxGradNorm ?? 1.0;
  const opt = new AdamWOptimizer(model.params, spec.names, { lr: spec.lr, weightDecay: spec.weightDecay ?? 0, ...(maxGradNorm > 0 ? { maxGradNorm } : {}) });
  const schedule: LrSchedule =
    spec.schedule === 'cosine' && spec.steps > (spec.warmup ?? 0) ? cosineLr(spec.lr, spec.steps, { warmup: spec.warmup ?? 0 }) : constantLr(spec.lr);
  let state: LoopState = { stage: spec.stage, step: 0, epoch: 0, consumed: 0, tokens: 0, curve: [], val: [], guard: {}, done: false };
  // only the names of trainable parameters get gradients
  model.trainable.clear();
  spec.names.forEach((n) => model.trainable.add(n));
  model.zeroGrad();
  try {
    if (spec.checkpoint) {
      await mkdir((await import('node:path')).dirname(spec.checkpoint), { recursive: true });
      if (spec.resume && existsSync(spec.checkpoint)) {
        const meta = await loadTrainingState(spec.checkpoint, opt);
        // loadTrainingState restores the optimizer options saved; keep the caller's lr/clip
        opt.options = { lr: spec.lr, weightDecay: spec.weightDecay ?? 0, ...(maxGradNorm > 0 ? { maxGradNorm } : {}) };
        if (meta[STATE_KEY]) state = JSON.parse(meta[STATE_KEY]) as LoopState;
        state.step = opt.stepCount;
        if (state.extra && spec.extra) spec.extra.set(state.extra);
      }
    }
    const save = async () => {
      if (!spec.checkpoint) return;
      if (spec.extra) state.extra = spec.extra.get();
      await saveTrainingState(spec.checkpoint, opt, { [STATE_KEY]: JSON.stringify(state), stage: spec.stage });
    };
    const cursor = new BatchCursor(spec.data, state.epoch, state.consumed, spec.signal);
    const t0 = Date.now();
    const tokens0 = state.tokens;
    let interrupted = false;
    while (!state.done && state.step < spec.steps) {
      if (spec.signal?.aborted) {
        interrupted = true;
        break;
      }
      const batch = await cursor.next();
      const lr = schedule(state.step);
      model.zeroGrad();
      const r = await spec.step(batch, state.step);
      const gradNorm = await opt.step(model.grads, lr);
      state.step = opt.stepCount;
      state.epoch = cursor.epoch;
      state.consumed = cursor.consumed;
      state.tokens += batch.batch * batch.seqlen;
      state.curve.push({ step: state.step, loss: r.loss, lr, gradNorm, ...(r.extra ?? {}) });
      const info: ProgressInfo = {
        stage: spec.stage,
        step: state.step,
        totalSteps: spec.steps,
        loss: r.loss,
        lr,
        gradNorm,
        tokens: state.tokens,
        tokensPerSec: (state.tokens - tokens0) / Math.max(1e-3, (Date.now() - t0) / 1000),
        ...(r.extra ?? {}),
      };
      if (!Number.isFinite(r.loss)) throw new InvalidArgumentError(`${spec.stage}: the loss became ${r.loss} at step ${state.step} (lower the learning rate)`, 'lr');
      if (spec.validate && spec.evalEvery && spec.evalEvery > 0 && (state.step % spec.evalEvery === 0 || state.step === spec.steps)) {
        const v = await spec.validate(state.step, state);
        state.val.push(v.point);
        info.valLoss = v.point.loss;
        if (v.point.gap !== undefined) info.gap = v.point.gap;
        if (state.guard.bestStep === state.step && spec.onBest) await spec.onBest(state.step, opt);
        if (v.stop) {
          state.done = true;
          state.stopReason = v.stop;
        }
      }
      spec.onProgress?.(info);
      if (spec.saveEvery && spec.saveEvery > 0 && state.step % spec.saveEvery === 0 && state.step < spec.steps && !state.done) await save();
    }
    if (!interrupted) {
      state.done = true;
      state.stopReason ??= 'steps';
    }
    await save();
    return { state, interrupted, seconds: (Date.now() - t0) / 1000 };
  } finally {
    opt.dispose();
  }
}
