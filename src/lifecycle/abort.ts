/**
 * AbortSignal plumbing with listeners that are always removed (undici
 * lib/api/abort-signal.js): a long-lived parent signal must not collect one listener per
 * task it ever supervised.
 */

/**
 * Calls `fn(reason)` once when `signal` aborts — at once if it already has. Returns a
 * disposer that removes the listener; call it when the guarded work ends.
 */
export function onAbort(signal: AbortSignal | undefined, fn: (reason: unknown) => void): () => void {
  if (!signal) return noop;
  if (signal.aborted) {
    fn(signal.reason);
    return noop;
  }
  const listener = (): void => fn(signal.reason);
  signal.addEventListener('abort', listener, { once: true });
  return () => signal.removeEventListener('abort', listener);
}

/**
 * A child controller that aborts, with the parent's reason, when the parent aborts, and can
 * also be aborted on its own (a stage deadline). `dispose()` unlinks it from the parent.
 */
export class LinkedAbort {
  readonly #controller = new AbortController();
  readonly #unlink: () => void;

  constructor(parent?: AbortSignal) {
    this.#unlink = onAbort(parent, (reason) => this.abort(reason));
  }

  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  abort(reason: unknown): void {
    if (!this.#controller.signal.aborted) this.#controller.abort(reason);
  }

  dispose(): void {
    this.#unlink();
  }
}

/** How an event-driven wait settles. */
export interface Settle<T> {
  readonly resolve: (value: T) => void;
  readonly reject: (err: unknown) => void;
}

/**
 * A promise for an event-driven wait that is bounded by `signal`. `start` attaches its
 * listeners and returns the function that detaches them; that cleanup runs exactly once,
 * whichever way the wait ends (resolved, rejected, or aborted with the signal's reason).
 */
export function waitUntil<T>(signal: AbortSignal, start: (settle: Settle<T>) => (() => void) | void): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let done = false;
    // Filled in once `start` returns; `start` may settle before that.
    const detach: { cleanup: (() => void) | void; unlink: () => void } = { cleanup: undefined, unlink: noop };
    const finish = (): boolean => {
      if (done) return false;
      done = true;
      detach.unlink();
      detach.cleanup?.();
      return true;
    };
    const settle: Settle<T> = {
      resolve: (value) => {
        if (finish()) resolve(value);
      },
      reject: (err) => {
        // An abort reason is whatever the aborter chose; leash's are LeashErrors.
        // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors
        if (finish()) reject(err);
      },
    };
    const cleanup = start(settle);
    if (done) {
      // `start` settled synchronously before its cleanup was known.
      cleanup?.();
      return;
    }
    detach.cleanup = cleanup;
    detach.unlink = onAbort(signal, (reason) => settle.reject(reason));
  });
}

function noop(): void {}
