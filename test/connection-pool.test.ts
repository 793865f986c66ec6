import assert from 'node:assert/strict';
import { after, afterEach, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { ledger } from '../src/lifecycle/ledger.ts';
import { taskTable } from '../src/lifecycle/task-table.ts';
import type { TaskReport } from '../src/lifecycle/task-report.ts';
import { fanOut } from '../src/service/fan-out.ts';
import { runTask } from '../src/service/task-runner.ts';
import type { TaskSpec } from '../src/service/task-spec.ts';
import { ConnectionPool, type PoolLimits } from '../src/ssh/connection-pool.ts';
import type { Credentials } from '../src/ssh/credentials.ts';
import { HostKeyVerifier } from '../src/ssh/host-key-verifier.ts';
import { SshRemoteExec } from '../src/ssh/remote-exec.ts';
import { assertNothingAlive } from './support/assert-clean.ts';
import { collector } from './support/gc.ts';
import { startHostileServer, TEST_PASSWORD, TEST_USER, type HostileServer } from './support/hostile-servers.ts';
import { keyCredentials, testSpec, type TestSpecOptions, type TestTarget } from './support/run-task.ts';
import { descendantPids, startSshd, type Sshd } from './support/sshd.ts';

/**
 * The connection pool against a real OpenSSH sshd (reuse, MaxSessions, idle eviction, a
 * server-side death) and an in-process SSH server for volume (10,000 tasks).
 */

let sshd: Sshd;
let limited: Sshd;
let creds: Credentials;
let pool: ConnectionPool | null = null;

before(async () => {
  [sshd, limited] = await Promise.all([startSshd(), startSshd({ extraConfig: ['MaxSessions 2'] })]);
  creds = await keyCredentials(sshd.clientKey.path);
});

after(async () => {
  await Promise.all([sshd.stop(), limited.stop()]);
});

afterEach(async () => {
  await pool?.close();
  pool = null;
  await assertNothingAlive();
});

function newPool(limits: Partial<PoolLimits> = {}): ConnectionPool {
  pool = new ConnectionPool(ledger, limits);
  return pool;
}

/** Specs that may share a connection: one host key verifier for all of them. */
function specsFor(target: TestTarget, credentials: Credentials, options: TestSpecOptions = {}): (command: string, extra?: Partial<TaskSpec>) => TaskSpec {
  const hostKeys = HostKeyVerifier.fromLines([target.knownHostsLine], 'strict');
  return (command, extra = {}) => ({ ...testSpec(target, command, credentials, { ...options, hostKeys }), ...extra });
}

function run(spec: TaskSpec, p: ConnectionPool | null, signal = new AbortController().signal): Promise<TaskReport> {
  return runTask(spec, { remote: new SshRemoteExec({ pool: p }), ledger, tasks: taskTable }, { signal });
}

/** TCP sockets leash has opened so far (the ledger's running total). */
function socketsOpened(): number {
  return ledger.stats().get('socket')?.opened ?? 0;
}

const stagesOf = (r: TaskReport): string[] => r.stages.map((s) => s.stage);

async function eventually(what: string, check: () => boolean, limitMs = 5000): Promise<void> {
  const until = Date.now() + limitMs;
  while (!check()) {
    if (Date.now() > until) assert.fail(`${what}: not within ${limitMs} ms`);
    await sleep(20);
  }
}

void describe('connection pool against OpenSSH', () => {
  void test('sequential tasks share one TCP connection; the reusing ones skip connecting, handshake and auth', async () => {
    const p = newPool();
    const spec = specsFor(sshd, creds);
    const before = socketsOpened();
    const reports: TaskReport[] = [];
    for (let i = 0; i < 5; i++) reports.push(await run(spec(`echo run ${i}`), p));
    for (const [i, r] of reports.entries()) {
      assert.equal(r.status, 'ok', JSON.stringify(r.error));
      assert.equal(r.stdout, `run ${i}\n`);
    }
    assert.equal(socketsOpened() - before, 1, 'one TCP connection for five tasks');
    assert.deepEqual(stagesOf(reports[0]!), ['queued', 'connecting', 'handshake', 'auth', 'channel', 'running', 'closing']);
    for (const r of reports.slice(1)) assert.deepEqual(stagesOf(r), ['queued', 'channel', 'running', 'closing']);
    assert.deepEqual(p.stats(), { idle: 1, busy: 0, connecting: 0 });
    const owners = ledger.live().filter((e) => e.kind === 'ssh-connection' || e.kind === 'socket').map((e) => e.owner);
    assert.deepEqual(owners, ['pool', 'pool'], 'while idle, the connection and its socket belong to the pool');
  });

  void test('reuse: false opens and closes a connection of its own', async () => {
    const p = newPool();
    const spec = specsFor(sshd, creds);
    const before = socketsOpened();
    for (let i = 0; i < 2; i++) assert.equal((await run(spec('true', { reuse: false }), p)).status, 'ok');
    assert.equal(socketsOpened() - before, 2);
    assert.deepEqual(p.stats(), { idle: 0, busy: 0, connecting: 0 });
  });

  void test('an sshd with MaxSessions 2 and 10 concurrent tasks: all succeed, over more connections', async () => {
    const p = newPool({ maxConnectionsPerKey: 8 });
    const limitedCreds = await keyCredentials(limited.clientKey.path);
    const spec = specsFor(limited, limitedCreds);
    const before = socketsOpened();
    const reports = await Promise.all(Array.from({ length: 10 }, (_, i) => run(spec(`sleep 0.3; echo ${i}`), p)));
    for (const [i, r] of reports.entries()) {
      assert.equal(r.status, 'ok', `task ${i}: ${JSON.stringify(r.error)}`);
      assert.equal(r.stdout, `${i}\n`);
    }
    const opened = socketsOpened() - before;
    assert.ok(opened >= 5 && opened <= 8, `10 tasks at 2 sessions per connection need 5 to 8 connections, opened ${opened}`);
  });

  void test('cancelling tasks that share a pooled connection, at any stage, leaves the other tasks on it alone', async () => {
    const p = newPool({ maxConnectionsPerKey: 1, maxChannelsPerConnection: 8 });
    const spec = specsFor(sshd, creds);
    const warm = await run(spec('true'), p);
    assert.equal(warm.status, 'ok', JSON.stringify(warm.error));
    const before = socketsOpened();
    const survivor = run(spec('sleep 3; echo survived'), p);
    await eventually('the survivor runs', () => taskTable.live().some((t) => t.stage === 'running'));
    // Cancels landing while the channel opens, while the command starts and while it runs.
    const cancelled = await Promise.all(
      [0, 2, 5, 10, 20, 40, 80, 300].map(async (delayMs) => {
        const cancel = new AbortController();
        const pending = run(spec('sleep 30'), p, cancel.signal);
        await sleep(delayMs);
        cancel.abort();
        return pending;
      }),
    );
    for (const r of cancelled) assert.equal(r.status, 'cancelled', JSON.stringify(r.error));
    const kept = await survivor;
    assert.equal(kept.status, 'ok', JSON.stringify(kept.error));
    assert.equal(kept.stdout, 'survived\n');
    assert.equal(socketsOpened(), before, 'every task used the one pooled connection');
  });

  void test('an unused connection closes after the idle TTL', async () => {
    const p = newPool({ idleTtlMs: 300 });
    assert.equal((await run(specsFor(sshd, creds)('true'), p)).status, 'ok');
    assert.equal(p.stats().idle, 1);
    await eventually('idle connection closed', () => p.stats().idle === 0 && ledger.liveCount('ssh-connection') === 0);
  });

  void test('the server side of a pooled connection is killed: the next task gets a fresh connection and succeeds', async () => {
    const p = newPool();
    const spec = specsFor(sshd, creds);
    assert.equal((await run(spec('true'), p)).status, 'ok');
    // sshd forks a process per connection; killing it drops the connection without a goodbye.
    const children = descendantPids(sshd.pid);
    assert.ok(children.length > 0, 'sshd has a process for the pooled connection');
    for (const pid of children) process.kill(pid, 'SIGKILL');
    const before = socketsOpened();
    const report = await run(spec('echo after'), p);
    assert.equal(report.status, 'ok', JSON.stringify(report.error));
    assert.equal(report.stdout, 'after\n');
    assert.equal(socketsOpened() - before, 1, 'a fresh connection');
  });
});

void describe('connection pool under volume and refusal', () => {
  let server: HostileServer | null = null;
  const password: Credentials = { keys: [], agentSocket: null, password: TEST_PASSWORD };

  afterEach(async () => {
    await server?.close();
    server = null;
  });

  void test('18,000 pooled tasks: every one ok, at most the connection limit opened, nothing retained per task, ledger empty afterwards', async (t) => {
    server = await startHostileServer('cooperative');
    const p = newPool({ maxConnectionsPerKey: 4, maxChannelsPerConnection: 8 });
    const target = { host: server.host, port: server.port, user: TEST_USER, knownHostsLine: server.knownHostsLine };
    const spec = specsFor(target, password);
    const remote = new SshRemoteExec({ pool: p });
    let ok = 0;
    let peak = 0;
    const runMany = (n: number): Promise<unknown> =>
      fanOut(
        Array.from({ length: n }, () => spec('echo ok')),
        { remote, ledger, tasks: taskTable },
        {
          concurrency: 32,
          signal: new AbortController().signal,
          onReport: (r) => {
            if (r.status === 'ok') ok++;
            const s = p.stats();
            peak = Math.max(peak, s.idle + s.busy + s.connecting);
          },
        },
      );
    const gc = collector();
    const heapAfterGc = (): number => {
      gc();
      gc();
      return process.memoryUsage().heapUsed;
    };
    // Runs on the same connections (they never sit idle long enough to close): anything a
    // task leaves on a connection (a reaction on its `closed` promise, a listener) adds up
    // from one run to the next — ~500 bytes a task when exec raced `connection.closed`.
    // The measured runs are alike, so what the newest run's leftovers hold (idle timers) is
    // the same at each measurement. JIT compilation also grows the heap now and then, by
    // up to ~1.5 MB between two runs on a loaded machine; a leak shows in both deltas, a
    // compilation burst rarely in both, so the smaller delta is the one judged.
    const measured = 5000;
    await runMany(3000);
    await runMany(measured);
    const first = heapAfterGc();
    await runMany(measured);
    const second = heapAfterGc();
    await runMany(measured);
    const third = heapAfterGc();
    const perTask = Math.min(second - first, third - second) / measured;
    assert.equal(ok, 3000 + 3 * measured);
    assert.ok(peak <= 4, `pool within its limit: at most ${peak} connections`);
    assert.ok(server.acceptedConnections() <= 4, `the server accepted ${server.acceptedConnections()} connections`);
    t.diagnostic(`heap retained per task: ${Math.round((second - first) / measured)} and ${Math.round((third - second) / measured)} bytes`);
    assert.ok(perTask < 250, `${Math.round(perTask)} bytes of heap retained per task on long-lived pooled connections`);
    await p.close();
    await eventually('server side closed', () => server!.openConnections() === 0);
  });

  void test('retries: a failure before the command started is tried again on a fresh connection, as often as allowed', async () => {
    server = await startHostileServer('refuse-channel');
    const p = newPool();
    const target = { host: server.host, port: server.port, user: TEST_USER, knownHostsLine: server.knownHostsLine };
    const spec = specsFor(target, password);
    const before = socketsOpened();
    const report = await run(spec('true', { retries: 2 }), p);
    assert.equal(report.error?.code, 'channel-open-failed');
    assert.equal(socketsOpened() - before, 3, 'the first attempt and two retries, each on a fresh connection');
    const once = socketsOpened();
    assert.equal((await run(spec('true'), p)).error?.code, 'channel-open-failed');
    assert.equal(socketsOpened() - once, 1, 'no retries unless asked');
  });

  void test('a task waiting for a slot on a full pool is cancelled at once, and one past its connect deadline fails naming the pool', async () => {
    server = await startHostileServer('cooperative');
    const p = newPool({ maxConnectionsPerKey: 1, maxChannelsPerConnection: 1 });
    const target = { host: server.host, port: server.port, user: TEST_USER, knownHostsLine: server.knownHostsLine };
    const spec = specsFor(target, password);
    const holder = run(spec('sleep 2'), p);
    await eventually('first task running', () => taskTable.live().some((t) => t.stage === 'running'));
    const cancel = new AbortController();
    const waiting = run(spec('echo never'), p, cancel.signal);
    await eventually('second task waits for a slot', () => taskTable.live().some((t) => t.waiting === 'pool-slot'));
    cancel.abort();
    assert.equal((await waiting).status, 'cancelled');
    const late = await run(spec('echo late', { timeouts: { ...spec('x').timeouts, connectMs: 300 } }), p);
    assert.equal(late.error?.code, 'connect-timeout');
    assert.match(late.error?.message ?? '', /every pooled connection to leash@127\.0\.0\.1:\d+ stayed busy \(1 connections × 1 channels\) for 300 ms/);
    assert.equal((await holder).status, 'ok');
  });
});
