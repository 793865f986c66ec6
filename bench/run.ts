// `npm run bench [-- --quick]`: leash against the tools users would pick instead, in one
// run on one machine (issue 5, "Benchmarks"). Every comparison alternates its contenders
// per repetition (bench/lib/alternate.ts).
//
// 1. Fresh connection per task, remote command `true`, real OpenSSH sshd on loopback with a
//    clean HOME: leash in-process vs OpenSSH `ssh` spawned per task (curve25519 kex, as
//    leash/ssh2 uses) vs Go's x/crypto/ssh (bench/peers/go-ssh, when Debian's Go packages are
//    installed), sequential and 32 at a time.
// 2. One pooled connection (sshd with MaxSessions 32): leash's ConnectionPool vs OpenSSH
//    ControlMaster vs Go sessions on one connection, sequential and 16 at a time.
// 3. Fan-out to 200 loopback addresses (one sshd on 0.0.0.0): `leash run` vs pssh vs clush.
// 4. Memory per stuck connection: N tasks in flight against a server that never speaks,
//    measured once all are in stage `handshake`, then all cancelled; the ledger must be empty.
//    The same for Go's handshakes.
// 5. API overhead (issue 3): the same task through `POST /v1/tasks` with `wait` of a
//    `leash serve` in this process vs the core called directly, sequential and 16 clients vs
//    fanOut concurrency 16, alternating; the service adds at most 10% (target).
// 6. Diagnostics cost (issue 4): (a) part 5's service workload with the optional diagnostics
//    off vs on (leak watchdog every 1 s, heap sampling, /metrics scraped every 1 s and
//    /debug/tasks?debug=1 every 5 s), one service at a time, alternating; on costs at most 3%
//    (target). (b) /debug/tasks with 10,000 live tasks injected into the task table: cold and
//    warm dumps over HTTP and in process, the event-loop pause, and µs per live task.
//
// Full run → bench/RESULTS.md; --quick → bench/out/RESULTS-quick.md (gitignored).
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { TestService } from '../test/support/service.ts';
import { collector } from '../test/support/gc.ts';
import { descendantPids, startSshd, type Sshd } from '../test/support/sshd.ts';
import {
  API_WAIT_S,
  benchLimits,
  LOOP_RESOLUTION_MS,
  coreContender,
  serviceContender,
  settledLedgerCount,
  startBenchService,
  type ApiContender,
  type ApiRepResult,
  type ServiceLimits,
} from './lib/api.ts';
import {
  DIAG_SETTINGS,
  diagRepetition,
  measureDumps,
  SCRAPE_DUMP_MS,
  SCRAPE_METRICS_MS,
  startDiagService,
  taskCostUs,
  type DiagName,
  type DiagRep,
  type DumpResult,
  type DumpTiming,
  type PerIteration,
} from './lib/diagnostics.ts';
import {
  assertLedgerEmpty,
  leashContender,
  measureRep,
  sshArgv,
  sshContender,
  sshMaxRssByGnuTime,
  spawnOverheadMs,
  type Contender,
  type RepResult,
} from './lib/fresh.ts';
import { alternate, latencyLine, type AlternatedScenario } from './lib/alternate.ts';
import { clushFanout, leashFanout, psshFanout, runFanout, startFanoutSshd, toolVersions, type FanoutRep } from './lib/fanout.ts';
import { buildGoPeer, goContender, goStuck, type GoPeer, type GoStuckResult } from './lib/go-peer.ts';
import { controlMaster, pooledLeash, POOLED_SSHD_CONFIG, type ControlMaster, type PooledLeash } from './lib/pooled.ts';
import { describeMachine, describeVersions, markdownTable, REPO, textTable, type Table } from './lib/report.ts';
import { perConnectionKiB, startSilentServer, stuckConnections, type SilentServer, type StuckResult } from './lib/stuck.ts';
import { fmt, KiB, median, MiB, percentile, pollUntil, withTimeout } from './lib/util.ts';

interface Config {
  readonly quick: boolean;
  readonly seqTasks: number;
  readonly concTasks: number;
  readonly concurrency: number;
  /** Repetitions per contender and scenario, unless the scenario's time budget runs out first. */
  readonly reps: number;
  /** Never fewer repetitions than this, whatever the budget. */
  readonly minReps: number;
  /** Seconds each scenario may take before it stops adding repetitions (after minReps). */
  readonly budgetS: { readonly sequential: number; readonly concurrent: number };
  /** Part 2, one pooled connection. */
  readonly pooled: {
    readonly seqTasks: number;
    readonly concTasks: number;
    readonly concurrency: number;
    readonly reps: number;
    readonly minReps: number;
    readonly budgetS: { readonly sequential: number; readonly concurrent: number };
  };
  /** Part 3, fan-out: one repetition is one run of each tool over every host. */
  readonly fanout: { readonly hosts: number; readonly concurrency: number; readonly reps: number; readonly minReps: number; readonly budgetS: number };
  readonly stuck: number;
  readonly stuckWarmup: number;
  /** The whole run must end by then; a last-resort watchdog exits 1 (exit hooks kill our children). */
  readonly deadlineMs: number;
  /** Part 5, API overhead: its own sizes, repetitions and budgets. */
  readonly api: {
    readonly seqTasks: number;
    readonly concTasks: number;
    readonly concurrency: number;
    readonly reps: number;
    readonly minReps: number;
    readonly budgetS: { readonly sequential: number; readonly concurrent: number };
  };
  /** Part 6, diagnostics cost: 6a's sizes, repetitions and budgets; 6b's live tasks, warm dumps and iterations. */
  readonly diag: {
    readonly seqTasks: number;
    readonly concTasks: number;
    readonly concurrency: number;
    readonly reps: number;
    readonly minReps: number;
    readonly budgetS: { readonly sequential: number; readonly concurrent: number };
    readonly dumpTasks: number;
    readonly warmDumps: number;
    readonly taskCostIterations: number;
  };
}

const FULL: Config = {
  quick: false,
  seqTasks: 80,
  concTasks: 128,
  concurrency: 32,
  reps: 7,
  minReps: 5,
  budgetS: { sequential: 420, concurrent: 360 },
  pooled: { seqTasks: 200, concTasks: 320, concurrency: 16, reps: 7, minReps: 5, budgetS: { sequential: 150, concurrent: 150 } },
  fanout: { hosts: 200, concurrency: 32, reps: 5, minReps: 5, budgetS: 400 },
  stuck: 2000,
  stuckWarmup: 200,
  deadlineMs: 45 * 60_000,
  // An even number of repetitions, so each contender goes first equally often.
  api: { seqTasks: 50, concTasks: 96, concurrency: 16, reps: 6, minReps: 5, budgetS: { sequential: 150, concurrent: 120 } },
  // Part 5's workload; each repetition also starts, warms up and stops a service per contender.
  diag: { seqTasks: 50, concTasks: 96, concurrency: 16, reps: 6, minReps: 4, budgetS: { sequential: 150, concurrent: 120 }, dumpTasks: 10_000, warmDumps: 20, taskCostIterations: 100_000 },
};
// --quick must end within about 3 minutes on a 2-core machine: smaller sizes, 2–3 repetitions
// (a scenario may stop at its minimum when others' tests share the cores; the output says so),
// and the fan-out over 40 addresses instead of 200.
const QUICK: Config = {
  quick: true,
  seqTasks: 16,
  concTasks: 64,
  concurrency: 32,
  reps: 3,
  minReps: 2,
  budgetS: { sequential: 20, concurrent: 25 },
  pooled: { seqTasks: 32, concTasks: 64, concurrency: 16, reps: 3, minReps: 2, budgetS: { sequential: 12, concurrent: 12 } },
  fanout: { hosts: 40, concurrency: 32, reps: 2, minReps: 1, budgetS: 25 },
  stuck: 500,
  stuckWarmup: 100,
  deadlineMs: 8 * 60_000,
  api: { seqTasks: 8, concTasks: 32, concurrency: 16, reps: 2, minReps: 2, budgetS: { sequential: 10, concurrent: 10 } },
  diag: { seqTasks: 8, concTasks: 32, concurrency: 16, reps: 2, minReps: 2, budgetS: { sequential: 10, concurrent: 10 }, dumpTasks: 10_000, warmDumps: 10, taskCostIterations: 20_000 },
};
const WARMUP_SEQ = 5;
const FRESH_THROUGHPUT_TARGET = 3; // issue 5: ≥ 3× OpenSSH per-task (and ≥ Go's)
const POOLED_THROUGHPUT_TARGET = 2; // issue 5: pooled sequential ≥ 2× ControlMaster (and ≥ Go's sessions)
const FANOUT_TIMEOUT_MS = 300_000;
const STARTUP_RUNS = (c: Config): number => (c.quick ? 1 : 3);
const GO_MISSING = 'Go peer not installed (apt-get install golang-go golang-golang-x-crypto-dev)';
const STUCK_TARGET_KIB = 16; // issue 5: ≤ 16 KiB RSS per stuck connection
const API_OVERHEAD_TARGET = 0.1; // issue 3: the service adds at most 10%
const DIAG_OVERHEAD_TARGET = 0.03; // issue 4: all diagnostics on costs at most 3%
const DUMP_LIMIT = 1000; // the service's default diagnostics.dumpLimit (debug=2)

function parseArgs(argv: readonly string[]): Config {
  let quick = false;
  for (const arg of argv) {
    if (arg === '--quick') quick = true;
    else if (arg === '--help' || arg === '-h') {
      process.stdout.write('usage: npm run bench [-- --quick]\n');
      process.exit(0);
    } else {
      process.stderr.write(`bench: unknown argument ${arg}\nusage: npm run bench [-- --quick]\n`);
      process.exit(2);
    }
  }
  return quick ? QUICK : FULL;
}

const progress = (line: string): void => {
  process.stderr.write(`[bench ${((performance.now() - T0) / 1000).toFixed(0).padStart(3)}s] ${line}\n`);
};
const T0 = performance.now();

// ---------------------------------------------------------------------------------------
// Summaries.

interface Summary {
  readonly p50: number;
  readonly p99: number;
  readonly wallMs: number;
  readonly tps: number;
  readonly clientCpu: number;
  readonly serverCpu: number;
  readonly peakRssKiB: number;
  readonly rssGrowthKiB: number | null;
  readonly p50Min: number;
  readonly p50Max: number;
}

function summarize(reps: readonly RepResult[]): Summary {
  const m = (f: (r: RepResult) => number): number => median(reps.map(f));
  const p50s = reps.map((r) => percentile(r.latencies, 50));
  return {
    p50: median(p50s),
    p99: m((r) => percentile(r.latencies, 99)),
    wallMs: m((r) => r.wallMs),
    tps: m((r) => r.latencies.length / (r.wallMs / 1000)),
    clientCpu: m((r) => r.clientCpuMsPerTask),
    serverCpu: m((r) => r.serverCpuMsPerTask),
    peakRssKiB: m((r) => r.peakRssKiB),
    rssGrowthKiB: reps[0]?.rssGrowthKiB === null ? null : m((r) => r.rssGrowthKiB ?? 0),
    p50Min: Math.min(...p50s),
    p50Max: Math.max(...p50s),
  };
}

interface Scenario {
  readonly title: string;
  /** Repetitions actually run, and why fewer than planned. */
  reps: number;
  cut: string | null;
  readonly key: 'sequential' | 'concurrent';
  readonly tasks: number;
  readonly results: Map<string, RepResult[]>;
}

/** One row per contender (the first is leash), then one ratio row leash/peer per peer. */
function contenderTable(scenarios: readonly Scenario[], names: readonly string[]): Table {
  const rows: string[][] = [];
  for (const s of scenarios) {
    const present = names.filter((n) => (s.results.get(n) ?? []).length > 0);
    const sums = new Map(present.map((n) => [n, summarize(s.results.get(n)!)]));
    const rssCell = (x: Summary): string =>
      `${fmt(x.peakRssKiB / KiB)}${x.rssGrowthKiB === null ? '' : ` (+${fmt(x.rssGrowthKiB / KiB)})`}`;
    for (const [name, x] of sums) {
      rows.push([
        s.title,
        name,
        p50Cell(x),
        fmt(x.p99),
        fmt(x.wallMs / 1000, 2),
        fmt(x.tps),
        fmt(x.clientCpu),
        fmt(x.serverCpu),
        rssCell(x),
      ]);
    }
    const [first, ...peers] = present;
    const leash = sums.get(first!)!;
    for (const peer of peers) {
      const other = sums.get(peer)!;
      rows.push([
        s.title,
        `${first}/${peer}`,
        fmt(leash.p50 / other.p50, 2),
        fmt(leash.p99 / other.p99, 2),
        fmt(leash.wallMs / other.wallMs, 2),
        `${fmt(leash.tps / other.tps, 2)}×`,
        fmt(leash.clientCpu / other.clientCpu, 2),
        fmt(leash.serverCpu / other.serverCpu, 2),
        fmt(leash.peakRssKiB / other.peakRssKiB, 2),
      ]);
    }
  }
  return {
    headers: ['scenario', 'contender', 'p50 ms [rep range]', 'p99 ms', 'wall s', 'tasks/s', 'client CPU ms/task', 'sshd CPU ms/task', 'peak RSS MiB'],
    rows,
    leftColumns: [0, 1],
  };
}

/** tasks/s of `a` over `b` in a scenario (NaN when either is missing). */
function tpsRatio(s: Scenario, a: string, b: string): number {
  const x = s.results.get(a) ?? [];
  const y = s.results.get(b) ?? [];
  return x.length && y.length ? summarize(x).tps / summarize(y).tps : Number.NaN;
}

const STAGES = ['queued', 'connecting', 'handshake', 'auth', 'channel', 'running', 'closing'] as const;

function stageTable(scenarios: readonly Scenario[], name = 'leash'): Table {
  return {
    headers: ['leash scenario', ...STAGES.map((s) => `${s} ms`), 'total ms'],
    rows: scenarios.map((s) => {
      const reports = (s.results.get(name) ?? []).flatMap((r) => r.reports);
      const stage = (name: string): number =>
        median(reports.map((r) => r.stages.filter((st) => st.stage === name).reduce((a, st) => a + st.durationMs, 0)));
      return [s.title, ...STAGES.map((name) => fmt(stage(name))), fmt(median(reports.map((r) => r.durationMs)))];
    }),
    leftColumns: [0],
  };
}

function stuckTables(r: StuckResult): { during: Table; after: Table } {
  const rssPer = perConnectionKiB(r, 'rss');
  const kinds = Object.entries(r.ledgerByKind).map(([k, n]) => `${k} ${n}`).join(', ') || 'none';
  return {
    during: {
      headers: ['stuck connections', 'all in handshake after s', 'RSS Δ MiB', 'RSS KiB/conn', 'heapUsed KiB/conn', 'external KiB/conn', 'fds Δ', 'ledger entries live', `target ≤ ${STUCK_TARGET_KIB} KiB/conn`],
      rows: [
        [
          String(r.count),
          fmt(r.reachMs / 1000, 2),
          fmt((r.loaded.rss - r.baseline.rss) / MiB),
          fmt(rssPer),
          fmt(perConnectionKiB(r, 'heapUsed')),
          fmt(perConnectionKiB(r, 'external')),
          String(r.loaded.fds - r.baseline.fds),
          `${r.loaded.ledgerLive} (${kinds})`,
          rssPer <= STUCK_TARGET_KIB ? 'met' : `missed (${fmt(rssPer / STUCK_TARGET_KIB, 2)}× the target)`,
        ],
      ],
      leftColumns: [7, 8],
    },
    after: {
      headers: ['cancel all ms', 'statuses', 'ledger live', 'tasks live', 'server sees open', 'fds vs baseline', 'RSS vs baseline MiB', 'heapUsed vs baseline KiB'],
      rows: [
        [
          fmt(r.cancelMs, 0),
          Object.entries(r.statuses).map(([k, n]) => `${n} × ${k}`).join(', '),
          String(r.after.ledgerLive),
          String(r.after.tasksLive),
          String(r.serverOpenAfter),
          `${r.after.fds - r.baseline.fds >= 0 ? '+' : ''}${r.after.fds - r.baseline.fds}`,
          `${r.after.rss >= r.baseline.rss ? '+' : ''}${fmt((r.after.rss - r.baseline.rss) / MiB)}`,
          `${r.after.heapUsed >= r.baseline.heapUsed ? '+' : ''}${fmt((r.after.heapUsed - r.baseline.heapUsed) / KiB, 0)}`,
        ],
      ],
      leftColumns: [1],
    },
  };
}

// ---------------------------------------------------------------------------------------
// Part 5: API overhead.


interface ApiScenario {
  readonly title: string;
  readonly key: 'sequential' | 'concurrent';
  readonly tasks: number;
  reps: number;
  cut: string | null;
  /** Index i of both lists is repetition i: the pairs ran back to back. */
  readonly results: Map<string, ApiRepResult[]>;
}

interface ApiMeasured {
  readonly scenarios: ApiScenario[];
  readonly limits: ServiceLimits;
  readonly idleLedger: number;
}

interface ApiSummary extends Summary {
  /** Median over repetitions of each repetition's median (latency − the task's own stage sum). */
  readonly outsideMs: number;
  readonly stageSumMs: number;
  readonly loopMean: number;
  readonly loopP99: number;
}

function stageSum(stages: ApiRepResult['stages'][number]): number {
  return stages.reduce((a, st) => a + st.durationMs, 0);
}

function apiSummary(reps: readonly ApiRepResult[]): ApiSummary {
  return {
    ...summarize(reps),
    outsideMs: median(reps.map((r) => median(r.latencies.map((ms, i) => ms - stageSum(r.stages[i] ?? []))))),
    stageSumMs: median(reps.map((r) => median(r.stages.map(stageSum)))),
    loopMean: median(reps.map((r) => r.loopDelay.mean)),
    loopP99: median(reps.map((r) => r.loopDelay.p99)),
  };
}

/** Per repetition (the two contenders back to back): f(service, core); median and range. */
function paired(s: ApiScenario, f: (service: ApiRepResult, core: ApiRepResult) => number): { median: number; min: number; max: number } {
  const core = s.results.get('core') ?? [];
  const service = s.results.get('service') ?? [];
  const values = service.slice(0, core.length).map((r, i) => f(r, core[i]!));
  return { median: median(values), min: Math.min(...values), max: Math.max(...values) };
}

/** Time per task through the service over the core's, per repetition: wall(service) ÷ wall(core). */
const wallRatio = (s: ApiScenario): ReturnType<typeof paired> => paired(s, (svc, core) => svc.wallMs / svc.latencies.length / (core.wallMs / core.latencies.length));
const p50Diff = (s: ApiScenario): ReturnType<typeof paired> => paired(s, (svc, core) => percentile(svc.latencies, 50) - percentile(core.latencies, 50));

/** A median with the range of the repetitions' medians: `p50 [min–max]`. */
function p50Cell(x: { readonly p50: number; readonly p50Min: number; readonly p50Max: number }): string {
  return `${fmt(x.p50)} [${fmt(x.p50Min, 0)}–${fmt(x.p50Max, 0)}]`;
}

/** Peak RSS in MiB and its growth over the run. */
function peakRssCell(x: { readonly peakRssKiB: number; readonly rssGrowthKiB: number | null }): string {
  return `${fmt(x.peakRssKiB / KiB)} (+${fmt((x.rssGrowthKiB ?? 0) / KiB)})`;
}

function apiTable(scenarios: readonly ApiScenario[]): Table {
  const rows: string[][] = [];
  for (const s of scenarios) {
    const core = apiSummary(s.results.get('core') ?? []);
    const service = apiSummary(s.results.get('service') ?? []);
    const row = (name: string, x: ApiSummary): string[] => [
      s.title,
      name,
      p50Cell(x),
      fmt(x.p99),
      fmt(x.wallMs / 1000, 2),
      fmt(x.tps),
      fmt(x.clientCpu),
      fmt(x.serverCpu),
      fmt(x.outsideMs),
      `${fmt(x.loopMean)} / ${fmt(x.loopP99)}`,
      peakRssCell(x),
    ];
    rows.push(row('core', core), row('service', service));
    rows.push([
      s.title,
      'service/core',
      fmt(service.p50 / core.p50, 2),
      fmt(service.p99 / core.p99, 2),
      fmt(service.wallMs / core.wallMs, 2),
      `${fmt(service.tps / core.tps, 2)}×`,
      fmt(service.clientCpu / core.clientCpu, 2),
      fmt(service.serverCpu / core.serverCpu, 2),
      '',
      '',
      fmt(service.peakRssKiB / core.peakRssKiB, 2),
    ]);
  }
  return {
    headers: ['scenario', 'contender', 'p50 ms [rep range]', 'p99 ms', 'wall s', 'tasks/s', 'leash process CPU ms/task', 'sshd CPU ms/task', 'outside the task ms', 'event-loop delay mean / p99 ms', 'peak RSS MiB'],
    rows,
    leftColumns: [0, 1],
  };
}

function apiOverheadTable(scenarios: readonly ApiScenario[]): Table {
  return {
    headers: ['scenario', 'time per task service÷core, paired [rep range]', 'overhead', 'service extra p50 ms, paired [rep range]', 'extra leash CPU ms/task', `target ≤ ${fmt(API_OVERHEAD_TARGET * 100, 0)}%`],
    rows: scenarios.map((s) => {
      const ratio = wallRatio(s);
      const diff = p50Diff(s);
      const core = apiSummary(s.results.get('core') ?? []);
      const service = apiSummary(s.results.get('service') ?? []);
      const over = ratio.median - 1;
      return [
        s.title,
        `${fmt(ratio.median, 3)} [${fmt(ratio.min, 3)}–${fmt(ratio.max, 3)}]`,
        `${over >= 0 ? '+' : ''}${fmt(over * 100)}%`,
        `${fmt(diff.median)} [${fmt(diff.min)}–${fmt(diff.max)}]`,
        fmt(service.clientCpu - core.clientCpu),
        over <= API_OVERHEAD_TARGET ? 'met' : 'missed',
      ];
    }),
    leftColumns: [0, 5],
  };
}

function apiStageTable(scenarios: readonly ApiScenario[]): Table {
  const rows: string[][] = [];
  for (const s of scenarios) {
    for (const name of ['core', 'service'] as const) {
      const all = (s.results.get(name) ?? []).flatMap((r) => r.stages.map((stages, i) => ({ stages, latency: r.latencies[i]! })));
      const stage = (st: string): number => median(all.map((t) => t.stages.filter((x) => x.stage === st).reduce((a, x) => a + x.durationMs, 0)));
      rows.push([
        s.title,
        name,
        ...STAGES.map((st) => fmt(stage(st))),
        fmt(median(all.map((t) => stageSum(t.stages)))),
        fmt(median(all.map((t) => t.latency))),
      ]);
    }
  }
  return { headers: ['scenario', 'contender', ...STAGES.map((s) => `${s} ms`), 'stage sum ms', 'latency ms'], rows, leftColumns: [0, 1] };
}

async function measureApi(config: Config, target: Sshd, gc: () => void): Promise<ApiMeasured> {
  const a = config.api;
  const limits = benchLimits(a.concurrency);
  const scenarios: ApiScenario[] = [
    { title: `sequential, ${a.seqTasks} tasks`, key: 'sequential', tasks: a.seqTasks, results: new Map(), reps: 0, cut: null },
    { title: `${a.concurrency} concurrent, ${a.concTasks} tasks`, key: 'concurrent', tasks: a.concTasks, results: new Map(), reps: 0, cut: null },
  ];
  const rep = async (run: () => Promise<ApiRepResult>): Promise<ApiRepResult> => {
    let result: ApiRepResult | undefined;
    await measureRep(target, async () => (result = await run()));
    return result!;
  };
  let service: TestService | undefined;
  try {
    service = await startBenchService(target, limits);
    let idleLedger = await settledLedgerCount();
    const contenders: ApiContender[] = [await coreContender(target, () => idleLedger), serviceContender(target, service, () => idleLedger)];
    progress(`API overhead: leash serve at ${service.url} (limits ${JSON.stringify(limits)}; ${idleLedger} ledger entries at rest); warm-up`);
    for (const c of contenders) {
      await rep(() => c.sequential(WARMUP_SEQ));
      await rep(() => c.concurrent(a.concurrency, a.concurrency));
    }
    idleLedger = await settledLedgerCount();

    for (const s of scenarios) {
      await alternate(s, {
        label: 'API',
        contenders,
        reps: a.reps,
        minReps: a.minReps,
        budgetS: a.budgetS[s.key],
        gc,
        progress,
        run: (c) => rep(() => (s.key === 'sequential' ? c.sequential(s.tasks) : c.concurrent(s.tasks, a.concurrency))),
        describe: latencyLine,
      });
    }
    return { scenarios, limits, idleLedger };
  } finally {
    await service?.stop();
  }
}

// ---------------------------------------------------------------------------------------
// Part 6: diagnostics cost.

interface DiagScenario {
  readonly title: string;
  readonly key: 'sequential' | 'concurrent';
  readonly tasks: number;
  reps: number;
  cut: string | null;
  /** Index i of both lists is repetition i: the pairs ran back to back. */
  readonly results: Map<string, DiagRep[]>;
}

interface DiagMeasured {
  readonly scenarios: DiagScenario[];
  readonly limits: ServiceLimits;
  readonly dumps: DumpResult;
  /** µs per task, create + finish, with no service running (no channel subscribers). */
  readonly bareTaskUs: PerIteration;
}

const DIAG_LABEL: Record<DiagName, string> = { off: 'diag off', on: 'diag on' };
const diagResults = (s: DiagScenario, name: DiagName): ApiRepResult[] => (s.results.get(name) ?? []).map((r) => r.result);

/** Per repetition (off and on back to back): f(on, off); median and range. */
function diagPaired(s: DiagScenario, f: (on: ApiRepResult, off: ApiRepResult) => number): { median: number; min: number; max: number } {
  const off = diagResults(s, 'off');
  const values = diagResults(s, 'on').slice(0, off.length).map((r, i) => f(r, off[i]!));
  return { median: median(values), min: Math.min(...values), max: Math.max(...values) };
}
/** Wall time on ÷ off, per repetition (same number of tasks). */
const diagWallRatio = (s: DiagScenario): ReturnType<typeof diagPaired> => diagPaired(s, (on, off) => on.wallMs / on.latencies.length / (off.wallMs / off.latencies.length));
const diagP50Diff = (s: DiagScenario): ReturnType<typeof diagPaired> => diagPaired(s, (on, off) => percentile(on.latencies, 50) - percentile(off.latencies, 50));
const signedPct = (ratio: number): string => `${ratio >= 1 ? '+' : ''}${fmt((ratio - 1) * 100)}%`;

function diagTable(scenarios: readonly DiagScenario[]): Table {
  const rows: string[][] = [];
  for (const s of scenarios) {
    const off = apiSummary(diagResults(s, 'off'));
    const on = apiSummary(diagResults(s, 'on'));
    const row = (name: string, x: ApiSummary): string[] => [
      s.title,
      name,
      fmt(x.tps),
      p50Cell(x),
      fmt(x.p99),
      fmt(x.wallMs / 1000, 2),
      fmt(x.clientCpu),
      fmt(x.serverCpu),
      `${fmt(x.loopMean)} / ${fmt(x.loopP99)}`,
      peakRssCell(x),
    ];
    rows.push(row(DIAG_LABEL.off, off), row(DIAG_LABEL.on, on));
    rows.push([
      s.title,
      'on/off',
      `${fmt(on.tps / off.tps, 3)}×`,
      fmt(on.p50 / off.p50, 3),
      fmt(on.p99 / off.p99, 3),
      fmt(on.wallMs / off.wallMs, 3),
      fmt(on.clientCpu / off.clientCpu, 2),
      fmt(on.serverCpu / off.serverCpu, 2),
      '',
      fmt(on.peakRssKiB / off.peakRssKiB, 2),
    ]);
  }
  return {
    headers: ['scenario', 'contender', 'tasks/s', 'p50 ms [rep range]', 'p99 ms', 'wall s', 'leash process CPU ms/task', 'sshd CPU ms/task', 'event-loop delay mean / p99 ms', 'peak RSS MiB'],
    rows,
    leftColumns: [0, 1],
  };
}

function diagOverheadTable(scenarios: readonly DiagScenario[]): Table {
  return {
    headers: ['scenario', 'wall on÷off, paired [rep range]', 'overhead (median of paired on/off − 1) [min–max]', 'extra p50 ms, paired [rep range]', 'extra leash CPU ms/task', `target ≤ ${fmt(DIAG_OVERHEAD_TARGET * 100, 0)}%`],
    rows: scenarios.map((s) => {
      const ratio = diagWallRatio(s);
      const diff = diagP50Diff(s);
      const off = apiSummary(diagResults(s, 'off'));
      const on = apiSummary(diagResults(s, 'on'));
      return [
        s.title,
        `${fmt(ratio.median, 3)} [${fmt(ratio.min, 3)}–${fmt(ratio.max, 3)}]`,
        `${signedPct(ratio.median)} [${signedPct(ratio.min)} – ${signedPct(ratio.max)}]`,
        `${fmt(diff.median)} [${fmt(diff.min)}–${fmt(diff.max)}]`,
        fmt(on.clientCpu - off.clientCpu, 2),
        ratio.median - 1 <= DIAG_OVERHEAD_TARGET ? 'met' : 'missed',
      ];
    }),
    leftColumns: [0, 5],
  };
}

function scrapeTable(scenarios: readonly DiagScenario[]): Table {
  return {
    headers: ['scenario', 'GET /metrics per rep', '/metrics ms median [max]', '/metrics KiB', 'GET /debug/tasks?debug=1 per rep', 'dump ms median [max]', 'dump KiB'],
    rows: scenarios.map((s) => {
      const scrapes = (s.results.get('on') ?? []).flatMap((r) => (r.scrape ? [r.scrape] : []));
      const all = (f: (x: NonNullable<DiagRep['scrape']>) => number[]): number[] => scrapes.flatMap(f);
      return [
        s.title,
        fmt(median(scrapes.map((x) => x.metricsMs.length)), 0),
        `${fmt(median(all((x) => x.metricsMs)))} [${fmt(Math.max(...all((x) => x.metricsMs)))}]`,
        fmt(median(all((x) => x.metricsBytes)) / KiB),
        fmt(median(scrapes.map((x) => x.dumpMs.length)), 0),
        `${fmt(median(all((x) => x.dumpMs)))} [${fmt(Math.max(...all((x) => x.dumpMs)))}]`,
        fmt(median(all((x) => x.dumpBytes)) / KiB),
      ];
    }),
    leftColumns: [0],
  };
}

function dumpTable(d: DumpResult, dumpLimit: number): Table {
  const row = (name: string, t: DumpTiming, firstNote: string): string[] => [
    name,
    `${fmt(t.firstMs)}${firstNote}`,
    `${fmt(median(t.warmMs))} [${fmt(Math.min(...t.warmMs))}–${fmt(Math.max(...t.warmMs))}] (${t.warmMs.length})`,
    fmt(t.bytes / KiB),
    `${fmt(t.firstLoopMaxMs)} / ${fmt(t.warmLoopMaxMs)}`,
  ];
  return {
    headers: ['dump', 'first ms', 'warm ms median [range] (n)', 'size KiB', 'longest event-loop delay first / warm ms'],
    rows: [
      row('GET /debug/tasks?debug=1 (HTTP, admin listener)', d.http1, ' (cold)'),
      row('renderTasks(debug=1) in process', d.inproc1, ' (cold, fresh tasks)'),
      row(`GET /debug/tasks?debug=2 (HTTP, ${d.http2Listed} of ${d.tasks} listed, dumpLimit ${dumpLimit})`, d.http2, ' (stacks already formatted)'),
      ...(d.inprocColdNoMapsMs === null ? [] : [['renderTasks(debug=1) in process, source maps off', `${fmt(d.inprocColdNoMapsMs)} (cold, fresh tasks)`, '', '', '']]),
    ],
    leftColumns: [0],
  };
}

function taskCostTable(d: DumpResult, bareUs: PerIteration): Table {
  const us = (x: PerIteration): string => `${fmt(x.median, 2)} µs [fastest chunk ${fmt(x.min, 2)}]`;
  return {
    headers: ['what', 'value'],
    rows: [
      [`inject ${d.tasks} live tasks (create + stage changes, 3 call sites)`, `${fmt(d.injectMs)} ms (${fmt((d.injectMs * 1000) / d.tasks, 2)} µs/task)`],
      ['heap per live task after GC: before any dump / after the first dump', `${fmt(d.heapPerTaskB, 0)} B / ${fmt(d.heapPerTaskAfterDumpB, 0)} B`],
      [`debug=1 groups (site × stage)`, String(d.groups)],
      [`one leak-watchdog pass (check()) over ${d.tasks} live tasks, median of ${d.watchdogPassMs.length}`, `${fmt(median(d.watchdogPassMs))} ms [${fmt(Math.min(...d.watchdogPassMs))}–${fmt(Math.max(...d.watchdogPassMs))}]`],
      [`finish all ${d.tasks} (cancelled); table empty afterwards`, `${fmt(d.finishMs)} ms; yes`],
      ['create + finish one LiveTask (creation site captured), no service running', us(bareUs)],
      ['create + finish one LiveTask, with a running service subscribed to the task channels', us(d.perTaskServiceUs)],
      ['capturing a creation site alone (new CreationSite)', us(d.captureOnlyUs)],
      ['DIAGNOSTICS.md', '+0.5 µs/task without a creation stack, +2.9 µs capturing it'],
    ],
    leftColumns: [0, 1],
  };
}

async function measureDiag(config: Config, target: Sshd, gc: () => void): Promise<DiagMeasured> {
  const d = config.diag;
  const limits = benchLimits(d.concurrency);
  const scenarios: DiagScenario[] = [
    { title: `sequential, ${d.seqTasks} tasks`, key: 'sequential', tasks: d.seqTasks, results: new Map(), reps: 0, cut: null },
    { title: `${d.concurrency} concurrent, ${d.concTasks} tasks`, key: 'concurrent', tasks: d.concTasks, results: new Map(), reps: 0, cut: null },
  ];
  const rep = async (run: () => Promise<ApiRepResult>): Promise<ApiRepResult> => {
    let result: ApiRepResult | undefined;
    await measureRep(target, async () => (result = await run()));
    return result!;
  };
  const names: DiagName[] = ['off', 'on'];
  progress(`diagnostics cost: a service per contender and repetition; off ${JSON.stringify(DIAG_SETTINGS.off)}, on ${JSON.stringify(DIAG_SETTINGS.on)} + scraper`);
  for (const s of scenarios) {
    await alternate(s, {
      label: 'diagnostics',
      contenders: names.map((name) => ({ name })),
      reps: d.reps,
      minReps: d.minReps,
      budgetS: d.budgetS[s.key],
      progress,
      // diagRepetition starts a service, warms it up, runs the GC and measures.
      run: ({ name }) =>
        diagRepetition(
          target,
          limits,
          name,
          (c) => rep(() => (s.key === 'sequential' ? c.sequential(WARMUP_SEQ) : c.concurrent(d.concurrency, d.concurrency))),
          (c) => rep(() => (s.key === 'sequential' ? c.sequential(s.tasks) : c.concurrent(s.tasks, d.concurrency))),
          gc,
        ),
      describe: (r) => `${latencyLine(r.result)}${r.scrape ? ` (${r.scrape.metricsMs.length} scrapes, ${r.scrape.dumpMs.length} dumps)` : ''}`,
    });
  }

  progress(`diagnostics: /debug/tasks with ${d.dumpTasks} live tasks injected into a diag-on service`);
  let service: TestService | undefined;
  let dumps: DumpResult;
  try {
    service = await startDiagService(target, limits, 'on');
    await settledLedgerCount();
    dumps = await measureDumps(service, d.dumpTasks, d.warmDumps, d.taskCostIterations, gc);
  } finally {
    await service?.stop();
  }
  await assertLedgerEmpty('after the dump service stopped');
  const bareTaskUs = taskCostUs(d.taskCostIterations);
  progress(
    `diagnostics: debug=1 HTTP ${fmt(dumps.http1.firstMs)} ms cold, ${fmt(median(dumps.http1.warmMs))} ms warm; in process ${fmt(dumps.inproc1.firstMs)} / ${fmt(median(dumps.inproc1.warmMs))} ms; ` +
      `create+finish ${fmt(bareTaskUs.median, 2)} µs/task`,
  );
  return { scenarios, limits, dumps, bareTaskUs };
}

// ---------------------------------------------------------------------------------------
// Part 2: one pooled connection.

interface PooledMeasured {
  readonly scenarios: Scenario[];
  readonly contenders: Contender[];
  readonly idleProcs: number;
  readonly masterCmd: string;
  readonly taskCmd: string;
}

/** Descendants of sshd once they stop changing (the kept connections' processes). */
async function settledDescendants(sshd: Sshd): Promise<number> {
  let last = -1;
  let stableSince = performance.now();
  await pollUntil(
    () => {
      const n = descendantPids(sshd.pid).length;
      if (n !== last) {
        last = n;
        stableSince = performance.now();
      }
      return performance.now() - stableSince >= 300;
    },
    10_000,
    'sshd connection processes to settle',
  );
  return last;
}

async function measurePooled(config: Config, gc: () => void, go: GoPeer | null): Promise<PooledMeasured> {
  const p = config.pooled;
  const scenarios: Scenario[] = [
    { title: `sequential, ${p.seqTasks} tasks`, key: 'sequential', tasks: p.seqTasks, results: new Map(), reps: 0, cut: null },
    { title: `${p.concurrency} concurrent, ${p.concTasks} tasks`, key: 'concurrent', tasks: p.concTasks, results: new Map(), reps: 0, cut: null },
  ];
  let sshd: Sshd | undefined;
  let leash: PooledLeash | undefined;
  let cm: ControlMaster | undefined;
  try {
    sshd = await startSshd({ extraConfig: POOLED_SSHD_CONFIG });
    const target = sshd;
    leash = await pooledLeash(target, p.concurrency);
    await leash.warm();
    cm = controlMaster(target);
    const contenders = [leash.contender, cm.contender, ...(go ? [goContender(go, target, 'pooled', 'Go sessions')] : [])];
    const idleProcs = await settledDescendants(target);
    progress(`pooled: one leash pool connection and one ControlMaster (pid ${cm.pid}) open; sshd has ${idleProcs} connection processes at rest; warm-up`);
    for (const c of contenders) {
      await measureRep(target, () => c.sequential(WARMUP_SEQ), idleProcs);
      await measureRep(target, () => c.concurrent(p.concurrency, p.concurrency), idleProcs);
    }
    for (const s of scenarios) {
      await alternate(s, {
        label: 'pooled',
        contenders,
        reps: p.reps,
        minReps: p.minReps,
        budgetS: p.budgetS[s.key],
        gc,
        progress,
        run: (c) => measureRep(target, () => (s.key === 'sequential' ? c.sequential(s.tasks) : c.concurrent(s.tasks, p.concurrency)), idleProcs),
        describe: latencyLine,
      });
    }
    const abbreviate = (argv: readonly string[]): string => argv.join(' ').replaceAll(target.dir, '$SSHD_DIR').replace(` -p ${target.port} `, ' -p $PORT ');
    return { scenarios, contenders, idleProcs, masterCmd: abbreviate(cm.masterCmd), taskCmd: abbreviate(cm.taskCmd) };
  } finally {
    cm?.stop();
    try {
      await leash?.close();
    } finally {
      await sshd?.stop();
    }
  }
}

// ---------------------------------------------------------------------------------------
// Part 3: fan-out to many loopback addresses.

interface FanoutScenario extends AlternatedScenario<FanoutRep> {
  readonly hosts: number;
}

interface FanoutMeasured {
  readonly scenario: FanoutScenario;
  readonly names: string[];
  readonly missing: string[];
  /** Median ms of `--help` / `--version` per tool (its start-up and exit, no connection). */
  readonly startupMs: Map<string, number>;
  readonly argv: Map<string, string>;
}

async function timeCommand(argv: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  const start = performance.now();
  await withTimeout(
    new Promise<void>((resolve, reject) => {
      const child = spawn(argv[0]!, argv.slice(1), { env, stdio: 'ignore' });
      child.once('error', reject);
      child.once('close', (code) => (code === 0 ? resolve() : reject(new Error(`${argv.join(' ')} exited with ${code}`))));
    }),
    60_000,
    argv.join(' '),
  );
  return performance.now() - start;
}

async function measureFanout(config: Config, gc: () => void): Promise<FanoutMeasured> {
  const f = config.fanout;
  const scenario: FanoutScenario = { title: `${f.hosts} hosts, ${f.concurrency} at a time`, hosts: f.hosts, reps: 0, cut: null, results: new Map() };
  const target = await startFanoutSshd(f.hosts);
  try {
    const missing: string[] = [];
    const pssh = psshFanout(target, f.concurrency);
    if (!pssh) missing.push('pssh: not installed (apt-get install pssh)');
    const clush = clushFanout(target, f.concurrency);
    if (!clush) missing.push('clush: not installed (apt-get install clustershell)');
    const contenders = [leashFanout(target, f.concurrency), ...(pssh ? [pssh] : []), ...(clush ? [clush] : [])];
    for (const m of missing) progress(`fan-out: ${m}; skipped`);
    const startupMs = new Map<string, number>();
    const startupArgv: Record<string, string[]> = { 'leash run': ['run', '--help'], pssh: ['--version'], clush: ['--version'] };
    for (const c of contenders) {
      const argv = [...c.argv.slice(0, c.name === 'leash run' ? 2 : 1), ...(startupArgv[c.name] ?? [])];
      const times: number[] = [];
      for (let i = 0; i < STARTUP_RUNS(config); i++) times.push(await timeCommand(argv, c.env));
      startupMs.set(c.name, median(times));
    }
    progress(`fan-out: sshd on 0.0.0.0:${target.port} for ${f.hosts} addresses; start-up ${[...startupMs].map(([n, ms]) => `${n} ${fmt(ms, 0)} ms`).join(', ')}; warm-up run each`);
    for (const c of contenders) await runFanout(target, c, FANOUT_TIMEOUT_MS);
    await alternate(scenario, {
      label: 'fan-out',
      contenders,
      reps: f.reps,
      minReps: f.minReps,
      budgetS: f.budgetS,
      gc,
      progress,
      run: (c) => runFanout(target, c, FANOUT_TIMEOUT_MS),
      describe: (r) => `${fmt(r.wallMs / 1000, 2)} s`,
    });
    const abbreviate = (argv: readonly string[]): string =>
      argv
        .map((a) => (/\s/.test(a) ? `"${a}"` : a))
        .join(' ')
        .replaceAll(target.dir, '$DIR')
        .replaceAll(String(target.port), '$PORT')
        .replace(process.execPath, 'node')
        .replace(REPO, '');
    return { scenario, names: contenders.map((c) => c.name), missing, startupMs, argv: new Map(contenders.map((c) => [c.name, abbreviate(c.argv)])) };
  } finally {
    await target.stop();
  }
}

function fanoutTable(m: FanoutMeasured): Table {
  const s = m.scenario;
  const rows: string[][] = [];
  const med = (name: string, f: (r: FanoutRep) => number): number => median((s.results.get(name) ?? []).map(f));
  for (const name of m.names) {
    const walls = (s.results.get(name) ?? []).map((r) => r.wallMs / 1000);
    rows.push([
      name,
      `${fmt(median(walls), 2)} [${fmt(Math.min(...walls), 2)}–${fmt(Math.max(...walls), 2)}]`,
      fmt(s.hosts / median(walls)),
      fmt(med(name, (r) => r.clientCpuMs) / s.hosts),
      fmt(med(name, (r) => r.serverCpuMs) / s.hosts),
      fmt(med(name, (r) => r.peakRssKiB) / KiB),
      fmt(med(name, (r) => r.peakProcs), 0),
      fmt(m.startupMs.get(name) ?? Number.NaN, 0),
    ]);
  }
  const leashWall = med('leash run', (r) => r.wallMs);
  for (const peer of m.names.slice(1)) {
    rows.push([`leash run/${peer}`, fmt(leashWall / med(peer, (r) => r.wallMs), 2), `${fmt(med(peer, (r) => r.wallMs) / leashWall, 2)}×`, '', '', fmt(med('leash run', (r) => r.peakRssKiB) / med(peer, (r) => r.peakRssKiB), 2), '', '']);
  }
  return {
    headers: ['contender', 'wall s [rep range]', 'hosts/s', 'client CPU ms/host', 'sshd CPU ms/host', 'peak RSS MiB (process tree)', 'processes at peak', 'start-up ms (--help/--version)'],
    rows,
    leftColumns: [0],
  };
}

// ---------------------------------------------------------------------------------------
// The run.

interface Measured {
  readonly scenarios: Scenario[];
  readonly pooled: PooledMeasured;
  readonly fanout: FanoutMeasured;
  readonly goStuck: GoStuckResult | null;
  readonly spawnMs: number;
  readonly sshMaxRss: number | null;
  readonly contenders: Contender[];
  readonly stuck: StuckResult;
  readonly maxRssBefore: number;
  readonly sshCmd: string;
  readonly api: ApiMeasured;
  readonly diag: DiagMeasured;
}

async function measureAll(config: Config, gc: () => void, go: GoPeer | null): Promise<Measured> {
  let sshd: Sshd | undefined;
  let silent: SilentServer | undefined;
  const scenarios: Scenario[] = [
    { title: `sequential, ${config.seqTasks} tasks`, key: 'sequential', tasks: config.seqTasks, results: new Map(), reps: 0, cut: null },
    { title: `${config.concurrency} concurrent, ${config.concTasks} tasks`, key: 'concurrent', tasks: config.concTasks, results: new Map(), reps: 0, cut: null },
  ];
  try {
    sshd = await startSshd();
    const target = sshd;
    const sshCmd = ['ssh', ...sshArgv(target)].join(' ').replaceAll(target.dir, '$SSHD_DIR').replace(` -p ${target.port} `, ' -p $PORT ');
    const contenders = [await leashContender(target), sshContender(target), ...(go ? [goContender(go, target, 'fresh', 'Go')] : [])];

    progress('warm-up: each contender, sequential and concurrent');
    for (const c of contenders) {
      await measureRep(target, () => c.sequential(WARMUP_SEQ));
      await measureRep(target, () => c.concurrent(config.concurrency, config.concurrency));
    }
    const spawnMs = await spawnOverheadMs(20);
    const sshMaxRss = existsSync('/usr/bin/time') ? sshMaxRssByGnuTime(target, 5) : null;
    progress(`spawn+reap /bin/true from this process: ${fmt(spawnMs)} ms; one ssh process max RSS (GNU time): ${sshMaxRss ?? 'n/a'} KiB`);

    for (const s of scenarios) {
      await alternate(s, {
        label: 'fresh',
        contenders,
        reps: config.reps,
        minReps: config.minReps,
        budgetS: config.budgetS[s.key],
        gc,
        progress,
        run: (c) => measureRep(target, () => (s.key === 'sequential' ? c.sequential(s.tasks) : c.concurrent(s.tasks, config.concurrency))),
        describe: latencyLine,
      });
    }

    progress(`pooled: sshd with MaxSessions 32; leash pool (1 connection × ${config.pooled.concurrency} channels) vs ControlMaster${go ? ' vs Go sessions' : ''}`);
    const pooled = await measurePooled(config, gc, go);
    await assertLedgerEmpty('after the pooled part');
    progress(`fan-out: ${config.fanout.hosts} loopback addresses, ${config.fanout.concurrency} at a time`);
    const fanout = await measureFanout(config, gc);

    const api = await measureApi(config, target, gc);
    await assertLedgerEmpty('after the service stopped');
    const diag = await measureDiag(config, target, gc);
    await sshd.stop();

    const maxRssBefore = process.resourceUsage().maxRSS;
    progress(`stuck connections: ${config.stuck} tasks against a never-speaking server (warm-up ${config.stuckWarmup})`);
    silent = await startSilentServer();
    const stuck = await stuckConnections(silent, config.stuck, config.stuckWarmup);
    let goStuckResult: GoStuckResult | null = null;
    if (go) {
      const server = silent;
      progress(`stuck connections: ${config.stuck} Go handshakes against the same server`);
      goStuckResult = await goStuck(go, server.port, config.stuck, config.stuckWarmup, async () => (await server.stats()).open);
    }
    return { scenarios, pooled, fanout, goStuck: goStuckResult, spawnMs, sshMaxRss, contenders, stuck, maxRssBefore, sshCmd, api, diag };
  } finally {
    await Promise.allSettled([sshd?.stop(), silent?.stop()]);
  }
}

async function main(): Promise<void> {
  const config = parseArgs(process.argv.slice(2));
  const watchdog = setTimeout(() => {
    process.stderr.write(`bench: FAILED — the run exceeded its deadline of ${config.deadlineMs / 1000} s\n`);
    process.exit(1); // sshd's and the silent server's exit hooks kill them
  }, config.deadlineMs);
  watchdog.unref();
  process.once('SIGINT', () => process.exit(130));

  const args = process.argv.slice(2).join(' ');
  const command = `${process.env.npm_lifecycle_event === 'bench' ? `npm run bench${args ? ` -- ${args}` : ''}` : `node --import tsx bench/run.ts${args ? ` ${args}` : ''}`}`;
  const startedAt = new Date();
  const machine = describeMachine();
  const versions = describeVersions();
  const gc = collector();
  const built = buildGoPeer();
  const go = 'binary' in built ? built : null;
  const goLine = 'binary' in built ? `Go peer: ${built.version}, bench/peers/go-ssh/main.go built offline (GO111MODULE=off GOPROXY=off GOPATH=/usr/share/gocode)` : built.missing;
  const peerTools = toolVersions();
  progress(goLine);
  progress(`${config.quick ? 'quick' : 'full'} run: ${config.reps} repetitions (at least ${config.minReps}); ${machine.cores} cores, load ${machine.loadAtStart}`);

  const { scenarios, pooled, fanout, goStuck: goStuckR, spawnMs, sshMaxRss, contenders, stuck, maxRssBefore, sshCmd, api, diag } = await measureAll(config, gc, go);
  clearTimeout(watchdog);

  // ---- Report.
  const fresh = contenderTable(scenarios, contenders.map((c) => c.name));
  const stages = stageTable(scenarios);
  const stuckT = stuckTables(stuck);
  const met = (ok: boolean): string => (ok ? 'met' : 'missed');
  const [freshSeq, freshConc] = scenarios as [Scenario, Scenario];
  const seqRatio = tpsRatio(freshSeq, 'leash', 'ssh');
  const concRatio = tpsRatio(freshConc, 'leash', 'ssh');
  const goSeqRatio = tpsRatio(freshSeq, 'leash', 'Go');
  const goConcRatio = tpsRatio(freshConc, 'leash', 'Go');
  const targetLine =
    `Fresh-connection throughput leash/ssh: sequential ${fmt(seqRatio, 2)}×, ${config.concurrency} concurrent ${fmt(concRatio, 2)}× ` +
    `(issue 5 target ≥ ${FRESH_THROUGHPUT_TARGET}×: ${met(Math.min(seqRatio, concRatio) >= FRESH_THROUGHPUT_TARGET)}); ` +
    (go ? `leash/Go: sequential ${fmt(goSeqRatio, 2)}×, concurrent ${fmt(goConcRatio, 2)}× (target ≥ 1×: ${met(Math.min(goSeqRatio, goConcRatio) >= 1)}).` : `leash/Go: not measured (${GO_MISSING}).`);
  const pooledT = contenderTable(pooled.scenarios, pooled.contenders.map((c) => c.name));
  const pooledStages = stageTable(pooled.scenarios, 'leash pool');
  const [poolSeq, poolConc] = pooled.scenarios as [Scenario, Scenario];
  const cmSeq = tpsRatio(poolSeq, 'leash pool', 'ssh ControlMaster');
  const goPoolSeq = tpsRatio(poolSeq, 'leash pool', 'Go sessions');
  const pooledLine =
    `Pooled sequential throughput leash/ControlMaster ${fmt(cmSeq, 2)}× (target ≥ ${POOLED_THROUGHPUT_TARGET}×: ${met(cmSeq >= POOLED_THROUGHPUT_TARGET)}); ` +
    (go ? `leash/Go sessions ${fmt(goPoolSeq, 2)}× (target ≥ 1×: ${met(goPoolSeq >= 1)}); ` : `leash/Go sessions: not measured (${GO_MISSING}); `) +
    `${config.pooled.concurrency} concurrent: leash/ControlMaster ${fmt(tpsRatio(poolConc, 'leash pool', 'ssh ControlMaster'), 2)}×${go ? `, leash/Go ${fmt(tpsRatio(poolConc, 'leash pool', 'Go sessions'), 2)}×` : ''} (no target).`;
  const fanT = fanoutTable(fanout);
  const fanWall = (name: string): number => median((fanout.scenario.results.get(name) ?? []).map((r) => r.wallMs));
  const fanoutLine = fanout.names.includes('pssh')
    ? `Fan-out to ${config.fanout.hosts} hosts: leash run ${fmt(fanWall('leash run') / 1000, 2)} s vs pssh ${fmt(fanWall('pssh') / 1000, 2)} s${fanout.names.includes('clush') ? ` vs clush ${fmt(fanWall('clush') / 1000, 2)} s` : ''} (target faster than pssh: ${met(fanWall('leash run') < fanWall('pssh'))})${config.quick ? `; the issue's target is about 200 hosts, this quick run used ${config.fanout.hosts}` : ''}.`
    : `Fan-out: pssh not installed (apt-get install pssh); target not measured.`;
  const goStuckKiB = goStuckR ? (goStuckR.loadedRssKiB - goStuckR.baselineRssKiB) / goStuckR.count : Number.NaN;
  const stuckCompare: Table = {
    headers: ['contender', 'stuck connections', 'RSS before MiB', 'RSS with them MiB', 'RSS Δ MiB', 'RSS KiB/conn', `target ≤ ${STUCK_TARGET_KIB} KiB/conn`],
    rows: [
      ['leash', String(stuck.count), fmt(stuck.baseline.rss / MiB), fmt(stuck.loaded.rss / MiB), fmt((stuck.loaded.rss - stuck.baseline.rss) / MiB), fmt(perConnectionKiB(stuck, 'rss')), met(perConnectionKiB(stuck, 'rss') <= STUCK_TARGET_KIB)],
      goStuckR
        ? ['Go (x/crypto/ssh)', String(goStuckR.count), fmt(goStuckR.baselineRssKiB / KiB), fmt(goStuckR.loadedRssKiB / KiB), fmt((goStuckR.loadedRssKiB - goStuckR.baselineRssKiB) / KiB), fmt(goStuckKiB), '']
        : ['Go', GO_MISSING, '', '', '', '', ''],
    ],
    leftColumns: [0, 6],
  };
  const stuckLine =
    `Stuck connections: ${fmt(perConnectionKiB(stuck, 'rss'))} KiB RSS and ${fmt(perConnectionKiB(stuck, 'heapUsed'))} KiB heap per connection ` +
    `(target ≤ ${STUCK_TARGET_KIB} KiB RSS: ${perConnectionKiB(stuck, 'rss') <= STUCK_TARGET_KIB ? 'met' : 'missed'}); after the cancel the ledger holds ${stuck.after.ledgerLive} entries; ${goStuckR ? `Go (x/crypto/ssh): ${fmt(goStuckKiB)} KiB RSS per connection` : `Go: ${GO_MISSING}`}.`;
  const notes = (list: readonly { title: string; reps: number; cut: string | null }[]): string =>
    list.map((sc) => `${sc.title}: ${sc.reps} repetitions${sc.cut ? ` (${sc.cut})` : ''}`).join('; ') + ' per contender; medians across repetitions';
  const pooledRepsNote = notes(pooled.scenarios);
  const fanoutRepsNote = notes([fanout.scenario]);
  const repsNote =
    scenarios.map((sc) => `${sc.title}: ${sc.reps} repetitions${sc.cut ? ` (${sc.cut})` : ''}`).join('; ') +
    ' per contender; medians across repetitions';
  const samplerNote = scenarios
    .map((sc) => {
      const peaks = (sc.results.get('ssh') ?? []).flatMap((r) => (r.childPeak ? [r.childPeak] : []));
      return `${sc.title}: at the peak the sampler saw a median of ${fmt(median(peaks.map((p) => p.peakCount)), 0)} ssh processes at once (${fmt(median(peaks.map((p) => p.samples)), 0)} samples per repetition); the largest single ssh process peaked at ${fmt(Math.max(...peaks.map((p) => p.maxHwmKiB)) / KiB)} MiB (VmHWM)`;
    })
    .join('; ');
  const seqLeash = summarize(scenarios[0]!.results.get('leash')!);
  const seqSsh = summarize(scenarios[0]!.results.get('ssh')!);
  const concSsh = summarize(scenarios[1]!.results.get('ssh')!);
  const concReports = (scenarios[1]!.results.get('leash') ?? []).flatMap((r) => r.reports);
  const concStage = (name: string): number =>
    median(concReports.map((r) => r.stages.filter((st) => st.stage === name).reduce((a, st) => a + st.durationMs, 0)));
  const seqTarget = seqSsh.wallMs / config.seqTasks / FRESH_THROUGHPUT_TARGET;
  const timeNote =
    `Where the time goes (sequential medians): per task, sshd and the remote shells used ${fmt(seqLeash.serverCpu)} ms of CPU for leash and ${fmt(seqSsh.serverCpu)} ms for ssh; ` +
    `the client side used ${fmt(seqLeash.clientCpu)} ms (leash, whole process) against ${fmt(seqSsh.clientCpu)} ms (ssh). ` +
    `Client and server share the same ${machine.cores} cores, so the server's per-connection work bounds every client here: ` +
    `${FRESH_THROUGHPUT_TARGET}× ssh's sequential rate would mean ${fmt(seqTarget)} ms per task, ` +
    (seqTarget <= seqSsh.serverCpu
      ? `less than the ${fmt(seqSsh.serverCpu)} ms of server CPU each connection costs (spent mostly one step after another); `
      : `leaving ${fmt(seqTarget - seqSsh.serverCpu)} ms beyond the ${fmt(seqSsh.serverCpu)} ms of server CPU each connection costs (spent mostly one step after another) for the client and every network round trip; `) +
    `at ${config.concurrency} concurrent, even a client that cost nothing would be capped near ${machine.cores} cores × 1000 / ${fmt(concSsh.serverCpu)} ms = ${fmt((machine.cores * 1000) / concSsh.serverCpu)} tasks/s by sshd's CPU, ${fmt((machine.cores * 1000) / concSsh.serverCpu / concSsh.tps, 2)}× ssh's measured rate. ` +
    `In the concurrent run a leash task spends a median ${fmt(concStage('connecting'))} ms in \`connecting\` (sshd's single listener accepting and forking under load), ${fmt(concStage('handshake') + concStage('auth'))} ms in handshake and auth, and ${fmt(concStage('closing'))} ms in \`closing\` (sending the SSH disconnect and FIN; leash does not wait for sshd's teardown), all of it holding one of the ${config.concurrency} slots. ` +
    `leash's command line is \`export LEASH_EXEC_ID=<uuid>; true\` (src/ssh/remote-command.ts: the id lets a timeout kill the whole remote session), one shell start like ssh's.`;

  const apiT = apiTable(api.scenarios);
  const apiOver = apiOverheadTable(api.scenarios);
  const apiStages = apiStageTable(api.scenarios);
  const [apiSeq, apiConc] = api.scenarios as [ApiScenario, ApiScenario];
  const overhead = (sc: ApiScenario): string => {
    const r = wallRatio(sc).median - 1;
    return `${r >= 0 ? '+' : ''}${fmt(r * 100)}%`;
  };
  const apiWorst = Math.max(wallRatio(apiSeq).median, wallRatio(apiConc).median) - 1;
  const apiLine =
    `API overhead, time per task through POST /v1/tasks (wait) over the core's (median of per-repetition pairs): ` +
    `sequential ${overhead(apiSeq)} (${fmt(apiSummary(apiSeq.results.get('service')!).tps)} vs ${fmt(apiSummary(apiSeq.results.get('core')!).tps)} tasks/s; service extra p50 ${fmt(p50Diff(apiSeq).median)} ms), ` +
    `${config.api.concurrency} concurrent ${overhead(apiConc)} (${fmt(apiSummary(apiConc.results.get('service')!).tps)} vs ${fmt(apiSummary(apiConc.results.get('core')!).tps)} tasks/s; extra p50 ${fmt(p50Diff(apiConc).median)} ms) ` +
    `(issue 3 target ≤ ${fmt(API_OVERHEAD_TARGET * 100, 0)}%: ${apiWorst <= API_OVERHEAD_TARGET ? 'met' : 'missed'}).`;
  const apiRepsNote =
    api.scenarios.map((sc) => `${sc.title}: ${sc.reps} repetitions${sc.cut ? ` (${sc.cut})` : ''}`).join('; ') + ' per contender; medians across repetitions';
  const lim = api.limits;
  const loadAtEnd = os.loadavg().map((l) => l.toFixed(2)).join(' ');

  const diagT = diagTable(diag.scenarios);
  const diagOver = diagOverheadTable(diag.scenarios);
  const scrapeT = scrapeTable(diag.scenarios);
  const dumps = diag.dumps;
  const dumpT = dumpTable(dumps, DUMP_LIMIT);
  const costT = taskCostTable(dumps, diag.bareTaskUs);
  const [diagSeq, diagConc] = diag.scenarios as [DiagScenario, DiagScenario];
  const diagWorst = Math.max(diagWallRatio(diagSeq).median, diagWallRatio(diagConc).median) - 1;
  const liveTasks = dumps.tasks.toLocaleString('en-US');
  const diagLine =
    `Diagnostics on vs off: ${signedPct(diagWallRatio(diagSeq).median)} sequential, ${signedPct(diagWallRatio(diagConc).median)} at ${config.diag.concurrency} concurrent ` +
    `(target ≤ ${fmt(DIAG_OVERHEAD_TARGET * 100, 0)}%: ${diagWorst <= DIAG_OVERHEAD_TARGET ? 'met' : 'missed'}); ` +
    `/debug/tasks?debug=1 with ${liveTasks} live tasks: ${fmt(dumps.http1.firstMs)} ms cold, ${fmt(median(dumps.http1.warmMs))} ms warm ` +
    `(over HTTP; rendering in process ${fmt(dumps.inproc1.firstMs)} ms cold, ${fmt(median(dumps.inproc1.warmMs))} ms warm, all of it an event-loop pause).`;
  const diagRepsNote =
    diag.scenarios.map((sc) => `${sc.title}: ${sc.reps} repetitions${sc.cut ? ` (${sc.cut})` : ''}`).join('; ') + ' per contender; medians across repetitions';

  const out: string[] = [];
  out.push('', `leash benchmarks (${config.quick ? 'quick' : 'full'}) — ${startedAt.toISOString()}`, `command: ${command}`, '');
  out.push(`1. Fresh connection per task, remote command \`true\` (${repsNote}; warm-up first)`, '', textTable(fresh), '');
  out.push('leash stage medians (all measured tasks):', '', textTable(stages), '');
  out.push(`2. One pooled connection, remote command \`true\` (${pooledRepsNote})`, '', textTable(pooledT), '', 'leash stage medians (all measured tasks):', '', textTable(pooledStages), '');
  out.push(`3. Fan-out, remote command \`true\` (${fanoutRepsNote})`, '', textTable(fanT), '', ...fanout.missing, '');
  out.push(`4. Memory per stuck connection (${stuck.count} tasks against a server that never speaks)`, '', textTable(stuckCompare), '', textTable(stuckT.during), '', 'after cancelling all:', '', textTable(stuckT.after), '');
  out.push(`5. API overhead, remote command \`true\` (${apiRepsNote})`, '', textTable(apiT), '', textTable(apiOver), '', 'stage medians (all measured tasks):', '', textTable(apiStages), '');
  out.push(
    `6a. Diagnostics cost, part 5's service workload, optional diagnostics off vs on + scraper (${diagRepsNote})`,
    '',
    textTable(diagT),
    '',
    textTable(diagOver),
    '',
    'what the scraper saw (diag on):',
    '',
    textTable(scrapeT),
    '',
    `6b. /debug/tasks with ${liveTasks} live tasks`,
    '',
    textTable(dumpT),
    '',
    textTable(costT),
    '',
  );
  out.push(targetLine, pooledLine, fanoutLine, stuckLine, apiLine, diagLine, `load average at start ${machine.loadAtStart}, at end ${loadAtEnd}`, goLine, peerTools, '');
  process.stdout.write(`${out.join('\n')}\n`);

  const md = [
    `# leash benchmarks${config.quick ? ' (quick run)' : ''}`,
    '',
    `Issue 5's benchmarks (parts 1–4: fresh connections, one pooled connection, fan-out, stuck connections), issue 3's API overhead (part 5) and issue 4's diagnostics cost (part 6), in one run on one machine.`,
    '',
    `- Date: ${startedAt.toISOString()} (run took ${fmt((performance.now() - T0) / 1000, 0)} s)`,
    `- Machine: ${machine.cpu}, ${machine.cores} cores, ${fmt(machine.ramGiB)} GiB RAM, ${machine.kernel}; load average at start ${machine.loadAtStart}, at end ${loadAtEnd}`,
    `- Versions: node ${versions.node}, ssh2 ${versions.ssh2}, ${versions.openssh}, leash ${versions.leash}`,
    `- ${goLine}`,
    `- Fan-out peers: ${peerTools}`,
    `- Command: \`${command}\` (from the repository root; runs \`node --import tsx bench/run.ts${args ? ` ${args}` : ''}\`)`,
    '',
    `## 1. Fresh connection per task, remote command \`true\``,
    '',
    `A real OpenSSH sshd on 127.0.0.1 (test/support/sshd.ts: throwaway keys, clean remote HOME, \`MaxStartups 200:30:400\`, LogLevel VERBOSE), ed25519 user key, strict host key check. ${repsNote}; contenders alternate who goes first each repetition; a GC before each repetition; both contenders warmed up (${WARMUP_SEQ} sequential + ${config.concurrency} concurrent tasks) before measuring. "Concurrent" is ${config.concurrency} tasks at a time over ${config.concTasks}.`,
    '',
    `- **leash**: in-process, \`runOne\` (test/support/run-task.ts) sequentially and \`fanOut\` with concurrency ${config.concurrency}; the real runner, task table and ledger, a fresh TCP connection (TCP_NODELAY on, SSH-PITFALLS 15) per task. After every repetition the bench fails unless the ledger and the task table are empty.`,
    `- **ssh**: OpenSSH's client spawned per task from this Node process: \`${sshCmd}\` (curve25519 kex, the one leash/ssh2 negotiates; OpenSSH's default post-quantum kex costs ~60 ms more client CPU). Exit status 0 required.`,
    '',
    markdownTable(fresh),
    '',
    'leash stage medians over all measured tasks (ms):',
    '',
    markdownTable(stages),
    '',
    'Columns:',
    '',
    `- Latency per task: leash from \`runTask\` to its report; ssh from \`spawn()\` to the child's \`close\`, which includes the fork/exec/reap from this Node process (spawning \`/bin/true\` the same way takes a median ${fmt(spawnMs)} ms). p50/p99 are nearest-rank per repetition, then the median across repetitions; with ${config.seqTasks} tasks per sequential repetition p99 is about the slowest task. The bracket is the lowest and highest p50 of the repetitions.`,
    `- tasks/s = tasks / wall time of the repetition. Ratio row: leash ÷ ssh of the medians — below 1 is better for leash in every column except tasks/s, where above 1 is better.`,
    `- Client CPU: leash: ${contenders[0]?.cpuNote ?? ''}; ssh: ${contenders[1]?.cpuNote ?? ''}.`,
    `- sshd CPU: the listening sshd plus its reaped connection processes (utime+stime+cutime+cstime of its /proc/PID/stat; the bench waits until sshd has no connection processes left before and after each repetition). The same server serves both contenders, so this column differs only by what each sends it (see the command line note below); it is a floor neither client can go under.`,
    `- Peak RSS: leash: ${contenders[0]?.rssNote ?? ''}. ssh: ${contenders[1]?.rssNote ?? ''}. One ssh process's max RSS by GNU time (\`/usr/bin/time -f %M\`, median of 5): ${sshMaxRss === null ? 'n/a' : `${sshMaxRss} KiB`}. ${samplerNote}. The leash figure includes the whole Node runtime and the bench itself; the ssh figure does not include the Node driver that spawns them.`,
    '',
    timeNote,
    '',
    `## 2. One pooled connection, remote command \`true\``,
    '',
    `A second sshd from the same harness, with \`Match all\` / \`MaxSessions 32\` added (sshd's default of 10 sessions per connection would refuse the 16 concurrent sessions; the harness's config says \`MaxSessions 10\` and sshd keeps the first value of a keyword, so the override is a Match block). ${pooledRepsNote}; contenders rotate who goes first each repetition; a GC before each; each warmed up (${WARMUP_SEQ} sequential + ${config.pooled.concurrency} concurrent) before measuring. "Concurrent" is ${config.pooled.concurrency} at a time over ${config.pooled.concTasks}. The kept connections stay open across repetitions: sshd has ${pooled.idleProcs} connection processes at rest, and the bench waits for that count before and after each repetition; sshd CPU is the whole sshd process tree's (live processes' own and reaped-children CPU).`,
    '',
    `- **leash pool**: \`new SshRemoteExec({ pool })\` with a \`ConnectionPool\` limited to 1 connection per key × ${config.pooled.concurrency} channels, runTask sequentially and fanOut with concurrency ${config.pooled.concurrency}; every task spec is one object (one credentials object, one HostKeyVerifier: the pool key compares them by identity). One task before measuring opens the connection. After every repetition the bench fails unless the pool holds exactly one connection, the task table is empty and the ledger is back to the pool's entries at rest; after the part, unless the ledger is empty once the pool is closed.`,
    `- **ssh ControlMaster**: a master \`${pooled.masterCmd}\`, then per task \`${pooled.taskCmd}\`; stopped with \`ssh -S SOCK -O exit\`. Its CPU and RSS include the master's (its CPU during the repetition, its VmRSS at the end).`,
    go ? `- **Go sessions**: \`go-ssh pooled\` (bench/peers/go-ssh): one \`ssh.Client\` dialled (and one session run) before the clock starts, then N \`NewSession\` + \`Run("true")\`, ${config.pooled.concurrency} goroutines at a time for the concurrent scenario. A process per repetition; latencies and wall time measured inside it; its CPU and maxrss by getrusage.` : `- **Go sessions**: ${GO_MISSING}.`,
    '',
    markdownTable(pooledT),
    '',
    'leash stage medians over all measured tasks (ms; a pooled task skips connecting, handshake and auth):',
    '',
    markdownTable(pooledStages),
    '',
    `**${pooledLine}**`,
    '',
    `## 3. Fan-out to ${config.fanout.hosts} loopback addresses`,
    '',
    `127.0.1.1–127.0.1.${config.fanout.hosts}, one sshd listening on all of them. OpenSSH's sshd binds at most 16 listen sockets, so this sshd is the harness's (same keys, clean remote HOME, same config) re-started from a copy of its config with \`ListenAddress 0.0.0.0\` and \`AllowUsers USER@127.0.0.0/8\` (no login from off the machine). Every contender is a child process with a clean HOME (an empty directory), the same user, key, known_hosts file (one \`[127.0.1.N]:PORT\` line per address), strict host key checking and ${config.fanout.concurrency} hosts at a time; the OpenSSH-based peers get \`-F none -o KexAlgorithms=curve25519-sha256\` and the harness's options. One warm-up run each, then ${fanoutRepsNote}, rotating who goes first. A run fails the bench unless the tool exits 0, its output shows every host succeeded, and sshd's log shows a connection on every one of the ${config.fanout.hosts} addresses and ${config.fanout.hosts} logins.`,
    '',
    ...fanout.names.map((n) => `- **${n}**: \`${fanout.argv.get(n) ?? ''}\``),
    ...fanout.missing.map((m) => `- ${m}`),
    '',
    markdownTable(fanT),
    '',
    `- Wall: from spawning the tool to its exit, start-up included (the last column shows each tool's start-up alone: \`leash run --help\`, \`parallel-ssh --version\`, \`clush --version\`, median of ${STARTUP_RUNS(config)}; leash loads its TypeScript through tsx). Client CPU: the tool and all its descendants (reaped-children CPU). Peak RSS: the sum of VmRSS over the tool's process tree, sampled every 20 ms (pssh and clush run one ssh per host). Ratio rows: wall leash ÷ peer, then how many times faster leash is, then the peak RSS ratio.`,
    '',
    `**${fanoutLine}**`,
    '',
    `## 4. Memory per stuck connection`,
    '',
    `${stuck.count} leash tasks (\`fanOut\`, concurrency ${stuck.count}) against a TCP server that accepts and never sends a byte (\`silent-tcp\` of test/support/hostile-servers.ts, run in a child process so its sockets are not in our RSS), with a ${600} s handshake deadline. A warm-up flood of ${stuck.warmupCount} first; then GC, baseline; measured (after GC) once every task is in stage \`handshake\` (polled in the task table), then every task cancelled with one AbortController. The bench fails unless afterwards every task ended \`cancelled\` in stage handshake, the ledger and task table are empty, and the server has seen every connection close.`,
    '',
    markdownTable(stuckCompare),
    '',
    go ? `Go: \`go-ssh stuck\` opens ${config.stuck} TCP connections to the same server and starts \`ssh.NewClientConn\` on each (no deadline, as in the incident), after a warm-up flood of ${config.stuckWarmup}; it reports its VmRSS after \`runtime.GC()\` + \`debug.FreeOSMemory()\` before and with them (the bench checks the server sees them all open${goStuckR?.loadedRssKiBFromProc ? `; the bench read ${fmt(goStuckR.loadedRssKiBFromProc / KiB)} MiB from /proc at the same moment` : ''}; ${goStuckR?.goroutines ?? '?'} goroutines more), then closes them and must exit 0.` : `Go: ${GO_MISSING}.`,
    '',
    'leash in detail:',
    '',
    markdownTable(stuckT.during),
    '',
    'After cancelling all:',
    '',
    markdownTable(stuckT.after),
    '',
    `The silent server's own RSS with all connections open: ${stuck.silentServerRssKiB === null ? 'n/a' : `${fmt(stuck.silentServerRssKiB / KiB)} MiB`} (not counted). Process maxRSS before this part: ${fmt(maxRssBefore / KiB)} MiB.`,
    '',
    `## 5. API overhead: \`POST /v1/tasks\` with \`wait\` vs the core`,
    '',
    `The same task — a fresh connection to the sshd of part 1, remote command \`true\` — run by the core called directly and through the HTTP API of a \`leash serve\` started in this process (test/support/service.ts \`startTestService\`: the real \`startService\`, SQLite store in a temporary data directory, identity from the sshd's client key, host key from its known_hosts, strict policy), so both share the machine, the process and the sshd equally. ${apiRepsNote}; the two alternate who goes first each repetition (index i of one pairs with index i of the other); a GC before each repetition; both warmed up (${WARMUP_SEQ} sequential + ${config.api.concurrency} concurrent tasks) before measuring. After every repetition the bench fails unless the task table is empty and the ledger is back to the service's ${api.idleLedger} entries at rest; after the service stopped (in \`finally\`), unless the ledger is empty.`,
    '',
    `- **core**: \`runOne\` (test/support/run-task.ts) one after another, and \`fanOut\` with concurrency ${config.api.concurrency} — exactly part 1's leash contender. Latency from \`runTask\` to its report.`,
    `- **service**: \`POST /v1/tasks\` \`{host: "127.0.0.1", port, command: "true", wait: ${API_WAIT_S}}\` with a bearer token, by \`fetch\` (Node's undici, HTTP/1.1 keep-alive) from this process, one request after another, and ${config.api.concurrency} clients each posting their next task as soon as their previous one is answered. Every answer must be 200 with \`status: ok\` and exit code 0. Latency from the request to the parsed answer. What the service does beyond the core per task: validate the body (schema), authenticate and authorize the token, resolve identity and host keys, write the task before it runs, persist each stage change, persist the result and read it back, log the audit line, keep the event log for SSE, update metrics, serialize the answer.`,
    `- **Service settings** (none may throttle the comparison; the core's fanOut has no limits besides its concurrency): limits.globalConcurrency ${lim.globalConcurrency}, limits.perHost ${lim.perHost} (the default of 4 would hold ${config.api.concurrency} clients to 4 tasks at once), limits.perTargetHandshakes ${lim.perTargetHandshakes} (default 8), limits.queueCapacity ${lim.queueCapacity}, limits.maxWaitSeconds ${lim.maxWaitSeconds}; all at least twice the ${config.api.concurrency} clients, so a slot freed a moment after its answer never makes the next task queue — the \`queued\` column of the stage table shows they did not. logLevel \`info\` (the production default: one audit line per task; the test helper's default \`debug\` would add a line per stage), captured in memory rather than written to a terminal or file. SQLite in WAL mode with synchronous=NORMAL, on the temporary directory's file system (${os.tmpdir()}).`,
    '',
    markdownTable(apiT),
    '',
    markdownTable(apiOver),
    '',
    'Stage medians over all measured tasks (ms); for the service, the stages are the ones its answer reports:',
    '',
    markdownTable(apiStages),
    '',
    'Columns:',
    '',
    `- p50/p99 and tasks/s as in part 1 (with ${config.api.seqTasks} and ${config.api.concTasks} tasks per repetition, p99 is the slowest task of the repetition). Ratio row: service ÷ core of the medians; below 1 is better for the service in every column except tasks/s.`,
    `- Time per task service÷core, paired: for each repetition, the service's wall time per task over the core's in the same repetition (they ran back to back), then the median and range over repetitions; it cancels drift between repetitions better than the ratio of medians above. Overhead = that median − 1: the share the service adds, the figure the ≤ ${fmt(API_OVERHEAD_TARGET * 100, 0)}% target is about. Service extra p50: the service's p50 minus the core's, per repetition, median [range] — the service's extra cost per task in ms.`,
    `- leash process CPU: process.cpuUsage() of this process per task. For the service it includes the HTTP client (fetch) as well as the server, since both live here; the extra leash CPU column is service minus core. sshd CPU: as in part 1; it should match between the two (same connection, same command), showing both did the same SSH work.`,
    `- Outside the task: per task, the latency minus the sum of the task's own stage durations (median per repetition, then across repetitions). For the core that is the time between \`runTask\` and its first stage plus the stages' rounding; for the service it is the HTTP round trip, validation, the store writes and reads around the run, and the answer, each step also waiting its turn on the event loop under concurrency (next column). Concurrent service tasks can spend less time inside their stages than the core's (likely because HTTP clients start their tasks less bunched than fanOut does, so fewer handshakes overlap; not measured here), which is why this column can exceed the p50 difference. Stage durations are whole milliseconds, so this column is ±1 ms.`,
    `- Event-loop delay: how late this process's event loop ran a ${LOOP_RESOLUTION_MS} ms timer during the repetition (perf_hooks.monitorEventLoopDelay, the timer period subtracted), mean / p99, median over repetitions. Everything in this process — SSH crypto, the HTTP server and client, SQLite (synchronous, better-sqlite3) — takes turns on that one thread; under concurrency a task's next step waits about this long each time it needs the thread.`,
    `- Peak RSS: of this whole process (service, HTTP client and bench), as for leash in part 1; growth over the start of the repetition in brackets.`,
    '',
    `## 6. Diagnostics`,
    '',
    `What the diagnostics of issue 4 cost. Always on, in both contenders, because they are the invariants rather than options: the task table, the resource ledger with a creation site captured per entry, the Prometheus metrics (fed by the task channels) and their event-loop monitor (monitorEventLoopDelay at 10 ms). What the two contenders differ in is only what can be switched off, plus someone looking.`,
    '',
    `### 6a. Throughput with the optional diagnostics off and on`,
    '',
    `Part 5's service contender, same sshd, same task (\`POST /v1/tasks\` with \`wait\`, remote command \`true\`), sequential and ${config.diag.concurrency} clients, same service settings (limits, logLevel \`info\`) except the \`diagnostics\` section. ${diagRepsNote}. Only one service runs at a time, because heap sampling and the watchdog act on the whole process while a service runs: every repetition starts a fresh service per contender, warms it up (${WARMUP_SEQ} sequential or ${config.diag.concurrency} concurrent tasks, with the scraper running for "on"), runs a GC, measures, and stops it; the bench fails unless the ledger and the task table are empty after each stop. The two alternate who goes first each repetition.`,
    '',
    `- **diag off**: \`diagnostics: ${JSON.stringify(DIAG_SETTINGS.off)}\` (no leak watchdog, no heap sampling), and nobody reads /metrics or /debug.`,
    `- **diag on**: \`diagnostics: ${JSON.stringify(DIAG_SETTINGS.on)}\`: the leak watchdog checks the task table, the ledger and the client sockets every second (30× its default of 30 s, to make its cost visible) and sampled heap profiling is on (@datadog/pprof, 512 KiB sampling interval) — and, while the tasks run, a background loop in this process GETs /metrics with the read token every ${SCRAPE_METRICS_MS / 1000} s (like a Prometheus server) and \`/debug/tasks?debug=1\` on the admin listener every ${SCRAPE_DUMP_MS / 1000} s (an operator looking), the first of each at once; the loop is stopped and awaited at the end of the repetition and every answer must be 200.`,
    '',
    markdownTable(diagT),
    '',
    markdownTable(diagOver),
    '',
    'What the scraper did during the "on" repetitions (all requests of all repetitions):',
    '',
    markdownTable(scrapeT),
    '',
    `- tasks/s, p50, p99, CPU, event-loop delay and RSS as in part 5; on/off row: on ÷ off of the medians. The leash process CPU of "on" includes the scraper's own HTTP client, since it runs in this process.`,
    `- Overhead: for each repetition, the "on" service's wall time over the "off" service's in the same repetition (same number of tasks, run back to back), minus 1; the median over repetitions, then the lowest and highest. This is the figure the ≤ ${fmt(DIAG_OVERHEAD_TARGET * 100, 0)}% target (issue 4) is about; a negative value means "on" happened to be faster — the noise of this machine is of the same order as the target, so read it with its range.`,
    '',
    `### 6b. \`/debug/tasks\` with ${liveTasks} live tasks`,
    '',
    `${liveTasks} live tasks injected straight into the process-wide task table of a running "diag on" service (\`taskTable.create({target, attrs: {command: 'uptime'}, hardDeadlineMs: 600000})\`), from three named functions (three creation sites), a third each left \`queued\`, moved to \`connecting\` waiting \`tcp-connect\`, and to \`handshake\` waiting \`server-banner\`: ${dumps.groups} groups in debug=1. No scraper runs; the service's own watchdog still ticks every second. "Cold" is the first dump of these tasks: V8 formats a captured stack into text only when it is first read (src/lifecycle/creation-site.ts), once per task, and the frames are interned per site; later dumps reuse them. The HTTP dumps (\`GET adminUrl/debug/tasks?debug=N\`, admin token, from this process) come first; then all tasks are finished (\`taskTable.finish(task, 'cancelled')\`; the table must be empty), ${liveTasks} fresh ones injected the same way, and \`renderTasks(taskTable.live(), 1, {now, redact: createRedactor(), limit: 1000})\` timed in process, its first call cold. ${config.diag.warmDumps} warm dumps each (debug=2: ${Math.max(3, Math.floor(config.diag.warmDumps / 2))}). ${dumps.sourceMaps ? `Node's source maps are on here, as in \`leash serve\` itself (bin/leash.js loads the TypeScript through tsx), so formatting a stack also maps each frame back to the .ts source; for comparison, ${liveTasks} more fresh tasks were dumped cold in process with source maps switched off for that one call (last table row below).` : "Node's source maps are off here."}`,
    '',
    markdownTable(dumpT),
    '',
    markdownTable(costT),
    '',
    `- The dump is synchronous: rendering takes the event loop for its whole duration, so the in-process time is the pause every task, request and timer of the service sees. The last column confirms it from outside: the longest event-loop delay (monitorEventLoopDelay, 1 ms timer) while the dumps ran. Over HTTP the time adds the request, the response and this process's fetch parsing the text.`,
    `- Heap per live task: heapUsed after a GC with the tasks live, minus before, ÷ ${liveTasks}; "after the first dump" keeps each task's formatted stack text (DIAGNOSTICS.md: ~800 B per live entry).`,
    `- Per-task cost: ${config.diag.taskCostIterations.toLocaleString('en-US')} iterations of create + finish (5 chunks, median chunk), one task live at a time; "no service running" has no subscribers on the task channels (the figure to compare with DIAGNOSTICS.md), "with a running service" adds the metrics' and the watchdog's channel subscribers. A leak-watchdog pass is timed on a separate LeakWatchdog over the same table, \`check()\` called directly.`,
    '',
    `**${diagLine}**`,
    '',
    '## Summary',
    '',
    `- ${targetLine}`,
    `- ${pooledLine}`,
    `- ${fanoutLine}`,
    `- ${stuckLine}`,
    `- ${apiLine}`,
    `- ${diagLine}`,
    '',
    '## How to read this',
    '',
    `This is a ${machine.cores}-core virtual machine shared with other work: single runs swing by tens of percent, so every figure is a median over repetitions and the bracket shows the spread of p50 across repetitions. Trust ratios from the same run more than absolute milliseconds, and compare runs only on the same machine. Client and server share the same ${machine.cores} cores: in the concurrent scenario sshd's per-connection work (fork, re-exec, key exchange, privilege separation, session and shell) competes with the client for CPU, so the tasks/s there is bounded by the server as much as by the client — see the sshd CPU column. leash's peak RSS is the kernel's exact high-water mark, while the ssh processes' RSS is sampled every 10 ms, so their short spikes between samples are missed; the memory freed after the cancel is returned to the allocator, which need not give it back to the kernel, so "RSS vs baseline" after the cancel can stay above zero while the heap and the ledger are back. For the API overhead, the paired ratio (each repetition's service against the core run right before or after it) is the figure to trust; the load average at start and end of the run is in the header, and a load above the ${machine.cores} cores means other work took CPU from both contenders during the run.`,
    '',
  ].join('\n');
  const file = config.quick ? path.join(REPO, 'bench/out/RESULTS-quick.md') : path.join(REPO, 'bench/RESULTS.md');
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, md);
  process.stdout.write(`wrote ${path.relative(process.cwd(), file) || file}\n`);
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`\nbench: FAILED — ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
