/** Data layer: corpora, streaming, tokenisation, packing, splits, batches. */
export * from './corpus.js';
export * from './lines.js';
export * from './pack.js';
export * from './random.js';
export * from './brown.js';
