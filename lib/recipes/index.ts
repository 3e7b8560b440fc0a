/** Conversion recipes (SPEC sec. 4, 5): attention transfer, LoRA fine-tuning, the four methods, converted-model files. */
export * from './data.js';
export * from './loop.js';
export * from './transfer.js';
export * from './finetune.js';
export * from './methods.js';
export * from './io.js';
