// Benchmark 2: memory per stuck connection. N leash tasks in flight against a server that
// accepts TCP and never speaks (the incident of DESIGN.md), with a handshake deadline far
// beyond the bench; measure RSS and heap once every task is in stage `handshake`, then
// cancel them all and prove the ledger, the task table and the file descriptors return.
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { createInterface, type Interface } from 'node:readline';
import { cancelledError } from '../../src/lifecycle/errors.ts';
import { ledger, type ResourceKind } from '../../src/lifecycle/ledger.ts';
import { taskTable } from '../../src/lifecycle/task-table.ts';
import { fanOut } from '../../src/service/fan-out.ts';
import type { TaskReport } from '../../src/lifecycle/task-report.ts';
import { SshRemoteExec } from '../../src/ssh/remote-exec.ts';
import { collector } from '../../test/support/gc.ts';
import { TEST_USER } from '../../test/support/hostile-servers.ts';
import { testSpec } from '../../test/support/run-task.ts';
import { onProcessExit, stopChildProcess, waitForExit } from '../../test/support/sshd.ts';
import { assertLedgerEmpty } from './fresh.ts';
import { KiB, openFds, pollUntil, procMemory, withTimeout } from './util.ts';

/** Far beyond the bench: the tasks must still be in handshake when they are measured and cancelled. */
const HANDSHAKE_MS = 600_000;
const REACH_HANDSHAKE_MS = 120_000;
const CANCEL_MS = 30_000;

/** The never-speaking server, in a child process of its own. */
export interface SilentServer {
  readonly port: number;
  readonly knownHostsLine: string;
  readonly pid: number;
  stats(): Promise<{ open: number; accepted: number }>;
  stop(): Promise<void>;
}

export async function startSilentServer(): Promise<SilentServer> {
  const repo = fileURLToPath(new URL('../../', import.meta.url));
  const script = fileURLToPath(new URL('../silent-server.ts', import.meta.url));
  const child: ChildProcess = spawn(process.execPath, ['--import', 'tsx', script], {
    cwd: repo,
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const removeExitHook = onProcessExit(() => child.kill('SIGKILL'));
  const stop = async (): Promise<void> => {
    try {
      child.stdin?.end();
      if (!(await waitForExit(child, 5000))) await stopChildProcess(child);
    } finally {
      removeExitHook();
    }
  };
  try {
    if (!child.stdout || !child.stdin || child.pid === undefined) throw new Error('silent server: no stdio');
    const lines: Interface = createInterface({ input: child.stdout });
    const pending: Array<(line: string) => void> = [];
    lines.on('line', (line) => pending.shift()?.(line));
    const nextLine = (what: string): Promise<string> =>
      withTimeout(
        new Promise<string>((resolve) => pending.push(resolve)),
        20_000,
        `silent server: ${what}`,
      );
    const hello = JSON.parse(await nextLine('listening')) as { port: number; knownHostsLine: string };
    const stdin = child.stdin;
    return {
      port: hello.port,
      knownHostsLine: hello.knownHostsLine,
      pid: child.pid,
      stats: async () => {
        const reply = nextLine('stats');
        stdin.write('stats\n');
        return JSON.parse(await reply) as { open: number; accepted: number };
      },
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

export interface StuckResult {
  readonly count: number;
  readonly warmupCount: number;
  readonly reachMs: number;
  readonly baseline: Snapshot;
  readonly loaded: Snapshot;
  readonly after: Snapshot;
  /** Live ledger entries per kind while every task was stuck. */
  readonly ledgerByKind: Record<string, number>;
  readonly serverOpenWhileStuck: number;
  readonly serverOpenAfter: number;
  readonly cancelMs: number;
  readonly statuses: Record<string, number>;
  readonly silentServerRssKiB: number | null;
}

export interface Snapshot {
  readonly rss: number;
  readonly heapUsed: number;
  readonly external: number;
  readonly fds: number;
  readonly ledgerLive: number;
  readonly tasksLive: number;
}

function snapshot(): Snapshot {
  const m = process.memoryUsage();
  return { rss: m.rss, heapUsed: m.heapUsed, external: m.external, fds: openFds(), ledgerLive: ledger.liveCount(), tasksLive: taskTable.size };
}

const KINDS: readonly ResourceKind[] = ['socket', 'ssh-connection', 'channel', 'timer', 'agent-socket', 'child-process', 'server'];

/** One flood: `count` tasks to handshake, `atHandshake()` runs, then all are cancelled. */
async function flood(
  server: SilentServer,
  count: number,
  atHandshake: () => Promise<void>,
): Promise<{ reachMs: number; cancelMs: number; reports: TaskReport[] }> {
  const target = { host: '127.0.0.1', port: server.port, user: TEST_USER, knownHostsLine: server.knownHostsLine };
  const spec = testSpec(target, 'true', { keys: [], agentSocket: null, password: 'unused' }, { timeouts: { handshakeMs: HANDSHAKE_MS } });
  const cancel = new AbortController();
  const reports: TaskReport[] = [];
  const done = fanOut(Array.from({ length: count }, () => spec), { remote: new SshRemoteExec(), ledger, tasks: taskTable }, {
    concurrency: count,
    signal: cancel.signal,
    onReport: (r) => reports.push(r),
  });
  let reachMs: number;
  let cancelMs: number;
  try {
    const inHandshake = (): number => taskTable.live().filter((t) => t.stage === 'handshake').length;
    reachMs = await pollUntil(() => inHandshake() === count, REACH_HANDSHAKE_MS, `${count} tasks in stage handshake`, () => {
      const stages = new Map<string, number>();
      for (const t of taskTable.live()) stages.set(t.stage, (stages.get(t.stage) ?? 0) + 1);
      return `${[...stages].map(([s, n]) => `${s}=${n}`).join(' ')}, ${reports.length} finished`;
    }, 50);
    if (reports.length > 0) throw new Error(`${reports.length} tasks ended before the cancel (first: ${reports[0]?.error?.code ?? reports[0]?.status})`);
    await atHandshake();
  } finally {
    const start = performance.now();
    cancel.abort(cancelledError('handshake', 'bench: cancel every stuck task'));
    await withTimeout(done, CANCEL_MS, `cancelling ${count} stuck tasks`);
    cancelMs = performance.now() - start;
  }
  return { reachMs, cancelMs, reports };
}

export async function stuckConnections(server: SilentServer, count: number, warmupCount: number): Promise<StuckResult> {
  const gc = collector();
  const settle = (): void => {
    gc();
    gc();
  };

  // Warm-up: the same code paths once, so compilation and caches are not counted.
  await flood(server, warmupCount, async () => {});
  await assertLedgerEmpty('stuck warm-up');
  await waitServerDrained(server);

  settle();
  const baseline = snapshot();
  let loaded: Snapshot | undefined;
  const ledgerByKind: Record<string, number> = {};
  let serverOpenWhileStuck = 0;
  let silentServerRssKiB: number | null = null;

  const { reachMs, cancelMs, reports } = await flood(server, count, async () => {
    settle();
    loaded = snapshot();
    for (const kind of KINDS) {
      const n = ledger.liveCount(kind);
      if (n > 0) ledgerByKind[kind] = n;
    }
    serverOpenWhileStuck = (await server.stats()).open;
    silentServerRssKiB = procMemory(server.pid)?.rssKiB ?? null;
  });

  const statuses: Record<string, number> = {};
  for (const r of reports) {
    const key = r.error ? `${r.status}/${r.error.code}@${r.error.stage}` : r.status;
    statuses[key] = (statuses[key] ?? 0) + 1;
  }
  // The promise of the product: nothing left behind. Fail loudly otherwise.
  await assertLedgerEmpty(`after cancelling ${count} stuck tasks`);
  if (reports.length !== count || (statuses['cancelled/cancelled@handshake'] ?? 0) !== count) {
    throw new Error(`after the cancel expected ${count} × cancelled/cancelled@handshake, got ${JSON.stringify(statuses)}`);
  }
  const serverOpenAfter = await waitServerDrained(server);
  if (serverOpenAfter > 0) throw new Error(`after the cancel the server still sees ${serverOpenAfter} open connections`);
  settle();
  const after = snapshot();
  if (loaded === undefined) throw new Error('stuck: no measurement taken');
  return {
    count,
    warmupCount,
    reachMs,
    baseline,
    loaded,
    after,
    ledgerByKind,
    serverOpenWhileStuck,
    serverOpenAfter,
    cancelMs,
    statuses,
    silentServerRssKiB,
  };
}

/** Waits (bounded) until the server has seen every connection close; returns what is still open. */
async function waitServerDrained(server: SilentServer): Promise<number> {
  const until = Date.now() + 10_000;
  let open = (await server.stats()).open;
  while (open > 0 && Date.now() < until) {
    await new Promise((r) => setTimeout(r, 50));
    open = (await server.stats()).open;
  }
  return open;
}

export function perConnectionKiB(r: StuckResult, key: 'rss' | 'heapUsed' | 'external'): number {
  return (r.loaded[key] - r.baseline[key]) / r.count / KiB;
}
