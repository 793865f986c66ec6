import type { Client } from 'ssh2';
import type { ResourceHandle, ResourceLedger } from '../lifecycle/ledger.ts';
import type { LeashError } from '../lifecycle/errors.ts';
import type { Stage } from '../lifecycle/stages.ts';
import { closedDuring, fromSsh2Error } from './ssh-errors.ts';
import type { TrackedSocket } from './tcp-socket.ts';

/** Who and where an SSH connection is for. */
export interface SshTarget {
  readonly host: string;
  readonly port: number;
  readonly user: string;
}

/**
 * One authenticated (or authenticating) SSH connection: the ssh2 client, the TCP socket
 * leash created for it, and its ledger entry. ssh2's `Client.destroy()` is a no-op once
 * the socket stops being writable (ssh2#1124), so teardown always ends by destroying the
 * socket leash holds; the connection counts as gone only when that socket has closed.
 */
export class SshConnection {
  readonly client: Client;
  readonly socket: TrackedSocket;
  readonly target: SshTarget;
  /** Resolves when the socket has closed and every ledger entry of the connection is released. */
  readonly closed: Promise<void>;
  readonly #ledger: ResourceLedger;
  readonly #handle: ResourceHandle;
  readonly #life = new AbortController();
  readonly #closeWatchers = new Set<() => void>();
  #isClosed = false;
  #firstError: Error | null = null;

  constructor(client: Client, socket: TrackedSocket, target: SshTarget, ledger: ResourceLedger, owner: string) {
    this.client = client;
    this.socket = socket;
    this.target = target;
    this.#ledger = ledger;
    this.#handle = ledger.open('ssh-connection', owner, { host: target.host, port: target.port, user: target.user });
    // A pooled connection carries many channels at once, each waiting on the client's
    // 'close' while it opens: that many listeners is expected, not a leak warning.
    client.setMaxListeners(64);
    // ssh2 may emit 'error' more than once, and an unheard 'error' crashes the process
    // (SSH-PITFALLS 12): keep one permanent listener and remember the first.
    client.on('error', (err: Error) => {
      this.#firstError ??= err;
    });
    client.once('close', () => this.#life.abort());
    this.closed = socket.closed.then(() => {
      this.#life.abort();
      this.#handle.release();
      this.#isClosed = true;
      for (const wake of this.#closeWatchers) wake();
      this.#closeWatchers.clear();
    });
  }

  /**
   * The connection's end, for one task's wait, with a way to stop watching. A pooled
   * connection outlives thousands of tasks: every reaction a task leaves on {@link closed}
   * (a `Promise.race` with it, say) is held until the connection closes — the soak measured
   * ~700 bytes a task on a connection that never went idle. Call `dispose` when done.
   */
  watchClosed(): { readonly closed: Promise<void>; dispose(): void } {
    let wake: (() => void) | undefined;
    const closed = new Promise<void>((resolve) => {
      if (this.#isClosed) resolve();
      else this.#closeWatchers.add((wake = resolve));
    });
    return {
      closed,
      dispose: () => {
        if (wake) this.#closeWatchers.delete(wake);
      },
    };
  }

  /** Aborts when the connection starts going away; work on it must stop. */
  get signal(): AbortSignal {
    return this.#life.signal;
  }

  /** True until the connection closes or is torn down. */
  get alive(): boolean {
    return !this.#life.signal.aborted;
  }

  /** The first error ssh2 reported, if any. */
  get firstError(): Error | null {
    return this.#firstError;
  }

  /** Why the connection failed, as a stable code for `stage`. */
  failure(stage: Stage): LeashError {
    return this.#firstError ? fromSsh2Error(this.#firstError, stage) : closedDuring(stage);
  }

  /** Moves the connection and its socket to another ledger owner (e.g. the pool). */
  transfer(owner: string): void {
    this.#handle.transfer(owner);
    this.socket.transfer(owner);
  }

  /**
   * Polite close: sends SSH disconnect and FIN, and destroys the socket as soon as they have
   * left for the kernel — waiting for the server to finish its own teardown only costs the
   * task time (about 300 ms per task under load). `graceMs` bounds the flush itself: a
   * vanished peer with a full send window would hold it for 15 minutes (ssh2#1124).
   */
  async close(graceMs: number): Promise<void> {
    const socket = this.socket.socket;
    if (socket.destroyed) return this.closed;
    this.#life.abort();
    const timer = this.#ledger.timeout(this.#handle.owner, graceMs, () => this.socket.destroy(), { purpose: 'close-grace' });
    socket.once('finish', () => this.socket.destroy());
    try {
      this.client.end();
    } catch {
      this.socket.destroy();
    }
    if (socket.writableFinished) this.socket.destroy();
    try {
      await this.closed;
    } finally {
      timer.release();
    }
  }

  /** Tears the connection down now. */
  async destroy(): Promise<void> {
    this.#life.abort();
    this.socket.destroy();
    await this.closed;
  }
}
