import { randomUUID } from 'node:crypto';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import type { Logger } from 'pino';
import { cancelledError } from '../lifecycle/errors.ts';
import type { ResourceHandle, ResourceLedger } from '../lifecycle/ledger.ts';
import { stageIndex } from '../lifecycle/stages.ts';
import type { TaskReport } from '../lifecycle/task-report.ts';
import type { LiveTask, TaskStageEvent, TaskTable } from '../lifecycle/task-table.ts';
import type { KeepaliveOptions } from '../ssh/connect.ts';
import type { HostKeyVerifier } from '../ssh/host-key-verifier.ts';
import { EXEC_ID_VARIABLE, isEnvName, killSessionCommand } from '../ssh/remote-command.ts';
import type { RemoteExec } from '../ssh/remote-exec.ts';
import type { NewTask, StoredTask, TaskStore } from '../store/task-store.ts';
import type { Identities } from './identities.ts';
import type { Job, Scheduler, SubmitResult } from './scheduler.ts';
import { ServiceError } from './service-error.ts';
import { TaskEventLog } from './task-events.ts';
import { fanOut } from './fan-out.ts';
import { runTask } from './task-runner.ts';
import type { TaskSpec, TaskTimeouts } from './task-spec.ts';

/** One command on one host, as a caller asks for it (the API's task request, validated). */
export interface TaskRequest {
  readonly host: string;
  readonly port: number;
  readonly user: string | null;
  readonly identity: string | null;
  readonly command: string;
  readonly env: Readonly<Record<string, string>>;
  readonly stdin: string | null;
  readonly timeouts: Partial<TaskTimeouts>;
  readonly maxOutputBytes: number | null;
  /** Borrow a pooled connection; null: the policy's default. */
  readonly reuse: boolean | null;
  /** Further attempts on a fresh connection for a failure before the command started. */
  readonly retries: number;
  /** Jump hosts, first hop first; an empty user means the identity's. */
  readonly jump: ReadonlyArray<{ readonly host: string; readonly port: number; readonly user: string }>;
}

/** Defaults and limits the service applies to every request. */
export interface TaskServicePolicy {
  readonly timeouts: TaskTimeouts;
  readonly keepalive: KeepaliveOptions;
  readonly maxOutputBytes: number;
  /** Whether tasks borrow pooled connections unless they say otherwise. */
  readonly reuse: boolean;
  readonly defaultIdentity: string | null;
  /** Queued ad-hoc tasks at most; beyond, submissions get `queue-full`. */
  readonly queueCapacity: number;
  /** Output bytes per task kept for server-sent-event readers that resume. */
  readonly eventOutputBudget: number;
  /** Finished tasks whose event log stays in memory for resuming readers. */
  readonly finishedLogs: number;
}

/** Everything the task service works with. */
export interface TaskServiceDeps {
  readonly store: TaskStore;
  readonly scheduler: Scheduler;
  readonly remote: RemoteExec;
  readonly ledger: ResourceLedger;
  readonly tasks: TaskTable;
  readonly identities: Identities;
  readonly hostKeys: HostKeyVerifier;
  readonly policy: TaskServicePolicy;
  readonly logger: Logger;
}

/** A task ready to run: its record and its spec (with the secrets it runs with). */
export interface PreparedTask {
  readonly record: NewTask;
  readonly spec: TaskSpec;
}

/** Deadlines for reaching a host to stop what a crashed process left running there. */
const REAP_TIMEOUTS: TaskTimeouts = { connectMs: 5_000, handshakeMs: 10_000, authMs: 10_000, channelMs: 5_000, commandMs: 15_000, idleMs: 0 };

/** The flow (fair-queueing class) of tasks submitted one by one. */
export const AD_HOC_FLOW = 'ad-hoc';

/** A task this process has accepted and not yet finished. */
interface Entry {
  readonly id: string;
  readonly prepared: PreparedTask;
  readonly live: LiveTask;
  readonly abort: AbortController;
  readonly log: TaskEventLog;
  /** The store write of the accepted task; work starts only after it (invariant 4). */
  created: Promise<void>;
  /** Stage writes, in order. */
  writes: Promise<void>;
  handshakeDone: (() => void) | null;
  readonly done: Promise<StoredTask>;
  settle: (task: StoredTask) => void;
  readonly onFinish: ((task: StoredTask) => void) | null;
}

/**
 * Accepts, schedules, runs, cancels and reports tasks: the application of DESIGN.md
 * "service/". Every task is written to the store before it can start, its stages and result
 * are persisted as they happen, and its events are kept for server-sent-event readers.
 */
export class TaskService {
  readonly #deps: TaskServiceDeps;
  readonly #live = new Map<string, Entry>();
  /** Event logs of recently finished tasks, oldest first (bounded). */
  readonly #finished = new Map<string, TaskEventLog>();
  #draining = false;
  #reaping: Promise<void> = Promise.resolve();
  readonly #reapAbort = new AbortController();
  readonly #onStage = (message: unknown): void => this.#stageChanged(message as TaskStageEvent);

  constructor(deps: TaskServiceDeps) {
    this.#deps = deps;
    subscribe('leash:task:stage', this.#onStage);
  }

  get draining(): boolean {
    return this.#draining;
  }

  /** Tasks accepted by this process and not yet terminal. */
  get liveCount(): number {
    return this.#live.size;
  }

  /**
   * Validates a request against the service's identities and defaults and builds what it
   * runs with. Throws {@link ServiceError} `invalid` naming the field at fault.
   */
  prepare(request: TaskRequest, submittedBy: string | null, batchId: string | null): PreparedTask {
    const { policy, identities } = this.#deps;
    const identityName = request.identity ?? policy.defaultIdentity;
    if (identityName === null) throw new ServiceError('invalid', 'no identity: give "identity" (no default identity is configured)', { field: 'identity' });
    const identity = identities.get(identityName);
    if (!identity) {
      throw new ServiceError('invalid', `unknown identity ${JSON.stringify(identityName)}; known: ${identities.names().join(', ') || 'none'}`, { field: 'identity' });
    }
    for (const name of Object.keys(request.env)) {
      if (!isEnvName(name) || name === EXEC_ID_VARIABLE) {
        throw new ServiceError('invalid', `environment variable name ${JSON.stringify(name)} is not allowed (a shell identifier other than ${EXEC_ID_VARIABLE})`, { field: 'env' });
      }
    }
    const user = request.user ?? identity.user;
    if (user === null) throw new ServiceError('invalid', `no user: give "user", or configure one for identity ${JSON.stringify(identityName)}`, { field: 'user' });
    const timeouts: TaskTimeouts = { ...policy.timeouts, ...request.timeouts };
    const maxOutputBytes = request.maxOutputBytes ?? policy.maxOutputBytes;
    const target = { host: request.host, port: request.port, user };
    const execId = randomUUID();
    const jump = request.jump.map((hop) => ({ host: hop.host, port: hop.port, user: hop.user === '' ? (identity.user ?? user) : hop.user }));
    const record: NewTask = {
      id: randomUUID(),
      target,
      command: request.command,
      identity: identityName,
      execId,
      // Stored so that a restarted service can reach the task's remote processes after a crash.
      ...(jump.length > 0 ? { jump } : {}),
      envNames: Object.keys(request.env),
      timeouts,
      maxOutputBytes,
      batchId,
      submittedBy,
      createdAt: Date.now(),
    };
    const spec: TaskSpec = {
      target,
      command: request.command,
      execId,
      env: request.env,
      stdin: request.stdin,
      timeouts,
      keepalive: policy.keepalive,
      maxOutputBytes,
      credentials: identity.credentials,
      hostKeys: identity.hostKeys ?? this.#deps.hostKeys,
      reuse: request.reuse ?? policy.reuse,
      retries: request.retries,
      ...(jump.length > 0 ? { jump } : {}),
    };
    return { record, spec };
  }

  /** Accepts one task: queued (or refused with `queue-full`), recorded, then returned. */
  async submit(request: TaskRequest, submittedBy: string | null): Promise<StoredTask> {
    const prepared = this.prepare(request, submittedBy, null);
    const { scheduler, policy } = this.#deps;
    // Refuse before the task exists anywhere, so a refused task is never counted or seen.
    const queued = scheduler.stats().flows.find((f) => f.flow === AD_HOC_FLOW)?.queued ?? 0;
    if (queued >= policy.queueCapacity) throw refusal('full', policy.queueCapacity);
    const entry = this.#enter(prepared, null);
    const outcome = scheduler.submit(AD_HOC_FLOW, this.#job(entry));
    if (outcome !== 'queued') {
      this.#abandon(entry);
      throw refusal(outcome, policy.queueCapacity);
    }
    const created = this.#deps.store.createTask(prepared.record);
    entry.created = created.then(() => undefined);
    try {
      return await created;
    } catch (err) {
      if (this.#deps.scheduler.cancelQueued(entry.id)) this.#abandon(entry);
      throw new ServiceError('unavailable', 'the task store did not accept the task', { cause: err });
    }
  }

  /**
   * Runs prepared tasks whose records the caller has already written (a batch): each is
   * queued in `flow`, and `onFinish` sees each one's final record. One the scheduler refuses
   * (a shutdown began meanwhile) ends `cancelled` without running.
   */
  launch(tasks: readonly PreparedTask[], flow: string, onFinish: (task: StoredTask) => void): void {
    for (const prepared of tasks) {
      const entry = this.#enter(prepared, onFinish, { allowWhileDraining: true });
      const outcome = this.#deps.scheduler.submit(flow, this.#job(entry));
      if (outcome !== 'queued') {
        entry.abort.abort(cancelledError('queued', 'cancelled: the service is shutting down'));
        void this.#run(entry);
      }
    }
  }

  /**
   * Ends tasks that were queued but will never run (a closed batch flow, a drain): each is
   * recorded `cancelled` in stage `queued` with `why`.
   */
  async finishUnstarted(jobIds: readonly string[], why: string): Promise<void> {
    await Promise.all(
      jobIds.map((id) => {
        const entry = this.#live.get(id);
        if (!entry) return Promise.resolve();
        entry.abort.abort(cancelledError('queued', why));
        return this.#run(entry);
      }),
    );
  }

  async get(id: string): Promise<StoredTask | null> {
    return this.#deps.store.getTask(id);
  }

  /**
   * Cancels a task: a queued one never starts, a running one has its remote process killed.
   * Idempotent: a finished task is returned as it is. Resolves with the final record.
   */
  async cancel(id: string, who: string | null): Promise<StoredTask> {
    const entry = this.#live.get(id);
    if (!entry) {
      const stored = await this.#deps.store.getTask(id);
      if (!stored) throw new ServiceError('not-found', `no task ${id}`);
      return stored;
    }
    const why = who === null ? 'cancelled by request' : `cancelled by ${who}`;
    if (this.#deps.scheduler.cancelQueued(id)) {
      entry.abort.abort(cancelledError('queued', why));
      void this.#run(entry);
    } else {
      entry.abort.abort(cancelledError(entry.live.stage, why));
    }
    return entry.done;
  }

  /** The task once terminal, or as it is after `ms` (bounded by the signal too). */
  async waitFor(id: string, ms: number, signal: AbortSignal): Promise<StoredTask | null> {
    const entry = this.#live.get(id);
    if (entry && ms > 0) {
      let timer: ResourceHandle | undefined;
      const expired = new Promise<void>((resolve) => {
        timer = this.#deps.ledger.timeout('task-service', ms, resolve, { purpose: 'wait' });
      });
      const aborted = new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
      try {
        await Promise.race([entry.done, expired, aborted]);
      } finally {
        timer?.release();
      }
    }
    return this.#deps.store.getTask(id);
  }

  /** The event log of a live or recently finished task; null when not held in memory. */
  events(id: string): TaskEventLog | null {
    return this.#live.get(id)?.log ?? this.#finished.get(id) ?? null;
  }

  /**
   * Two-phase shutdown: no new tasks; queued ones end `cancelled`; running ones get
   * `graceMs` to finish, then are cancelled (remote processes killed). Resolves when every
   * task is terminal and persisted.
   */
  async drain(graceMs: number): Promise<void> {
    this.#draining = true;
    this.#reapAbort.abort(cancelledError('queued', 'the service is shutting down'));
    await this.#reaping;
    const queued = this.#deps.scheduler.drain();
    await this.finishUnstarted(
      queued.map((j) => j.id),
      'cancelled: the service is shutting down',
    );
    const running = [...this.#live.values()].map((e) => e.done);
    let timer: ResourceHandle | undefined;
    const graceOver = new Promise<void>((resolve) => {
      timer = this.#deps.ledger.timeout('task-service', graceMs, resolve, { purpose: 'shutdown-grace' });
    });
    await Promise.race([Promise.all(running), graceOver]);
    timer?.release();
    for (const entry of this.#live.values()) entry.abort.abort(cancelledError(entry.live.stage, 'cancelled: the service is shutting down'));
    await Promise.all([...this.#live.values()].map((e) => e.done));
  }

  /**
   * After a crash: for each interrupted task whose command had started, connects with its
   * identity (through its jump hosts, if any) and kills every remote session marked with
   * its exec id — without a pty, sshd leaves a command running when its client dies. Best
   * effort, in the background, each outcome logged; {@link drain} stops it.
   */
  reapOrphans(interrupted: readonly StoredTask[]): void {
    const { identities, logger, policy } = this.#deps;
    const specs: TaskSpec[] = [];
    const owners: StoredTask[] = [];
    for (const task of interrupted) {
      if (!task.execId || !task.stages.some((s) => stageIndex(s.stage) >= stageIndex('channel'))) continue;
      const identity = task.identity === null ? undefined : identities.get(task.identity);
      if (!identity) {
        logger.warn({ taskId: task.id, identity: task.identity }, 'cannot stop the remote process of an interrupted task: its identity is not configured');
        continue;
      }
      owners.push(task);
      specs.push({
        target: task.target,
        command: killSessionCommand(task.execId),
        timeouts: REAP_TIMEOUTS,
        keepalive: policy.keepalive,
        maxOutputBytes: 4096,
        credentials: identity.credentials,
        hostKeys: identity.hostKeys ?? this.#deps.hostKeys,
        ...(task.jump && task.jump.length > 0 ? { jump: task.jump } : {}),
      });
    }
    if (specs.length === 0) return;
    const deps = { remote: this.#deps.remote, ledger: this.#deps.ledger, tasks: this.#deps.tasks };
    this.#reaping = fanOut(specs, deps, {
      concurrency: 8,
      signal: this.#reapAbort.signal,
      onReport: (report, i) => {
        const task = owners[i]!;
        const where = { taskId: task.id, host: task.target.host, port: task.target.port };
        if (report.status !== 'ok') logger.warn({ ...where, code: report.error?.code, message: report.error?.message }, 'could not reach the host of an interrupted task to stop its remote process');
        else if (report.stdout.includes('killed sessions')) logger.warn(where, 'stopped the remote process an interrupted task left running');
        else logger.info(where, 'no remote process of the interrupted task was left running');
      },
    });
  }

  /** Stops listening for stage events. Call after {@link drain}. */
  close(): void {
    unsubscribe('leash:task:stage', this.#onStage);
  }

  #enter(prepared: PreparedTask, onFinish: ((task: StoredTask) => void) | null, options = { allowWhileDraining: false }): Entry {
    if (this.#draining && !options.allowWhileDraining) throw new ServiceError('draining', 'the service is shutting down and accepts no new tasks');
    const { record } = prepared;
    const live = this.#deps.tasks.create({ id: record.id, target: record.target, attrs: { command: record.command } });
    let settle: (task: StoredTask) => void = () => {};
    const done = new Promise<StoredTask>((resolve) => (settle = resolve));
    const entry: Entry = {
      id: record.id,
      prepared,
      live,
      abort: new AbortController(),
      log: new TaskEventLog(this.#deps.policy.eventOutputBudget),
      created: Promise.resolve(),
      writes: Promise.resolve(),
      handshakeDone: null,
      done,
      settle,
      onFinish,
    };
    entry.log.stage('queued', live.createdAt);
    this.#live.set(entry.id, entry);
    return entry;
  }

  /** Takes back an entry that was never queued or recorded. */
  #abandon(entry: Entry): void {
    this.#live.delete(entry.id);
    this.#deps.tasks.finish(entry.live, 'cancelled', 'cancelled');
  }

  #job(entry: Entry): Job {
    return {
      id: entry.id,
      target: `${entry.prepared.record.target.host}:${entry.prepared.record.target.port}`,
      run: (handshakeDone) => {
        entry.handshakeDone = handshakeDone;
        return this.#run(entry);
      },
    };
  }

  /** Runs a task to its end and persists the end. Never rejects. */
  async #run(entry: Entry): Promise<void> {
    const { logger } = this.#deps;
    let report: TaskReport;
    try {
      await entry.created;
      report = await runTask(
        entry.prepared.spec,
        { remote: this.#deps.remote, ledger: this.#deps.ledger, tasks: this.#deps.tasks },
        { signal: entry.abort.signal, task: entry.live, onOutput: (stream, chunk) => entry.log.output(stream, chunk) },
      );
    } catch (err) {
      // The record was never written: nothing ran, nothing to persist.
      logger.error({ taskId: entry.id, err }, 'task not recorded; not run');
      this.#live.delete(entry.id);
      this.#deps.tasks.finish(entry.live, 'error', 'internal');
      entry.handshakeDone?.();
      return;
    }
    entry.handshakeDone?.();
    const stored = await this.#persistEnd(entry, report);
    this.#live.delete(entry.id);
    this.#remember(entry.id, entry.log);
    entry.log.result(stored);
    this.#audit(entry, report);
    entry.settle(stored);
    entry.onFinish?.(stored);
  }

  async #persistEnd(entry: Entry, report: TaskReport): Promise<StoredTask> {
    const { store, logger } = this.#deps;
    try {
      await entry.writes;
      await store.finishTask(entry.id, report);
      const stored = await store.getTask(entry.id);
      if (stored) return stored;
    } catch (err) {
      logger.error({ taskId: entry.id, err }, 'could not persist the end of a task');
    }
    return fallbackRecord(entry.prepared.record, report);
  }

  #stageChanged(event: TaskStageEvent): void {
    const entry = this.#live.get(event.task.id);
    if (!entry || entry.live !== event.task) return;
    const at = Date.now();
    entry.log.stage(event.stage, at);
    const { store, logger } = this.#deps;
    entry.writes = entry.writes
      .then(() => store.markStage(entry.id, event.stage, at))
      .catch((err: unknown) => logger.error({ taskId: entry.id, err }, 'could not persist a stage change'));
    logger.debug({ taskId: entry.id, stage: event.stage }, 'task stage');
    // Past auth the target's handshake slot is free again (sshd MaxStartups).
    if (stageIndex(event.stage) >= stageIndex('channel')) {
      entry.handshakeDone?.();
      entry.handshakeDone = null;
    }
  }

  #remember(id: string, log: TaskEventLog): void {
    this.#finished.set(id, log);
    while (this.#finished.size > this.#deps.policy.finishedLogs) {
      const oldest = this.#finished.keys().next().value;
      if (oldest === undefined) break;
      this.#finished.delete(oldest);
    }
  }

  /** One line per task end: who, what, where, outcome. */
  #audit(entry: Entry, report: TaskReport): void {
    const { record } = entry.prepared;
    this.#deps.logger.info(
      {
        audit: true,
        taskId: entry.id,
        submittedBy: record.submittedBy,
        identity: record.identity,
        host: record.target.host,
        port: record.target.port,
        user: record.target.user,
        command: record.command,
        batchId: record.batchId,
        status: report.status,
        code: report.error?.code ?? null,
        exitCode: report.exitCode,
        durationMs: report.durationMs,
      },
      'task finished',
    );
  }
}

function refusal(outcome: Exclude<SubmitResult, 'queued'>, capacity: number): ServiceError {
  if (outcome === 'full') return new ServiceError('queue-full', `the task queue is full (${capacity} queued); try again later`, { retryAfterSeconds: 5 });
  return new ServiceError('draining', 'the service is shutting down and accepts no new tasks');
}

/** What the record would say, for when the store cannot be read back. */
function fallbackRecord(record: NewTask, report: TaskReport): StoredTask {
  return {
    ...record,
    status: report.status,
    stage: null,
    stages: report.stages,
    updatedAt: Date.now(),
    finishedAt: Date.now(),
    report,
    interruptedReason: null,
  };
}
