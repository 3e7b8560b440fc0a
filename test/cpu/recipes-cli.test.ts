/** CLI smoke tests of convert / finetune / diagnose on converted models: usage errors, Ctrl-C (abort) then --resume. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { events, runCli, writeCorpus } from '../helpers/cli.js';
import { fixturesDir, haveFixtures } from '../helpers/fixtures.js';

const tiny = join(fixturesDir, 'llama-tiny');
const tokenizer = join(fixturesDir, 'tokenizer', 'tokenizer.json');

const cli = runCli;

let tmp: string;
let corpus: string;
beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'ha-recipes-cli-'));
  corpus = join(tmp, 'corpus.txt');
  await writeCorpus(corpus, 120);
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

describe.skipIf(!haveFixtures)('convert / finetune CLI', () => {
  it('bad arguments: clear message, exit 2', async () => {
    const base = ['--data', corpus, '--tokenizer', tokenizer];
    const cases: [string[], RegExp][] = [
      [['convert', '--model', tiny, '--method', 'lolcats', ...base], /--out DIR is required/],
      [['convert', '--out', join(tmp, 'x'), ...base], /give the base model/],
      [['convert', '--model', join(tmp, 'nowhere'), '--out', join(tmp, 'x'), ...base], /no config.json there/],
      [['convert', '--model', tiny, '--method', 'magic', '--out', join(tmp, 'x'), ...base], /--method must be one of lolcats, linear-only, hedgecats, ssd/],
      [['convert', '--model', tiny, '--out', join(tmp, 'x'), '--feature-dim', '33', ...base], /--feature-dim must be even/],
      [['convert', '--model', tiny, '--out', join(tmp, 'x'), '--resume', ...base], /--resume: no checkpoint/],
      [['convert', '--model', tiny, '--out', join(tmp, 'x'), '--ssd-windows', '16,x', '-m', 'ssd', ...base], /--ssd-windows must be/],
      [['convert', '--model', tiny, '--out', join(tmp, 'x'), '--ssd-granularity', 'head', ...base], /apply to --method ssd only/],
      [['finetune', tiny, '--out', join(tmp, 'y'), ...base], /is not a converted model/],
    ];
    for (const [args, msg] of cases) {
      const r = await cli(args);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr, args.join(' ')).toMatch(msg);
    }
  });

  it('Ctrl-C during fine-tuning writes a checkpoint (exit 130); --resume finishes; diagnose and finetune read the converted model', async () => {
    const out = join(tmp, 'conv');
    const args = ['convert', '--model', tiny, '--tokenizer', tokenizer, '--data', corpus, '-m', 'ssd', '--out', out, '--seq-len', '32', '-b', '2', '-w', '8',
      '--steps', '3', '--finetune-steps', '4', '--val-fraction', '0.05', '--eval-every', '2', '--log-json'];
    const ac = new AbortController();
    const first = await cli(args, { signal: ac.signal, onStdout: (all) => /"label":"ssd finetune"/.test(all) && ac.abort() });
    expect(first.code).toBe(130);
    expect(events(first.stdout).some((e) => e.event === 'interrupted')).toBe(true);
    expect(existsSync(join(out, 'finetune-state.safetensors'))).toBe(true);
    expect(existsSync(join(out, 'conversion.json'))).toBe(false);
    const again = await cli(args);
    expect(again.code).toBe(2);
    expect(again.stderr).toMatch(/pass --resume/);
    const resumed = await cli([...args, '--resume']);
    expect(resumed.code, resumed.stderr).toBe(0);
    const result = JSON.parse(await readFile(join(out, 'result.json'), 'utf8'));
    expect(result.transfer.steps).toBe(3);
    expect(result.finetune.steps).toBe(4);
    expect(result.finetune.curve.map((c: { step: number }) => c.step)).toEqual([1, 2, 3, 4]);
    const conv = JSON.parse(await readFile(join(out, 'conversion.json'), 'utf8'));
    expect(conv).toMatchObject({ method: 'ssd', layer: { window: 8, mode: 'hybrid' }, lora: { rank: 8, merged: false } });

    const d = await cli(['diagnose', out, '--data', corpus, '--seq-len', '32', '--max-sequences', '2', '--json']);
    expect(d.code, d.stderr).toBe(0);
    const rep = JSON.parse(d.stdout);
    expect(rep.modes.map((m: { mode: string }) => m.mode)).toEqual(['hybrid', 'swa', 'la', 'la-full', 'sinks', 'none']);
    expect(rep.window).toBe(8);
    expect(rep.gammas.length).toBe(2);

    const ft = await cli(['finetune', out, '--data', corpus, '--out', join(tmp, 'ft'), '--seq-len', '32', '-b', '2', '--steps', '2', '--ssd', '--val-fraction', '0.05']);
    expect(ft.code, ft.stderr).toBe(0);
    expect(ft.stdout).toMatch(/fine-tuned 2 steps/);
    expect(JSON.parse(await readFile(join(tmp, 'ft', 'conversion.json'), 'utf8')).lora.merged).toBe(false);
  }, 60_000);
});
