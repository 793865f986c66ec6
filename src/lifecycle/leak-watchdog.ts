import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import type { Socket } from 'node:net';
import { CreationSite } from './creation-site.ts';
import type { ResourceKind, ResourceLedger } from './ledger.ts';
import type { TaskTable } from './task-table.ts';

/**
 * The kinds of leak the watchdog flags (the `kind` label of `leash_leaks_total`):
 * - `task-past-deadline`: a live task older than its hard deadline (plus grace), or than
 *   the configured maximum task age — the incident's stuck handshakes;
 * - `resource-of-finished-task`: a ledger entry whose owner task is terminal (or unknown);
 * - `unowned-socket`: a client socket, seen on the `net.client.socket` diagnostics channel,
 *   that no ledger entry owns (a library opened it behind the ledger's back);
 * - `resource-growth`: `opened - closed` of a kind growing over a window while no task is
 *   in flight.
 */
export const LEAK_KINDS = ['task-past-deadline', 'resource-of-finished-task', 'unowned-socket', 'resource-growth'] as const;
export type LeakKind = (typeof LEAK_KINDS)[number];

/** One thing the watchdog flags now. */
export interface LeakFinding {
  readonly kind: LeakKind;
  /** What is leaking: `task:<id>`, `resource:<id>`, `socket:<n>` or `growth:<kind>`. */
  readonly subject: string;
  /** When the watchdog first flagged it (epoch ms). */
  readonly firstSeen: number;
  readonly message: string;
  /** Creation frames of the leaking thing (for growth: of the newest entry of the kind). */
  readonly site: readonly string[];
}

/** Where findings are logged: once each, when first flagged (a pino logger fits). */
export interface LeakLog {
  warn(fields: Record<string, unknown>, message: string): void;
}

/** Options of {@link LeakWatchdog}. */
export interface LeakWatchdogOptions {
  readonly ledger: ResourceLedger;
  readonly tasks: TaskTable;
  readonly log: LeakLog;
  /** How often {@link LeakWatchdog.start} checks. */
  readonly intervalMs: number;
  /** Ledger owners that are long-lived components (`pool`, `store`, ...), not tasks. */
  readonly components: ReadonlySet<string>;
  /** A live task older than this is flagged even without a hard deadline; 0: hard deadlines only. */
  readonly maxTaskAgeMs?: number;
  /**
   * Slack before flagging: past a hard deadline, after an owner finished, after a socket
   * opened. Cleanup that runs just after a task finishes is not a leak. Default 5 s.
   */
  readonly graceMs?: number;
  /** Idle checks over which growth must persist to be flagged (default 10: 5 min at 30 s). */
  readonly growthWindow?: number;
}

/** A client socket seen on `net.client.socket`. */
interface SeenSocket {
  readonly n: number;
  readonly seenAt: number;
  readonly site: CreationSite;
}

const FINISHED_MEMORY = 10_000;
const DEFAULT_GRACE_MS = 5000;
const DEFAULT_GROWTH_WINDOW = 10;
const NET_CLIENT_SOCKET = 'net.client.socket';

/**
 * The leak watchdog (DESIGN.md invariants 1 and 2, checked from the outside): every
 * interval it compares the task table, the resource ledger and the sockets Node reports
 * against what should be, and flags what is not. Each finding counts once in
 * {@link counts}, is logged once with its creation site, and stays in {@link findings}
 * while it lasts. It only reads; freeing anything is the owner's job.
 */
export class LeakWatchdog {
  readonly #o: Required<LeakWatchdogOptions>;
  readonly #current = new Map<string, LeakFinding>();
  readonly #counts = new Map<LeakKind, number>(LEAK_KINDS.map((k) => [k, 0]));
  /** Task id → when it finished; bounded (oldest forgotten first). */
  readonly #finishedAt = new Map<string, number>();
  readonly #sockets = new Map<Socket, SeenSocket>();
  /** Per kind: `opened - closed` at recent idle checks, oldest first. */
  readonly #idleLive = new Map<ResourceKind, number[]>();
  #socketSeq = 0;
  #timer: NodeJS.Timeout | null = null;

  constructor(options: LeakWatchdogOptions) {
    this.#o = { maxTaskAgeMs: 0, graceMs: DEFAULT_GRACE_MS, growthWindow: DEFAULT_GROWTH_WINDOW, ...options };
  }

  /** Subscribes to the task and socket channels and checks every interval. Idempotent. */
  start(): void {
    if (this.#timer) return;
    subscribe('leash:task:finish', this.#onFinish);
    subscribe(NET_CLIENT_SOCKET, this.#onSocket);
    // Not a ledger timer: the watchdog watches the ledger and must not be one of its entries.
    this.#timer = setInterval(() => this.check(), this.#o.intervalMs);
    this.#timer.unref();
  }

  /** Stops checking and forgets the sockets it watched. Findings and counts stay readable. */
  stop(): void {
    if (!this.#timer) return;
    clearInterval(this.#timer);
    this.#timer = null;
    unsubscribe('leash:task:finish', this.#onFinish);
    unsubscribe(NET_CLIENT_SOCKET, this.#onSocket);
    for (const socket of this.#sockets.keys()) socket.off('close', this.#forgetSocket(socket));
    this.#sockets.clear();
  }

  /** What is flagged now, oldest first. */
  findings(): LeakFinding[] {
    return [...this.#current.values()];
  }

  /** Findings ever flagged, per kind (every kind present, 0 when none). */
  counts(): ReadonlyMap<LeakKind, number> {
    return this.#counts;
  }

  /** One pass; returns the findings new in this pass. {@link start} calls it every interval. */
  check(now = Date.now()): LeakFinding[] {
    const seen = new Map<string, Omit<LeakFinding, 'firstSeen'>>();
    this.#checkTasks(now, seen);
    this.#checkResources(now, seen);
    this.#checkSockets(now, seen);
    this.#checkGrowth(seen);

    for (const subject of this.#current.keys()) if (!seen.has(subject)) this.#current.delete(subject);
    const fresh: LeakFinding[] = [];
    for (const [subject, finding] of seen) {
      if (this.#current.has(subject)) continue;
      const flagged = { ...finding, firstSeen: now };
      this.#current.set(subject, flagged);
      this.#counts.set(finding.kind, (this.#counts.get(finding.kind) ?? 0) + 1);
      fresh.push(flagged);
    }
    this.#logFresh(fresh);
    return fresh;
  }

  #checkTasks(now: number, seen: Map<string, Omit<LeakFinding, 'firstSeen'>>): void {
    const { graceMs, maxTaskAgeMs } = this.#o;
    for (const task of this.#o.tasks.live()) {
      const age = now - task.createdAt;
      const pastDeadline = task.hardDeadline !== null && now > task.hardDeadline + graceMs;
      const tooOld = maxTaskAgeMs > 0 && age > maxTaskAgeMs;
      if (!pastDeadline && !tooOld) continue;
      const why = pastDeadline
        ? `past its hard deadline ${new Date(task.hardDeadline ?? 0).toISOString()}`
        : `older than the maximum task age ${Math.round(maxTaskAgeMs / 1000)}s (it has no hard deadline: a stage deadline is disabled)`;
      const waiting = task.waiting === null ? '' : ` waiting on ${task.waiting}`;
      seen.set(`task:${task.id}`, {
        kind: 'task-past-deadline',
        subject: `task:${task.id}`,
        message: `task ${task.id} (${task.target.host}:${task.target.port}) is ${Math.round(age / 1000)}s old in stage ${task.stage}${waiting}, ${why}`,
        site: task.site.frames(),
      });
    }
  }

  #checkResources(now: number, seen: Map<string, Omit<LeakFinding, 'firstSeen'>>): void {
    const { components, tasks, graceMs } = this.#o;
    for (const entry of this.#o.ledger.live()) {
      if (components.has(entry.owner) || tasks.get(entry.owner)) continue;
      const finishedAt = this.#finishedAt.get(entry.owner);
      // The owner is gone: flag once cleanup has had its grace (since it finished, or since
      // the entry was made when the owner is not a task this watchdog saw).
      if (now - (finishedAt ?? entry.createdAt) <= graceMs) continue;
      const owner = finishedAt === undefined ? `owner ${entry.owner}, which is neither a live task nor a component` : `task ${entry.owner}, which finished ${Math.round((now - finishedAt) / 1000)}s ago`;
      seen.set(`resource:${entry.id}`, {
        kind: 'resource-of-finished-task',
        subject: `resource:${entry.id}`,
        message: `${entry.kind} #${entry.id} is still open, owned by ${owner}`,
        site: entry.site.frames(),
      });
    }
  }

  #checkSockets(now: number, seen: Map<string, Omit<LeakFinding, 'firstSeen'>>): void {
    for (const [socket, info] of this.#sockets) {
      if (socket.destroyed) {
        this.#sockets.delete(socket);
        continue;
      }
      if (now - info.seenAt <= this.#o.graceMs || this.#o.ledger.owns(socket)) continue;
      const peer = socket.remoteAddress === undefined ? 'not connected' : `to ${socket.remoteAddress}:${socket.remotePort ?? '?'}`;
      seen.set(`socket:${info.n}`, {
        kind: 'unowned-socket',
        subject: `socket:${info.n}`,
        message: `a client socket (${peer}), open ${Math.round((now - info.seenAt) / 1000)}s, is in no ledger entry: some code opened it behind the ledger`,
        site: info.site.frames(),
      });
    }
  }

  #checkGrowth(seen: Map<string, Omit<LeakFinding, 'firstSeen'>>): void {
    const { ledger, tasks, growthWindow } = this.#o;
    // Growth while work runs is work; only idle growth is a leak. Any task resets the window.
    if (tasks.size > 0) {
      this.#idleLive.clear();
      for (const subject of this.#current.keys()) {
        const kept = this.#current.get(subject);
        if (kept?.kind === 'resource-growth') seen.set(subject, kept);
      }
      return;
    }
    for (const [kind, stats] of ledger.stats()) {
      const samples = this.#idleLive.get(kind) ?? [];
      samples.push(stats.opened - stats.closed);
      if (samples.length > growthWindow + 1) samples.shift();
      this.#idleLive.set(kind, samples);
      const subject = `growth:${kind}`;
      const first = samples[0] ?? 0;
      const last = samples[samples.length - 1] ?? 0;
      const rising = samples.length === growthWindow + 1 && last > first && samples.every((n, i) => i === 0 || n >= (samples[i - 1] ?? 0));
      const still = this.#current.get(subject);
      if (!rising && !(still && last > first)) continue;
      const newest = ledger.live().findLast((e) => e.kind === kind);
      seen.set(subject, {
        kind: 'resource-growth',
        subject,
        message: `live ${kind} entries grew from ${first} to ${last} over ${growthWindow} idle checks with no task in flight`,
        site: newest ? newest.site.frames() : [],
      });
    }
  }

  #logFresh(fresh: readonly LeakFinding[]): void {
    // A thousand tasks stuck at one site are one log line with a count, not a thousand.
    const groups = new Map<string, LeakFinding[]>();
    for (const f of fresh) {
      const key = `${f.kind}\u0000${f.site.join('\n')}`;
      const group = groups.get(key);
      if (group) group.push(f);
      else groups.set(key, [f]);
    }
    for (const group of groups.values()) {
      const first = group[0];
      if (!first) continue;
      this.#o.log.warn(
        { leak: first.kind, count: group.length, subjects: group.slice(0, 5).map((f) => f.subject), site: first.site },
        group.length === 1 ? `leak: ${first.message}` : `leak: ${group.length}× ${first.kind}, e.g. ${first.message}`,
      );
    }
  }

  readonly #onFinish = (message: unknown): void => {
    const id = (message as { task?: { id?: unknown } }).task?.id;
    if (typeof id !== 'string') return;
    this.#finishedAt.delete(id);
    this.#finishedAt.set(id, Date.now());
    if (this.#finishedAt.size > FINISHED_MEMORY) {
      const oldest = this.#finishedAt.keys().next();
      if (!oldest.done) this.#finishedAt.delete(oldest.value);
    }
  };

  readonly #onSocket = (message: unknown): void => {
    const socket = (message as { socket?: Socket }).socket;
    if (!socket || this.#sockets.has(socket)) return;
    // Published synchronously inside net.connect(): the stack here names who connected.
    this.#sockets.set(socket, { n: ++this.#socketSeq, seenAt: Date.now(), site: new CreationSite(this.#onSocket) });
    socket.once('close', this.#forgetSocket(socket));
  };

  readonly #forgetters = new WeakMap<Socket, () => void>();

  #forgetSocket(socket: Socket): () => void {
    let forget = this.#forgetters.get(socket);
    if (!forget) {
      forget = () => this.#sockets.delete(socket);
      this.#forgetters.set(socket, forget);
    }
    return forget;
  }
}
