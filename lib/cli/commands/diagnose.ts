/**
 * `diagnose <dir>`: SPEC sec. 6 diagnostics for every attention mode the model supports
 * (perplexity overall / n < w / n >= w; optional multiple-choice tasks, passkey and associative
 * recall probes), printed as the paper-style table, written as JSON and SVG figures.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join, resolve, basename } from 'node:path';
import { loadConvertedModel } from '../../recipes/io.js';
import { PackedDataset, type SplitName } from '../../data/pack.js';
import { readMcTasks, type McItem } from '../../eval/multiple-choice.js';
import { associativeRecallItems, passkeyItems } from '../../eval/probes.js';
import { diagnose, modeControlFor } from '../../eval/diagnose.js';
import { formatReport, reportToJson } from '../../eval/report.js';
import { reportFigures } from '../../eval/svg.js';
import { scorerFromModel } from '../../eval/scoring.js';
import { collectGammas, collectLaShare, hasLaStats, modelWindow } from '../../eval/la-stats.js';
import { UsageError, bool, choice, num, str, strs } from '../args.js';
import { DATA_OPTIONS, RUNTIME_OPTIONS, corpusFromFlags, loadTokenizer, runtimeFromFlags } from '../common.js';
import { EXIT, type CliCommand } from '../context.js';
import { Progress } from '../progress.js';

export const diagnoseCommand: CliCommand = {
  spec: {
    name: 'diagnose',
    summary: 'Evaluate every attention mode the model supports (perplexity by position, multiple choice, long-range probes) and print the diagnostics table.',
    positionals: [{ name: '<checkpoint-dir>', description: 'directory holding config.json and the weights' }],
    options: {
      ...DATA_OPTIONS,
      tokenizer: { type: 'string', value: 'PATH', description: 'tokenizer.json (default: <checkpoint-dir>/tokenizer.json)' },
      window: { type: 'string', short: 'w', value: 'W', description: "attention window w splitting positions n < w and n >= w (default: the model's hybrid window, else 64)" },
      'seq-len': { type: 'string', value: 'T', description: 'tokens per perplexity sequence', default: '256' },
      'max-sequences': { type: 'string', value: 'N', description: 'perplexity sequences per mode', default: '8' },
      split: { type: 'string', value: 'all|train|validation', description: 'corpus split to evaluate (same hash split as pretrain)', default: 'all' },
      'val-fraction': { type: 'string', value: 'F', description: 'validation fraction of the split', default: '0.01' },
      seed: { type: 'string', value: 'N', description: 'seed of the split and the probes', default: '0' },
      tasks: { type: 'string', multiple: true, value: 'FILE', description: 'multiple-choice tasks, JSONL {context, choices[], gold}' },
      'max-items': { type: 'string', value: 'N', description: 'multiple-choice items per task file' },
      passkey: { type: 'string', value: 'N', description: 'passkey retrieval items (distance > w)', default: '0' },
      assoc: { type: 'string', value: 'N', description: 'associative recall items (distance > w)', default: '0' },
      modes: { type: 'string', value: 'LIST', description: 'comma-separated modes (default: all the model supports)' },
      base: { type: 'string', value: 'FILE', description: 'JSON report of the base model (its first mode = base metrics) for recovered performance' },
      out: { type: 'string', short: 'o', value: 'FILE', description: 'write the report as JSON' },
      'svg-dir': { type: 'string', value: 'DIR', description: 'write SVG figures (metric by mode, LA share) there' },
      'batch-size': { type: 'string', value: 'B', description: 'sequences per forward', default: '1' },
      ...RUNTIME_OPTIONS,
      json: { type: 'boolean', description: 'print the report as JSON instead of the table' },
    },
    notes: [
      'Modes: hybrid, swa, la, la-full, sinks, none for converted models; a plain softmax model has the single mode softmax.',
      'Gaps: (hybrid - swa) and (la - none), oriented so > 0 is better (perplexity sign-flipped).',
    ],
  },
  async run({ values, positionals }, ctx) {
    const dir = resolve(ctx.cwd, positionals[0]!);
    const windowArg = num(values, 'window', { int: true, min: 1 });
    const seqLen = num(values, 'seq-len', { int: true, min: 2 })!;
    const maxSeq = num(values, 'max-sequences', { int: true, min: 0 })!;
    const seed = num(values, 'seed', { int: true })!;
    const nPass = num(values, 'passkey', { int: true, min: 0 })!;
    const nAssoc = num(values, 'assoc', { int: true, min: 0 })!;
    const batchSize = num(values, 'batch-size', { int: true, min: 1 })!;
    const maxItems = num(values, 'max-items', { int: true, min: 1 });
    const split = choice(values, 'split', ['all', 'train', 'validation'] as const)! as SplitName;
    const { device, dtype } = runtimeFromFlags(values, ctx);
    const valFraction = num(values, 'val-fraction', { min: 0, max: 0.999 })!;
    const taskFiles = strs(values, 'tasks').map((f) => resolve(ctx.cwd, f));
    const hasCorpus = strs(values, 'data').length > 0 || bool(values, 'brown');
    if (!hasCorpus && taskFiles.length === 0 && nPass === 0 && nAssoc === 0) throw new UsageError('nothing to evaluate: pass --data/--brown, --tasks, --passkey N or --assoc N');
    let base: Record<string, number> | undefined;
    const baseFile = str(values, 'base');
    if (baseFile) {
      const b = JSON.parse(await readFile(resolve(ctx.cwd, baseFile), 'utf8')) as { modes?: { metrics: Record<string, number> }[]; base?: Record<string, number> };
      base = b.modes?.[0]?.metrics ?? b.base;
      if (!base) throw new UsageError(`--base ${baseFile}: not a diagnose report`);
    }

    const tokenizer = await loadTokenizer(dir, str(values, 'tokenizer'), ctx.cwd);
    const sequences: Int32Array[] = [];
    if (hasCorpus && maxSeq > 0) {
      const ds = new PackedDataset(corpusFromFlags(values, ctx.cwd), tokenizer, { seqLen, split: { validationFraction: valFraction, seed } });
      for await (const s of ds.sequences(split, { signal: ctx.signal })) {
        sequences.push(s);
        if (sequences.length >= maxSeq) break;
      }
      if (sequences.length === 0) throw new UsageError(`the corpus gives no full sequence of ${seqLen} tokens in split '${split}'`);
    }
    const mc: McItem[] = [];
    for (const f of taskFiles) {
      let k = 0;
      for await (const it of readMcTasks(f, { signal: ctx.signal })) {
        if (maxItems !== undefined && k++ >= maxItems) break;
        mc.push(it);
      }
    }
    // a converted model directory (conversion.json) loads with its hybrid layers; others as softmax
    const { model } = await loadConvertedModel(dir, { dtype, device });
    try {
      const window = windowArg ?? modelWindow(model) ?? 64;
      const passkey = nPass > 0 ? passkeyItems({ tokenizer, window, count: nPass, seed }) : [];
      const associative = nAssoc > 0 ? associativeRecallItems({ tokenizer, window, count: nAssoc, seed }) : [];
      const modesArg = str(values, 'modes');
      const control = modeControlFor(model, modesArg ? modesArg.split(',').map((s) => s.trim()).filter(Boolean) : undefined);
      let laShare: number[][] | undefined;
      let gammas: number[][] | undefined;
      if (hasLaStats(model) && sequences.length > 0) {
        if (control.modes.includes('hybrid')) await control.set('hybrid');
        const stats = await collectLaShare(model, (ids) => model.forward(ids).logits.dispose(), sequences.slice(0, 4), model.config.numHeads);
        await control.restore?.();
        laShare = stats?.mean;
        gammas = await collectGammas(model, model.config.numHeads);
        if (stats) ctx.json.emit('la_share', { ...stats, window });
      }
      const perMode = sequences.length + mc.length + passkey.length + associative.length;
      const progress = new Progress(ctx, { label: 'diagnose', total: control.modes.length * perMode, unit: 'items', json: ctx.json });
      let doneBefore = 0;
      const report = await diagnose(
        scorerFromModel(model, { maxBatch: batchSize }),
        control,
        { sequences, mc, passkey, associative },
        {
          window,
          tokenizer,
          batchSize,
          modelName: basename(dir),
          signal: ctx.signal,
          ...(base ? { base } : {}),
          ...(laShare ? { laShare } : {}),
          ...(gammas ? { gammas } : {}),
          onProgress: (p) => progress.update({ done: doneBefore + (p.task === 'mc' ? sequences.length : 0) + p.done, mode: p.mode, task: p.task }),
          onMode: (mode, metrics) => {
            doneBefore += perMode;
            progress.update({ done: doneBefore, mode });
            ctx.json.emit('mode', { mode, metrics });
          },
        },
      );
      progress.finish();
      const outFile = str(values, 'out');
      if (outFile) await writeFile(resolve(ctx.cwd, outFile), reportToJson(report));
      const svgDir = str(values, 'svg-dir');
      if (svgDir) {
        const d = resolve(ctx.cwd, svgDir);
        await mkdir(d, { recursive: true });
        for (const [name, svg] of Object.entries(reportFigures(report))) await writeFile(join(d, name), svg);
      }
      if (values.json) ctx.stdout.write(reportToJson(report));
      else if (ctx.json.enabled) ctx.json.emit('result', { command: 'diagnose', report });
      else ctx.stdout.write(formatReport(report));
      return EXIT.ok;
    } finally {
      model.dispose();
    }
  },
};
