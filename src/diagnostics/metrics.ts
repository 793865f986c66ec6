/**
 * Prometheus metrics (DESIGN.md "Contracts": Metrics). Counters and the stage histogram are
 * fed by the task table's diagnostics channels; gauges are read from the task table and the
 * resource ledger at scrape time. Label values come only from fixed sets (stage, status,
 * error code, resource kind) — never a host or a command — so the series count is bounded.
 */
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { PerformanceObserver, constants as perfConstants, monitorEventLoopDelay, type PerformanceEntry } from 'node:perf_hooks';
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
  /** Leaks flagged so far by kind (the leak watchdog's counts), for `leash_leaks_total`. */
  leaks?: () => ReadonlyMap<string, number>;
  /** Every kind of leak, so that each series exists (at 0) before the first leak. */
  leakKinds?: readonly string[];
  /** The largest hard deadline a task can have, seconds; 0 when a stage deadline is disabled. */
  maxTaskDeadlineSeconds?: number;
  /** Pooled SSH connections by state, for `leash_ssh_connections{state}`. */
  pool?: () => { readonly idle: number; readonly busy: number; readonly connecting: number };
  /** Samples event-loop delay and counts GCs (small, stoppable costs); default true. */
  runtimeMetrics?: boolean;
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
    help: 'SSH connections by state: "open" every one in the resource ledger; of the pooled ones "idle", "busy" (channels in use) and "connecting".',
    labelNames: ['state'] as const,
    registers,
    collect() {
      this.set({ state: 'open' }, ledger.liveCount('ssh-connection'));
      const pool = options.pool?.();
      if (pool) for (const state of ['idle', 'busy', 'connecting'] as const) this.set({ state }, pool[state]);
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

  new Counter({
    name: `${prefix}resources_opened_total`,
    help: 'Resource ledger entries opened, by kind.',
    labelNames: ['kind'] as const,
    registers,
    collect() {
      // The ledger keeps the totals; a counter fed from a monotonic total is reset and set.
      this.reset();
      for (const [kind, s] of ledger.stats()) this.inc({ kind }, s.opened);
    },
  });
  new Counter({
    name: `${prefix}resources_closed_total`,
    help: 'Resource ledger entries closed, by kind.',
    labelNames: ['kind'] as const,
    registers,
    collect() {
      this.reset();
      for (const [kind, s] of ledger.stats()) this.inc({ kind }, s.closed);
    },
  });
  new Gauge({
    name: `${prefix}task_oldest_age_seconds`,
    help: 'Age of the oldest live task in each stage, from when it left the queue (its deadlines start then; queued: from acceptance); 0 when none.',
    labelNames: ['stage'] as const,
    registers,
    collect() {
      const now = Date.now();
      const oldest = new Map<Stage, number>(STAGES.map((s) => [s, now]));
      for (const task of tasks.live()) oldest.set(task.stage, Math.min(oldest.get(task.stage) ?? now, clockStart(task)));
      for (const [stage, at] of oldest) this.set({ stage }, seconds(now - at));
    },
  });
  new Gauge({
    name: `${prefix}max_task_deadline_seconds`,
    help: 'The largest hard deadline a task can have under the configured defaults (0: a stage deadline is disabled, nothing bounds a task).',
    registers,
    collect() {
      this.set(options.maxTaskDeadlineSeconds ?? 0);
    },
  });
  const leaks = options.leaks;
  new Counter({
    name: `${prefix}leaks_total`,
    help: 'Leaks flagged by the leak watchdog, by kind (see /debug/leaks on the admin listener).',
    labelNames: ['kind'] as const,
    registers,
    collect() {
      this.reset();
      for (const kind of options.leakKinds ?? []) this.inc({ kind }, 0);
      for (const [kind, n] of leaks?.() ?? []) this.inc({ kind }, n);
    },
  });
  const runtime = options.runtimeMetrics === false ? null : runtimeMetrics(prefix, registers);

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
      runtime?.stop();
    },
  };
}

/** When a task's deadlines started: when it left the queue (or its acceptance, while queued). */
function clockStart(task: LiveTask): number {
  return task.history[1]?.at ?? task.createdAt;
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
 * Event-loop delay and garbage collection, sampled by this instance and stopped with it.
 * prom-client's own `nodejs_gc_duration_seconds` records only the first entry of each
 * observer batch (../shared/DIAGNOSTICS.md); here every entry counts.
 */
function runtimeMetrics(prefix: string, registers: Registry[]): { stop: () => void } {
  // 10 ms resolution: ~0.3% of a core (DIAGNOSTICS.md). Percentiles cover the time since
  // the previous scrape: each scrape reads, then resets.
  const delay = monitorEventLoopDelay({ resolution: 10 });
  delay.enable();
  const ns = (n: number): number => (Number.isFinite(n) ? n / 1e9 : 0);
  const delayGauge = (name: string, help: string, read: () => number): void => {
    new Gauge({
      name: `${prefix}event_loop_delay_${name}_seconds`,
      help: `${help} event-loop delay since the previous scrape (monitorEventLoopDelay, 10 ms resolution).`,
      registers,
      collect() {
        this.set(read());
      },
    });
  };
  let last = { p50: 0, p99: 0, max: 0 };
  let readAt = 0;
  // One read serves the three gauges of one scrape; the histogram is reset after it.
  const read = (): typeof last => {
    const now = Date.now();
    if (now - readAt > 100) {
      last = delay.count > 0 ? { p50: ns(delay.percentile(50)), p99: ns(delay.percentile(99)), max: ns(delay.max) } : { p50: 0, p99: 0, max: 0 };
      delay.reset();
      readAt = now;
    }
    return last;
  };
  delayGauge('p50', 'Median', () => read().p50);
  delayGauge('p99', '99th percentile', () => read().p99);
  delayGauge('max', 'Largest', () => read().max);

  const gcCount = new Counter({ name: `${prefix}gc_total`, help: 'Garbage collections, by kind (every one counted).', labelNames: ['kind'] as const, registers });
  const gcSeconds = new Counter({ name: `${prefix}gc_seconds_total`, help: 'Time spent in garbage collection, by kind.', labelNames: ['kind'] as const, registers });
  for (const kind of Object.values(GC_KINDS)) {
    gcCount.inc({ kind }, 0);
    gcSeconds.inc({ kind }, 0);
  }
  const observer = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      const kind = gcKind(entry);
      gcCount.inc({ kind });
      gcSeconds.inc({ kind }, entry.duration / 1000);
    }
  });
  observer.observe({ entryTypes: ['gc'] });
  return {
    stop() {
      observer.disconnect();
      delay.disable();
    },
  };
}

const GC_KINDS: Readonly<Record<number, string>> = {
  [perfConstants.NODE_PERFORMANCE_GC_MINOR]: 'minor',
  [perfConstants.NODE_PERFORMANCE_GC_MAJOR]: 'major',
  [perfConstants.NODE_PERFORMANCE_GC_INCREMENTAL]: 'incremental',
  [perfConstants.NODE_PERFORMANCE_GC_WEAKCB]: 'weakcb',
};

function gcKind(entry: PerformanceEntry): string {
  const detail = (entry as PerformanceEntry & { detail?: { kind?: number } }).detail;
  return GC_KINDS[detail?.kind ?? -1] ?? 'other';
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
