import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, loadConfig, parseConfig, ropeInvFreq, type LlamaConfig } from '../../lib/model/config.js';
import { fixturesDir, haveFixtures } from '../helpers/fixtures.js';

const fixtureJson = (dir: string): Record<string, unknown> =>
  JSON.parse(readFileSync(join(fixturesDir, dir, 'config.json'), 'utf8')) as Record<string, unknown>;

// inv_freq buffers of transformers 5.17 (torch 2.11, CPU) LlamaRotaryEmbedding for the configs below.
const TRANSFORMERS_INV_FREQ = {
  default32: [
    1.0, 0.5623413324356079, 0.3162277638912201, 0.17782793939113617, 0.10000000149011612,
    0.05623412877321243, 0.03162277862429619, 0.017782794311642647, 0.009999999776482582,
    0.005623413249850273, 0.003162277862429619, 0.0017782794311642647, 0.0010000000474974513,
    0.000562341301701963, 0.0003162277862429619, 0.00017782794020604342,
  ],
  linear_type: [
    0.25, 0.18747355043888092, 0.14058533310890198, 0.10542412847280502, 0.07905694097280502,
    0.05928434059023857, 0.04445698484778404, 0.0333380363881588, 0.02500000037252903, 0.018747353926301003,
    0.014058532193303108, 0.010542412288486958, 0.007905694656074047, 0.0059284339658916,
    0.004445698577910662, 0.0033338037319481373, 0.0024999999441206455, 0.0018747355788946152,
    0.0014058533124625683, 0.0010542412055656314, 0.0007905694656074047, 0.0005928434547968209,
    0.00044456985779106617, 0.00033338036155328155, 0.0002500000118743628, 0.00018747354624792933,
    0.00014058532542549074, 0.00010542412201175466, 7.905694656074047e-05, 5.928434620727785e-05,
    4.4456985051510856e-05, 3.333803761051968e-05,
  ],
  llama31_v4: [
    1.0, 0.8146172165870667, 0.663601279258728, 0.5405809879302979, 0.44036662578582764, 0.3587302267551422,
    0.2922278344631195, 0.2380538135766983, 0.193922758102417, 0.1579728126525879, 0.12868738174438477,
    0.10483095049858093, 0.08539710193872452, 0.06956595182418823, 0.05666961893439293, 0.046164050698280334,
    0.03760603070259094, 0.030634520575404167, 0.02495540864765644, 0.020329104736447334,
    0.016560440883040428, 0.013490419834852219, 0.010989529080688953, 0.008952259086072445,
    0.00729266507551074, 0.005940730683505535, 0.00483942124992609, 0.003942275885492563,
    0.0032114461064338684, 0.0021665706299245358, 0.0013718936825171113, 0.0008567514596506953,
    0.0005248460220173001, 0.0003126936499029398, 0.0001785077911335975, 9.556212171446532e-05,
    7.784655463183299e-05, 6.341514381347224e-05, 5.165906986803748e-05, 4.208236714475788e-05,
    3.428102354519069e-05, 2.7925909307668917e-05, 2.2748929040972143e-05, 1.8531669411459006e-05,
    1.5096217794052791e-05, 1.2297638932068367e-05, 1.0017868589784484e-05, 8.160727702488657e-06,
    6.647869668086059e-06, 5.415469331637723e-06, 4.411534519022098e-06, 3.593711880967021e-06,
    2.927499735960737e-06, 2.3847917418606812e-06, 1.9426925064180978e-06, 1.5825507944100536e-06,
    1.289173155782919e-06, 1.050182618200779e-06, 8.554969213037111e-07, 6.969025321268418e-07,
    5.677088097399974e-07, 4.6246537976912805e-07, 3.76732259610435e-07, 3.068925877869333e-07,
  ],
  llama32_v5: [
    1.0, 0.663601279258728, 0.44036662578582764, 0.2922278344631195, 0.193922758102417, 0.12868738174438477,
    0.08539710193872452, 0.05666961893439293, 0.03760603070259094, 0.02495540864765644, 0.016560440883040428,
    0.010989529080688953, 0.00729266507551074, 0.00483942124992609, 0.0032114461064338684,
    0.0012905480107292533, 0.000429556705057621, 9.708286233944818e-05, 1.9461638657958247e-05,
    1.291476746700937e-05, 8.570255886297673e-06, 5.687232260243036e-06, 3.7740544485131977e-06,
    2.504467147446121e-06, 1.6619674170215148e-06, 1.1028836297555245e-06, 7.318749339901842e-07,
    4.856731266045244e-07, 3.2229328894572973e-07, 2.1387423032592778e-07, 1.4192720243499934e-07,
    9.418306490260875e-08,
  ],
};

// A transformers-4 style Llama 3.1 8B config (rope_theta at top level, rope_scaling with rope_type).
const LLAMA31_V4 = {
  architectures: ['LlamaForCausalLM'],
  attention_bias: false,
  attention_dropout: 0.0,
  bos_token_id: 128000,
  eos_token_id: [128001, 128008, 128009],
  hidden_act: 'silu',
  hidden_size: 4096,
  initializer_range: 0.02,
  intermediate_size: 14336,
  max_position_embeddings: 131072,
  mlp_bias: false,
  model_type: 'llama',
  num_attention_heads: 32,
  num_hidden_layers: 32,
  num_key_value_heads: 8,
  pretraining_tp: 1,
  rms_norm_eps: 1e-5,
  rope_scaling: { factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 8192, rope_type: 'llama3' },
  rope_theta: 500000.0,
  tie_word_embeddings: false,
  torch_dtype: 'bfloat16',
  transformers_version: '4.43.0.dev0',
  use_cache: true,
  vocab_size: 128256,
};

function expectConfigError(cfg: unknown, feature: string | RegExp): ConfigError {
  let err: unknown;
  try {
    parseConfig(cfg);
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(ConfigError);
  const ce = err as ConfigError;
  if (typeof feature === 'string') expect(ce.feature).toContain(feature);
  else expect(ce.feature).toMatch(feature);
  expect(ce.message).toContain(ce.feature);
  return ce;
}

describe('parseConfig', () => {
  it.skipIf(!haveFixtures)('reads the llama-tiny fixture (transformers 5 layout)', async () => {
    const c = await loadConfig(join(fixturesDir, 'llama-tiny'));
    expect(c).toEqual<LlamaConfig>({
      architecture: 'LlamaForCausalLM',
      vocabSize: 2048,
      hiddenSize: 128,
      intermediateSize: 344,
      numLayers: 2,
      numHeads: 4,
      numKvHeads: 2,
      headDim: 32,
      rmsNormEps: 1e-5,
      rope: { type: 'default', theta: 10000 },
      maxPositionEmbeddings: 1024,
      tieWordEmbeddings: false,
      attentionBias: false,
      mlpBias: false,
      hiddenAct: 'silu',
      torchDtype: 'float32',
      bosTokenId: 0,
      eosTokenIds: [0],
      padTokenId: null,
      slidingWindow: null,
    });
  });

  it.skipIf(!haveFixtures)('reads the bf16 fixture', async () => {
    const c = await loadConfig(join(fixturesDir, 'llama-tiny-bf16', 'config.json'));
    expect(c.torchDtype).toBe('bfloat16');
    expect(c.headDim).toBe(32);
  });

  it('reads a transformers 4 config with rope_theta and llama3 rope_scaling', () => {
    const c = parseConfig(LLAMA31_V4);
    expect(c.rope).toEqual({ type: 'llama3', theta: 500000, factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 });
    expect(c.headDim).toBe(128); // derived: 4096 / 32
    expect(c.numKvHeads).toBe(8);
    expect(c.eosTokenIds).toEqual([128001, 128008, 128009]);
    expect(c.bosTokenId).toBe(128000);
    expect(c.torchDtype).toBe('bfloat16');
    // the same settings in transformers 5 form give the same config
    const { rope_scaling, rope_theta, ...rest } = LLAMA31_V4;
    expect(parseConfig({ ...rest, rope_parameters: { ...rope_scaling, rope_theta } }).rope).toEqual(c.rope);
    // legacy `type` key, and original_max_position_embeddings defaulting to max_position_embeddings
    const legacy = parseConfig({ ...LLAMA31_V4, rope_scaling: { type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4 } });
    expect(legacy.rope.originalMaxPositionEmbeddings).toBe(131072);
    expect(parseConfig({ ...LLAMA31_V4, rope_scaling: { type: 'linear', factor: 2 } }).rope).toEqual({ type: 'linear', theta: 500000, factor: 2 });
    expect(parseConfig({ ...LLAMA31_V4, rope_scaling: null }).rope).toEqual({ type: 'default', theta: 500000 });
  });

  it('derives head_dim from hidden/heads unless given explicitly', () => {
    const base = { ...LLAMA31_V4, rope_scaling: null };
    expect(parseConfig(base).headDim).toBe(128);
    expect(parseConfig({ ...base, head_dim: null }).headDim).toBe(128);
    expect(parseConfig({ ...base, head_dim: 96 }).headDim).toBe(96); // explicit wins (as in Mistral Nemo)
    expectConfigError({ ...base, hidden_size: 4100 }, 'num_attention_heads');
    expectConfigError({ ...base, hidden_size: 4000 }, 'head_dim'); // 125: rotary needs an even head_dim
    expect(parseConfig({ ...base, hidden_size: 4100, head_dim: 128 }).headDim).toBe(128);
  });

  it('reads Mistral configs with and without a sliding window', () => {
    const mistral = {
      architectures: ['MistralForCausalLM'],
      hidden_size: 4096,
      intermediate_size: 14336,
      max_position_embeddings: 32768,
      model_type: 'mistral',
      num_attention_heads: 32,
      num_hidden_layers: 32,
      num_key_value_heads: 8,
      rms_norm_eps: 1e-5,
      rope_theta: 10000.0,
      sliding_window: 4096,
      torch_dtype: 'bfloat16',
      vocab_size: 32000,
    };
    const c = parseConfig(mistral);
    expect(c).toMatchObject({ architecture: 'MistralForCausalLM', slidingWindow: 4096, headDim: 128, bosTokenId: 1, eosTokenIds: [2] });
    expect(parseConfig({ ...mistral, sliding_window: null }).slidingWindow).toBeNull();
    expectConfigError({ ...mistral, attention_bias: true }, 'attention_bias');
  });

  it('falls back to transformers defaults for omitted keys', () => {
    const c = parseConfig({ model_type: 'llama', hidden_size: 64, num_attention_heads: 4, intermediate_size: 100, num_hidden_layers: 1, vocab_size: 10 });
    expect(c).toMatchObject({ numKvHeads: 4, rmsNormEps: 1e-6, rope: { type: 'default', theta: 10000 }, maxPositionEmbeddings: 2048, tieWordEmbeddings: false, bosTokenId: 1, eosTokenIds: [2] });
  });

  it('rejects unsupported features with ConfigError naming them', () => {
    expectConfigError({ ...LLAMA31_V4, architectures: ['Qwen2ForCausalLM'] }, 'Qwen2ForCausalLM');
    expectConfigError({ model_type: 'gemma' }, 'gemma');
    for (const t of ['yarn', 'dynamic', 'longrope']) {
      expectConfigError({ ...LLAMA31_V4, rope_scaling: { rope_type: t, factor: 4 } }, `rope type "${t}"`);
      const { rope_scaling: _, ...rest } = LLAMA31_V4;
      expectConfigError({ ...rest, rope_parameters: { rope_type: t, factor: 4, rope_theta: 1e4 } }, t);
    }
    expectConfigError({ ...LLAMA31_V4, hidden_act: 'gelu' }, 'hidden_act "gelu"');
    expectConfigError({ ...LLAMA31_V4, num_key_value_heads: 5 }, 'num_key_value_heads');
    expectConfigError({ ...LLAMA31_V4, partial_rotary_factor: 0.5 }, 'partial_rotary_factor');
    expectConfigError({ ...LLAMA31_V4, quantization_config: { quant_method: 'gptq' } }, 'quantization_config');
    expectConfigError({ ...LLAMA31_V4, rope_scaling: { rope_type: 'llama3', factor: 8 } }, 'low_freq_factor');
    expectConfigError({ ...LLAMA31_V4, rope_scaling: { rope_type: 'linear' } }, 'factor');
    expectConfigError({ ...LLAMA31_V4, vocab_size: 0 }, 'vocab_size');
    expectConfigError({ ...LLAMA31_V4, model_type: 'mistral' }, 'model_type');
    expectConfigError([], 'config.json');
  });
});

describe('ropeInvFreq', () => {
  const cfg = (head_dim: number, rope: Record<string, unknown>) =>
    parseConfig({ model_type: 'llama', hidden_size: 256, num_attention_heads: 4, head_dim, max_position_embeddings: 131072, rope_parameters: rope });

  /** Llama 3 frequency smoothing written out from the paper/reference code, in float64. */
  function llama3Reference(dim: number, theta: number, factor: number, low: number, high: number, old: number): number[] {
    const out: number[] = [];
    for (let i = 0; i < dim; i += 2) {
      const f = 1 / theta ** (i / dim);
      const wavelen = (2 * Math.PI) / f;
      if (wavelen < old / high) out.push(f);
      else if (wavelen > old / low) out.push(f / factor);
      else {
        const s = (old / wavelen - low) / (high - low);
        out.push((1 - s) * (f / factor) + s * f);
      }
    }
    return out;
  }

  it('llama3 matches the smoothing formula (float64), and covers all three bands', () => {
    const c = cfg(128, { rope_type: 'llama3', rope_theta: 500000, factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 });
    const ref = llama3Reference(128, 500000, 8, 1, 4, 8192);
    const got64 = ropeInvFreq(c, { precision: 'float64' });
    const got32 = ropeInvFreq(c);
    expect(got64.length).toBe(64);
    for (let i = 0; i < 64; i++) {
      expect(Math.abs(got64[i]! - ref[i]!) / ref[i]!).toBeLessThan(1e-13);
      expect(Math.abs(got32[i]! - ref[i]!) / ref[i]!).toBeLessThan(1e-6);
      expect(got32[i]).toBe(Math.fround(got32[i]!));
    }
    const plain = ropeInvFreq(cfg(128, { rope_type: 'default', rope_theta: 500000 }), { precision: 'float64' });
    const ratios = Array.from(got64, (v, i) => plain[i]! / v);
    expect(ratios[0]).toBeCloseTo(1, 12); // high frequency untouched
    expect(ratios[63]).toBeCloseTo(8, 12); // low frequency divided by factor
    expect(ratios.some((r) => r > 1.01 && r < 7.99)).toBe(true); // smoothed band present
  });

  it('default and linear follow 1 / theta^(2i/d) (/ factor)', () => {
    const d = ropeInvFreq(cfg(64, { rope_type: 'default', rope_theta: 10000 }), { precision: 'float64' });
    const l = ropeInvFreq(cfg(64, { rope_type: 'linear', rope_theta: 10000, factor: 4 }), { precision: 'float64' });
    for (let i = 0; i < 32; i++) {
      const want = 1 / 10000 ** ((2 * i) / 64);
      expect(d[i]).toBeCloseTo(want, 15);
      expect(Math.abs(l[i]! - want / 4) / want).toBeLessThan(1e-14);
    }
  });

  it('reproduces the inv_freq buffers of transformers bit for bit (float32)', () => {
    const L3 = { factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 };
    const cases: [keyof typeof TRANSFORMERS_INV_FREQ, LlamaConfig][] = [
      ['default32', cfg(32, { rope_type: 'default', rope_theta: 10000 })],
      ['linear_type', parseConfig({ ...LLAMA31_V4, hidden_size: 256, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 64, rope_theta: 10000, rope_scaling: { type: 'linear', factor: 4 } })],
      ['llama31_v4', parseConfig({ ...LLAMA31_V4, hidden_size: 256, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 128 })],
      ['llama32_v5', cfg(64, { ...L3, factor: 32, rope_type: 'llama3', rope_theta: 500000 })],
    ];
    for (const [name, c] of cases) {
      expect(Array.from(ropeInvFreq(c)), name).toEqual(TRANSFORMERS_INV_FREQ[name]);
    }
  });

  it.skipIf(!haveFixtures)('matches the fixture model (head_dim 32, theta 1e4)', () => {
    const c = parseConfig(fixtureJson('llama-tiny'));
    expect(Array.from(ropeInvFreq(c))).toEqual(TRANSFORMERS_INV_FREQ.default32);
  });
});
