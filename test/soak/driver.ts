// The soak's load generator: submits tasks of the given kinds through the service's HTTP
// API, follows each to its end the way its kind says (wait, events, cancel, batch), and
// judges it: the verdict its kind expects, within its hard deadline. Counts what it saw.
import type { TaskTimeouts } from '../../src/service/task-spec.ts';
import { hardDeadlineMs } from '../../src/service/task-spec.ts';
import type { SoakClient } from './http-client.ts';
import type { SoakTargets, TaskKind } from './workload.ts';

/** How far past its hard deadline a task is followed before it counts as lost. */
const FOLLOW_SLACK_MS = 30_000;
const REQUEST_LIMIT_MS = 90_000;
const POLL_EVERY_MS = 250;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, Math.max(0, ms)));

export interface KindStats {
  count: number;
  failed: number;
  /** Longest lifetime after leaving the queue. */
  maxLifetimeMs: number;
}

export interface DriverOptions {
  /** The service's configured deadlines (a task's own override them). */
  readonly defaultTimeouts: TaskTimeouts;
  /** Uniform random source for the cancel delays (seeded: a run replays). */
  readonly random: () => number;
  /** Called with each problem found, naming the task. */
  readonly fail: (what: string) => void;
  /** The fault in effect now, for failure messages. */
  readonly faultNow: () => string | null;
}

export class TaskDriver {
  tasksDone = 0;
  batches = 0;
  readonly byKind: Record<string, KindStats> = {};
  readonly outcomes: Record<string, number> = {};
  /** Longest task lifetime (from leaving the queue) as a share of its hard deadline. */
  maxDeadlineShare = 0;
  readonly #outstanding = new Set<Promise<void>>();
  #submitted = 0;

  constructor(
    readonly client: SoakClient,
    readonly targets: SoakTargets,
    readonly options: DriverOptions,
  ) {}

  /** Submits one task (or batch) of `kind` and follows it in the background. */
  start(kind: TaskKind): void {
    const p = this.#drive(kind, ++this.#submitted).finally(() => this.#outstanding.delete(p));
    this.#outstanding.add(p);
  }

  /** Resolves when every task started so far has been followed to its end. */
  async settled(): Promise<void> {
    await Promise.allSettled([...this.#outstanding]);
  }

  async #drive(kind: TaskKind, n: number): Promise<void> {
    const stats = (this.byKind[kind.name] ??= { count: 0, failed: 0, maxLifetimeMs: 0 });
    const body = kind.body(this.targets, n);
    const hardMs = hardDeadlineMs({ ...this.options.defaultTimeouts, ...(body.timeouts as Partial<TaskTimeouts> | undefined) }) ?? Infinity;
    const until = performance.now() + hardMs + FOLLOW_SLACK_MS;
    let outcome = 'driver-error';
    let problem: string | null;
    try {
      if (kind.follow === 'batch') {
        const batch = await this.#followBatch(body, until);
        this.batches++;
        outcome = `batch/${batch.status}`;
        problem = kind.check(batch, n);
        const list = await this.#get(`/v1/tasks?batch=${batch.id}&limit=100`);
        for (const task of list?.tasks ?? []) {
          this.tasksDone++;
          problem ??= this.#lifetimeProblem(task, hardMs, stats);
        }
      } else {
        const task = await this.#follow(kind, body, until);
        this.tasksDone++;
        outcome = task.error ? `${task.status}/${task.error.code}` : task.status;
        problem = kind.check(task, n) ?? this.#lifetimeProblem(task, hardMs, stats);
      }
    } catch (err) {
      problem = err instanceof Error ? err.message : String(err);
    }
    stats.count++;
    this.outcomes[outcome] = (this.outcomes[outcome] ?? 0) + 1;
    if (problem) {
      stats.failed++;
      const fault = this.options.faultNow();
      this.options.fail(`${kind.name} #${n}${fault ? ` (fault ${fault})` : ''}: ${problem}`);
    }
  }

  async #follow(kind: TaskKind, body: Record<string, unknown>, until: number): Promise<any> {
    switch (kind.follow) {
      case 'wait': {
        const task = await this.#submit({ ...body, wait: 60 });
        return terminal(task) ? task : this.#pollTask(task.id, until);
      }
      case 'events': {
        const task = await this.#submit(body);
        const events = await this.client.events(task.id, Math.max(1000, until - performance.now()));
        const last = events[events.length - 1];
        if (last?.event !== 'result') throw new Error(`events of ${task.id} ended without a result: ${events.map((e) => e.event).join(',')}`);
        return this.#pollTask(task.id, until);
      }
      case 'cancel': {
        const task = await this.#submit(body);
        await sleep(200 + this.options.random() * 600);
        const res = await this.client.json('POST', `/v1/tasks/${task.id}/cancel`, undefined, REQUEST_LIMIT_MS);
        if (res.status !== 200) throw new Error(`cancel ${task.id}: HTTP ${res.status} ${JSON.stringify(res.body)}`);
        return this.#pollTask(task.id, until);
      }
      case 'batch':
        throw new Error('a batch is not a task');
    }
  }

  async #followBatch(body: Record<string, unknown>, until: number): Promise<any> {
    const created = await this.client.json('POST', '/v1/batches', body, REQUEST_LIMIT_MS);
    if (created.status !== 202) throw new Error(`POST /v1/batches: HTTP ${created.status} ${JSON.stringify(created.body)}`);
    return this.#poll(`/v1/batches/${created.body.id}`, (b) => b.status !== 'running', until);
  }

  async #submit(body: Record<string, unknown>): Promise<any> {
    const res = await this.client.json('POST', '/v1/tasks', body, REQUEST_LIMIT_MS);
    if (res.status !== 200 && res.status !== 202) throw new Error(`POST /v1/tasks: HTTP ${res.status} ${JSON.stringify(res.body)}`);
    return res.body;
  }

  #pollTask(id: string, until: number): Promise<any> {
    return this.#poll(`/v1/tasks/${id}`, terminal, until);
  }

  async #poll(route: string, done: (body: any) => boolean, until: number): Promise<any> {
    for (;;) {
      const body = await this.#get(route);
      if (done(body)) return body;
      if (performance.now() > until) throw new Error(`${route} not finished ${FOLLOW_SLACK_MS} ms past its hard deadline: ${JSON.stringify(body).slice(0, 300)}`);
      await sleep(POLL_EVERY_MS);
    }
  }

  async #get(route: string): Promise<any> {
    const res = await this.client.json('GET', route, undefined, REQUEST_LIMIT_MS);
    if (res.status !== 200) throw new Error(`GET ${route}: HTTP ${res.status} ${JSON.stringify(res.body)}`);
    return res.body;
  }

  /** Invariant 1: a task is terminal within its hard deadline of leaving the queue. */
  #lifetimeProblem(task: any, hardMs: number, stats: KindStats): string | null {
    const left = (task?.stages ?? []).find((s: any) => s.stage !== 'queued');
    if (!left || typeof task.finishedAt !== 'string') return null;
    const ms = Date.parse(task.finishedAt) - Date.parse(left.startedAt);
    stats.maxLifetimeMs = Math.max(stats.maxLifetimeMs, ms);
    this.maxDeadlineShare = Math.max(this.maxDeadlineShare, ms / hardMs);
    return ms > hardMs ? `task ${task.id} lived ${ms} ms after leaving the queue, past its hard deadline of ${hardMs} ms` : null;
  }
}

function terminal(task: any): boolean {
  return task !== null && typeof task === 'object' && task.status !== 'queued' && task.status !== 'running';
}
