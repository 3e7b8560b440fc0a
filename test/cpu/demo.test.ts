/**
 * `npm run demo` on its tiny configuration (a seeded random 1-layer model, 2 steps per stage):
 * the whole pipeline runs, the table lists the teacher and every method x mode, the JSON holds
 * the same rows, the verdicts, and the chance check of the passkey metrics. Plus the shipped
 * teacher of the small configuration (loadable, < 5 MB, regeneration command documented).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { projectRoot } from '../helpers/fixtures.js';

const run = promisify(execFile);
const tsx = join(projectRoot, 'node_modules', '.bin', 'tsx');
const demo = join(projectRoot, 'scripts', 'demo.ts');
const METHODS = ['lolcats', 'hedgecats', 'ssd', 'linear-only'];
const MODES = ['hybrid', 'swa', 'la', 'la-full', 'sinks', 'none'];

async function runDemo(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await run(tsx, [demo, ...args], { cwd: projectRoot, env: { ...process.env, HYBRID_ATTENTION_CPU_THREADS: '1' }, maxBuffer: 1 << 24 });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const x = e as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof x.code === 'number' ? x.code : 1, stdout: x.stdout ?? '', stderr: x.stderr ?? '' };
  }
}

let tmp: string;
let res: { code: number; stdout: string; stderr: string };
beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'ha-demo-'));
  res = await runDemo(['--config', 'tiny', '--out', tmp]);
}, 60_000);
afterAll(async () => {
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

describe('npm run demo -- --config tiny', () => {
  it('exits 0 and prints the table with the teacher and every method x mode', () => {
    expect(res.code, res.stderr).toBe(0);
    const lines = res.stdout.split('\n');
    const header = lines.find((l) => l.startsWith('model'))!;
    expect(header).toBeDefined();
    for (const c of ['PPL', 'PPL n<w', 'PPL n>=w', 'passkey acc', 'passkey EM']) expect(header).toContain(c);
    expect(lines.some((l) => /^teacher\s+softmax(\s+\S+){5}$/.test(l))).toBe(true);
    for (const m of METHODS)
      for (const mode of MODES) expect(lines.some((l) => new RegExp(`^${m}\\s+${mode}(\\s+\\S+){5}$`).test(l)), `${m} ${mode}`).toBe(true);
    expect(res.stdout).toMatch(/\(a\) after lolcats, does SWA-only match the hybrid \(LA bypassed\)\? (YES|NO)/);
    for (const m of ['hedgecats', 'ssd']) expect(res.stdout).toMatch(new RegExp(`${m} vs lolcats: raises LA-only quality\\? (YES|NO) \\(PPL; passkey ignored\\); raises the \\(hybrid - swa\\) gap\\? (YES|NO)`));
    // a random teacher is at chance on the passkey: the verdicts must say they ignore it
    expect(res.stdout).toMatch(/teacher passkey acc: .*IGNORED in the verdicts/);
    expect(res.stdout).toMatch(/elapsed: [\d.]+ s/);
  });

  it('writes demo-results.json with the same rows, the verdicts and the chance check', async () => {
    const j = JSON.parse(await readFile(join(tmp, 'demo-results.json'), 'utf8')) as {
      config: string;
      seconds: number;
      teacher: string;
      rows: { model: string; mode: string; metrics: Record<string, number | null> }[];
      informative: Record<string, boolean>;
      verdicts: { a: { matches: boolean; pplRatio: number }; b: Record<string, { laOnlyRaised: boolean; gapRaised: boolean; laOnlyRaisedPpl: boolean; laOnlyRaisedPasskey?: boolean }> };
      reports: Record<string, { modes: { mode: string }[] }>;
    };
    expect(j.config).toBe('tiny');
    expect(j.teacher).toBe('random');
    expect(j.seconds).toBeGreaterThan(0);
    expect(j.rows).toHaveLength(1 + METHODS.length * MODES.length);
    for (const m of METHODS) {
      expect(j.reports[m]!.modes.map((x) => x.mode)).toEqual(expect.arrayContaining(MODES));
      for (const mode of MODES) {
        const r = j.rows.find((x) => x.model === m && x.mode === mode)!;
        expect(r, `${m} ${mode}`).toBeDefined();
        for (const k of ['ppl', 'ppl_early', 'ppl_late', 'passkey_acc', 'passkey_em']) expect(typeof r.metrics[k], `${m} ${mode} ${k}`).toBe('number');
        expect(r.metrics.ppl!).toBeGreaterThan(1);
      }
    }
    expect(j.informative).toEqual({ passkey_acc: false, passkey_em: false });
    expect(typeof j.verdicts.a.matches).toBe('boolean');
    expect(j.verdicts.a.pplRatio).toBeGreaterThan(0);
    expect(Object.keys(j.verdicts.b).sort()).toEqual(['hedgecats', 'linear-only', 'ssd']);
    for (const v of Object.values(j.verdicts.b)) {
      expect(typeof v.laOnlyRaisedPpl).toBe('boolean');
      expect(v.laOnlyRaisedPasskey).toBeUndefined(); // the random teacher is at chance: passkey ignored
    }
    for (const m of METHODS) expect(existsSync(join(tmp, m, 'model.safetensors')), m).toBe(true);
  });

  it('rejects an unknown configuration or method with exit code 2', async () => {
    expect((await runDemo(['--config', 'huge', '--out', tmp])).code).toBe(2);
    expect((await runDemo(['--config', 'tiny', '--methods', 'lolcats,nope', '--out', tmp])).code).toBe(2);
  });
});

describe('the shipped teacher (scripts/demo/teacher)', () => {
  const dir = join(projectRoot, 'scripts', 'demo', 'teacher');
  it.skipIf(!existsSync(join(dir, 'model.safetensors')))('is small, has its config, and the README records the command that regenerates it', async () => {
    expect(statSync(join(dir, 'model.safetensors')).size).toBeLessThan(5 * 1024 * 1024);
    const cfg = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8')) as Record<string, number>;
    expect(cfg.num_hidden_layers).toBe(2);
    expect(cfg.hidden_size).toBe(128);
    const readme = await readFile(join(projectRoot, 'scripts', 'demo', 'README.md'), 'utf8');
    expect(readme).toContain('npm run demo -- --pretrain');
    expect(readme).toContain('hybrid-attention pretrain');
  });
});
