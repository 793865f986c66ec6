// What the soak asks of the service: kinds of task, each a request, a way of following it
// through the API and what its outcome must be. Healthy targets must give exactly the
// right answer; each hostile server its own error code; the faulted peer any clean
// verdict (which one depends on the fault in effect), never `internal` or `protocol-error`.
import type { HostileBehaviour } from '../support/hostile-servers.ts';

/** Where a kind of task goes, and with which configured identity. */
export interface Endpoint {
  readonly host: string;
  readonly port: number;
  readonly identity: string;
}

export interface SoakTargets {
  /** A real OpenSSH sshd on loopback. */
  readonly loop: Endpoint;
  /** One in-process hostile server per behaviour (test/support/hostile-servers.ts). */
  readonly hostile: ReadonlyMap<HostileBehaviour, Endpoint>;
  /** The chaos peer that suffers the rotating network faults. */
  readonly faulty: Endpoint;
  /** A chaos peer behind 100 ms of latency each way and 2% packet loss. */
  readonly far: Endpoint;
}

/**
 * How the driver follows a task: `wait` (POST with wait, then poll if still running),
 * `events` (POST, then read the server-sent events to the result), `cancel` (POST, cancel
 * shortly after, then poll), `batch` (POST /v1/batches, poll the batch, then list its tasks).
 */
export type Follow = 'wait' | 'events' | 'cancel' | 'batch';

export interface TaskKind {
  readonly name: string;
  readonly weight: number;
  readonly follow: Follow;
  /** The request body; `n` numbers the task within the run. */
  body(targets: SoakTargets, n: number): Record<string, unknown>;
  /** Why a finished task (the API's JSON) is not what this kind expects, or null. */
  check(task: any, n: number): string | null;
}

/** Codes a task to the faulted peer may end with: each is the right verdict for some fault. */
const FAULT_CODES: ReadonlySet<string> = new Set([
  'connect-timeout',
  'connect-refused',
  'handshake-timeout',
  'auth-timeout',
  'channel-open-failed',
  'command-timeout',
  'idle-timeout',
  'connection-lost',
]);

/** What each hostile server must produce with the timeouts below. */
const HOSTILE_CODES: ReadonlyArray<readonly [HostileBehaviour, string, number]> = [
  ['silent-tcp', 'handshake-timeout', 1],
  ['banner-then-silent', 'handshake-timeout', 1],
  ['stall-mid-kex', 'handshake-timeout', 1],
  ['never-answers-auth', 'auth-timeout', 1],
  ['exec-never-ends', 'command-timeout', 1],
  // Costly: 1.5 s of flood at loopback speed, both ends on this 2-core machine.
  ['endless-output', 'command-timeout', 0.5],
  ['drip-feed', 'command-timeout', 1],
  ['close-mid-stream', 'connection-lost', 1],
  ['refuse-channel', 'channel-open-failed', 1],
  ['silent-after-auth', 'connection-lost', 1],
];

export const HOSTILE_TIMEOUTS = { handshakeMs: 1000, authMs: 1000, commandMs: 1500 } as const;
/** Short deadlines before the command for the faulted peer: each fault's verdict comes within its slot. */
export const FAULTY_TIMEOUTS = { connectMs: 2000, handshakeMs: 3000, authMs: 3000, channelMs: 5000 } as const;

const SEQ_20000 = seq(20_000);
const SEQ_5000 = seq(5000);

function seq(n: number): string {
  let s = '';
  for (let i = 1; i <= n; i++) s += `${i}\n`;
  return s;
}

function target(e: Endpoint): Record<string, unknown> {
  return { host: e.host, port: e.port, identity: e.identity };
}

function describe(task: any): string {
  const r = task?.result;
  return JSON.stringify({
    status: task?.status,
    error: task?.error,
    exitCode: r?.exitCode,
    stdout: typeof r?.stdout === 'string' ? r.stdout.slice(0, 80) : r?.stdout,
    stderr: typeof r?.stderr === 'string' ? r.stderr.slice(0, 200) : r?.stderr,
  });
}

function expectOk(stdout: string): (task: any) => string | null {
  return (task) => (task?.status === 'ok' && task.result?.stdout === stdout ? null : `expected ok with ${stdout.length} bytes of stdout: ${describe(task)}`);
}

function expectCode(code: string): (task: any) => string | null {
  return (task) => (task?.status === 'error' && task.error?.code === code ? null : `expected error ${code}: ${describe(task)}`);
}

function expectCleanVerdict(stdout: string): (task: any) => string | null {
  return (task) => {
    if (task?.status === 'ok') return task.result?.stdout === stdout ? null : `ok but wrong output: ${describe(task)}`;
    if (task?.status === 'error' && FAULT_CODES.has(task.error?.code)) return null;
    return `expected ok or a network verdict: ${describe(task)}`;
  };
}

export const TASK_KINDS: readonly TaskKind[] = [
  {
    name: 'loop-echo',
    weight: 20,
    follow: 'wait',
    body: (t, n) => ({ ...target(t.loop), command: `echo soak-${n}` }),
    check: (task, n) => expectOk(`soak-${n}\n`)(task),
  },
  {
    name: 'loop-echo-fresh',
    weight: 4,
    follow: 'wait',
    body: (t, n) => ({ ...target(t.loop), command: `echo fresh-${n}`, reuse: false }),
    check: (task, n) => expectOk(`fresh-${n}\n`)(task),
  },
  {
    name: 'loop-seq',
    weight: 3,
    follow: 'wait',
    body: (t) => ({ ...target(t.loop), command: 'seq 1 20000' }),
    check: expectOk(SEQ_20000),
  },
  {
    name: 'loop-stdin',
    weight: 3,
    follow: 'wait',
    body: (t, n) => ({ ...target(t.loop), command: 'cat', stdin: `stdin-${n}` }),
    check: (task, n) => expectOk(`stdin-${n}`)(task),
  },
  {
    name: 'loop-exit-3',
    weight: 3,
    follow: 'wait',
    body: (t) => ({ ...target(t.loop), command: 'echo bye; exit 3' }),
    check: (task) => (task?.status === 'nonzero-exit' && task.result?.exitCode === 3 && task.result?.stdout === 'bye\n' ? null : `expected exit 3: ${describe(task)}`),
  },
  {
    name: 'loop-command-timeout',
    weight: 2,
    follow: 'wait',
    body: (t) => ({ ...target(t.loop), command: 'sleep 30', timeouts: { commandMs: 1000 } }),
    check: expectCode('command-timeout'),
  },
  {
    name: 'loop-cancel',
    weight: 2,
    follow: 'cancel',
    body: (t) => ({ ...target(t.loop), command: 'sleep 30' }),
    check: (task) => (task?.status === 'cancelled' ? null : `expected cancelled: ${describe(task)}`),
  },
  {
    name: 'loop-events',
    weight: 3,
    follow: 'events',
    body: (t) => ({ ...target(t.loop), command: 'echo a; sleep 0.2; echo b' }),
    check: expectOk('a\nb\n'),
  },
  {
    name: 'batch',
    weight: 1,
    follow: 'batch',
    body: (t) => {
      const hostile = (b: HostileBehaviour): string => {
        const e = t.hostile.get(b);
        if (!e) throw new Error(`no ${b} server`);
        return `${e.host}:${e.port}`;
      };
      return {
        hosts: [`${t.loop.host}:${t.loop.port}`, hostile('refuse-channel'), hostile('close-mid-stream')],
        identity: t.loop.identity,
        command: 'echo batch',
        timeouts: HOSTILE_TIMEOUTS,
      };
    },
    check: (batch) => {
      const byStatus = batch?.counts?.byStatus ?? {};
      const byCode = batch?.counts?.byCode ?? {};
      const ok = batch?.status === 'finished' && byStatus.ok === 1 && byCode['channel-open-failed'] === 1 && byCode['connection-lost'] === 1;
      return ok ? null : `expected a finished batch with ok 1, channel-open-failed 1, connection-lost 1: ${JSON.stringify({ status: batch?.status, counts: batch?.counts })}`;
    },
  },
  ...HOSTILE_CODES.map(
    ([behaviour, code, weight]): TaskKind => ({
      name: `hostile-${behaviour}`,
      weight,
      follow: 'wait',
      body: (t) => {
        const e = t.hostile.get(behaviour);
        if (!e) throw new Error(`no ${behaviour} server`);
        return { ...target(e), command: 'echo hostile', timeouts: HOSTILE_TIMEOUTS, maxOutputBytes: 64 * 1024 };
      },
      check: expectCode(code),
    }),
  ),
  {
    name: 'faulty-echo',
    weight: 6,
    follow: 'wait',
    body: (t, n) => ({ ...target(t.faulty), command: `echo faulty-${n}`, timeouts: FAULTY_TIMEOUTS }),
    check: (task, n) => expectCleanVerdict(`faulty-${n}\n`)(task),
  },
  {
    name: 'faulty-sleep',
    weight: 3,
    follow: 'wait',
    body: (t) => ({ ...target(t.faulty), command: 'sleep 2; echo done', timeouts: FAULTY_TIMEOUTS }),
    check: expectCleanVerdict('done\n'),
  },
  {
    name: 'faulty-seq',
    weight: 1,
    follow: 'events',
    body: (t) => ({ ...target(t.faulty), command: 'seq 1 20000', timeouts: FAULTY_TIMEOUTS }),
    check: expectCleanVerdict(SEQ_20000),
  },
  {
    name: 'far-echo',
    weight: 4,
    follow: 'wait',
    body: (t, n) => ({ ...target(t.far), command: `echo far-${n}` }),
    check: (task, n) => expectOk(`far-${n}\n`)(task),
  },
  {
    name: 'far-seq',
    weight: 1,
    follow: 'wait',
    body: (t) => ({ ...target(t.far), command: 'seq 1 5000' }),
    check: expectOk(SEQ_5000),
  },
];

/** Picks kinds by weight with the given uniform random source. */
export function kindPicker(random: () => number, kinds: readonly TaskKind[] = TASK_KINDS): () => TaskKind {
  const total = kinds.reduce((sum, k) => sum + k.weight, 0);
  return () => {
    let x = random() * total;
    for (const kind of kinds) {
      x -= kind.weight;
      if (x < 0) return kind;
    }
    return kinds[kinds.length - 1]!;
  };
}
