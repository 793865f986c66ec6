// Benchmark 4: what diagnostics cost (issue 4).
//
// 4a. The same `leash serve` workload as part 3 with the optional diagnostics off, and on with
//     a scraper watching: the leak watchdog every second, sampled heap profiling, GET /metrics
//     every second and GET /debug/tasks?debug=1 every 5 s. One service at a time (heap sampling
//     and the watchdog are process-wide while a service runs), started per repetition.
// 4b. /debug/tasks with 10,000 live tasks injected into the process-wide task table: cold and
//     warm dumps over HTTP and in process, and what one live task costs to create and finish.
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { COMPONENT_OWNERS } from '../../src/app/app.ts';
import { createRedactor } from '../../src/diagnostics/redaction.ts';
import { renderTasks } from '../../src/diagnostics/task-dump.ts';
import { CreationSite } from '../../src/lifecycle/creation-site.ts';
import { LeakWatchdog } from '../../src/lifecycle/leak-watchdog.ts';
import { ledger } from '../../src/lifecycle/ledger.ts';
import { taskTable, type LiveTask } from '../../src/lifecycle/task-table.ts';
import { apiRequest, READ_TOKEN, startTestService, type TestService } from '../../test/support/service.ts';
import type { Sshd } from '../../test/support/sshd.ts';
import { serviceContender, settledLedgerCount, type ApiContender, type ApiRepResult, type ServiceLimits } from './api.ts';
import { assertLedgerEmpty } from './fresh.ts';
import { median } from './util.ts';

export type DiagName = 'off' | 'on';

/** The `diagnostics` section of each contender's configuration; everything else is part 3's. */
export const DIAG_SETTINGS: Readonly<Record<DiagName, Readonly<Record<string, unknown>>>> = {
  off: { watchdogIntervalMs: 0, heapSampling: false },
  // The watchdog checks every second: 30× its default of 30 s, to make its cost visible.
  on: { watchdogIntervalMs: '1s', heapSampling: true },
};

/** How often the "on" contender's scraper reads /metrics (like Prometheus) and /debug/tasks?debug=1 (an operator). */
export const SCRAPE_METRICS_MS = 1000;
export const SCRAPE_DUMP_MS = 5000;
const REQUEST_TIMEOUT_MS = 10_000;

/** A `leash serve` in this process as part 3 runs it (logLevel info, `limits`), with `name`'s diagnostics. */
export function startDiagService(sshd: Sshd, limits: ServiceLimits, name: DiagName): Promise<TestService> {
  return startTestService(sshd, { extra: { logLevel: 'info', limits: { ...limits }, pool: { reuse: false }, diagnostics: { ...DIAG_SETTINGS[name] } } });
}

/** What the scraper did during one repetition: per request, its duration and response size. */
export interface ScrapeStats {
  readonly metricsMs: number[];
  readonly metricsBytes: number[];
  readonly dumpMs: number[];
  readonly dumpBytes: number[];
}

const bytes = (body: unknown): number => Buffer.byteLength(typeof body === 'string' ? body : JSON.stringify(body));

/**
 * A background loop: GET /metrics (read token) at once and then every second, and
 * GET /debug/tasks?debug=1 on the admin listener (admin token) at once and then every 5 s.
 * `stop()` ends it, waits for a request in flight, and throws if any request failed.
 */
export function startScraper(service: TestService): { stop(): Promise<ScrapeStats> } {
  const adminUrl = service.running.adminUrl;
  if (adminUrl === null) throw new Error('scraper: the service has no admin listener');
  const stats: ScrapeStats = { metricsMs: [], metricsBytes: [], dumpMs: [], dumpBytes: [] };
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let wake: (() => void) | undefined;
  const get = async (base: string, route: string, token: string | undefined, ms: number[], sizes: number[]): Promise<void> => {
    const start = performance.now();
    const response = await apiRequest(base, 'GET', route, undefined, { ...(token === undefined ? {} : { token }), timeoutMs: REQUEST_TIMEOUT_MS });
    ms.push(performance.now() - start);
    if (response.status !== 200) throw new Error(`scraper: GET ${route} answered ${response.status}: ${String(bytes(response.body))} bytes`);
    sizes.push(bytes(response.body));
  };
  const loop = async (): Promise<void> => {
    const t0 = performance.now();
    const dumpEvery = Math.round(SCRAPE_DUMP_MS / SCRAPE_METRICS_MS);
    for (let tick = 0; !stopped; tick++) {
      await get(service.url, '/metrics', READ_TOKEN, stats.metricsMs, stats.metricsBytes);
      if (tick % dumpEvery === 0 && !stopped) await get(adminUrl, '/debug/tasks?debug=1', undefined, stats.dumpMs, stats.dumpBytes);
      if (stopped) break;
      await new Promise<void>((resolve) => {
        wake = resolve;
        timer = setTimeout(resolve, Math.max(0, t0 + (tick + 1) * SCRAPE_METRICS_MS - performance.now()));
      });
    }
  };
  const done = loop();
  done.catch(() => {}); // reported by stop()
  return {
    stop: async () => {
      stopped = true;
      clearTimeout(timer);
      wake?.();
      await done;
      return stats;
    },
  };
}

/** One repetition of one contender: the service's result and, for "on", what the scraper did. */
export interface DiagRep {
  readonly result: ApiRepResult;
  readonly scrape: ScrapeStats | null;
}

/**
 * Starts a service with `name`'s diagnostics, warms it up (`warm`, with the scraper running
 * for "on"), runs `measure` (with a fresh scraper for "on"), stops the scraper and awaits it,
 * stops the service, and fails unless the ledger and the task table are empty afterwards.
 */
export async function diagRepetition(
  sshd: Sshd,
  limits: ServiceLimits,
  name: DiagName,
  warm: (c: ApiContender) => Promise<unknown>,
  measure: (c: ApiContender) => Promise<ApiRepResult>,
  beforeMeasure: () => void,
): Promise<DiagRep> {
  const service = await startDiagService(sshd, limits, name);
  try {
    let idle = await settledLedgerCount();
    const contender = serviceContender(sshd, service, () => idle);
    const scraped = async <T>(run: () => Promise<T>): Promise<{ result: T; scrape: ScrapeStats | null }> => {
      const scraper = name === 'on' ? startScraper(service) : null;
      let result: T;
      try {
        result = await run();
      } catch (err) {
        await scraper?.stop().catch(() => {});
        throw err;
      }
      return { result, scrape: (await scraper?.stop()) ?? null };
    };
    await scraped(() => warm(contender));
    idle = await settledLedgerCount();
    beforeMeasure();
    return await scraped(() => measure(contender));
  } finally {
    await service.stop();
    await assertLedgerEmpty(`after the diagnostics-${name} service stopped`);
  }
}

// ---------------------------------------------------------------------------------------
// 4b: dumps with many live tasks.

const DEADLINE_MS = 600_000;
const targetOf = (i: number): { host: string; port: number; user: string } => ({ host: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, port: 22, user: 'deploy' });

// Three distinct creation sites, as if three parts of the service created tasks.
function createdByScheduler(i: number): LiveTask {
  return taskTable.create({ target: targetOf(i), attrs: { command: 'uptime' }, hardDeadlineMs: DEADLINE_MS });
}
function createdByBatch(i: number): LiveTask {
  return taskTable.create({ target: targetOf(i), attrs: { command: 'uptime' }, hardDeadlineMs: DEADLINE_MS });
}
function createdByRetry(i: number): LiveTask {
  return taskTable.create({ target: targetOf(i), attrs: { command: 'uptime' }, hardDeadlineMs: DEADLINE_MS });
}
const SITES = [createdByScheduler, createdByBatch, createdByRetry] as const;

/** `n` live tasks: site i mod 3; stage queued, connecting (waiting tcp-connect) or handshake (waiting server-banner) by ⌊i/3⌋ mod 3. */
function inject(n: number): LiveTask[] {
  const tasks: LiveTask[] = [];
  for (let i = 0; i < n; i++) {
    const task = SITES[i % 3]!(i);
    const stage = Math.floor(i / 3) % 3;
    if (stage >= 1) {
      task.enter('connecting');
      task.wait('tcp-connect');
    }
    if (stage === 2) {
      task.enter('handshake');
      task.wait('server-banner');
    }
    tasks.push(task);
  }
  return tasks;
}

function finishAll(tasks: readonly LiveTask[]): number {
  const start = performance.now();
  for (const task of tasks) taskTable.finish(task, 'cancelled');
  const ms = performance.now() - start;
  if (taskTable.size !== 0) throw new Error(`after finishing the injected tasks the task table holds ${taskTable.size}`);
  return ms;
}

/** Timing of one kind of dump: the first one, then `warm` more. */
export interface DumpTiming {
  readonly firstMs: number;
  readonly warmMs: number[];
  readonly bytes: number;
  /** Longest event-loop delay seen while the first / the warm dumps ran, ms (1 ms timer). */
  readonly firstLoopMaxMs: number;
  readonly warmLoopMaxMs: number;
}

export interface DumpResult {
  readonly tasks: number;
  readonly injectMs: number;
  /** Heap per live task after a GC: right after creating them, and after the first dump (formatted stacks kept). */
  readonly heapPerTaskB: number;
  readonly heapPerTaskAfterDumpB: number;
  readonly groups: number;
  readonly http1: DumpTiming;
  readonly inproc1: DumpTiming;
  readonly http2: DumpTiming;
  /** The service's dump limit for debug=2 and how many tasks the response listed. */
  readonly http2Listed: number;
  readonly watchdogPassMs: number[];
  readonly finishMs: number;
  /** µs per task, create + finish, with the running service's channel subscribers. */
  readonly perTaskServiceUs: PerIteration;
  readonly captureOnlyUs: PerIteration;
  /** Whether Node's source maps were on (tsx turns them on, as for bin/leash.js): stack formatting then maps every frame. */
  readonly sourceMaps: boolean;
  /** In-process cold debug=1 dump of `tasks` fresh tasks with source maps switched off for it, ms; null if not possible. */
  readonly inprocColdNoMapsMs: number | null;
}

const LOOP_RESOLUTION_MS = 1;

async function timed(first: () => Promise<number> | number, warm: number, again: () => Promise<number> | number): Promise<DumpTiming> {
  const loop = monitorEventLoopDelay({ resolution: LOOP_RESOLUTION_MS });
  const late = (): number => Math.max(0, loop.max / 1e6 - LOOP_RESOLUTION_MS);
  // The histogram records the gap between two ticks of its timer: let it tick before the dump.
  const settle = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, 5));
  loop.enable();
  await settle();
  let start = performance.now();
  const size = await first();
  const firstMs = performance.now() - start;
  await settle(); // the tick after the pause records it
  loop.disable();
  const firstLoopMaxMs = late();
  loop.reset();
  const warmMs: number[] = [];
  loop.enable();
  await settle();
  for (let i = 0; i < warm; i++) {
    start = performance.now();
    await again();
    warmMs.push(performance.now() - start);
    await settle();
  }
  loop.disable();
  return { firstMs, warmMs, bytes: size, firstLoopMaxMs, warmLoopMaxMs: late() };
}

/** µs per iteration: the median and the fastest of 5 chunks. */
export interface PerIteration {
  readonly median: number;
  readonly min: number;
}

/** µs per iteration over `n` iterations of `body`, in 5 chunks of n/5. */
function perIterationUs(n: number, body: (i: number) => void): PerIteration {
  const chunk = Math.max(1, Math.floor(n / 5));
  const times: number[] = [];
  for (let c = 0; c < 5; c++) {
    const start = performance.now();
    for (let i = 0; i < chunk; i++) body(i);
    times.push(((performance.now() - start) * 1000) / chunk);
  }
  return { median: median(times), min: Math.min(...times) };
}

/** Creating and finishing one LiveTask (creation site captured), µs per task, median of 5 chunks of n/5. */
export function taskCostUs(n: number): PerIteration {
  const cost = perIterationUs(n, (i) => taskTable.finish(createdByScheduler(i), 'cancelled'));
  if (taskTable.size !== 0) throw new Error(`task cost: ${taskTable.size} tasks left in the table`);
  return cost;
}

/**
 * With `service` running and idle: injects `n` live tasks, dumps them (debug=1 over HTTP cold
 * then warm, in process warm, debug=2 over HTTP), times a leak-watchdog pass, finishes them all
 * (the table must be empty), then injects `n` more for an in-process cold dump, and measures
 * the per-task cost of create+finish with the service's subscribers.
 */
export async function measureDumps(service: TestService, n: number, warm: number, iterations: number, gc: () => void): Promise<DumpResult> {
  const adminUrl = service.running.adminUrl;
  if (adminUrl === null) throw new Error('dumps: the service has no admin listener');
  if (taskTable.size !== 0) throw new Error(`dumps: ${taskTable.size} tasks live before injecting`);
  const idleLedger = ledger.liveCount();
  const redact = createRedactor();
  const render = (): string => renderTasks(taskTable.live(), 1, { now: Date.now(), redact, limit: 1000 });
  const http = async (debug: 1 | 2): Promise<string> => {
    const response = await apiRequest(adminUrl, 'GET', `/debug/tasks?debug=${debug}`, undefined, { timeoutMs: 60_000 });
    if (response.status !== 200 || typeof response.body !== 'string') throw new Error(`GET /debug/tasks?debug=${debug}: HTTP ${response.status}`);
    return response.body;
  };

  // Round A: cold over HTTP.
  gc();
  const heap0 = process.memoryUsage().heapUsed;
  let start = performance.now();
  let tasks = inject(n);
  const injectMs = performance.now() - start;
  gc();
  const heap1 = process.memoryUsage().heapUsed;
  let text1 = '';
  const http1 = await timed(
    async () => bytes((text1 = await http(1))),
    warm,
    async () => bytes(await http(1)),
  );
  if (!text1.startsWith(`tasks: total ${n}\n`)) throw new Error(`debug=1: unexpected header ${text1.slice(0, 60)}`);
  const groups = text1.split('\n').filter((l) => / @ stage=/.test(l)).length;
  gc();
  const heap2 = process.memoryUsage().heapUsed;
  let listed = 0;
  const http2 = await timed(
    async () => {
      const text = await http(2);
      listed = text.split('\n').filter((l) => l.startsWith('task ')).length;
      return bytes(text);
    },
    Math.max(3, Math.floor(warm / 2)),
    async () => bytes(await http(2)),
  );
  const watchdog = new LeakWatchdog({ ledger, tasks: taskTable, log: { warn: () => {} }, intervalMs: 1000, components: COMPONENT_OWNERS });
  const watchdogPassMs: number[] = [];
  for (let i = 0; i < 5; i++) {
    start = performance.now();
    watchdog.check();
    watchdogPassMs.push(performance.now() - start);
  }
  const finishMs = finishAll(tasks);

  // Round B: as many new tasks, cold in process (each task's stack is formatted on its first read).
  tasks = inject(n);
  const inproc1 = await timed(
    () => bytes(render()),
    warm,
    () => bytes(render()),
  );
  finishAll(tasks);

  // Round C: the same cold dump with Node's source maps off (as compiled JavaScript would run).
  const sourceMaps = (process as { sourceMapsEnabled?: boolean }).sourceMapsEnabled ?? false;
  let inprocColdNoMapsMs: number | null = null;
  if (sourceMaps && typeof process.setSourceMapsEnabled === 'function') {
    tasks = inject(n);
    process.setSourceMapsEnabled(false);
    try {
      start = performance.now();
      render();
      inprocColdNoMapsMs = performance.now() - start;
    } finally {
      process.setSourceMapsEnabled(true);
    }
    finishAll(tasks);
  }
  if (ledger.liveCount() !== idleLedger) throw new Error(`dumps: ledger holds ${ledger.liveCount()} entries, ${idleLedger} at rest`);

  const captureOnlyUs = perIterationUs(iterations, () => void new CreationSite(perIterationUs));
  const perTaskServiceUs = taskCostUs(iterations);
  return {
    tasks: n,
    injectMs,
    heapPerTaskB: (heap1 - heap0) / n,
    heapPerTaskAfterDumpB: (heap2 - heap0) / n,
    groups,
    http1,
    inproc1,
    http2,
    http2Listed: listed,
    watchdogPassMs,
    finishMs,
    perTaskServiceUs,
    captureOnlyUs,
    sourceMaps,
    inprocColdNoMapsMs,
  };
}
