import { asTaskError, LeashError, type ErrorCode } from '../lifecycle/errors.ts';
import type { ResourceLedger } from '../lifecycle/ledger.ts';
import { canEnter, type Stage } from '../lifecycle/stages.ts';
import type { TaskProgress } from '../lifecycle/task-table.ts';
import { connectSsh, type ConnectTimeouts, type KeepaliveOptions } from './connect.ts';
import type { ConnectionPool, Lease } from './connection-pool.ts';
import { KeyedLimiter } from './keyed-limiter.ts';
import type { SshConnection, SshTarget } from './connection.ts';
import type { Credentials } from './credentials.ts';
import { execCommand, type ExecRequest, type ExecResult } from './exec.ts';
import type { HostKeyVerifier } from './host-key-verifier.ts';
import { OutputCapture } from './output-capture.ts';

/** One command for one host, with everything needed to reach it. */
export interface RemoteCommand {
  readonly target: SshTarget;
  readonly timeouts: ConnectTimeouts;
  readonly keepalive: KeepaliveOptions;
  readonly credentials: Credentials;
  readonly hostKeys: HostKeyVerifier;
  readonly exec: ExecRequest;
  /** Borrow a pooled connection (default, when a pool is configured); false: a fresh one, closed after. */
  readonly reuse?: boolean;
  /** Further attempts on a fresh connection for a failure before the command started. Default 0. */
  readonly retries?: number;
  /** Jump hosts (ProxyJump), first hop first; each is reached through the one before. */
  readonly jump?: readonly SshTarget[];
}

/** The ledger, the live task that owns the work, and its cancel signal. */
export interface RemoteScope {
  readonly ledger: ResourceLedger;
  readonly task: TaskProgress;
  readonly signal: AbortSignal;
}

/**
 * The seam between orchestration and SSH (STYLE.md: orchestration depends on an interface,
 * never on ssh2): runs one command on one host and always resolves — failures are in
 * `result.error`. When it resolves, every resource it created for the task is released.
 */
export interface RemoteExec {
  run(command: RemoteCommand, scope: RemoteScope): Promise<ExecResult>;
}

/** Handshakes in progress through one jump host at once, by default. */
export const DEFAULT_JUMP_HANDSHAKES = 10;

/** How long a polite SSH disconnect may take before the socket is destroyed. */
const CLOSE_GRACE_MS = 1000;

/**
 * {@link RemoteExec} over SSH: on a connection borrowed from a {@link ConnectionPool} when
 * there is one (and the command allows reuse), else on a fresh connection per command.
 */
export class SshRemoteExec implements RemoteExec {
  readonly #pool: ConnectionPool | null;
  readonly #jumpHandshakes: KeyedLimiter;

  /**
   * `jumpHandshakes`: most handshakes in progress through one jump host at once, over every
   * task of this runner (default {@link DEFAULT_JUMP_HANDSHAKES}).
   */
  constructor(options: { pool?: ConnectionPool | null; jumpHandshakes?: number } = {}) {
    this.#pool = options.pool ?? null;
    this.#jumpHandshakes = new KeyedLimiter(options.jumpHandshakes ?? DEFAULT_JUMP_HANDSHAKES);
  }

  async run(command: RemoteCommand, scope: RemoteScope): Promise<ExecResult> {
    if (this.#pool && command.reuse !== false) return this.#pooled(this.#pool, command, scope);
    const { ledger, task, signal } = scope;
    let connection;
    try {
      connection = await dialThrough(command, scope, this.#pool, this.#jumpHandshakes);
    } catch (err) {
      return failedBeforeExec(asTaskError(err, task.stage), command.exec.maxOutputBytes);
    }
    let result: ExecResult | null = null;
    try {
      result = await execCommand(connection, command.exec, { ledger, task, signal });
      return result;
    } catch (err) {
      return failedBeforeExec(asTaskError(err, task.stage), command.exec.maxOutputBytes);
    } finally {
      if (task.stage !== 'closing') task.enter('closing');
      task.wait('disconnect');
      // After a failure the peer is suspect: no polite goodbye it may never answer.
      if (result && !result.error) await connection.close(CLOSE_GRACE_MS);
      else await connection.destroy();
    }
  }

  /**
   * One command on a pooled connection. A channel the server refuses while others are open
   * (its MaxSessions is below ours) moves the task to another connection — not a failure;
   * so does a borrowed connection found dead. Other failures before the command started are
   * retried on a fresh connection only as often as `retries` allows. The connection goes back to the pool unless it broke.
   */
  async #pooled(pool: ConnectionPool, command: RemoteCommand, scope: RemoteScope): Promise<ExecResult> {
    const { ledger, task, signal } = scope;
    const key = poolKey(command);
    const cap = command.exec.maxOutputBytes;
    let progress: TaskProgress = task;
    let retriesLeft = command.retries ?? 0;
    let moves = pool.limits.maxConnectionsPerKey;
    let fresh = false;
    let staleRetried = false;
    for (;;) {
      let lease: Lease;
      try {
        const dial = (): Promise<SshConnection> => dialThrough(command, { ledger, task: progress, signal }, pool, this.#jumpHandshakes);
        lease = await pool.acquire(key, progress, signal, command.timeouts.connectMs, dial, { fresh });
      } catch (err) {
        const error = asTaskError(err, task.stage);
        if (retriesLeft > 0 && isRetryable(error.code)) {
          retriesLeft--;
          progress = resumable(task);
          fresh = true;
          continue;
        }
        return failedBeforeExec(error, cap);
      }
      let result: ExecResult;
      try {
        result = await execCommand(lease.connection, command.exec, { ledger, task: progress, signal, adopt: (channel) => lease.adopt(channel) });
      } catch (err) {
        lease.release(true);
        return failedBeforeExec(asTaskError(err, task.stage), cap);
      }
      const error = result.error;
      if (error && !commandStarted(task)) {
        const refused = error.code === 'channel-open-failed' && lease.connection.alive && lease.channelsInUse > 1;
        if (refused && moves > 0) {
          moves--;
          lease.markFull();
          lease.release(false);
          progress = resumable(task);
          continue;
        }
        lease.release(true);
        // A pooled connection that died while it sat idle (its death not yet noticed) is the
        // pool's failure, not the host's: one more try on a fresh connection, free.
        const stale = lease.reused && !lease.connection.alive && !staleRetried;
        if (stale || (retriesLeft > 0 && isRetryable(error.code))) {
          if (stale) staleRetried = true;
          else retriesLeft--;
          progress = resumable(task);
          fresh = true;
          continue;
        }
        return result;
      }
      if (task.stage !== 'closing') task.enter('closing');
      lease.release(!reusableAfter(result, lease.connection));
      return result;
    }
  }
}

/**
 * Connects to the command's target, through its jump hosts when it has any: each hop is
 * an SSH connection (pooled when there is a pool) that forwards a TCP stream to the next.
 * The hops live as long as the connection over them; a hop's failure names the hop.
 */
async function dialThrough(command: RemoteCommand, scope: RemoteScope, pool: ConnectionPool | null, jumpHandshakes: KeyedLimiter): Promise<SshConnection> {
  const { ledger, task, signal } = scope;
  const hops = command.jump ?? [];
  if (hops.length === 0) return connectSsh({ ...command, ledger, task, signal });
  if (canEnter(task.stage, 'connecting')) task.enter('connecting');
  const leases: Lease[] = [];
  const owned: SshConnection[] = [];
  let via: SshConnection | undefined;
  try {
    for (const [i, hop] of hops.entries()) {
      const hopCommand: RemoteCommand = { ...command, target: hop, jump: hops.slice(0, i) };
      const hopTask = hopProgress(task, hop);
      const previous = via;
      const dial = (): Promise<SshConnection> =>
        connectSsh({ ...hopCommand, ledger, task: hopTask, signal, ...(previous ? { via: previous } : {}) }).catch((err: unknown) => {
          throw namingHop(asTaskError(err, 'connecting'), hop);
        });
      if (pool) {
        const lease = await pool.acquire(poolKey(hopCommand), hopTask, signal, command.timeouts.connectMs, dial, { forward: true });
        leases.push(lease);
        via = lease.connection;
      } else {
        via = await dial();
        owned.push(via);
      }
    }
    // Handshakes through one jump host are limited across every task and batch: a thousand
    // new connections forwarded at once would load the bastion and stall them all together.
    const last = hops[hops.length - 1]!;
    const lastName = `${last.host}:${last.port}`;
    task.wait(`jump ${lastName}: handshake slot`);
    const release = await jumpHandshakes.acquire(lastName, {
      ledger,
      owner: task.id,
      signal,
      ms: command.timeouts.connectMs,
      onTimeout: () =>
        new LeashError('connect-timeout', 'connecting', `no handshake slot through jump host ${lastName} within ${command.timeouts.connectMs} ms (${jumpHandshakes.limit} at a time)`),
    });
    let connection: SshConnection;
    try {
      connection = await connectSsh({ ...command, ledger, task: resumable(task), signal, ...(via ? { via } : {}) });
    } finally {
      release();
    }
    void connection.closed.then(async () => {
      for (const lease of leases) lease.release(false);
      for (const hop of owned.reverse()) await hop.close(CLOSE_GRACE_MS);
    });
    return connection;
  } catch (err) {
    for (const lease of leases) lease.release(false);
    for (const hop of owned.reverse()) await hop.destroy();
    throw err;
  }
}

/** The task as a jump hop sees it: it stays in `connecting`; what it waits on names the hop. */
function hopProgress(task: TaskProgress, hop: SshTarget): TaskProgress {
  const name = `${hop.host}:${hop.port}`;
  return progressView(task, () => {}, (what) => (what === null ? null : `jump ${name}: ${what}`));
}

function namingHop(error: LeashError, hop: SshTarget): LeashError {
  return new LeashError(error.code, 'connecting', `jump host ${hop.user}@${hop.host}:${hop.port}: ${error.message}`, { cause: error });
}

/** Failures before the command started that a fresh connection may cure. */
const RETRYABLE: ReadonlySet<ErrorCode> = new Set<ErrorCode>(['connect-refused', 'connect-timeout', 'handshake-timeout', 'auth-timeout', 'channel-open-failed', 'connection-lost', 'protocol-error', 'dns-error']);

function isRetryable(code: ErrorCode): boolean {
  return RETRYABLE.has(code);
}

function commandStarted(task: TaskProgress & { history?: ReadonlyArray<{ stage: string }> }): boolean {
  return task.stage === 'running' || task.stage === 'closing' || (task.history?.some((m) => m.stage === 'running') ?? false);
}

/** Endings after which the connection is still sound: the command ended, or was stopped and confirmed dead. */
function reusableAfter(result: ExecResult, connection: SshConnection): boolean {
  if (!connection.alive || connection.firstError !== null) return false;
  if (!result.error) return true;
  const stopped = result.error.code === 'command-timeout' || result.error.code === 'idle-timeout' || result.error.code === 'cancelled';
  return stopped && result.killConfirmed === true;
}

/**
 * The task as seen by a second attempt: stages it already passed are not entered again
 * (stages only move forward), so a task that reached `channel` can dial anew.
 */
function resumable(task: TaskProgress): TaskProgress {
  return progressView(task, (stage) => {
    if (canEnter(task.stage, stage)) task.enter(stage);
  });
}

/** `task` with its stage changes (and, optionally, what it waits on) passed through a filter. */
function progressView(task: TaskProgress, enter: (stage: Stage) => void, waiting: (what: string | null) => string | null = (what) => what): TaskProgress {
  return {
    get id() {
      return task.id;
    },
    get stage() {
      return task.stage;
    },
    get waiting() {
      return task.waiting;
    },
    enter,
    wait(what) {
      task.wait(waiting(what));
    },
  };
}

/** Small ids for the objects that make two connections interchangeable (compared by identity). */
const objectIds = new WeakMap<object, number>();
let nextObjectId = 1;

function idOf(object: object): number {
  let id = objectIds.get(object);
  if (id === undefined) {
    id = nextObjectId++;
    objectIds.set(object, id);
  }
  return id;
}

/**
 * Two commands may share a connection when everything that shaped it is the same: where,
 * as whom, with which credentials and host key policy, and its keepalive settings.
 */
function poolKey(command: RemoteCommand): string {
  const { host, port, user } = command.target;
  const { intervalMs, countMax } = command.keepalive;
  const via = (command.jump ?? []).map((h) => `${h.user}@${h.host}:${h.port}`).join(',');
  return `${user}@${host}:${port}|cred ${idOf(command.credentials)}|keys ${idOf(command.hostKeys)}|ka ${intervalMs}x${countMax}|via ${via}`;
}

function failedBeforeExec(error: LeashError, cap: number): ExecResult {
  const none = new OutputCapture(cap);
  return { exitCode: null, signal: null, exitStatusMissing: false, stdout: none, stderr: none, killConfirmed: null, error };
}
