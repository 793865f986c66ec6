import { LinkedAbort } from './abort.ts';
import type { ResourceLedger } from './ledger.ts';

/** Options for {@link withDeadline}. */
export interface DeadlineOptions {
  readonly ledger: ResourceLedger;
  /** Owner of the deadline timer in the ledger (the task id). */
  readonly owner: string;
  /** Milliseconds allowed; 0 disables the deadline (the parent signal still applies). */
  readonly ms: number;
  /** The enclosing signal (task cancel, outer deadline). */
  readonly parent?: AbortSignal;
  /** The error the body's signal aborts with when the deadline passes. */
  readonly onTimeout: () => Error;
  /** Shown in the ledger next to the timer, e.g. `handshake`. */
  readonly label: string;
}

/**
 * Runs `body` with a signal that aborts with `onTimeout()` once `ms` have passed, or with
 * the parent's reason when the parent aborts. The body must honour the signal by tearing
 * down what it waits on (destroying the socket, closing the channel) and rejecting; a
 * deadline that only stops waiting would leave the work running (../shared/SSH-PITFALLS.md 1).
 */
export async function withDeadline<T>(options: DeadlineOptions, body: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const link = new LinkedAbort(options.parent);
  const timer =
    options.ms > 0
      ? options.ledger.timeout(options.owner, options.ms, () => link.abort(options.onTimeout()), { deadline: options.label })
      : undefined;
  try {
    return await body(link.signal);
  } finally {
    timer?.release();
    link.dispose();
  }
}
