import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { BatchCounts, BatchStatus, BudgetAction, OutputGroup, StoredBatch, StoredTask, TaskStore } from '../store/task-store.ts';
import type { HostSpec } from './host-list.ts';
import type { Scheduler } from './scheduler.ts';
import { ServiceError } from './service-error.ts';
import type { TaskRequest, TaskService } from './task-service.ts';

/** One command on many hosts (the API's batch request, validated and expanded). */
export interface BatchRequest extends Omit<TaskRequest, 'host' | 'port' | 'user'> {
  readonly hosts: readonly HostSpec[];
  /** Most tasks of the batch running at once. */
  readonly concurrency: number;
  /** Errors tolerated: a count (`2`: the third error spends the budget) or a percentage of the hosts (`"10%"`). */
  readonly maxErrors: number | string;
  /** When the budget is spent: `finish` lets running tasks end, `cancel` stops them too; queued ones never start. */
  readonly onBudgetExhausted: BudgetAction;
}

/** A batch as the API shows it. */
export interface BatchView {
  readonly batch: StoredBatch;
  readonly counts: BatchCounts;
  readonly groups: readonly OutputGroup[];
}

/** What a live batch is up to. */
interface BatchState {
  readonly id: string;
  readonly total: number;
  readonly allowedErrors: number;
  readonly action: BudgetAction;
  status: BatchStatus;
  finished: number;
  errors: number;
  readonly running: Set<string>;
  readonly done: Promise<void>;
  settle: () => void;
}

/**
 * Batches: one command on many hosts as one fair-queueing flow of the scheduler, with its
 * own concurrency and an error budget (like ansible's max_fail_percentage). A batch of
 * 10,000 hosts shares the workers fairly with every other flow.
 */
export class BatchService {
  readonly #store: TaskStore;
  readonly #scheduler: Scheduler;
  readonly #tasks: TaskService;
  readonly #logger: Logger;
  readonly #maxHosts: number;
  readonly #maxQueued: number;
  readonly #live = new Map<string, BatchState>();

  constructor(deps: { store: TaskStore; scheduler: Scheduler; tasks: TaskService; logger: Logger; maxHosts: number; maxQueuedTasks: number }) {
    this.#store = deps.store;
    this.#scheduler = deps.scheduler;
    this.#tasks = deps.tasks;
    this.#logger = deps.logger;
    this.#maxHosts = deps.maxHosts;
    this.#maxQueued = deps.maxQueuedTasks;
  }

  /** Accepts a batch: every task recorded (one transaction), then queued in the batch's flow. */
  async submit(request: BatchRequest, submittedBy: string | null): Promise<StoredBatch> {
    if (this.#tasks.draining) throw new ServiceError('draining', 'the service is shutting down and accepts no new batches');
    const total = request.hosts.length;
    if (total === 0) throw new ServiceError('invalid', 'no hosts', { field: 'hosts' });
    if (total > this.#maxHosts) throw new ServiceError('invalid', `${total} hosts is more than the ${this.#maxHosts} a batch may have`, { field: 'hosts' });
    // Batches queue beside the ad-hoc queue (which they must not crowd out), bounded too.
    const queued = this.#scheduler.stats().flows.filter((f) => this.#live.has(f.flow)).reduce((n, f) => n + f.queued, 0);
    if (queued + total > this.#maxQueued) {
      throw new ServiceError('queue-full', `${queued} batch tasks are already waiting; ${total} more would pass the limit of ${this.#maxQueued}`, { retryAfterSeconds: 30 });
    }
    const allowedErrors = errorBudget(request.maxErrors, total);
    const id = randomUUID();
    // An entry without user@ has the request's user, or none ('') to take the identity's.
    const prepared = request.hosts.map((h) => this.#tasks.prepare({ ...request, host: h.host, port: h.port, user: h.user === '' ? null : h.user }, submittedBy, id));
    const batch = await this.#store.createBatch(
      {
        id,
        command: request.command,
        hostCount: total,
        concurrency: request.concurrency,
        maxErrors: request.maxErrors,
        onBudgetExhausted: request.onBudgetExhausted,
        submittedBy,
        createdAt: Date.now(),
      },
      prepared.map((p) => p.record),
    );
    let settle: () => void = () => {};
    const state: BatchState = {
      id,
      total,
      allowedErrors,
      action: request.onBudgetExhausted,
      status: 'running',
      finished: 0,
      errors: 0,
      running: new Set(prepared.map((p) => p.record.id)),
      done: new Promise<void>((resolve) => (settle = resolve)),
      settle: () => settle(),
    };
    this.#live.set(id, state);
    this.#scheduler.openFlow(id, { concurrency: request.concurrency, capacity: total });
    this.#tasks.launch(prepared, id, (task) => this.#taskFinished(state, task));
    return batch;
  }

  async get(id: string): Promise<BatchView> {
    const batch = await this.#store.getBatch(id);
    if (!batch) throw new ServiceError('not-found', `no batch ${id}`);
    const [counts, groups] = await Promise.all([this.#store.batchCounts(id), this.#store.batchGroups(id)]);
    return { batch, counts, groups };
  }

  /** Cancels a batch: queued tasks never start, running ones are stopped. Idempotent. */
  async cancel(id: string, who: string | null): Promise<BatchView> {
    const state = this.#live.get(id);
    if (state) {
      if (state.status === 'running') state.status = 'cancelled';
      await this.#stop(state, 'cancel', who === null ? 'batch cancelled' : `batch cancelled by ${who}`);
      await state.done;
    }
    return this.get(id);
  }

  /** Resolves when every live batch is done (after a drain of the task service). */
  async idle(): Promise<void> {
    await Promise.all([...this.#live.values()].map((s) => s.done));
  }

  #taskFinished(state: BatchState, task: StoredTask): void {
    state.running.delete(task.id);
    state.finished++;
    if (task.status === 'error' || task.status === 'nonzero-exit') state.errors++;
    if (state.status === 'running' && state.errors > state.allowedErrors) {
      state.status = 'budget-exhausted';
      this.#logger.info({ batchId: state.id, errors: state.errors, allowed: state.allowedErrors }, 'batch error budget exhausted');
      void this.#stop(state, state.action, 'cancelled: the batch error budget is exhausted');
    }
    if (state.finished === state.total) void this.#end(state);
  }

  /** Closes the batch's flow (queued tasks end `cancelled`) and, for `cancel`, stops running ones. */
  async #stop(state: BatchState, action: BudgetAction, why: string): Promise<void> {
    const queued = this.#scheduler.closeFlow(state.id).map((j) => j.id);
    const running = action === 'cancel' ? [...state.running].filter((id) => !queued.includes(id)) : [];
    await Promise.all([this.#tasks.finishUnstarted(queued, why), ...running.map((id) => this.#tasks.cancel(id, why))]);
  }

  async #end(state: BatchState): Promise<void> {
    this.#live.delete(state.id);
    this.#scheduler.closeFlow(state.id);
    const status = state.status === 'running' ? 'finished' : state.status;
    try {
      await this.#store.finishBatch(state.id, status, Date.now());
    } catch (err) {
      this.#logger.error({ batchId: state.id, err }, 'could not persist the end of a batch');
    }
    this.#logger.info({ batchId: state.id, status, total: state.total, errors: state.errors }, 'batch finished');
    state.settle();
  }
}

/**
 * Errors a batch tolerates: a count as given, or a percentage of its hosts rounded down
 * (`"10%"` of 25 hosts tolerates 2). Throws `invalid` for anything else.
 */
export function errorBudget(maxErrors: number | string, total: number): number {
  if (typeof maxErrors === 'number') {
    if (Number.isSafeInteger(maxErrors) && maxErrors >= 0) return maxErrors;
  } else {
    const m = /^(\d+(?:\.\d+)?)%$/.exec(maxErrors.trim());
    const pct = m ? Number(m[1]) : NaN;
    if (pct >= 0 && pct <= 100) return Math.floor((total * pct) / 100);
  }
  throw new ServiceError('invalid', `bad maxErrors ${JSON.stringify(maxErrors)}: expected a whole number of errors or a percentage like "10%"`, {
    field: 'maxErrors',
  });
}
