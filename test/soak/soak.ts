// The soak (issue 6): drives a `leash serve` (its own process, see service-main.ts) through
// its HTTP API at a steady rate for a set time, with a mix of healthy targets (a real sshd
// on loopback; a namespace peer behind latency and loss), every hostile server behaviour,
// and a namespace peer suffering network faults in rotation. Load comes in cycles: an
// active phase, then a quiet one at whose end the service must be idle again — no task in
// flight, an empty ledger, descriptors back to the baseline, heap after GC within 10 MiB
// of it, metrics agreeing, no leak flagged. Every task must get the verdict its kind
// expects, within its hard deadline. Readings go to a CSV every second, then to a chart.
import { mkdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { stringify } from 'yaml';
import type { TaskTimeouts } from '../../src/service/task-spec.ts';
import { startDelayRelay, type DelayRelay } from '../chaos/delay-relay.ts';
import { Lab } from '../chaos/lab.ts';
import { startNsSshd, type NsSshd } from '../chaos/ns-sshd.ts';
import { HOSTILE_BEHAVIOURS, startHostileServer, type HostileBehaviour, type HostileServer } from '../support/hostile-servers.ts';
import { prng } from '../support/prng.ts';
import { startSshd, type Sshd } from '../support/sshd.ts';
import { HEAP_ALLOWANCE_MIB, renderSoakChart, type SoakCheckpoint } from './chart.ts';
import { FaultInjector, type FaultName } from './faults.ts';
import { SoakClient } from './http-client.ts';
import type { CheckReading, ProbeReading } from './probe.ts';
import { SampleLog } from './sample-log.ts';
import { SoakService } from './service-handle.ts';
import { TaskDriver, type KindStats } from './driver.ts';
import { scrapeMetrics, type ScrapedMetrics } from './metrics-scrape.ts';
import { kindPicker, TASK_KINDS, type Endpoint, type SoakTargets } from './workload.ts';

export interface SoakOptions {
  /** Whole length of the load cycles (set-up and warm-up come on top). */
  readonly durationMs: number;
  /** Tasks submitted per second during active phases. */
  readonly ratePerSecond: number;
  readonly activeMs: number;
  /** Shortest quiet phase; it lasts longer only while the service is not idle yet. */
  readonly quietMs: number;
  /** Each active phase is cut into slots of this length, with one fault in each. */
  readonly faultSlotMs: number;
  readonly seed: number;
  /** Where soak.csv, soak.svg, summary.json and leash.log go. */
  readonly outDir: string;
  readonly log: (line: string) => void;
}

export const SOAK_DEFAULTS = { durationMs: 10 * 60_000, ratePerSecond: 5, activeMs: 20_000, quietMs: 10_000, faultSlotMs: 6000, seed: 1 } as const;

const TOKEN = 'soak-admin-token-0123456789abcdef';
/**
 * The service's defaults. Generous before the command (a loaded 2-core machine can take
 * seconds for a loopback handshake, and a wrong verdict for a healthy host is a failure);
 * the hostile and faulted targets set their own short deadlines (workload.ts).
 */
const DEFAULT_TIMEOUTS: TaskTimeouts = { connectMs: 5000, handshakeMs: 10_000, authMs: 10_000, channelMs: 10_000, commandMs: 10_000, idleMs: 0 };
const KEEPALIVE = { intervalMs: 1000, countMax: 2 };
const POOL_IDLE_TTL_MS = 2000;
const REQUEST_LIMIT_MS = 90_000;
/** How long a quiet phase may wait for the service to become idle before that is a failure. */
const IDLE_LIMIT_MS = POOL_IDLE_TTL_MS + (KEEPALIVE.countMax + 1) * KEEPALIVE.intervalMs + 10_000;
const SCRAPE_EVERY_MS = 5000;
const DUMP_EVERY_MS = 15_000;
const MAX_FAILURES_KEPT = 100;

/** One quiet period's verdict. */
export interface QuietCheck {
  readonly cycle: number;
  readonly tSec: number;
  /** From the end of the active phase until the service was idle. */
  readonly idleAfterMs: number;
  readonly inFlight: number;
  readonly ledgerLive: number;
  readonly ledgerWork: number;
  readonly fds: number;
  readonly heapAfterGcMiB: number;
  readonly rssMiB: number;
  readonly metrics: ScrapedMetrics;
}

export interface SoakReport {
  readonly options: Omit<SoakOptions, 'log'>;
  readonly startedAt: string;
  readonly elapsedS: number;
  readonly cycles: number;
  readonly tasks: number;
  readonly batches: number;
  readonly byKind: Readonly<Record<string, KindStats>>;
  readonly outcomes: Readonly<Record<string, number>>;
  readonly faults: Readonly<Record<string, number>>;
  readonly baseline: { readonly heapAfterGcMiB: number; readonly fds: number; readonly rssMiB: number; readonly ledger: readonly string[] };
  readonly checks: readonly QuietCheck[];
  readonly peak: { readonly rssMiB: number; readonly heapUsedMiB: number; readonly inFlight: number; readonly ledgerLive: number; readonly fds: number };
  /** Longest task lifetime (from leaving the queue) as a share of its hard deadline. */
  readonly maxDeadlineShare: number;
  readonly scrapes: number;
  readonly failureCount: number;
  /** The first failures, each naming what went wrong. */
  readonly failures: readonly string[];
  readonly files: { readonly csv: string; readonly svg: string; readonly summary: string; readonly serviceLog: string };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, Math.max(0, ms)));
const sleepUntil = (at: number): Promise<void> => sleep(at - performance.now());

/** Everything the soak starts, so that teardown can stop exactly that. */
interface Fixtures {
  lab?: Lab;
  faultySshd?: NsSshd;
  farSshd?: NsSshd;
  relay?: DelayRelay;
  loop?: Sshd;
  hostile: HostileServer[];
  service?: SoakService;
}

export async function runSoak(options: SoakOptions): Promise<SoakReport> {
  const { log } = options;
  await mkdir(options.outDir, { recursive: true });
  const files = {
    csv: path.join(options.outDir, 'soak.csv'),
    svg: path.join(options.outDir, 'soak.svg'),
    summary: path.join(options.outDir, 'summary.json'),
    serviceLog: path.join(options.outDir, 'leash.log'),
  };
  const startedAt = new Date();
  const home = path.join(os.tmpdir(), `leash-soak-${process.pid}-${startedAt.getTime()}`);
  const fixtures: Fixtures = { hostile: [] };

  const failures: string[] = [];
  let failureCount = 0;
  const fail = (what: string): void => {
    failureCount++;
    if (failures.length < MAX_FAILURES_KEPT) failures.push(what);
    if (failureCount <= 20) log(`FAIL ${what}`);
  };

  const sampleLog = new SampleLog(files.csv);
  let phase: 'active' | 'quiet' = 'active';
  let faults: FaultInjector | undefined;
  let driverRef: TaskDriver | undefined;
  let lastReading: ProbeReading | null = null;
  let lastReadingAt = 0;
  const checkpoints: SoakCheckpoint[] = [];
  const checks: QuietCheck[] = [];
  let scrapes = 0;
  let cycles = 0;
  let baseline = { heapAfterGcMiB: 0, fds: 0, rssMiB: 0, fdTargets: new Set<string>(), ledger: [] as readonly string[] };

  try {
    // ---- set-up: targets, the service, the client --------------------------------------
    const lab = (fixtures.lab = await Lab.create());
    const faultyPeer = await lab.peer();
    const farPeer = await lab.peer();
    const faultySshd = (fixtures.faultySshd = await startNsSshd(faultyPeer));
    const farSshd = (fixtures.farSshd = await startNsSshd(farPeer));
    await farPeer.randomLoss(0.02);
    const relay = (fixtures.relay = await startDelayRelay(farPeer.hostAddr, { host: farSshd.host, port: farSshd.port }, 100));
    const loop = (fixtures.loop = await startSshd());
    const hostile = new Map<HostileBehaviour, Endpoint>();
    for (const behaviour of HOSTILE_BEHAVIOURS) {
      if (behaviour === 'cooperative') continue;
      const server = await startHostileServer(behaviour, { dripIntervalMs: 200 });
      fixtures.hostile.push(server);
      hostile.set(behaviour, { host: server.host, port: server.port, identity: 'loop' });
    }
    faults = new FaultInjector(faultyPeer, faultySshd);
    const targets: SoakTargets = {
      loop: { host: loop.host, port: loop.port, identity: 'loop' },
      hostile,
      faulty: { host: faultySshd.host, port: faultySshd.port, identity: 'faulty' },
      far: { host: relay.host, port: relay.port, identity: 'far' },
    };

    await mkdir(home, { recursive: true, mode: 0o700 });
    const knownHosts = path.join(home, 'trusted_hosts');
    await writeFile(
      knownHosts,
      [loop.knownHostsLine, faultySshd.knownHostsLine, farSshd.knownHostsLineFor(relay.host, relay.port), ...fixtures.hostile.map((s) => s.knownHostsLine), ''].join('\n'),
    );
    const configPath = path.join(home, 'leash.yaml');
    await writeFile(
      configPath,
      stringify({
        listen: '127.0.0.1:0',
        adminListen: '127.0.0.1:0',
        dataDir: path.join(home, 'data'),
        logLevel: 'info',
        identities: {
          loop: { user: loop.user, keyPath: loop.clientKey.path },
          faulty: { user: faultySshd.user, keyPath: faultySshd.clientKeyPath },
          far: { user: farSshd.user, keyPath: farSshd.clientKeyPath },
        },
        defaultIdentity: 'loop',
        hostKeys: { policy: 'strict', readFiles: [knownHosts], knownHostsFile: path.join(home, 'known_hosts') },
        tokens: [{ name: 'soak', token: TOKEN, scopes: ['admin'] }],
        defaults: { timeouts: DEFAULT_TIMEOUTS, keepalive: KEEPALIVE },
        pool: { idleTtlMs: POOL_IDLE_TTL_MS },
        diagnostics: { watchdogIntervalMs: 2000 },
        shutdownGraceMs: 5000,
      }),
    );
    const service = (fixtures.service = await SoakService.start({
      configPath,
      logPath: files.serviceLog,
      home,
      onSample: (reading) => {
        lastReading = reading;
        lastReadingAt = performance.now();
        sampleLog.add(reading, { tasksDone: driverRef?.tasksDone ?? 0, phase, fault: faults?.active ?? '' });
      },
      onExit: (why) => fail(why),
    }));
    const client = new SoakClient(service.url, TOKEN);
    const admin = service.adminUrl?.startsWith('http') ? new SoakClient(service.adminUrl, TOKEN) : null;
    log(`service pid ${service.pid} at ${service.url}; targets: loop ${loop.port}, faulty ${faultySshd.host}, far ${relay.host}:${relay.port} -> ${farSshd.host}, ${hostile.size} hostile servers`);

    const driver = (driverRef = new TaskDriver(client, targets, {
      defaultTimeouts: DEFAULT_TIMEOUTS,
      random: prng(options.seed),
      fail,
      faultNow: () => faults?.active ?? null,
    }));
    const pick = kindPicker(prng(options.seed ^ 0x5eed));
    const scrape = async (): Promise<ScrapedMetrics> => {
      const m = await scrapeMetrics(client, REQUEST_LIMIT_MS);
      scrapes++;
      return m;
    };

    /** Scrapes and dumps while the load runs, as an operator's tools would. */
    const observe = async (until: number): Promise<void> => {
      let nextDump = performance.now() + DUMP_EVERY_MS;
      while (performance.now() + SCRAPE_EVERY_MS < until) {
        await sleep(SCRAPE_EVERY_MS);
        try {
          const m = await scrape();
          const flagged = Object.entries(m.leaks).filter(([, v]) => v > 0);
          if (flagged.length > 0) fail(`leash_leaks_total during load: ${JSON.stringify(Object.fromEntries(flagged))}`);
          if (admin && performance.now() >= nextDump) {
            nextDump += DUMP_EVERY_MS;
            const dump = await admin.json('GET', '/debug/tasks?debug=1', undefined, REQUEST_LIMIT_MS);
            if (dump.status !== 200 || typeof dump.body !== 'string' || !dump.body.startsWith('tasks: total')) fail(`/debug/tasks?debug=1 under load: HTTP ${dump.status}`);
          }
        } catch (err) {
          fail(`observing under load: ${(err as Error).message}`);
        }
      }
    };

    /** Waits for every driven task, then for the service to be idle; returns the reading after GC. */
    const settle = async (): Promise<{ reading: CheckReading; idleAfterMs: number }> => {
      const since = performance.now();
      await driver.settled();
      const settledAt = performance.now();
      const limit = settledAt + IDLE_LIMIT_MS;
      for (;;) {
        // Only a reading taken after every driven task ended says anything about idleness.
        const r = lastReadingAt > settledAt ? lastReading : null;
        const idle = r !== null && r.inFlight === 0 && r.ledgerWork === 0 && (baseline.fds === 0 || r.fds <= baseline.fds);
        if (idle || performance.now() > limit) break;
        await sleep(200);
      }
      const idleAfterMs = Math.round(performance.now() - since);
      return { reading: await service.check(), idleAfterMs };
    };

    // ---- warm-up: one task of every kind, then the baseline --------------------------------
    log('warm-up: one task of each kind');
    for (const kind of TASK_KINDS) driver.start(kind);
    await scrape();
    {
      phase = 'quiet';
      const { reading } = await settle();
      if (reading.inFlight !== 0 || reading.ledgerWork !== 0) fail(`not idle after the warm-up: ${reading.inFlight} tasks, ledger ${reading.ledgerEntries.join('; ')}`);
      baseline = { heapAfterGcMiB: reading.heapAfterGcMiB, fds: reading.fds, rssMiB: reading.rssMiB, fdTargets: new Set(reading.fdTargets), ledger: reading.ledgerEntries };
      checkpoints.push({ tSec: sampleLog.now(), heapAfterGcMiB: reading.heapAfterGcMiB, fds: reading.fds });
      log(`baseline: heap after GC ${baseline.heapAfterGcMiB} MiB, ${baseline.fds} fds, RSS ${baseline.rssMiB} MiB`);
    }

    // ---- the cycles --------------------------------------------------------------------------
    cycles = Math.max(1, Math.round(options.durationMs / (options.activeMs + options.quietMs)));
    const interval = 1000 / options.ratePerSecond;
    const slots = Math.max(0, Math.floor(options.activeMs / options.faultSlotMs));
    const injector = faults;
    for (let cycle = 1; cycle <= cycles; cycle++) {
      phase = 'active';
      const activeStart = performance.now();
      const activeEnd = activeStart + options.activeMs;
      const faulting = (async () => {
        for (let s = 0; s < slots; s++) {
          const slotStart = activeStart + s * options.faultSlotMs;
          await sleepUntil(slotStart + options.faultSlotMs / 6);
          try {
            const fault: FaultName = await injector.injectNext();
            log(`cycle ${cycle}: fault ${fault}`);
            await sleepUntil(slotStart + (options.faultSlotMs * 5) / 6);
          } catch (err) {
            fail(`injecting a fault: ${(err as Error).message}`);
          } finally {
            await injector.lift().catch((err: unknown) => fail(`lifting fault ${injector.active}: ${(err as Error).message}`));
          }
        }
      })();
      const observing = observe(activeEnd);
      for (let i = 0; ; i++) {
        const due = activeStart + i * interval;
        if (due >= activeEnd) break;
        await sleepUntil(due);
        driver.start(pick());
      }
      await Promise.all([faulting, observing]);

      phase = 'quiet';
      const quietStart = performance.now();
      const { reading, idleAfterMs } = await settle();
      let metrics: ScrapedMetrics = { inFlight: NaN, resourcesLive: NaN, leaks: {} };
      try {
        metrics = await scrape();
      } catch (err) {
        fail(`cycle ${cycle}: ${(err as Error).message}`);
      }
      const tSec = sampleLog.now();
      checkpoints.push({ tSec, heapAfterGcMiB: reading.heapAfterGcMiB, fds: reading.fds });
      const check: QuietCheck = {
        cycle,
        tSec: Math.round(tSec),
        idleAfterMs,
        inFlight: reading.inFlight,
        ledgerLive: reading.ledgerLive,
        ledgerWork: reading.ledgerWork,
        fds: reading.fds,
        heapAfterGcMiB: reading.heapAfterGcMiB,
        rssMiB: reading.rssMiB,
        metrics,
      };
      checks.push(check);
      const at = `cycle ${cycle} quiet`;
      if (reading.inFlight !== 0) fail(`${at}: ${reading.inFlight} tasks still in flight: ${reading.liveTasks.join('; ')}`);
      if (reading.ledgerWork !== 0 || reading.ledgerEntries.join('\n') !== baseline.ledger.join('\n')) {
        fail(`${at}: ${reading.ledgerWork} ledger entries held for work; live: ${reading.ledgerEntries.join('; ')}; at the baseline: ${baseline.ledger.join('; ')}`);
      }
      if (reading.fds > baseline.fds) fail(`${at}: ${reading.fds} fds, baseline ${baseline.fds}; new: ${reading.fdTargets.filter((f) => !baseline.fdTargets.has(f)).join('; ')}`);
      if (reading.heapAfterGcMiB > baseline.heapAfterGcMiB + HEAP_ALLOWANCE_MIB) fail(`${at}: heap after GC ${reading.heapAfterGcMiB} MiB, over baseline ${baseline.heapAfterGcMiB} MiB + 10 MB`);
      if (metrics.inFlight !== 0) fail(`${at}: leash_tasks_in_flight sums to ${metrics.inFlight}`);
      if (metrics.resourcesLive !== reading.ledgerLive) fail(`${at}: leash_resources_live sums to ${metrics.resourcesLive}, the ledger holds ${reading.ledgerLive}`);
      const flagged = Object.entries(metrics.leaks).filter(([, v]) => v > 0);
      if (flagged.length > 0) fail(`${at}: leash_leaks_total ${JSON.stringify(Object.fromEntries(flagged))}`);
      log(`${at}: idle after ${idleAfterMs} ms; ${driver.tasksDone} tasks done; heap after GC ${reading.heapAfterGcMiB} MiB (baseline ${baseline.heapAfterGcMiB}); ${reading.fds} fds (baseline ${baseline.fds}); RSS ${reading.rssMiB} MiB; ${failureCount} failures so far`);
      await sleepUntil(quietStart + options.quietMs);
    }
  } catch (err) {
    fail(`soak aborted: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  } finally {
    await teardown(fixtures, fail);
    await rm(home, { recursive: true, force: true });
    await sampleLog.close();
  }

  const samples = sampleLog.samples;
  const peakOf = (f: (s: (typeof samples)[number]) => number): number => samples.reduce((m, s) => Math.max(m, f(s)), 0);
  const report: SoakReport = {
    options: { durationMs: options.durationMs, ratePerSecond: options.ratePerSecond, activeMs: options.activeMs, quietMs: options.quietMs, faultSlotMs: options.faultSlotMs, seed: options.seed, outDir: options.outDir },
    startedAt: startedAt.toISOString(),
    elapsedS: Math.round((Date.now() - startedAt.getTime()) / 1000),
    cycles,
    tasks: driverRef?.tasksDone ?? 0,
    batches: driverRef?.batches ?? 0,
    byKind: driverRef?.byKind ?? {},
    outcomes: driverRef?.outcomes ?? {},
    faults: Object.fromEntries(faults?.injected() ?? []),
    baseline: { heapAfterGcMiB: baseline.heapAfterGcMiB, fds: baseline.fds, rssMiB: baseline.rssMiB, ledger: baseline.ledger },
    checks,
    peak: {
      rssMiB: peakOf((s) => s.rssMiB),
      heapUsedMiB: peakOf((s) => s.heapUsedMiB),
      inFlight: peakOf((s) => s.inFlight),
      ledgerLive: peakOf((s) => s.ledgerLive),
      fds: peakOf((s) => s.fds),
    },
    maxDeadlineShare: Math.round((driverRef?.maxDeadlineShare ?? 0) * 1000) / 1000,
    scrapes,
    failureCount,
    failures,
    files,
  };
  const faultCount = Object.values(report.faults).reduce((a, b) => a + b, 0);
  await writeFile(
    files.svg,
    renderSoakChart(samples, {
      title: `leash soak, ${startedAt.toISOString().slice(0, 16).replace('T', ' ')} UTC`,
      subtitle: `${Math.round(options.durationMs / 1000)} s of cycles (${cycles} × ${options.activeMs / 1000} s load + quiet), ${options.ratePerSecond} tasks/s, ${report.tasks} tasks, ${faultCount} faults, ${failureCount} failures`,
      checkpoints,
      heapBaselineMiB: baseline.heapAfterGcMiB,
      fdBaseline: baseline.fds,
    }),
  );
  await writeFile(files.summary, `${JSON.stringify(report, null, 2)}\n`);
  return report;
}

/** Stops everything the soak started, in reverse order; each failure is reported, none stops the rest. */
async function teardown(f: Fixtures, fail: (what: string) => void): Promise<void> {
  const steps: Array<[string, (() => Promise<unknown>) | undefined]> = [
    ['stopping the service', f.service && (() => f.service!.stop())],
    ['closing the hostile servers', () => Promise.all(f.hostile.map((s) => s.close()))],
    ['stopping the loopback sshd', f.loop && (() => f.loop!.stop())],
    ['closing the relay', f.relay && (() => f.relay!.close())],
    ['stopping the far sshd', f.farSshd && (() => f.farSshd!.stop())],
    ['stopping the faulty sshd', f.faultySshd && (() => f.faultySshd!.stop())],
    ['destroying the lab', f.lab && (() => f.lab!.destroy())],
  ];
  for (const [what, step] of steps) {
    if (!step) continue;
    try {
      await step();
    } catch (err) {
      fail(`${what}: ${(err as Error).message}`);
    }
  }
}
