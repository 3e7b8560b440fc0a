#!/usr/bin/env node
// hybrid-attention CLI: runs the compiled dist/cli/main.js when present, else the TypeScript
// sources through tsx (development checkouts; needs the tsx devDependency).
import { existsSync } from 'node:fs';

const dist = new URL('../dist/cli/main.js', import.meta.url);
let entry = dist.href;
if (!existsSync(dist)) {
  let register;
  try {
    ({ register } = await import('tsx/esm/api'));
  } catch {
    process.stderr.write('hybrid-attention: dist/ is not built and tsx is not installed; run `npm run build:ts` (or `npm install` in the repository)\n');
    process.exit(1);
  }
  register();
  entry = new URL('../lib/cli/main.ts', import.meta.url).href;
}
let mod;
try {
  mod = await import(entry);
} catch (e) {
  // e.g. the native addon is not built
  const msg = e instanceof Error ? e.message : String(e);
  process.stderr.write(msg.startsWith('hybrid-attention') ? `${msg}\n` : `hybrid-attention: ${msg}\n`);
  process.exit(1);
}
await mod.main(process.argv.slice(2));
