// Benchmark 1: a fresh SSH connection per task, remote command `true`, against a real
// OpenSSH sshd on loopback. Contenders: leash in-process (runOne / fanOut) and OpenSSH's
// `ssh` client spawned once per task.
import { spawn, spawnSync } from 'node:child_process';
import { cancelledError } from '../../src/lifecycle/errors.ts';
import { ledger } from '../../src/lifecycle/ledger.ts';
import { taskTable } from '../../src/lifecycle/task-table.ts';
import { fanOut } from '../../src/service/fan-out.ts';
import { runTask, type TaskRunnerDeps } from '../../src/service/task-runner.ts';
import type { TaskReport } from '../../src/lifecycle/task-report.ts';
import type { TaskSpec } from '../../src/service/task-spec.ts';
import { SshRemoteExec } from '../../src/ssh/remote-exec.ts';
import { descendantPids, sshCommand, type Sshd } from '../../test/support/sshd.ts';
import { keyCredentials, testSpec } from '../../test/support/run-task.ts';
import { ChildRssSampler, peakRssKiB, resetPeakRss, type ChildRss } from './child-rss.ts';
import { cpuMs, KiB, median, PeakSampler, pollUntil, withTimeout } from './util.ts';

/** Per-task deadline for both contenders: a task that takes this long is a failed bench. */
const TASK_TIMEOUT_MS = 30_000;

/** One repetition of one scenario by one contender. */
export interface RepResult {
  /** Per-task latency, ms: leash from runTask() to its report; ssh from spawn() to 'close'. */
  readonly latencies: number[];
  readonly wallMs: number;
  /** CPU of the client side, ms per task (see {@link Contender.cpuNote}). */
  readonly clientCpuMsPerTask: number;
  /** CPU of sshd and its connection processes, ms per task. Filled in by {@link measureRep}. */
  serverCpuMsPerTask: number;
  /** Peak RSS, KiB (see {@link Contender.rssNote}). */
  readonly peakRssKiB: number;
  /** leash only: peak RSS minus the RSS at the start of the repetition (after a GC). */
  readonly rssGrowthKiB: number | null;
  /** leash only: stage durations of every task, for the breakdown table. */
  readonly reports: TaskReport[];
  /** ssh only: what the child sampler saw. */
  readonly childPeak?: ChildRss;
}

export interface Contender {
  readonly name: string;
  readonly cpuNote: string;
  readonly rssNote: string;
  sequential(tasks: number): Promise<RepResult>;
  concurrent(tasks: number, concurrency: number): Promise<RepResult>;
}

// ---------------------------------------------------------------------------------------
// leash

export async function leashContender(sshd: Sshd): Promise<Contender> {
  const credentials = await keyCredentials(sshd.clientKey.path);
  const spec: TaskSpec = testSpec(sshd, 'true', credentials, { timeouts: { commandMs: TASK_TIMEOUT_MS } });
  return leashContenderWith({
    name: 'leash',
    spec,
    deps: { remote: new SshRemoteExec(), ledger, tasks: taskTable },
    afterRep: () => assertLedgerEmpty('leash repetition'),
  });
}

/**
 * A leash contender running `spec` (one object for every task) with `deps`: sequentially
 * through runTask, concurrently through fanOut. `afterRep` checks what must be left.
 */
export function leashContenderWith(o: {
  readonly name: string;
  readonly spec: TaskSpec;
  readonly deps: TaskRunnerDeps;
  readonly afterRep: () => Promise<void>;
  readonly cpuNote?: string;
  readonly rssNote?: string;
}): Contender {
  const { spec, deps } = o;
  const measure = async (tasks: number, body: (latencies: number[], reports: TaskReport[]) => Promise<void>): Promise<RepResult> => {
    const latencies: number[] = [];
    const reports: TaskReport[] = [];
    const rss0 = process.memoryUsage.rss();
    // Exact high-water mark when the kernel lets us reset it; a 10 ms sampler otherwise.
    const exact = resetPeakRss();
    const sampler = exact ? null : new PeakSampler(() => process.memoryUsage.rss()).start();
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    let peak: number;
    let wallMs: number;
    let cpu: NodeJS.CpuUsage;
    try {
      await body(latencies, reports);
    } finally {
      wallMs = performance.now() - t0;
      cpu = process.cpuUsage(cpu0);
      peak = sampler ? sampler.stop().peak : peakRssKiB() * KiB;
    }
    const bad = reports.filter((r) => r.status !== 'ok');
    if (bad.length > 0 || reports.length !== tasks) {
      const first = bad[0];
      throw new Error(
        `${o.name}: ${bad.length} of ${reports.length}/${tasks} tasks not ok` +
          (first ? ` (first: ${first.status} ${first.error?.code ?? ''} ${first.error?.message ?? ''})` : ''),
      );
    }
    await o.afterRep();
    return {
      latencies,
      wallMs,
      clientCpuMsPerTask: (cpu.user + cpu.system) / 1000 / tasks,
      serverCpuMsPerTask: Number.NaN,
      peakRssKiB: peak / KiB,
      rssGrowthKiB: (peak - rss0) / KiB,
      reports,
    };
  };

  return {
    name: o.name,
    cpuNote: o.cpuNote ?? 'the bench process itself (process.cpuUsage), RSS sampler included',
    rssNote:
      o.rssNote ??
      'RSS high-water mark of the bench process during the repetition (VmHWM of /proc/self/status after resetting it through /proc/self/clear_refs at the start; a process.memoryUsage.rss() sampler every 10 ms where that is not possible); growth over the RSS at the start of the repetition in brackets',
    sequential: (tasks) =>
      measure(tasks, async (latencies, reports) => {
        for (let i = 0; i < tasks; i++) {
          const start = performance.now();
          const report = await withTimeout(runTask(spec, deps, { signal: new AbortController().signal }), TASK_TIMEOUT_MS + 15_000, `${o.name} task`);
          latencies.push(performance.now() - start);
          reports.push(report);
        }
      }),
    concurrent: (tasks, concurrency) =>
      measure(tasks, async (latencies, reports) => {
        const cancel = new AbortController();
        const started = new Map<string, number>();
        const specs = Array.from({ length: tasks }, () => spec);
        await withTimeout(
          fanOut(specs, deps, {
            concurrency,
            signal: cancel.signal,
            onStart: (task) => started.set(task.id, performance.now()),
            onReport: (report) => {
              latencies.push(performance.now() - (started.get(report.id) ?? Number.NaN));
              started.delete(report.id);
              reports.push(report);
            },
          }),
          TASK_TIMEOUT_MS * 4,
          `${o.name} fan-out`,
          () => cancel.abort(cancelledError('queued', 'bench: fan-out over its deadline')),
        );
      }),
  };
}

/** Fails the bench loudly unless the ledger and the task table are empty (2 s grace). */
export async function assertLedgerEmpty(when: string): Promise<void> {
  await pollUntil(
    () => ledger.liveCount() === 0 && taskTable.size === 0,
    2000,
    `${when}: ledger and task table must be empty`,
    () =>
      [
        ...ledger.live().slice(0, 5).map((e) => `${e.kind}#${e.id} owner=${e.owner} ${e.site.top()}`),
        ...taskTable.live().slice(0, 5).map((t) => `task ${t.id} [${t.stage}]`),
      ].join('; ') + ` — ${ledger.liveCount()} resources, ${taskTable.size} tasks live`,
  );
}

// ---------------------------------------------------------------------------------------
// OpenSSH `ssh`, one process per task

/**
 * The OpenSSH argv: the harness's (no ssh_config, strict host key, BatchMode=yes,
 * IdentitiesOnly) plus the fair kex and no connection sharing.
 */
export function sshArgv(sshd: Sshd): string[] {
  const base = sshCommand(sshd);
  const destination = base[base.length - 1]!;
  if (!base.includes('BatchMode=yes')) throw new Error('sshCommand() no longer sets BatchMode=yes');
  return [
    ...base.slice(1, -1),
    '-o',
    'KexAlgorithms=curve25519-sha256',
    '-o',
    'ControlMaster=no',
    destination,
    'true',
  ];
}

export function sshContender(sshd: Sshd): Contender {
  return sshContenderWith({ name: 'ssh', args: sshArgv(sshd) });
}

/**
 * OpenSSH's `ssh` spawned per task with `args`. `extra`: a long-lived process the tasks
 * also use (a ControlMaster): its CPU during the repetition and its RSS at the end count too.
 */
export function sshContenderWith(o: {
  readonly name: string;
  readonly args: readonly string[];
  readonly extra?: { readonly cpuMs: () => number; readonly rssKiB: () => number; readonly note: string };
}): Contender {
  const args = [...o.args];
  const live = new Set<number>();
  let sampler: ChildRssSampler | null = null;

  const runSsh = (): Promise<number> =>
    new Promise((resolve, reject) => {
      const start = performance.now();
      const child = spawn('ssh', args, { stdio: ['ignore', 'pipe', 'pipe'], timeout: TASK_TIMEOUT_MS, killSignal: 'SIGKILL' });
      const pid = child.pid;
      if (pid !== undefined) {
        live.add(pid);
        sampler?.add(pid);
      }
      let stderr = '';
      let settled = false;
      child.stdout.resume();
      child.stderr.setEncoding('utf8');
      child.stderr.on('data', (chunk: string) => {
        if (stderr.length < 4000) stderr += chunk;
      });
      const gone = (): void => {
        if (pid === undefined) return;
        live.delete(pid);
        sampler?.remove(pid);
      };
      child.once('error', (err) => {
        gone();
        if (!settled) reject(err);
        settled = true;
      });
      child.once('close', (code, signal) => {
        const ms = performance.now() - start;
        gone();
        if (settled) return;
        settled = true;
        if (code === 0) resolve(ms);
        else reject(new Error(`${o.name}: ssh exited with ${code ?? signal ?? '?'}: ${stderr.trim().slice(-500)}`));
      });
    });

  const measure = async (tasks: number, body: (latencies: number[]) => Promise<void>): Promise<RepResult> => {
    const latencies: number[] = [];
    const rss = await ChildRssSampler.start('ssh');
    sampler = rss;
    const cpu0 = cpuMs('self').children + (o.extra?.cpuMs() ?? 0);
    const t0 = performance.now();
    let mem: ChildRss;
    let wallMs: number;
    let cpu: number;
    try {
      await body(latencies);
    } finally {
      wallMs = performance.now() - t0;
      cpu = cpuMs('self').children + (o.extra?.cpuMs() ?? 0) - cpu0;
      sampler = null;
      mem = await rss.stop();
    }
    if (live.size > 0) throw new Error(`${o.name}: ${live.size} processes still running after the repetition`);
    return {
      latencies,
      wallMs,
      clientCpuMsPerTask: cpu / tasks,
      serverCpuMsPerTask: Number.NaN,
      peakRssKiB: mem.peakSumKiB + (o.extra?.rssKiB() ?? 0),
      childPeak: mem,
      rssGrowthKiB: null,
      reports: [],
    };
  };

  const extraNote = o.extra ? `; ${o.extra.note}` : '';
  return {
    name: o.name,
    cpuNote: `the ssh processes (this process's reaped-children CPU from /proc/self/stat, 10 ms ticks); the node driver that spawns them is not counted${extraNote}`,
    rssNote: `peak of the sum of VmRSS over the ssh processes alive at one moment, sampled every 10 ms from /proc/PID/status by a worker thread (so fork() blocking the main thread does not skip samples); shared library pages count once per process, which overstates the sum against PSS${extraNote}`,
    sequential: (tasks) =>
      measure(tasks, async (latencies) => {
        for (let i = 0; i < tasks; i++) latencies.push(await runSsh());
      }),
    concurrent: (tasks, concurrency) =>
      measure(tasks, async (latencies) => {
        let next = 0;
        const worker = async (): Promise<void> => {
          while (next < tasks) {
            next++;
            latencies.push(await runSsh());
          }
        };
        await withTimeout(
          Promise.all(Array.from({ length: Math.min(concurrency, tasks) }, worker)),
          TASK_TIMEOUT_MS * 4,
          `${o.name} fan-out`,
        );
      }),
  };
}

/** Max RSS of one `ssh ... true` process by GNU time (`/usr/bin/time -f %M`), median of `runs`. */
export function sshMaxRssByGnuTime(sshd: Sshd, runs: number): number | null {
  const values: number[] = [];
  for (let i = 0; i < runs; i++) {
    const r = spawnSync('/usr/bin/time', ['-f', 'maxrss=%M', 'ssh', ...sshArgv(sshd)], { encoding: 'utf8', timeout: TASK_TIMEOUT_MS });
    const m = /maxrss=(\d+)/.exec(r.stderr ?? '');
    if (r.status !== 0 || !m) return null;
    values.push(Number(m[1]));
  }
  return median(values);
}

/** Median ms to spawn and reap `/bin/true` from this process: the driver overhead inside every ssh latency. */
export async function spawnOverheadMs(runs: number): Promise<number> {
  const values: number[] = [];
  for (let i = 0; i < runs; i++) {
    const start = performance.now();
    await withTimeout(
      new Promise<void>((resolve, reject) => {
        const child = spawn('/bin/true', [], { stdio: ['ignore', 'pipe', 'pipe'] });
        child.stdout.resume();
        child.stderr.resume();
        child.once('error', reject);
        child.once('close', () => resolve());
      }),
      10_000,
      'spawn /bin/true',
    );
    values.push(performance.now() - start);
  }
  return median(values);
}

/**
 * Runs one repetition and adds the server side's CPU: sshd's own and its connection
 * processes' (/proc/PID/stat of sshd and of every live descendant: own + reaped children).
 * Waits (bounded) until sshd has no more than `idleProcs` descendants (connections kept open
 * across repetitions: a pool, a ControlMaster) before and after, so one contender's teardown
 * never lands in another's numbers.
 */
export async function measureRep<R extends { readonly latencies: readonly number[]; serverCpuMsPerTask: number }>(
  sshd: { readonly pid: number },
  run: () => Promise<R>,
  idleProcs = 0,
): Promise<R> {
  await waitSshdIdle(sshd, idleProcs);
  const before = treeCpuMs(sshd.pid);
  const result = await run();
  await waitSshdIdle(sshd, idleProcs);
  const after = treeCpuMs(sshd.pid);
  result.serverCpuMsPerTask = (after - before) / result.latencies.length;
  return result;
}

/** CPU ms of a process tree: every live process's own CPU and that of its reaped children. */
export function treeCpuMs(root: number): number {
  let total = 0;
  for (const pid of [root, ...descendantPids(root)]) {
    const c = cpuMs(pid);
    if (Number.isFinite(c.own)) total += c.own + c.children;
  }
  return total;
}

export async function waitSshdIdle(sshd: { readonly pid: number }, idleProcs = 0): Promise<void> {
  await pollUntil(() => descendantPids(sshd.pid).length <= idleProcs, 10_000, `sshd connection processes to exit (${idleProcs} kept)`, () => `${descendantPids(sshd.pid).length} left`);
}
