import { channel } from 'node:diagnostics_channel';
import { CreationSite } from './creation-site.ts';
import type { ErrorCode } from './errors.ts';
import { canEnter, type Stage, type TerminalStatus } from './stages.ts';

/** Where a task runs. */
export interface TaskTarget {
  readonly host: string;
  readonly port: number;
  readonly user: string;
}

/** One entry of a task's stage history: the stage and when it was entered (epoch ms). */
export interface StageMark {
  readonly stage: Stage;
  readonly at: number;
}

/** What a live task is doing right now, for progress reports and debug dumps. */
export interface TaskProgress {
  readonly id: string;
  readonly stage: Stage;
  /** What the task is blocked on right now, or null. */
  readonly waiting: string | null;
  /** Moves to a later stage; moving backwards or sideways is a bug and throws. */
  enter(stage: Stage): void;
  /** Says what the task is blocked on (`server-banner`, `auth-response`, ...), or null. */
  wait(what: string | null): void;
}

/** Published on `leash:task:start` when a task enters the table (stage `queued`). */
export interface TaskStartEvent {
  readonly task: LiveTask;
}

/** Published on `leash:task:stage` for every stage change (diagnostics and SSE subscribe). */
export interface TaskStageEvent {
  readonly task: LiveTask;
  readonly stage: Stage;
}

/** Published on `leash:task:finish` when a task leaves the table. */
export interface TaskFinishEvent {
  readonly task: LiveTask;
  readonly status: TerminalStatus;
  /** Why it did not complete, for `status` `error` and `cancelled`; null otherwise. */
  readonly code: ErrorCode | null;
}

const startChannel = channel('leash:task:start');
const stageChannel = channel('leash:task:stage');
const finishChannel = channel('leash:task:finish');

/** A task while it is alive: stage, stage history, what it waits on, where it was created. */
export class LiveTask implements TaskProgress {
  readonly id: string;
  readonly target: TaskTarget;
  /** Free-form, small attributes for dumps (e.g. the command, redacted by the reader). */
  readonly attrs: Readonly<Record<string, string>>;
  readonly createdAt = Date.now();
  readonly site: CreationSite;
  #hardDeadline: number | null;
  #stage: Stage = 'queued';
  readonly #history: StageMark[];
  #waiting: string | null = null;
  #waitingSince = this.createdAt;
  #finished = false;

  /** @internal created by {@link TaskTable.create} */
  constructor(id: string, target: TaskTarget, attrs: Record<string, string>, hardDeadlineMs: number | null, site: CreationSite) {
    this.id = id;
    this.target = target;
    this.attrs = attrs;
    this.site = site;
    this.#hardDeadline = hardDeadlineMs === null ? null : this.createdAt + hardDeadlineMs;
    this.#history = [{ stage: 'queued', at: this.createdAt }];
  }

  get stage(): Stage {
    return this.#stage;
  }

  /** Latest moment by which the task must be terminal (epoch ms), or null when unbounded. */
  get hardDeadline(): number | null {
    return this.#hardDeadline;
  }

  /**
   * Starts the clock of a task that waited in a queue (waiting is not bounded by its stage
   * deadlines): from now it must be terminal within `hardDeadlineMs`, or null: unbounded.
   */
  bound(hardDeadlineMs: number | null): void {
    this.#hardDeadline = hardDeadlineMs === null ? null : Date.now() + hardDeadlineMs;
  }

  get waiting(): string | null {
    return this.#waiting;
  }

  /** When the current wait began (epoch ms). */
  get waitingSince(): number {
    return this.#waitingSince;
  }

  get history(): readonly StageMark[] {
    return this.#history;
  }

  get finished(): boolean {
    return this.#finished;
  }

  enter(stage: Stage): void {
    if (this.#finished) throw new Error(`task ${this.id}: cannot enter ${stage} after finishing`);
    if (!canEnter(this.#stage, stage)) throw new Error(`task ${this.id}: illegal stage change ${this.#stage} → ${stage}`);
    this.#stage = stage;
    this.#history.push({ stage, at: Date.now() });
    this.#waiting = null;
    this.#waitingSince = Date.now();
    if (stageChannel.hasSubscribers) stageChannel.publish({ task: this, stage } satisfies TaskStageEvent);
  }

  wait(what: string | null): void {
    if (this.#finished || what === this.#waiting) return;
    this.#waiting = what;
    this.#waitingSince = Date.now();
  }

  /** @internal called by {@link TaskTable.finish} */
  _finish(): void {
    this.#finished = true;
  }
}

/** Options for {@link TaskTable.create}. */
export interface CreateTaskOptions {
  /** Defaults to the next number of this table. */
  id?: string;
  target: TaskTarget;
  attrs?: Record<string, string>;
  /** Sum of the task's stage deadlines plus grace; null when some deadline is disabled. */
  hardDeadlineMs?: number | null;
}

/**
 * The table of live tasks (DESIGN.md invariant 5): which tasks exist, in which stage, waiting
 * on what, since when, and created where. A task is in the table from acceptance until its
 * terminal state; tests end by asserting the table is empty.
 */
export class TaskTable {
  readonly #live = new Map<string, LiveTask>();
  #nextId = 1;

  create(options: CreateTaskOptions): LiveTask {
    const id = options.id ?? String(this.#nextId++);
    if (this.#live.has(id)) throw new Error(`task table: duplicate task id ${id}`);
    const task = new LiveTask(
      id,
      options.target,
      options.attrs ?? {},
      options.hardDeadlineMs ?? null,
      // eslint-disable-next-line @typescript-eslint/unbound-method -- only a stack-trace boundary, never called
      new CreationSite(TaskTable.prototype.create),
    );
    this.#live.set(id, task);
    if (startChannel.hasSubscribers) startChannel.publish({ task } satisfies TaskStartEvent);
    return task;
  }

  /** Removes a task from the table as it reaches its terminal status. Idempotent. */
  finish(task: LiveTask, status: TerminalStatus, code: ErrorCode | null = null): void {
    // Only this very task: a late second call must not remove a newer task reusing the id.
    if (this.#live.get(task.id) !== task) return;
    this.#live.delete(task.id);
    task._finish();
    if (finishChannel.hasSubscribers) finishChannel.publish({ task, status, code } satisfies TaskFinishEvent);
  }

  get(id: string): LiveTask | undefined {
    return this.#live.get(id);
  }

  /** Live tasks, oldest first. */
  live(): LiveTask[] {
    return [...this.#live.values()];
  }

  get size(): number {
    return this.#live.size;
  }
}

/** The process-wide task table. */
export const taskTable = new TaskTable();
