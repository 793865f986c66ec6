import type { Stage, TerminalStatus } from '../lifecycle/stages.ts';
import type { TaskTarget } from '../lifecycle/task-table.ts';
import type { TaskReport } from '../lifecycle/task-report.ts';

/** A task's status as stored: live (`queued`, `running`) or terminal. */
export type StoredStatus = 'queued' | 'running' | TerminalStatus;

/** What is known of a task when it is accepted. */
export interface NewTask {
  readonly id: string;
  readonly target: TaskTarget;
  readonly command: string;
  readonly batchId: string | null;
}

/** A task as persisted: identity, where it is in its life, and its report once finished. */
export interface StoredTask extends NewTask {
  readonly status: StoredStatus;
  readonly stage: Stage | null;
  /** Epoch ms. */
  readonly createdAt: number;
  readonly updatedAt: number;
  readonly report: TaskReport | null;
  /** Why a task became `interrupted` (the process that ran it died). */
  readonly interruptedReason: string | null;
}

/** Filters and paging for {@link TaskStore.list}; newest first. */
export interface TaskQuery {
  readonly status?: StoredStatus;
  readonly host?: string;
  readonly batchId?: string;
  /** At most this many (1–1000). */
  readonly limit: number;
  /** From a previous page's `nextCursor`. */
  readonly cursor?: string;
}

/** One page of {@link TaskStore.list}. */
export interface TaskPage {
  readonly tasks: readonly StoredTask[];
  readonly nextCursor: string | null;
}

/**
 * Persistence of tasks behind one async interface (DESIGN.md "store/"): an embedded SQLite
 * database by default, PostgreSQL for several instances. Async from the first line so that
 * a networked store needs no rewrite above it. Nothing above this layer writes SQL.
 */
export interface TaskStore {
  /** Records an accepted task, status `queued`, before any work starts (DESIGN.md invariant 4). */
  create(task: NewTask): Promise<StoredTask>;
  /** Records a live task's stage; `connecting` and later mean status `running`. */
  markStage(id: string, stage: Stage): Promise<void>;
  /** Records the terminal report; the status is the report's. */
  finish(id: string, report: TaskReport): Promise<void>;
  get(id: string): Promise<StoredTask | null>;
  list(query: TaskQuery): Promise<TaskPage>;
  /**
   * At start-up: every task a previous process left `queued` or `running` becomes
   * `interrupted` with `reason`, never a phantom `running`. Returns how many.
   */
  interruptUnfinished(reason: string): Promise<number>;
  close(): Promise<void>;
}
