/** Evaluation: perplexity by position, multiple choice, long-range probes, reports and figures. */
export * from './scoring.js';
export * from './perplexity.js';
export * from './multiple-choice.js';
export * from './probes.js';
export * from './report.js';
export * from './svg.js';
export * from './diagnose.js';
export * from './la-stats.js';
