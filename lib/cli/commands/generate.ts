/** `generate <dir> [prompt]`: greedy generation with LlamaModel + tokenizer (lib/model/generate.ts). */
import { resolve } from 'node:path';
import { loadConvertedModel } from '../../recipes/io.js';
import { greedyGenerate } from '../../model/generate.js';
import { UsageError, bool, num, str } from '../args.js';
import { RUNTIME_OPTIONS, loadTokenizer, runtimeFromFlags } from '../common.js';
import { EXIT, type CliCommand } from '../context.js';

export const generateCommand: CliCommand = {
  spec: {
    name: 'generate',
    summary: 'Greedy generation from a checkpoint directory.',
    positionals: [
      { name: '<checkpoint-dir>', description: 'directory holding config.json and the weights' },
      { name: 'prompt', description: 'prompt text (or --prompt / --ids)', optional: true },
    ],
    options: {
      prompt: { type: 'string', short: 'p', value: 'TEXT', description: 'prompt text' },
      ids: { type: 'string', value: 'I,J,...', description: 'prompt as comma-separated token ids (no tokenizer needed)' },
      tokenizer: { type: 'string', value: 'PATH', description: 'tokenizer.json (default: <checkpoint-dir>/tokenizer.json)' },
      'max-new-tokens': { type: 'string', short: 'n', value: 'N', description: 'tokens to generate', default: '32' },
      'ignore-eos': { type: 'boolean', description: 'do not stop at the EOS token' },
      'no-cache': { type: 'boolean', description: 'recompute the full prefix every step (no KV cache)' },
      'add-bos': { type: 'boolean', description: "encode the prompt with the tokenizer's special tokens (BOS)" },
      ...RUNTIME_OPTIONS,
    },
  },
  async run({ values, positionals }, ctx) {
    const dir = resolve(ctx.cwd, positionals[0]!);
    const text = str(values, 'prompt') ?? positionals[1];
    const idsArg = str(values, 'ids');
    if (text !== undefined && idsArg !== undefined) throw new UsageError('give a prompt or --ids, not both');
    if (text === undefined && idsArg === undefined) throw new UsageError('no prompt: pass a prompt argument, --prompt TEXT or --ids I,J,...');
    const maxNew = num(values, 'max-new-tokens', { int: true, min: 0 })!;
    const { device, dtype } = runtimeFromFlags(values, ctx);
    let prompt: number[];
    let tokenizer: Awaited<ReturnType<typeof loadTokenizer>> | undefined;
    if (idsArg !== undefined) {
      prompt = idsArg.split(',').map((s) => Number(s.trim()));
      if (prompt.length === 0 || prompt.some((x) => !Number.isInteger(x) || x < 0)) throw new UsageError(`--ids must be comma-separated non-negative integers, got '${idsArg}'`);
      const tokPath = str(values, 'tokenizer');
      if (tokPath) tokenizer = await loadTokenizer(dir, tokPath, ctx.cwd);
    } else {
      tokenizer = await loadTokenizer(dir, str(values, 'tokenizer'), ctx.cwd);
      prompt = tokenizer.encode(text!, { addSpecialTokens: bool(values, 'add-bos') });
      if (prompt.length === 0) throw new UsageError('the prompt encodes to no tokens');
    }
    const { model } = await loadConvertedModel(dir, { dtype, device });
    try {
      const eos = bool(values, 'ignore-eos') ? [] : model.config.eosTokenIds;
      const t0 = Date.now();
      const out = await greedyGenerate(model, prompt, { maxNewTokens: maxNew, eosTokenIds: eos, useCache: !bool(values, 'no-cache') });
      const seconds = (Date.now() - t0) / 1000;
      const generated = out.slice(prompt.length);
      const decoded = tokenizer ? tokenizer.decode(generated) : undefined;
      if (ctx.json.enabled)
        ctx.json.emit('result', { command: 'generate', prompt_ids: prompt, ids: generated, ...(decoded !== undefined ? { text: decoded, prompt: tokenizer!.decode(prompt) } : {}), seconds });
      else {
        ctx.stdout.write(decoded !== undefined ? `${tokenizer!.decode(prompt)}${decoded}\n` : `${generated.join(',')}\n`);
        ctx.stderr.write(`generated ${generated.length} tokens in ${seconds.toFixed(2)} s (${(generated.length / Math.max(seconds, 1e-9)).toFixed(1)} tok/s)\n`);
      }
      return EXIT.ok;
    } finally {
      model.dispose();
    }
  },
};
