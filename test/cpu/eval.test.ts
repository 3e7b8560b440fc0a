/** Evaluation: perplexity by position, multiple choice, probes, report/JSON/SVG, diagnose on llama-tiny. */
import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { Tensor } from '../../lib/index.js';
import { LlamaModel } from '../../lib/model/llama.js';
import { Tokenizer } from '../../lib/model/tokenizer.js';
import { perplexity } from '../../lib/eval/perplexity.js';
import { encodePair, multipleChoice, type McItem } from '../../lib/eval/multiple-choice.js';
import { associativeRecallItems, passkeyItems, probeAccuracy } from '../../lib/eval/probes.js';
import { buildReport, formatReport, reportToJson } from '../../lib/eval/report.js';
import { barChartSvg, heatmapSvg, lineChartSvg, reportFigures } from '../../lib/eval/svg.js';
import { scorerFromModel, type LogitsModel, type ScoreFn } from '../../lib/eval/scoring.js';
import { diagnose, modeControlFor } from '../../lib/eval/diagnose.js';
import { collectGammas, collectLaShare } from '../../lib/eval/la-stats.js';
import type { TokenizerLike } from '../../lib/data/pack.js';
import { fixturesDir, haveFixtures } from '../helpers/fixtures.js';

// ---- a toy bigram LM with known probabilities: p(next | current) = P[current][next]
const P = [
  [0.1, 0.6, 0.2, 0.1],
  [0.25, 0.25, 0.25, 0.25],
  [0.5, 0.125, 0.125, 0.25],
  [0.4, 0.3, 0.2, 0.1],
];
const toy: LogitsModel = {
  forward(ids) {
    const T = ids[0]!.length;
    const data = new Float64Array(ids.length * T * 4);
    ids.forEach((row, b) => row.forEach((tok, t) => P[tok]!.forEach((p, v) => (data[(b * T + t) * 4 + v] = Math.log(p) + 3)))); // + 3: logits need not be normalised
    return { logits: Tensor.fromArray(data, [ids.length, T, 4], { dtype: 'f64' }) };
  },
};
/** a..d -> 0..3 */
const abcd: TokenizerLike = { eosId: 1, encode: (t) => [...t].map((c) => 'abcd'.indexOf(c)).filter((i) => i >= 0) };

describe('perplexity', () => {
  it('matches hand-computed values overall, on n < w and on n >= w', async () => {
    // [0,1,2,3,0]: p = .6 (n=0) .25 (n=1) | .25 (n=2) .4 (n=3); window 2
    const r = await perplexity(toy, [[0, 1, 2, 3, 0]], { window: 2 });
    expect(r.tokens).toBe(4);
    expect(r.perplexity).toBeCloseTo(0.015 ** -0.25, 12);
    expect(r.early.perplexity).toBeCloseTo(1 / Math.sqrt(0.15), 12);
    expect(r.late.perplexity).toBeCloseTo(1 / Math.sqrt(0.1), 12);
    expect(r.nll).toBeCloseTo(-Math.log(0.015) / 4, 12);
    // a second, shorter sequence [2,0,0]: .5, .1 (both early); batched with padding
    const two = await perplexity(toy, [Int32Array.from([0, 1, 2, 3, 0]), [2, 0, 0]], { window: 2, batchSize: 2 });
    expect(two.sequences).toBe(2);
    expect(two.tokens).toBe(6);
    expect(two.early.tokens).toBe(4);
    expect(two.perplexity).toBeCloseTo(0.00075 ** (-1 / 6), 12);
    expect(two.early.perplexity).toBeCloseTo(0.0075 ** -0.25, 12);
    expect(two.late.perplexity).toBeCloseTo(1 / Math.sqrt(0.1), 12);
    const none = await perplexity(toy, [[0, 1]], { window: 8 });
    expect(Number.isNaN(none.late.perplexity)).toBe(true);
  });
});

describe('multiple choice', () => {
  const items: McItem[] = [
    { context: 'a', choices: ['b', 'cd'], gold: 0 }, // ll: ln .6 vs ln .05 -> both metrics right
    { context: 'c', choices: ['a', 'dd'], gold: 1 }, // ln .5 vs ln .025 -> both wrong
    { context: 'c', choices: ['a', 'ab'], gold: 1 }, // sum: ln .5 > ln .3 (wrong); per char: -.693 < -.602 (right)
  ];
  it('acc and acc_norm as lm-eval-harness, exact greedy match, via a model or a score function', async () => {
    const r = await multipleChoice(toy, items, { tokenizer: abcd, details: true });
    expect(r.n).toBe(3);
    expect(r.accuracy).toBeCloseTo(1 / 3, 15);
    expect(r.accuracyNorm).toBeCloseTo(2 / 3, 15);
    expect(r.exactMatch).toBeCloseTo(2 / 3, 15); // 'b' after a, 'ab' after c are greedy; 'dd' is not
    expect(r.items![2]!.scores.map((s) => s.logLikelihood)).toEqual([expect.closeTo(Math.log(0.5), 12), expect.closeTo(Math.log(0.3), 12)]);
    const fn: ScoreFn = scorerFromModel(toy, { maxBatch: 1 });
    expect(await multipleChoice(fn, items, { tokenizer: abcd })).toMatchObject({ accuracy: r.accuracy, accuracyNorm: r.accuracyNorm });
  });

  it('splits context and continuation the harness way', () => {
    expect(encodePair(abcd, 'ab ', 'c')).toEqual({ ids: [0, 1, 2], start: 2 });
    expect(encodePair(abcd, '', 'cd')).toEqual({ ids: [1, 2, 3], start: 1 }); // empty context -> EOS prefix
    expect(encodePair(abcd, 'abcabc', 'd', { maxLength: 3 })).toEqual({ ids: [1, 2, 3], start: 2 }); // left-truncated context
  });
});

describe('long-range probes', () => {
  const chars: TokenizerLike = { eosId: 0, encode: (t) => [...t].map((c) => c.charCodeAt(0) % 256) };
  it('passkey: the key sits more than w tokens before the question; deterministic by seed', () => {
    const a = passkeyItems({ tokenizer: chars, window: 64, count: 5, seed: 7 });
    const b = passkeyItems({ tokenizer: chars, window: 64, count: 5, seed: 7 });
    const c = passkeyItems({ tokenizer: chars, window: 64, count: 5, seed: 8 });
    expect(a).toEqual(b);
    expect(a.map((x) => x.context)).not.toEqual(c.map((x) => x.context));
    for (const it of a) {
      const key = it.answer.trim();
      expect(key).toMatch(/^\d{5}$/);
      const lastKey = it.context.lastIndexOf(key) + key.length;
      expect(it.context.length - lastKey).toBeGreaterThan(64 + 1); // characters = tokens here
      expect(it.distance).toBeGreaterThan(64);
      expect(it.distance).toBeLessThanOrEqual(2 * 64 + 2 + 40);
      expect(it.context.endsWith('The pass key is')).toBe(true);
      expect(it.choices[it.gold]).toBe(it.answer);
      expect(new Set(it.choices).size).toBe(it.choices.length);
    }
    expect(new Set(a.map((x) => x.gold)).size).toBeGreaterThan(1); // the answer is not always first
    expect(() => passkeyItems({ tokenizer: chars, window: 64, count: 1, minDistance: 64 })).toThrow(/must exceed the window/);
  });

  it('associative recall: the queried pair lies beyond w; distractors are other values in the text', () => {
    const a = associativeRecallItems({ tokenizer: chars, window: 32, count: 4, seed: 1 });
    expect(associativeRecallItems({ tokenizer: chars, window: 32, count: 4, seed: 1 })).toEqual(a);
    for (const it of a) {
      const key = it.context.match(/Query: (\w+):$/)![1]!;
      const pair = `${key}:${it.answer}.`;
      expect(it.context.indexOf(pair)).toBeGreaterThan(0);
      expect(it.context.length - (it.context.indexOf(pair) + pair.length)).toBeGreaterThan(32);
      for (const d of it.distractors) expect(it.context).toContain(`:${d}.`);
    }
  });

  it.skipIf(!haveFixtures)('distances hold with the real BPE tokenizer; scoring runs end to end', async () => {
    const tok = await Tokenizer.fromFile(join(fixturesDir, 'tokenizer', 'tokenizer.json'));
    const items = passkeyItems({ tokenizer: tok, window: 48, count: 3, seed: 2 });
    for (const it of items) {
      const key = it.answer.trim();
      const upTo = it.context.slice(0, it.context.lastIndexOf(key) + key.length);
      const d = tok.encode(it.context, { addSpecialTokens: false }).length - tok.encode(upTo, { addSpecialTokens: false }).length;
      expect(d).toBeGreaterThan(48);
    }
    const r = await probeAccuracy(toy, [], { tokenizer: abcd });
    expect(r.n).toBe(0);
  });
});

describe('report, JSON and SVG', () => {
  const modes = [
    { mode: 'hybrid', metrics: { ppl: 10, mc_acc: 0.6 } },
    { mode: 'swa', metrics: { ppl: 12, mc_acc: 0.5 } },
    { mode: 'la', metrics: { ppl: 40, mc_acc: 0.3 } },
    { mode: 'la-full', metrics: { ppl: 30, mc_acc: 0.35 } },
    { mode: 'sinks', metrics: { ppl: 100, mc_acc: 0.27 } },
    { mode: 'none', metrics: { ppl: 50, mc_acc: 0.25 } },
  ];
  it('recovered performance and the two gaps (oriented: > 0 = better)', () => {
    const r = buildReport(modes, { base: { ppl: 8, mc_acc: 0.7 }, window: 64, model: 'toy', laShare: [[0.1, 0.2]] });
    expect(r.metrics).toEqual(['ppl', 'mc_acc']);
    expect(r.recovered!.hybrid!.ppl).toBeCloseTo(1.25, 15);
    expect(r.recovered!.swa!.mc_acc).toBeCloseTo(0.5 / 0.7, 15);
    expect(r.gaps.ppl).toEqual({ hybridMinusSwa: 2, laMinusNone: 10 });
    expect(r.gaps.mc_acc!.hybridMinusSwa).toBeCloseTo(0.1, 15);
    expect(r.gaps.mc_acc!.laMinusNone).toBeCloseTo(0.05, 15);
    const text = formatReport(r);
    expect(text).toContain('window w = 64');
    for (const m of modes) expect(text).toMatch(new RegExp(`^${m.mode}\\s`, 'm'));
    expect(text).toMatch(/^hybrid\s+10\.00 \(125%\)\s+0\.600 \(86%\)$/m);
    expect(text).toMatch(/PPL\s+hybrid - swa:\s+\+2\.00\s+la - none:\s+\+10\.00/);
    const json = JSON.parse(reportToJson(buildReport([{ mode: 'softmax', metrics: { ppl: Number.NaN } }])));
    expect(json.modes[0].metrics.ppl).toBeNull();
    expect(json.gaps.ppl).toEqual({ hybridMinusSwa: null, laMinusNone: null });
  });

  it('SVG figures are well-formed XML with the expected number of cells, bars and lines', () => {
    const heat = heatmapSvg([[0.1, 0.5, Number.NaN], [1, 0, 0.3]], { title: 'LA share <layer & head>' });
    checkXml(heat);
    expect(count(heat, 'class="cell"')).toBe(6);
    expect(heat).toContain('&lt;layer &amp; head&gt;');
    const bars = barChartSvg(['hybrid', 'swa', 'none'], [{ name: 'acc', values: [0.6, 0.5, Number.NaN] }, { name: 'acc_norm', values: [0.7, 0.4, 0.2] }]);
    checkXml(bars);
    expect(count(bars, 'class="bar"')).toBe(5);
    const lines = lineChartSvg([{ name: 'train', points: [1, 2, 3].map((x) => ({ x, y: 5 / x })) }, { name: 'val', points: [{ x: 3, y: 2 }] }], { logY: true });
    checkXml(lines);
    expect(count(lines, 'class="line"')).toBe(2);
    const figs = reportFigures({ ...buildReport(modes), laShare: [[0.1, 0.2, 0.3, 0.4]], gammas: [[0.1, 0.1, 0.1, 0.1]] });
    expect(Object.keys(figs).sort()).toEqual(['gamma.svg', 'la-share.svg', 'mc_acc-by-mode.svg', 'ppl-by-mode.svg']);
    for (const svg of Object.values(figs)) checkXml(svg);
    expect(count(figs['ppl-by-mode.svg']!, 'class="bar"')).toBe(6);
    expect(() => barChartSvg(['a'], [{ name: 'x', values: [1, 2] }])).toThrow(/2 values for 1 categories/);
  });
});

describe.skipIf(!haveFixtures)('diagnostics on llama-tiny', () => {
  const dir = join(fixturesDir, 'llama-tiny');
  const seqs = [0, 1].map((s) => Array.from({ length: 40 }, (_, t) => (s * 131 + t * 37 + ((t * t) % 11)) % 2048));

  it('per-token log-probs agree with LlamaModel.loss; a softmax model has the single mode softmax', async () => {
    const model = await LlamaModel.load(dir);
    try {
      const loss = await model.loss(seqs);
      model.clearPending();
      const r = await perplexity(model, seqs, { window: 16, batchSize: 2 });
      expect(r.nll).toBeCloseTo(loss, 5);
      const control = modeControlFor(model);
      expect(control.modes).toEqual(['softmax']);
      const rep = await diagnose(model, control, { sequences: seqs }, { window: 16 });
      expect(rep.modes.map((m) => m.mode)).toEqual(['softmax']);
      expect(rep.modes[0]!.metrics.ppl).toBeCloseTo(r.perplexity, 6);
      expect(() => modeControlFor(model, ['hybrid'])).toThrow(/not supported/);
    } finally {
      model.dispose();
    }
  });

  it('a converted hybrid model: every mode; hybrid = swa on n < w; LA share and gammas per layer x head', async () => {
    const { convertToHybrid } = await import('../../lib/model/convert.js');
    const model = await LlamaModel.load(dir);
    try {
      convertToHybrid(model, { window: 16, gammaInit: 0.1 });
      const control = modeControlFor(model);
      expect(control.modes).toEqual(['hybrid', 'swa', 'la', 'la-full', 'sinks', 'none']);
      const rep = await diagnose(model, control, { sequences: seqs }, { window: 16, base: { ppl: 100 } });
      const by = Object.fromEntries(rep.modes.map((m) => [m.mode, m.metrics]));
      expect(by.hybrid!.ppl_early!).toBeCloseTo(by.swa!.ppl_early!, 3);
      expect(by.hybrid!.ppl_late).not.toBeCloseTo(by.swa!.ppl_late!, 3);
      for (const m of rep.modes) expect(Number.isFinite(m.metrics.ppl)).toBe(true);
      expect(rep.gaps.ppl!.hybridMinusSwa).not.toBeNull();
      expect(model.attentionModes()).toEqual(['hybrid', 'hybrid']); // restored
      control.set('hybrid');
      const share = await collectLaShare(model, (ids) => model.forward(ids).logits.dispose(), seqs, 4);
      expect(share!.mean).toHaveLength(2);
      for (const row of share!.mean)
        for (const x of row) {
          expect(x).toBeGreaterThan(0);
          expect(x).toBeLessThan(1);
        }
      for (const row of share!.early) for (const x of row) expect(x).toBe(0); // n < w: the window holds the whole prefix
      const gammas = await collectGammas(model, 4);
      for (const row of gammas!) for (const g of row) expect(g).toBeCloseTo(0.1, 6);
    } finally {
      model.dispose();
    }
  });
});

// ---- helpers: a minimal XML well-formedness check (tags balanced, attributes quoted, entities valid)
function count(s: string, needle: string): number {
  return s.split(needle).length - 1;
}

function checkXml(xml: string): void {
  let s = xml.replace(/^<\?xml[^?]*\?>\s*/, '');
  const stack: string[] = [];
  let roots = 0;
  while (s.length > 0) {
    const lt = s.indexOf('<');
    const text = lt === -1 ? s : s.slice(0, lt);
    if (/&(?!(lt|gt|amp|quot|apos|#\d+);)/.test(text) || text.includes('>')) throw new Error(`bad text: ${text.slice(0, 40)}`);
    if (stack.length === 0 && text.trim() !== '') throw new Error('text outside the root element');
    if (lt === -1) break;
    s = s.slice(lt);
    const m = s.match(/^<(\/?)([A-Za-z][\w:-]*)((?:\s+[\w:-]+="[^"<]*")*)\s*(\/?)>/);
    if (!m) throw new Error(`malformed tag near: ${s.slice(0, 60)}`);
    const [all, close, name, attrs, selfClose] = m;
    const names = [...attrs!.matchAll(/([\w:-]+)=/g)].map((a) => a[1]);
    if (new Set(names).size !== names.length) throw new Error(`duplicate attribute in <${name}>`);
    if (/&(?!(lt|gt|amp|quot|apos|#\d+);)/.test(attrs!)) throw new Error(`bad entity in <${name}>`);
    if (close) {
      if (stack.pop() !== name) throw new Error(`unbalanced </${name}>`);
    } else if (!selfClose) {
      if (stack.length === 0) roots++;
      stack.push(name!);
    } else if (stack.length === 0) roots++;
    s = s.slice(all!.length);
  }
  if (stack.length) throw new Error(`unclosed <${stack.at(-1)}>`);
  if (roots !== 1) throw new Error(`${roots} root elements`);
  expect(xml.startsWith('<?xml')).toBe(true);
}
