/**
 * The task lifecycle of DESIGN.md: the stages a live task moves through, in order, and the
 * terminal statuses it ends in. Stage names are a public contract (CLI, API, metrics).
 */

/** Live stages, in the only order a task may move through them. */
export const STAGES = [
  'queued',
  'connecting',
  'handshake',
  'auth',
  'channel',
  'running',
  'closing',
] as const;

/** A live stage. */
export type Stage = (typeof STAGES)[number];

/** How a task ended. */
export const TERMINAL_STATUSES = ['ok', 'nonzero-exit', 'error', 'cancelled', 'interrupted'] as const;

/** A terminal status: `ok` (exit 0), `nonzero-exit`, `error`, `cancelled`, `interrupted`. */
export type TerminalStatus = (typeof TERMINAL_STATUSES)[number];

/** Position of a stage in {@link STAGES}. */
export function stageIndex(stage: Stage): number {
  return STAGES.indexOf(stage);
}

/** Stages only move forward; a stage may be skipped (e.g. straight to `closing`). */
export function canEnter(from: Stage, to: Stage): boolean {
  return stageIndex(to) > stageIndex(from);
}
