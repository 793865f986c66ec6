// Benchmark 3: API overhead. The same task (fresh connection, remote command `true`, the
// bench's local sshd) through `POST /v1/tasks` with `wait` of a `leash serve` running in this
// process, against the core called directly (runOne / fanOut), in the same run.
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { cancelledError } from '../../src/lifecycle/errors.ts';
import { ledger } from '../../src/lifecycle/ledger.ts';
import { taskTable } from '../../src/lifecycle/task-table.ts';
import type { TaskReport } from '../../src/lifecycle/task-report.ts';
import { fanOut } from '../../src/service/fan-out.ts';
import type { TaskSpec } from '../../src/service/task-spec.ts';
import { SshRemoteExec } from '../../src/ssh/remote-exec.ts';
import { keyCredentials, runOne, testSpec } from '../../test/support/run-task.ts';
import { apiRequest, startTestService, type TestService } from '../../test/support/service.ts';
import type { Sshd } from '../../test/support/sshd.ts';
import { peakRssKiB, resetPeakRss } from './child-rss.ts';
import type { RepResult } from './fresh.ts';
import { KiB, PeakSampler, pollUntil, withTimeout } from './util.ts';

/** Per-task deadline: a task that takes this long is a failed bench. */
const TASK_TIMEOUT_MS = 30_000;
/** `wait` sent with every POST /v1/tasks, seconds (the service's default cap is 60). */
export const API_WAIT_S = 60;

/** One stage of one task, as both the core's report and the API's task carry it. */
interface StageTiming {
  readonly stage: string;
  readonly durationMs: number;
}

/** One repetition of one contender: {@link RepResult} plus the stage timings of every task. */
export interface ApiRepResult extends RepResult {
  readonly stages: ReadonlyArray<readonly StageTiming[]>;
  /** How late this process's event loop ran a {@link LOOP_RESOLUTION_MS} timer: mean and p99, ms. */
  readonly loopDelay: { readonly mean: number; readonly p99: number };
}

/** The timer monitorEventLoopDelay samples with; its samples include this period, which is subtracted. */
export const LOOP_RESOLUTION_MS = 10;

export interface ApiContender {
  readonly name: 'core' | 'service';
  sequential(tasks: number): Promise<ApiRepResult>;
  concurrent(tasks: number, concurrency: number): Promise<ApiRepResult>;
}

/** The service limits the comparison runs with: none of them may be the bottleneck. */
export interface ServiceLimits {
  readonly globalConcurrency: number;
  readonly perHost: number;
  readonly perTargetHandshakes: number;
  readonly queueCapacity: number;
  readonly maxWaitSeconds: number;
}

/**
 * Limits that cannot throttle `concurrency` clients: twice the concurrency everywhere (so a
 * slot released a moment after its HTTP answer never makes the next task queue), and never
 * below the service defaults.
 */
export function benchLimits(concurrency: number): ServiceLimits {
  return {
    globalConcurrency: Math.max(64, 2 * concurrency),
    perHost: Math.max(4, 2 * concurrency),
    perTargetHandshakes: Math.max(8, 2 * concurrency),
    queueCapacity: 10_000,
    maxWaitSeconds: API_WAIT_S,
  };
}

/** A `leash serve` in this process for the bench's sshd, logging at `info` (its production default). */
export function startBenchService(sshd: Sshd, limits: ServiceLimits): Promise<TestService> {
  // A fresh connection per task, like the core contender (the service pools by default; part 2 measures pooling).
  return startTestService(sshd, { extra: { logLevel: 'info', limits: { ...limits }, pool: { reuse: false } } });
}

/**
 * What lives in the ledger while the service idles (store, timers, listener…): the level
 * every repetition must come back to. Call with the service started and idle.
 */
export async function settledLedgerCount(): Promise<number> {
  let last = -1;
  let stableSince = performance.now();
  await pollUntil(
    () => {
      const now = ledger.liveCount();
      if (now !== last) {
        last = now;
        stableSince = performance.now();
      }
      return taskTable.size === 0 && performance.now() - stableSince >= 300;
    },
    10_000,
    'ledger to settle with the service idle',
  );
  return last;
}

/** Runs `body`, measures wall time, CPU and peak RSS of this process, then checks nothing leaked. */
async function measure(
  tasks: number,
  idleLedger: () => number,
  body: (latencies: number[], stages: Array<readonly StageTiming[]>) => Promise<void>,
): Promise<ApiRepResult> {
  const latencies: number[] = [];
  const stages: Array<readonly StageTiming[]> = [];
  const rss0 = process.memoryUsage.rss();
  const exact = resetPeakRss();
  const sampler = exact ? null : new PeakSampler(() => process.memoryUsage.rss()).start();
  const loop = monitorEventLoopDelay({ resolution: LOOP_RESOLUTION_MS });
  loop.enable();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  let wallMs: number;
  let cpu: NodeJS.CpuUsage;
  let peak: number;
  try {
    await body(latencies, stages);
  } finally {
    wallMs = performance.now() - t0;
    cpu = process.cpuUsage(cpu0);
    loop.disable();
    peak = sampler ? sampler.stop().peak : peakRssKiB() * KiB;
  }
  const late = (ns: number): number => Math.max(0, ns / 1e6 - LOOP_RESOLUTION_MS);
  if (latencies.length !== tasks) throw new Error(`${latencies.length} of ${tasks} tasks reported`);
  const expected = idleLedger();
  await pollUntil(
    () => taskTable.size === 0 && ledger.liveCount() === expected,
    5000,
    `after a repetition the task table must be empty and the ledger back to its idle ${expected} entries`,
    () => `${taskTable.size} tasks live, ${ledger.liveCount()} ledger entries: ${ledger.live().slice(-5).map((e) => `${e.kind}#${e.id} owner=${e.owner}`).join('; ')}`,
  );
  return {
    latencies,
    wallMs,
    clientCpuMsPerTask: (cpu.user + cpu.system) / 1000 / tasks,
    serverCpuMsPerTask: Number.NaN,
    peakRssKiB: peak / KiB,
    rssGrowthKiB: (peak - rss0) / KiB,
    reports: [],
    stages,
    loopDelay: { mean: late(loop.mean), p99: late(loop.percentile(99)) },
  };
}

function checkReport(report: TaskReport): void {
  if (report.status !== 'ok') throw new Error(`core: task ${report.status} ${report.error?.code ?? ''} ${report.error?.message ?? ''}`);
}

/** The core, called directly: runOne one after another, fanOut for the concurrent case. */
export async function coreContender(sshd: Sshd, idleLedger: () => number): Promise<ApiContender> {
  const credentials = await keyCredentials(sshd.clientKey.path);
  const spec: TaskSpec = testSpec(sshd, 'true', credentials, { timeouts: { commandMs: TASK_TIMEOUT_MS } });
  const deps = { remote: new SshRemoteExec(), ledger, tasks: taskTable };
  return {
    name: 'core',
    sequential: (tasks) =>
      measure(tasks, idleLedger, async (latencies, stages) => {
        for (let i = 0; i < tasks; i++) {
          const start = performance.now();
          const report = await withTimeout(runOne(spec), TASK_TIMEOUT_MS + 15_000, 'core task');
          latencies.push(performance.now() - start);
          checkReport(report);
          stages.push(report.stages);
        }
      }),
    concurrent: (tasks, concurrency) =>
      measure(tasks, idleLedger, async (latencies, stages) => {
        const cancel = new AbortController();
        const started = new Map<string, number>();
        const bad: TaskReport[] = [];
        await withTimeout(
          fanOut(
            Array.from({ length: tasks }, () => spec),
            deps,
            {
              concurrency,
              signal: cancel.signal,
              onStart: (task) => started.set(task.id, performance.now()),
              onReport: (report) => {
                latencies.push(performance.now() - (started.get(report.id) ?? Number.NaN));
                started.delete(report.id);
                if (report.status !== 'ok') bad.push(report);
                stages.push(report.stages);
              },
            },
          ),
          TASK_TIMEOUT_MS * 4,
          'core fan-out',
          () => cancel.abort(cancelledError('queued', 'bench: fan-out over its deadline')),
        );
        if (bad[0]) checkReport(bad[0]);
      }),
  };
}

/** What one finished task looks like on the wire (the parts the bench checks). */
interface TaskBody {
  readonly id: string;
  readonly status: string;
  readonly result: { readonly exitCode: number | null } | null;
  readonly error: { readonly code: string; readonly message: string } | null;
  readonly stages: readonly StageTiming[];
}

/**
 * The service: each task is one `POST /v1/tasks` `{host, port, command: 'true', wait}` over
 * fetch (HTTP/1.1 keep-alive), answered 200 with the finished task. Latency is from the
 * request to the parsed answer; `concurrency` clients each post their next task as soon as
 * the previous one is answered.
 */
export function serviceContender(sshd: Sshd, service: TestService, idleLedger: () => number): ApiContender {
  const body = { host: sshd.host, port: sshd.port, command: 'true', wait: API_WAIT_S };
  const post = async (latencies: number[], stages: Array<readonly StageTiming[]>): Promise<void> => {
    const start = performance.now();
    const response = await apiRequest(service.url, 'POST', '/v1/tasks', body, { timeoutMs: TASK_TIMEOUT_MS + 15_000 });
    latencies.push(performance.now() - start);
    const task = response.body as TaskBody;
    if (response.status !== 200 || task.status !== 'ok' || task.result?.exitCode !== 0) {
      throw new Error(`service: HTTP ${response.status}, ${JSON.stringify(response.body).slice(0, 500)}`);
    }
    stages.push(task.stages);
  };
  return {
    name: 'service',
    sequential: (tasks) =>
      measure(tasks, idleLedger, async (latencies, stages) => {
        for (let i = 0; i < tasks; i++) await post(latencies, stages);
      }),
    concurrent: (tasks, concurrency) =>
      measure(tasks, idleLedger, async (latencies, stages) => {
        let next = 0;
        const client = async (): Promise<void> => {
          while (next < tasks) {
            next++;
            await post(latencies, stages);
          }
        };
        await withTimeout(Promise.all(Array.from({ length: Math.min(concurrency, tasks) }, client)), TASK_TIMEOUT_MS * 4, 'service clients');
      }),
  };
}
