import { waitUntil } from '../lifecycle/abort.ts';
import type { ResourceLedger } from '../lifecycle/ledger.ts';

/**
 * At most `limit` holders per key at once (e.g. SSH handshakes in progress through one jump
 * host), shared by every task and batch of the process; waiters get slots in arrival order.
 * A wait ends with a slot, the caller's signal, or `waitMs`.
 */
export class KeyedLimiter {
  readonly #limit: number;
  readonly #held = new Map<string, number>();
  readonly #waiting = new Map<string, Array<() => void>>();

  constructor(limit: number) {
    if (!Number.isInteger(limit) || limit < 1) throw new RangeError(`limit must be a whole number ≥ 1, got ${limit}`);
    this.#limit = limit;
  }

  get limit(): number {
    return this.#limit;
  }

  /** Holders of `key` now. */
  held(key: string): number {
    return this.#held.get(key) ?? 0;
  }

  /**
   * Takes a slot for `key` and returns its release (idempotent). Rejects with the signal's
   * reason, or with `onTimeout()` after `ms` (0: no limit but the signal).
   */
  async acquire(key: string, wait: { ledger: ResourceLedger; owner: string; signal: AbortSignal; ms: number; onTimeout: () => Error }): Promise<() => void> {
    const { signal, ledger, owner, onTimeout } = wait;
    signal.throwIfAborted();
    if (this.held(key) >= this.#limit || (this.#waiting.get(key)?.length ?? 0) > 0) {
      await waitUntil<void>(signal, ({ resolve, reject }) => {
        const queue = this.#waiting.get(key) ?? [];
        this.#waiting.set(key, queue);
        const turn = (): void => resolve();
        queue.push(turn);
        const timer = wait.ms > 0 ? ledger.timeout(owner, wait.ms, () => reject(onTimeout()), { purpose: 'limiter-wait' }) : null;
        return () => {
          timer?.release();
          const i = queue.indexOf(turn);
          // Still queued (timed out or cancelled): leave the line. Served: the slot was passed on.
          if (i !== -1) queue.splice(i, 1);
          else this.#held.set(key, this.held(key) - 1);
          if (queue.length === 0) this.#waiting.delete(key);
        };
      });
    }
    this.#held.set(key, this.held(key) + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#release(key);
    };
  }

  #release(key: string): void {
    const queue = this.#waiting.get(key);
    const next = queue?.shift();
    if (next) {
      // Hand the slot straight to the next in line: count it as held until it takes over.
      next();
      return;
    }
    const held = this.held(key) - 1;
    if (held > 0) this.#held.set(key, held);
    else this.#held.delete(key);
  }
}
