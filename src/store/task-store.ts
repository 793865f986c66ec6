import type { ErrorCode } from '../lifecycle/errors.ts';
import type { Stage, TerminalStatus } from '../lifecycle/stages.ts';
import type { StageTiming, TaskReport } from '../lifecycle/task-report.ts';
import type { TaskTarget } from '../lifecycle/task-table.ts';

/** A task's status as stored: live (`queued`, `running`) or terminal. */
export type StoredStatus = 'queued' | 'running' | TerminalStatus;

/** Per-stage deadlines as the caller asked for them, in ms (the API's `timeouts`). */
export interface StoredTimeouts {
  readonly connectMs: number;
  readonly handshakeMs: number;
  readonly authMs: number;
  readonly channelMs: number;
  readonly commandMs: number;
  readonly idleMs: number;
}

/**
 * What is known of a task when it is accepted. Never secrets: environment variable values
 * and stdin are not stored (only the names of the variables), nor any credential — only
 * the name of the identity used.
 */
export interface NewTask {
  readonly id: string;
  readonly target: TaskTarget;
  readonly command: string;
  readonly identity: string | null;
  /**
   * The LEASH_EXEC_ID that marks the command's remote processes (src/ssh/remote-command.ts),
   * so that a restarted service can find and stop what a crashed one left running.
   */
  readonly execId: string | null;
  /** Jump hosts the task went through, first hop first (absent: none). */
  readonly jump?: readonly TaskTarget[];
  readonly envNames: readonly string[];
  readonly timeouts: StoredTimeouts;
  readonly maxOutputBytes: number;
  readonly batchId: string | null;
  /** Name of the API token that submitted it (for the audit trail), or null. */
  readonly submittedBy: string | null;
  /** Epoch ms. */
  readonly createdAt: number;
}

/** A task as persisted: identity, where it is in its life, and its report once finished. */
export interface StoredTask extends NewTask {
  readonly status: StoredStatus;
  /** The latest stage entered; null once terminal. */
  readonly stage: Stage | null;
  /** Stage history so far (live) or complete (terminal). */
  readonly stages: readonly StageTiming[];
  readonly updatedAt: number;
  readonly finishedAt: number | null;
  /** The terminal report; null while live, and for `interrupted` tasks. */
  readonly report: TaskReport | null;
  /** Why a task became `interrupted` (the process that ran it died). */
  readonly interruptedReason: string | null;
}

/** Filters and paging for {@link TaskStore.listTasks}; newest first. */
export interface TaskQuery {
  readonly status?: StoredStatus;
  readonly host?: string;
  readonly batchId?: string;
  /** At most this many (1–1000). */
  readonly limit: number;
  /** From a previous page's `nextCursor`; opaque to callers. */
  readonly cursor?: string;
}

/** A `cursor` that no page of this store produced (damaged, or from another listing). */
export class StoreCursorError extends Error {
  override readonly name = 'StoreCursorError';
}

/** One page of {@link TaskStore.listTasks}. */
export interface TaskPage {
  readonly tasks: readonly StoredTask[];
  readonly nextCursor: string | null;
}

/** What happens to a batch when its error budget is spent. */
export type BudgetAction = 'cancel' | 'finish';

/** A batch's status: `running`, then `finished` (all tasks ran), `cancelled` (by a caller), or `budget-exhausted`. */
export type BatchStatus = 'running' | 'finished' | 'cancelled' | 'budget-exhausted';

/** What is known of a batch when it is accepted (its tasks are created with it). */
export interface NewBatch {
  readonly id: string;
  readonly command: string;
  readonly hostCount: number;
  readonly concurrency: number;
  /** Error budget as given: a count (`5`) or a percentage (`"10%"`). */
  readonly maxErrors: number | string;
  readonly onBudgetExhausted: BudgetAction;
  readonly submittedBy: string | null;
  readonly createdAt: number;
}

/** A batch as persisted. */
export interface StoredBatch extends NewBatch {
  readonly status: BatchStatus;
  readonly finishedAt: number | null;
}

/** Counts of a batch's tasks by status and by error code. */
export interface BatchCounts {
  readonly byStatus: Readonly<Partial<Record<StoredStatus, number>>>;
  readonly byCode: Readonly<Partial<Record<ErrorCode, number>>>;
}

/** Tasks of a batch whose visible results are identical (clubak-style). */
export interface OutputGroup {
  readonly hosts: readonly TaskTarget[];
  readonly status: StoredStatus;
  readonly exitCode: number | null;
  readonly signal: string | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly errorCode: ErrorCode | null;
  readonly errorStage: Stage | null;
}

/** What {@link TaskStore.pruneHistory} may remove: terminal tasks (and their finished batches). */
export interface RetentionPolicy {
  /** Remove terminal tasks finished longer ago than this; 0 keeps them regardless of age. */
  readonly maxAgeMs: number;
  /** Keep at most this many terminal tasks, the newest; 0 means no limit. */
  readonly maxRows: number;
}

/**
 * Persistence of tasks and batches behind one async interface (DESIGN.md "store/"): an
 * embedded SQLite database by default, PostgreSQL for several instances later. Async from
 * the first line so that a networked store needs no rewrite above it. Nothing above this
 * layer writes SQL.
 */
export interface TaskStore {
  /** Records an accepted task, status `queued`, before any work starts (DESIGN.md invariant 4). */
  createTask(task: NewTask): Promise<StoredTask>;
  /** Records a batch and all its tasks (status `queued`) in one transaction. */
  createBatch(batch: NewBatch, tasks: readonly NewTask[]): Promise<StoredBatch>;
  /** Records a live task entering `stage` at `at` (epoch ms); `connecting` and later mean `running`. */
  markStage(id: string, stage: Stage, at: number): Promise<void>;
  /** Records the terminal report; the status is the report's. A task already terminal is left alone. */
  finishTask(id: string, report: TaskReport): Promise<void>;
  getTask(id: string): Promise<StoredTask | null>;
  listTasks(query: TaskQuery): Promise<TaskPage>;
  getBatch(id: string): Promise<StoredBatch | null>;
  /** Sets a running batch's final status. */
  finishBatch(id: string, status: Exclude<BatchStatus, 'running'>, at: number): Promise<void>;
  batchCounts(id: string): Promise<BatchCounts>;
  /** Terminal tasks of the batch grouped by identical result, largest group first. */
  batchGroups(id: string): Promise<OutputGroup[]>;
  /**
   * At start-up: every task a previous process left `queued` or `running` becomes
   * `interrupted` with `reason` (never a phantom `running`), and every `running` batch
   * `cancelled`. Returns those tasks, as stored afterwards.
   */
  interruptUnfinished(reason: string, at: number): Promise<StoredTask[]>;
  /** Removes old terminal tasks per `policy`; returns how many. */
  pruneHistory(policy: RetentionPolicy, now: number): Promise<number>;
  /** Resolves when the store answers (for /readyz); rejects otherwise. */
  ping(): Promise<void>;
  close(): Promise<void>;
}
