/**
 * Prometheus metrics (DESIGN.md "Contracts": Metrics). Counters and the stage histogram are
 * fed by the task table's diagnostics channels; gauges are read from the task table and the
 * resource ledger at scrape time. Label values come only from fixed sets (stage, status,
 * error code, resource kind) — never a host or a command — so the series count is bounded.
 */
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { isErrorCode } from '../lifecycle/errors.ts';
import type { ResourceLedger } from '../lifecycle/ledger.ts';
import { STAGES, TERMINAL_STATUSES, type Stage, type TerminalStatus } from '../lifecycle/stages.ts';
import type { LiveTask, TaskTable } from '../lifecycle/task-table.ts';

/** The metrics of one service instance, in a registry of their own. */
export interface LeashMetrics {
  /** This instance's leash_* metrics (never prom-client's global registry). */
  readonly registry: Registry;
  /** The `Content-Type` of {@link render}'s output. */
  readonly contentType: string;
  /** The `/metrics` body in the Prometheus text format. */
  render(): Promise<string>;
  /**
   * Unsubscribes from the task channels. Idempotent. {@link render} still works afterwards
   * (the counters keep their last values; the gauges still read the table and the ledger).
   */
  close(): void;
}

/** Options for {@link createMetrics}. */
export interface MetricsOptions {
  ledger: ResourceLedger;
  tasks: TaskTable;
  /** Prefix of leash's own metrics; default `leash_`. The default metrics are not prefixed. */
  prefix?: string;
  /** Adds prom-client's `process_*` and `nodejs_*` metrics; default true. */
  defaultMetrics?: boolean;
}

/** Seconds; from a loopback handshake (a few ms) to a long-running command (10 min). */
export const STAGE_SECONDS_BUCKETS: readonly number[] = [
  0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600,
];

const START = 'leash:task:start';
const STAGE = 'leash:task:stage';
const FINISH = 'leash:task:finish';

/** Creates the metrics of DESIGN.md in a fresh registry and subscribes to the task channels. */
export function createMetrics(options: MetricsOptions): LeashMetrics {
  const { ledger, tasks } = options;
  const prefix = options.prefix ?? 'leash_';
  const registry = new Registry();
  const registers = [registry];

  const started = new Counter({
    name: `${prefix}tasks_started_total`,
    help: 'Tasks accepted into the task table.',
    registers,
  });
  const finished = new Counter({
    name: `${prefix}tasks_finished_total`,
    help: 'Tasks that reached a terminal status, by status and error code ("none" when the task has no error code).',
    labelNames: ['status', 'code'] as const,
    registers,
  });
  const stageSeconds = new Histogram({
    name: `${prefix}task_stage_seconds`,
    help: 'Time a task spent in a stage, observed when it leaves the stage.',
    labelNames: ['stage'] as const,
    buckets: [...STAGE_SECONDS_BUCKETS],
    registers,
  });
  for (const stage of STAGES) stageSeconds.zero({ stage });

  new Gauge({
    name: `${prefix}tasks_in_flight`,
    help: 'Live tasks by current stage.',
    labelNames: ['stage'] as const,
    registers,
    collect() {
      const counts = new Map<Stage, number>(STAGES.map((s) => [s, 0]));
      for (const task of tasks.live()) counts.set(task.stage, (counts.get(task.stage) ?? 0) + 1);
      for (const [stage, n] of counts) this.set({ stage }, n);
    },
  });
  new Gauge({
    name: `${prefix}ssh_connections`,
    help: 'SSH connections by state ("open": registered in the resource ledger).',
    labelNames: ['state'] as const,
    registers,
    collect() {
      this.set({ state: 'open' }, ledger.liveCount('ssh-connection'));
    },
  });
  new Gauge({
    name: `${prefix}resources_live`,
    help: 'Live entries of the resource ledger, by kind (every kind ever opened).',
    labelNames: ['kind'] as const,
    registers,
    collect() {
      for (const [kind, s] of ledger.stats()) this.set({ kind }, s.opened - s.closed);
    },
  });

  const exposed = options.defaultMetrics === false ? registry : Registry.merge([processMetrics(), registry]);

  // The channels are process-wide; count only the tasks of `tasks`. A task is ours if it is
  // in the table when it starts or changes stage (or when the metrics are created); the
  // WeakSet lets the finish event, published after the task left the table, recognise it.
  const ours = new WeakSet<LiveTask>(tasks.live());
  const isOurs = (task: LiveTask): boolean => {
    if (ours.has(task)) return true;
    if (tasks.get(task.id) !== task) return false;
    ours.add(task);
    return true;
  };

  const onStart = (message: unknown): void => {
    const task = taskOf(message);
    if (task && isOurs(task)) started.inc();
  };
  const onStage = (message: unknown): void => {
    const task = taskOf(message);
    if (!task || !isOurs(task)) return;
    // Published right after the new mark is pushed: the one before it is the stage just left.
    const history = task.history;
    const left = history[history.length - 2];
    const entered = history[history.length - 1];
    if (left && entered) stageSeconds.observe({ stage: left.stage }, seconds(entered.at - left.at));
  };
  const onFinish = (message: unknown): void => {
    const task = taskOf(message);
    if (!task || !ours.has(task)) return;
    ours.delete(task);
    const { status, code } = message as { status?: unknown; code?: unknown };
    if (isTerminalStatus(status)) finished.inc({ status, code: isErrorCode(code) ? code : 'none' });
    const last = task.history[task.history.length - 1];
    if (last) stageSeconds.observe({ stage: last.stage }, seconds(Date.now() - last.at));
  };

  subscribe(START, onStart);
  subscribe(STAGE, onStage);
  subscribe(FINISH, onFinish);

  let closed = false;
  return {
    registry,
    contentType: registry.contentType,
    render: () => exposed.metrics(),
    close() {
      if (closed) return;
      closed = true;
      unsubscribe(START, onStart);
      unsubscribe(STAGE, onStage);
      unsubscribe(FINISH, onFinish);
    },
  };
}

function seconds(ms: number): number {
  return Math.max(0, ms) / 1000;
}

function taskOf(message: unknown): LiveTask | undefined {
  if (typeof message !== 'object' || message === null) return undefined;
  const task = (message as { task?: unknown }).task;
  return typeof task === 'object' && task !== null && 'history' in task ? (task as LiveTask) : undefined;
}

function isTerminalStatus(value: unknown): value is TerminalStatus {
  return typeof value === 'string' && (TERMINAL_STATUSES as readonly string[]).includes(value);
}

/**
 * prom-client's default `process_*` and `nodejs_*` metrics, collected once per process into
 * a registry of their own: they describe the process, not one service instance, and
 * prom-client 15 starts samplers for them (an event-loop delay histogram, a GC observer)
 * that it offers no way to stop — so they are started once and shared.
 */
let processRegistry: Registry | null = null;

function processMetrics(): Registry {
  if (!processRegistry) {
    processRegistry = new Registry();
    collectDefaultMetrics({ register: processRegistry });
  }
  return processRegistry;
}
