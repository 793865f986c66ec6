import { waitUntil } from '../lifecycle/abort.ts';
import { LeashError } from '../lifecycle/errors.ts';
import type { ResourceHandle, ResourceLedger } from '../lifecycle/ledger.ts';
import type { TaskProgress } from '../lifecycle/task-table.ts';
import type { SshConnection } from './connection.ts';

/** How many connections the pool keeps, and for how long. */
export interface PoolLimits {
  /** Most connections per key (host, port, user, identity, jump chain). Default 4. */
  readonly maxConnectionsPerKey: number;
  /** Most channels at once on one connection. Default 8, below sshd's default MaxSessions of 10. */
  readonly maxChannelsPerConnection: number;
  /** An unused connection closes after this long. Default 30 s. */
  readonly idleTtlMs: number;
}

export const DEFAULT_POOL_LIMITS: PoolLimits = { maxConnectionsPerKey: 4, maxChannelsPerConnection: 8, idleTtlMs: 30_000 };

/** Connections by state, for `leash_ssh_connections{state}`. */
export interface PoolStats {
  /** Open, no channel in use. */
  readonly idle: number;
  /** Open, at least one channel in use. */
  readonly busy: number;
  /** Being dialled for the pool (TCP, handshake, auth). */
  readonly connecting: number;
}

/** A connection lent to one task for one channel. */
export interface Lease {
  readonly connection: SshConnection;
  /** True when the connection was already open (the task skipped connecting, handshake and auth). */
  readonly reused: boolean;
  /** Channels in use on the connection when this one was lent, this one included. */
  readonly channelsInUse: number;
  /**
   * The server refused a channel while others were open: its session limit (sshd's
   * MaxSessions) is lower than ours. The connection takes no more than it has now.
   */
  markFull(): void;
  /**
   * Takes over a channel the task gave up on while the server may still answer or close it
   * late, when other tasks share the connection: the channel's ledger entry becomes the
   * pool's and the connection is never lent again; it is destroyed, and the channel with it,
   * once the others are done (a remote session that ignored the kill lives until then, not
   * longer). False when nobody else uses the connection: then the caller destroys it, the
   * quickest sure end of the channel.
   */
  adopt(channel: ResourceHandle): boolean;
  /** Gives the channel back. `broken`: never lend the connection again; it closes once unused. */
  release(broken: boolean): void;
}

/** The ledger owner of every pooled connection while it is in the pool (DESIGN.md invariant 2). */
export const POOL_OWNER = 'pool';
/** How long {@link ConnectionPool.close} lets an idle connection say goodbye. */
const CLOSE_GRACE_MS = 1000;

class Pooled {
  channels = 0;
  /** Jump-host forwards carried for other connections: they keep it busy but take no session slot. */
  forwards = 0;
  limit: number;
  broken = false;
  idleTimer: ResourceHandle | null = null;
  lastUsed = Date.now();

  constructor(
    readonly key: string,
    readonly connection: SshConnection,
    limit: number,
  ) {
    this.limit = limit;
  }

  get usable(): boolean {
    return !this.broken && this.connection.alive && this.connection.firstError === null;
  }
}

/**
 * SSH connections kept open between tasks, keyed by everything that makes two connections
 * interchangeable. A task borrows one channel slot on a connection; the connection belongs
 * to the pool (ledger owner `pool`), the channel to the task. A connection that errored,
 * failed a keepalive or was marked broken is never lent again; an unused one closes after
 * the idle TTL. When a key is at its connection limit and every connection is at its
 * channel limit, a task waits — bounded by its deadline — for a slot.
 */
export class ConnectionPool {
  readonly #ledger: ResourceLedger;
  readonly #limits: PoolLimits;
  readonly #byKey = new Map<string, Set<Pooled>>();
  readonly #dialing = new Map<string, number>();
  /** Tasks waiting for a slot, per key; woken when a slot frees or a connection goes. */
  readonly #waiters = new Map<string, Set<() => void>>();
  #closed = false;

  constructor(ledger: ResourceLedger, limits: Partial<PoolLimits> = {}) {
    this.#ledger = ledger;
    this.#limits = { ...DEFAULT_POOL_LIMITS, ...limits };
  }

  get limits(): PoolLimits {
    return this.#limits;
  }

  /**
   * Lends a channel slot on a connection for `key`: an open one with room, else a new one
   * from `dial` (run by the task, under its own stages and deadlines, then handed to the
   * pool), else — at the connection limit — waits up to `waitMs` (0: the signal alone).
   * `fresh`: never an open connection (a retry after a failure on one). `forward`: the lease
   * carries a jump-host forward (a `direct-tcpip` channel, which sshd's MaxSessions does not
   * count) for as long as the connection over it lives, so it takes no session slot.
   */
  async acquire(
    key: string,
    task: TaskProgress,
    signal: AbortSignal,
    waitMs: number,
    dial: () => Promise<SshConnection>,
    options: { fresh?: boolean; forward?: boolean } = {},
  ): Promise<Lease> {
    const forward = options.forward ?? false;
    const until = waitMs > 0 ? Date.now() + waitMs : Infinity;
    for (;;) {
      signal.throwIfAborted();
      if (this.#closed) throw new LeashError('cancelled', task.stage, 'the connection pool is closed (leash is shutting down)');
      const open = options.fresh ? null : this.#pick(key, forward);
      if (open) return this.#lend(open, true, forward);
      if (this.#count(key) < this.#limits.maxConnectionsPerKey) return this.#lend(await this.#dial(key, dial), false, forward);
      const left = until - Date.now();
      if (left <= 0) {
        throw new LeashError('connect-timeout', task.stage, `every pooled connection to ${key.split('|')[0]} stayed busy (${this.#limits.maxConnectionsPerKey} connections × ${this.#limits.maxChannelsPerConnection} channels) for ${waitMs} ms`);
      }
      task.wait('pool-slot');
      await this.#slotFreed(key, task.id, signal, left);
    }
  }

  /** Connections by state. */
  stats(): PoolStats {
    let idle = 0;
    let busy = 0;
    for (const set of this.#byKey.values()) for (const p of set) if (p.channels + p.forwards > 0) busy++;
    else idle++;
    let connecting = 0;
    for (const n of this.#dialing.values()) connecting += n;
    return { idle, busy, connecting };
  }

  /** Open connections for `key` (for tests and dumps). */
  connectionsFor(key: string): number {
    return this.#byKey.get(key)?.size ?? 0;
  }

  /**
   * Closes every pooled connection (politely when unused) and lends no more. Called after
   * the service drained: a task still holding a channel ends `connection-lost`. Idempotent.
   */
  async close(): Promise<void> {
    this.#closed = true;
    const all = [...this.#byKey.values()].flatMap((set) => [...set]);
    for (const waiters of this.#waiters.values()) for (const wake of waiters) wake();
    await Promise.all(all.map((p) => this.#retire(p, p.channels + p.forwards === 0)));
  }

  #pick(key: string, forward: boolean): Pooled | null {
    let best: Pooled | null = null;
    for (const p of this.#byKey.get(key) ?? []) {
      if (!p.usable || (!forward && p.channels >= p.limit)) continue;
      // Fill the busiest connection first: fewer connections stay open, idle ones expire.
      if (!best || p.channels > best.channels || (p.channels === best.channels && p.lastUsed > best.lastUsed)) best = p;
    }
    return best;
  }

  #count(key: string): number {
    return (this.#byKey.get(key)?.size ?? 0) + (this.#dialing.get(key) ?? 0);
  }

  async #dial(key: string, dial: () => Promise<SshConnection>): Promise<Pooled> {
    this.#dialing.set(key, (this.#dialing.get(key) ?? 0) + 1);
    let connection: SshConnection;
    try {
      connection = await dial();
    } finally {
      const left = (this.#dialing.get(key) ?? 1) - 1;
      if (left > 0) this.#dialing.set(key, left);
      else this.#dialing.delete(key);
      // A failed dial frees a connection slot another task may be waiting for.
      this.#wake(key);
    }
    if (this.#closed) {
      await connection.destroy();
      throw new LeashError('cancelled', 'auth', 'the connection pool closed while this connection was being opened');
    }
    connection.transfer(POOL_OWNER);
    const pooled = new Pooled(key, connection, this.#limits.maxChannelsPerConnection);
    let set = this.#byKey.get(key);
    if (!set) {
      set = new Set();
      this.#byKey.set(key, set);
    }
    set.add(pooled);
    void connection.closed.then(() => this.#forget(pooled));
    return pooled;
  }

  #lend(pooled: Pooled, reused: boolean, forward: boolean): Lease {
    if (forward) pooled.forwards++;
    else pooled.channels++;
    pooled.lastUsed = Date.now();
    pooled.idleTimer?.release();
    pooled.idleTimer = null;
    const channelsInUse = pooled.channels;
    let returned = false;
    return {
      connection: pooled.connection,
      reused,
      channelsInUse,
      markFull: () => {
        pooled.limit = Math.max(1, Math.min(pooled.limit, pooled.channels - 1));
      },
      adopt: (channel) => {
        if (returned || channel.released || pooled.channels + pooled.forwards <= 1) return false;
        channel.transfer(POOL_OWNER);
        pooled.broken = true;
        return true;
      },
      release: (broken) => {
        if (returned) return;
        returned = true;
        if (forward) pooled.forwards--;
        else pooled.channels--;
        pooled.lastUsed = Date.now();
        if (broken) pooled.broken = true;
        if (pooled.channels + pooled.forwards > 0) {
          this.#wake(pooled.key);
          return;
        }
        if (!pooled.usable || this.#closed) void this.#retire(pooled, false);
        else pooled.idleTimer = this.#ledger.timeout(POOL_OWNER, this.#limits.idleTtlMs, () => void this.#retire(pooled, true), { purpose: 'pool-idle' });
        this.#wake(pooled.key);
      },
    };
  }

  /** Takes a connection out of the pool and closes it (politely, or at once). */
  async #retire(pooled: Pooled, polite: boolean): Promise<void> {
    pooled.broken = true;
    pooled.idleTimer?.release();
    pooled.idleTimer = null;
    this.#forget(pooled);
    if (polite && pooled.channels + pooled.forwards === 0) await pooled.connection.close(CLOSE_GRACE_MS);
    else await pooled.connection.destroy();
  }

  #forget(pooled: Pooled): void {
    const set = this.#byKey.get(pooled.key);
    if (!set?.delete(pooled)) return;
    pooled.idleTimer?.release();
    pooled.idleTimer = null;
    if (set.size === 0) this.#byKey.delete(pooled.key);
    this.#wake(pooled.key);
  }

  #wake(key: string): void {
    const waiters = this.#waiters.get(key);
    if (!waiters) return;
    for (const wake of waiters) wake();
  }

  #slotFreed(key: string, owner: string, signal: AbortSignal, ms: number): Promise<void> {
    return waitUntil<void>(signal, ({ resolve }) => {
      let waiters = this.#waiters.get(key);
      if (!waiters) {
        waiters = new Set();
        this.#waiters.set(key, waiters);
      }
      const wake = (): void => resolve();
      waiters.add(wake);
      const timer = this.#ledger.timeout(owner, ms, wake, { purpose: 'pool-wait' });
      return () => {
        timer.release();
        waiters.delete(wake);
        if (waiters.size === 0) this.#waiters.delete(key);
      };
    });
  }
}
