import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Tokenizer } from '../../lib/model/tokenizer.js';
import { InvalidArgumentError } from '../../lib/errors.js';
import { fixturesDir, haveFixtures } from '../helpers/fixtures.js';

const TOKENIZER = join(fixturesDir, 'tokenizer', 'tokenizer.json');
const golden = haveFixtures ? (JSON.parse(readFileSync(join(fixturesDir, 'tokenizer', 'encode-golden.json'), 'utf8')) as { text: string; ids: number[] }[]) : [];

describe.skipIf(!haveFixtures)('Tokenizer (byte-level BPE tokenizer.json)', () => {
  it('reproduces the HF tokenizers golden ids exactly', async () => {
    const tok = await Tokenizer.fromFile(TOKENIZER);
    expect(golden.length).toBeGreaterThan(5);
    for (const { text, ids } of golden) {
      expect(tok.encode(text), JSON.stringify(text)).toEqual(ids);
      // the ByteLevel post_processor adds no tokens, so this is the same with special tokens off
      expect(tok.encode(text, { addSpecialTokens: false })).toEqual(ids);
    }
  });

  it('decode(encode(x)) == x for the golden texts', async () => {
    const tok = await Tokenizer.fromFile(TOKENIZER);
    for (const { text, ids } of golden) {
      expect(tok.decode(ids)).toBe(text);
      expect(tok.decode(tok.encode(text))).toBe(text);
    }
  });

  it('knows its vocabulary and special tokens', async () => {
    const tok = await Tokenizer.fromFile(TOKENIZER);
    expect(tok.vocabSize).toBe(2048);
    expect(tok.bosId).toBe(0); // <|endoftext|>, matching the llama-tiny config's bos/eos ids
    expect(tok.eosId).toBe(0);
    expect(tok.encode('a<|endoftext|>b')).toEqual([65, 0, 66]);
    expect(tok.decode([65, 0, 66])).toBe('a<|endoftext|>b');
    expect(tok.decode([65, 0, 66], { skipSpecialTokens: true })).toBe('ab');
    // no clean-up of spaces before punctuation (HF tokenizers never does it)
    expect(tok.decode(tok.encode('hello , world .'))).toBe('hello , world .');
    expect(tok.decode([])).toBe('');
    expect(() => tok.decode([2048])).toThrow(InvalidArgumentError);
    expect(() => tok.decode([1.5])).toThrow(InvalidArgumentError);
  });

  it('applies a TemplateProcessing post_processor only with addSpecialTokens', () => {
    const json = JSON.parse(readFileSync(TOKENIZER, 'utf8')) as Record<string, unknown>;
    json.post_processor = {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '<|endoftext|>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [{ Sequence: { id: 'A', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } }],
      special_tokens: { '<|endoftext|>': { id: '<|endoftext|>', ids: [0], tokens: ['<|endoftext|>'] } },
    };
    const tok = Tokenizer.fromJson(json, { bos_token: '<|endoftext|>', eos_token: { content: '<|endoftext|>' } });
    const plain = golden[0]!;
    expect(tok.encode(plain.text)).toEqual([0, ...plain.ids]);
    expect(tok.encode(plain.text, { addSpecialTokens: false })).toEqual(plain.ids);
    expect(tok.encode('')).toEqual([0]);
    expect(tok.bosId).toBe(0);
  });
});
