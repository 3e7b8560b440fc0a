/** CLI: help, usage errors (exit 2), inspect, generate, bench, not-implemented back-ends, SIGINT / AbortSignal + --resume. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openSafetensors } from '../../lib/io/safetensors.js';
import { COMMANDS } from '../../lib/cli/main.js';
import { events, runCli, sink, writeCorpus } from '../helpers/cli.js';
import { JsonLog, Progress, formatDuration } from '../../lib/cli/progress.js';
import { fixturesDir, haveFixtures, projectRoot } from '../helpers/fixtures.js';

const bin = join(projectRoot, 'bin', 'hybrid-attention.js');
const tiny = join(fixturesDir, 'llama-tiny');
const tokenizer = join(fixturesDir, 'tokenizer', 'tokenizer.json');

interface Result {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

function cli(args: string[], o: { onStdout?: (text: string, child: ReturnType<typeof spawn>) => void; timeoutMs?: number } = {}): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [bin, ...args], { cwd: projectRoot, env: { ...process.env, FORCE_COLOR: '0' } });
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), o.timeoutMs ?? 50_000);
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      o.onStdout?.(stdout, child);
    });
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

const inProcess = runCli;

let tmp: string;
let corpus: string;
beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'ha-cli-'));
  corpus = join(tmp, 'corpus.txt');
  await writeCorpus(corpus, 200);
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

describe('help and usage errors', () => {
  it('bin: --help lists every command (exit 0); no command, unknown command, bad options exit 2 with a message on stderr', async () => {
    const help = await cli(['--help']);
    expect(help.code).toBe(0);
    for (const c of ['pretrain', 'convert', 'finetune', 'diagnose', 'generate', 'bench', 'inspect']) expect(help.stdout).toContain(`  ${c} `);
    const none = await cli([]);
    expect(none.code).toBe(2);
    expect(none.stderr).toContain('missing command');
    const unknown = await cli(['frobnicate']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/unknown command 'frobnicate'/);
    expect(unknown.stdout).toBe('');
  });

  it('every subcommand has --help; bad arguments are clear usage errors', async () => {
    for (const c of COMMANDS) {
      const r = await inProcess([c.spec.name, '--help']);
      expect(r.code, c.spec.name).toBe(0);
      expect(r.stdout).toMatch(new RegExp(`^usage: hybrid-attention ${c.spec.name} `));
      expect(r.stdout).toContain('--log-json');
    }
    const cases: [string[], RegExp][] = [
      [['inspect'], /inspect: missing argument <checkpoint-dir>/],
      [['inspect', tiny, 'extra'], /unexpected argument 'extra'/],
      [['inspect', '--bogus', tiny], /Unknown option '--bogus'/],
      [['generate', tiny, '-n', 'many', '--ids', '1'], /--max-new-tokens must be an integer, got 'many'/],
      [['generate', tiny], /no prompt/],
      [['diagnose', tiny, '--window', '0', '--passkey', '1'], /--window must be >= 1/],
      [['diagnose', tiny], /nothing to evaluate/],
      [['pretrain', '--data', corpus], /exactly one of --model DIR or --config FILE/],
      [['pretrain', '--model', tiny, '--data', corpus, '--out', tmp, '--device', 'cpu', '--dtype', 'f16'], /--dtype f16 does not run on cpu: dtype must be one of f32, f64 on cpu/],
      [['generate', tiny, '--ids', '1', '--dtype', 'f8'], /--dtype must be one of f32, f64, bf16, f16, got 'f8'/],
      [['diagnose', tiny, '--passkey', '1', '--device', 'gpu0'], /--device must be one of auto, cpu, cuda, got 'gpu0'/],
      [['convert', tiny, '--method', 'magic', '-o', tmp], /--method must be one of lolcats, linear-only, hedgecats, ssd/],
      [['pretrain', '--model', tiny, '--steps'], /argument missing/],
    ];
    for (const [args, msg] of cases) {
      const r = await inProcess(args);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr, args.join(' ')).toMatch(msg);
      expect(r.stderr).toContain(`see 'hybrid-attention ${args[0]} --help'`);
    }
  });

  it.skipIf(!haveFixtures)('convert and finetune parse their options; a missing corpus or a non-converted model is a usage error (exit 2)', async () => {
    const c = await inProcess(['convert', tiny, '--method', 'lolcats', '-o', join(tmp, 'conv')]);
    expect(c.code).toBe(2);
    expect(c.stderr).toMatch(/convert: no corpus: pass --data FILE/);
    const f = await inProcess(['finetune', tiny, '-o', join(tmp, 'ft'), '--log-json']);
    expect(f.code).toBe(2);
    expect(f.stderr).toMatch(/is not a converted model/);
  });
});

describe('progress', () => {
  it('TTY: one redrawn bar with ETA, tokens/s and loss; not a TTY: plain lines; --log-json: JSON objects', async () => {
    const tty = Object.assign(sink(), { isTTY: true, columns: 200 });
    const p = new Progress({ stdout: sink(), stderr: tty }, { label: 'train', total: 10, unit: 'steps' });
    await new Promise((r) => setTimeout(r, 20));
    p.update({ done: 5, tokens: 5000, loss: 2.5 });
    p.finish();
    expect(tty.text).toMatch(/^\rtrain \[#{12}-{12}\] 5\/10 steps \| 50% \| [\d.]+k? tok\/s \| loss 2\.5000 \| ETA \d+:\d\d\x1b\[K/);
    expect(tty.text).toMatch(/done in 0:00\x1b\[K\n$/);
    const plain = sink();
    const q = new Progress({ stdout: sink(), stderr: plain }, { label: 'train', total: 10, plainIntervalMs: 60_000 });
    q.update({ done: 1, loss: 3 });
    q.update({ done: 2, loss: 2 }); // throttled
    q.finish();
    expect(plain.text).not.toContain('\r');
    expect(plain.text.trim().split('\n')).toHaveLength(2);
    expect(plain.text).toMatch(/^train 1\/10 \| 10% \| loss 3\.0000 \| ETA/);
    const out = sink();
    new Progress({ stdout: out, stderr: sink() }, { label: 'x', total: 2, json: new JsonLog(out) }).update({ done: 1, loss: Number.NaN });
    expect(JSON.parse(out.text)).toMatchObject({ event: 'progress', label: 'x', done: 1, total: 2, loss: null });
    expect(formatDuration(3725)).toBe('1:02:05');
  });
});

describe.skipIf(!haveFixtures)('commands on llama-tiny', () => {
  it('inspect prints config, parameter counts and dtype (text, --json)', async () => {
    const r = await cli(['inspect', tiny]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/architecture\s+LlamaForCausalLM/);
    expect(r.stdout).toMatch(/parameters\s+887,424/);
    expect(r.stdout).toMatch(/storage dtype F32 \(21 tensors/);
    const j = await inProcess(['inspect', join(fixturesDir, 'llama-tiny-bf16'), '--json']);
    const s = JSON.parse(j.stdout);
    expect(s.parameters).toMatchObject({ total: 887424, embeddings: 2048 * 128, lmHead: 2048 * 128, norms: 5 * 128 });
    expect(s.dtypes).toEqual({ BF16: 21 });
    expect(s.config.numKvHeads).toBe(2);
    expect(s.missing).toEqual([]);
    const missing = await inProcess(['inspect', tmp]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/InvalidArgumentError: not a checkpoint directory: no config\.json in/);
  });

  it('generate: greedy tokens match the transformers fixture; text prompts go through the tokenizer', async () => {
    const f = await openSafetensors(join(tiny, 'expected.safetensors'));
    const raw = await f.read('greedy_ids');
    await f.close();
    const greedy = Array.from(new Int32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4));
    const r = await cli(['generate', tiny, '--ids', greedy.slice(0, 16).join(','), '-n', '6', '--ignore-eos', '--log-json']);
    expect(r.code).toBe(0);
    const res = events(r.stdout).find((e) => e.event === 'result')!;
    expect(res.ids).toEqual(greedy.slice(16, 22));
    const t = await cli(['generate', tiny, 'The jury said', '-n', '4', '--tokenizer', tokenizer]);
    expect(t.code).toBe(0);
    expect(t.stdout.startsWith('The jury said')).toBe(true);
    expect(t.stderr).toMatch(/generated \d+ tokens/);
  });

  it('diagnose prints the table for mode softmax and writes JSON and SVG', async () => {
    const out = join(tmp, 'diag.json');
    const svg = join(tmp, 'svg');
    const r = await inProcess(['diagnose', tiny, '--data', corpus, '--tokenizer', tokenizer, '-w', '16', '--seq-len', '48', '--max-sequences', '2', '--passkey', '1', '--out', out, '--svg-dir', svg]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^softmax\s+\d+\.\d\d\s+\d+\.\d\d\s+\d+\.\d\d/m);
    const rep = JSON.parse(await readFile(out, 'utf8'));
    expect(rep.modes[0].mode).toBe('softmax');
    expect(rep.window).toBe(16);
    expect(Object.keys(rep.modes[0].metrics)).toEqual(['ppl', 'ppl_early', 'ppl_late', 'passkey_em', 'passkey_acc']);
    expect(existsSync(join(svg, 'ppl-by-mode.svg'))).toBe(true);
  });

  it('bench runs bench/run.ts through tsx and passes flags through', async () => {
    const r = await cli(['bench', '--quick', '--device', 'cpu', '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.length).toBeGreaterThan(0);
    const bad = await cli(['bench', '--bogus']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('unknown argument --bogus');
  });

  it('pretrain: SIGINT stops cleanly with a checkpoint (exit 130); --resume continues from it', async () => {
    const out = join(tmp, 'run');
    const args = ['pretrain', '--model', tiny, '--data', corpus, '--tokenizer', tokenizer, '--seq-len', '32', '-b', '2', '--save-every', '0', '--lr', '1e-3', '-o', out, '--log-json'];
    let sent = false;
    const r = await cli([...args, '--steps', '100000'], {
      onStdout: (text, child) => {
        if (!sent && events(text.slice(0, text.lastIndexOf('\n') + 1)).some((e) => e.event === 'progress' && (e.done as number) >= 3)) {
          sent = true;
          child.kill('SIGINT');
        }
      },
    });
    expect(sent).toBe(true);
    expect(r.code, r.stderr).toBe(130);
    expect(r.stderr).toContain('SIGINT received, stopping cleanly');
    const ev = events(r.stdout);
    const stop = ev.find((e) => e.event === 'interrupted')!;
    const step = stop.step as number;
    expect(step).toBeGreaterThanOrEqual(3);
    expect(ev.find((e) => e.event === 'checkpoint')).toMatchObject({ step });
    expect(existsSync(join(out, 'train-state.safetensors'))).toBe(true);
    expect(existsSync(join(out, 'model.safetensors'))).toBe(false); // not finished

    const again = await inProcess([...args.filter((a) => a !== '--log-json'), '--steps', String(step + 1)]);
    expect(again.code).toBe(2); // would overwrite the checkpoint without --resume
    expect(again.stderr).toContain('pass --resume');

    const res = await cli([...args, '--steps', String(step + 2), '--resume']);
    expect(res.code, res.stderr).toBe(0);
    const ev2 = events(res.stdout);
    expect(ev2.find((e) => e.event === 'resumed')).toMatchObject({ from_step: step });
    expect(ev2.filter((e) => e.event === 'progress').map((e) => e.done)).toEqual([step + 1, step + 2]);
    expect(ev2.find((e) => e.event === 'result')).toMatchObject({ step: step + 2 });
    const metrics = (await readFile(join(out, 'metrics.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l).step);
    expect(metrics).toEqual(Array.from({ length: step + 2 }, (_, i) => i + 1));
    const inspect = await inProcess(['inspect', out]);
    expect(inspect.stdout).toMatch(/parameters\s+887,424/);
    expect(inspect.stdout).toMatch(new RegExp(`training .*step=${step + 2}`));
    expect(existsSync(join(out, 'loss.svg'))).toBe(true);
  });

  it('an AbortSignal stops pretrain in-process the same way', async () => {
    const out = join(tmp, 'abort');
    const ac = new AbortController();
    const r = await inProcess(
      ['pretrain', '--config', join(tiny, 'config.json'), '--data', corpus, '--tokenizer', tokenizer, '--seq-len', '16', '-b', '1', '--steps', '1000', '-o', out, '--log-json'],
      { signal: ac.signal, onStdout: (all) => all.includes('"event":"progress"') && ac.abort() },
    );
    expect(r.code).toBe(130);
    const stop = events(r.stdout).find((e) => e.event === 'interrupted')!;
    expect(stop.step).toBeGreaterThanOrEqual(1);
    expect(existsSync(join(out, 'train-state.safetensors'))).toBe(true);
  });
});
