import type { ErrorCode } from './errors.ts';
import type { Stage, TerminalStatus } from './stages.ts';

/** Time spent in one stage of a finished task. */
export interface StageTiming {
  readonly stage: Stage;
  /** ISO 8601 time the stage was entered. */
  readonly startedAt: string;
  readonly durationMs: number;
}

/**
 * A finished task, in the shape of DESIGN.md "Contracts": one `leash run --json` line, and
 * the `result`/`error` fields of the API's task. Field names are a public contract.
 */
export interface TaskReport {
  readonly id: string;
  readonly host: string;
  readonly port: number;
  readonly user: string;
  readonly status: TerminalStatus;
  /** Remote exit code, or null when the command died by signal or never reported one. */
  readonly exitCode: number | null;
  /** Signal name as Node writes it (e.g. `SIGKILL`) when the remote command died by a signal. */
  readonly signal: string | null;
  /** True when the channel closed without an exit status or exit signal (RFC 4254 §6.10). */
  readonly exitStatusMissing: boolean;
  /** Captured standard output (UTF-8; head and tail when truncated). */
  readonly stdout: string;
  readonly stderr: string;
  /** True when either stream exceeded its cap. */
  readonly truncated: boolean;
  readonly bytesDropped: { readonly stdout: number; readonly stderr: number };
  /**
   * After a timeout or cancel while the command ran: whether the remote process was seen to
   * die (its exit was reported after leash signalled it). Null when no kill was needed.
   */
  readonly killConfirmed: boolean | null;
  readonly durationMs: number;
  readonly stages: readonly StageTiming[];
  readonly error: null | { readonly code: ErrorCode; readonly stage: Stage; readonly message: string };
}
