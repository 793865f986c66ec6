// The batch API over a real socket, against the real sshd of the test harness: hosts and
// patterns, counts and output groups, the error budget (count and percentage, `finish` and
// `cancel`), batch cancel, fair queueing between a batch and a single task, 429 on a full
// queue, bad input and token scopes.
//
// Two sshds each listen on their own port and on EXTRA_PORTS more (extra `Port` lines; sshd
// takes at most 16 listen sockets), so that a batch has many distinct targets and a command
// can tell them apart by the server port (`${SSH_CONNECTION##* }`). Both accept the first
// one's client key (identity `sshd`); every port is trusted under the names 127.0.0.1 and
// localhost.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { appendFile, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { after, afterEach, before, describe, test } from 'node:test';
import { assertNothingAlive } from './support/assert-clean.ts';
import { ADMIN_TOKEN, READ_TOKEN, startTestService, type TestService } from './support/service.ts';
import { startSshd, type Sshd } from './support/sshd.ts';

const EXTRA_PORTS = 15;
const TENANT_10_TOKEN = 'test-tenant10-token-0123456789abcdef';
const TENANT_LOCAL_TOKEN = 'test-tenantlocal-token-0123456789abcdef';

let sshd: Sshd;
let sshd2: Sshd;
/** Every port of both sshds (32); ports[0] is the first harness's own port. */
let ports: number[];
let knownHostsPath: string;

/** `n` distinct ports that were free a moment ago (all held at once, then released). */
async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise<net.Server>((resolve, reject) => {
          const server = net.createServer();
          server.once('error', reject);
          server.listen(0, '127.0.0.1', () => resolve(server));
        }),
    ),
  );
  const found = servers.map((s) => (s.address() as net.AddressInfo).port);
  await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  return found;
}

/** Whether something accepts TCP on 127.0.0.1:port. */
function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    const done = (ok: boolean): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), 5000);
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

/** Ports on 127.0.0.1 with nothing listening: connecting is refused. */
async function closedPorts(n: number): Promise<number[]> {
  const found = await freePorts(n);
  for (const p of found) assert.equal(await accepts(p), false, `port ${p} should be closed`);
  return found;
}

/** An sshd listening on EXTRA_PORTS more ports; returns it with its ports, its own first. */
async function startMultiPortSshd(): Promise<{ sshd: Sshd; ports: number[] }> {
  const extra = await freePorts(EXTRA_PORTS);
  const started = await startSshd({ extraConfig: extra.map((p) => `Port ${p}`) });
  for (const p of extra) assert.ok(await accepts(p), `sshd should listen on its extra port ${p} too; log:\n${await started.logTail()}`);
  return { sshd: started, ports: [started.port, ...extra] };
}

before(async () => {
  const a = await startMultiPortSshd();
  sshd = a.sshd;
  const b = await startMultiPortSshd();
  sshd2 = b.sshd;
  await appendFile(sshd2.authorizedKeysPath, `${sshd.clientKey.publicKey}\n`);
  ports = [...a.ports, ...b.ports];
  knownHostsPath = path.join(sshd.dir, 'known_hosts_all_ports');
  const lines = [...a.ports.map((p) => [p, sshd.hostKeyLine] as const), ...b.ports.map((p) => [p, sshd2.hostKeyLine] as const)].flatMap(([p, key]) => [
    `[127.0.0.1]:${p} ${key}`,
    `[localhost]:${p} ${key}`,
  ]);
  await writeFile(knownHostsPath, `${lines.join('\n')}\n`);
});
after(async () => {
  await sshd2?.stop();
  await sshd?.stop();
  await assertNothingAlive();
});

/** A test service trusting every port of the sshd, under both names. */
function startService(extra: Record<string, unknown> = {}): Promise<TestService> {
  return startTestService(sshd, { extra: { hostKeys: { policy: 'strict', readFiles: [knownHostsPath] }, ...extra } });
}

/** Waits until no task of the service is queued or running (tests must not overlap). */
async function settle(service: TestService | undefined): Promise<void> {
  if (!service) return;
  const until = Date.now() + 20_000;
  for (;;) {
    const running = (await service.request('GET', '/v1/tasks?status=running')).body.tasks.length;
    const queued = (await service.request('GET', '/v1/tasks?status=queued')).body.tasks.length;
    if (running + queued === 0 || Date.now() > until) return;
    await new Promise((r) => setTimeout(r, 50));
  }
}

function remoteCount(marker: string): number {
  try {
    return Number(execFileSync('pgrep', ['-c', '-f', `^sleep ${marker.replaceAll('.', '\\.')}`], { encoding: 'utf8' }).trim());
  } catch {
    return 0; // pgrep exits 1 when nothing matches
  }
}

/** A `sleep` argument no other test uses: `<seconds>.<unique digits>`. */
let markerSeq = 0;
function marker(seconds: number): string {
  markerSeq++;
  return `${seconds}.${process.pid}${markerSeq}${Date.now() % 1000}`;
}

async function waitUntil(what: string, check: () => boolean | Promise<boolean>, ms = 20_000): Promise<void> {
  const until = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Polls a batch until it is no longer `running` (a hang detector, not a speed check). */
async function waitBatch(service: TestService, id: string, ms = 60_000): Promise<any> {
  let batch: any;
  await waitUntil(
    `batch ${id} to end`,
    async () => {
      const r = await service.request('GET', `/v1/batches/${id}`);
      assert.equal(r.status, 200, JSON.stringify(r.body));
      batch = r.body;
      return batch.status !== 'running';
    },
    ms,
  );
  return batch;
}

async function batchTasks(service: TestService, id: string): Promise<any[]> {
  const r = await service.request('GET', `/v1/tasks?batch=${id}&limit=1000`);
  assert.equal(r.status, 200);
  return r.body.tasks;
}

async function taskCount(service: TestService): Promise<number> {
  return (await service.request('GET', '/v1/tasks?limit=1000')).body.tasks.length;
}

const stageStart = (task: any, stage: string): number => {
  const found = task.stages.find((s: { stage: string }) => s.stage === stage);
  assert.ok(found, `task ${task.id} (${task.host}:${task.port}) has no stage ${stage}: ${JSON.stringify(task.stages)}`);
  return Date.parse(found.startedAt);
};

const byPort = (tasks: any[], port: number): any => {
  const found = tasks.find((t) => t.port === port);
  assert.ok(found, `no task on port ${port}`);
  return found;
};

/**
 * A command that runs `sleep SLEEPER` (then prints `done`) on the port `sleeperPort` and,
 * on every other port, waits until that sleep runs and then fails with exit 3: the failure
 * comes while the sleeper is surely running. Bounded (exit 4 after ~20 s).
 */
function sleeperAndFailer(sleeperPort: number, sleeper: string): string {
  const pattern = `^sleep ${sleeper.replaceAll('.', '\\.')}`;
  return (
    `if [ "\${SSH_CONNECTION##* }" = "${sleeperPort}" ]; then sleep ${sleeper}; echo done; ` +
    `else i=0; while ! pgrep -f '${pattern}' >/dev/null; do i=$((i+1)); [ $i -gt 400 ] && exit 4; sleep 0.05; done; exit 3; fi`
  );
}

describe('batches', () => {
  let service: TestService;
  before(async () => {
    service = await startService({
      limits: { maxBatchHosts: 40 },
      tokens: [
        { name: 'admin', token: ADMIN_TOKEN, scopes: ['admin'] },
        { name: 'reader', token: READ_TOKEN, scopes: ['read'] },
        { name: 'tenant10', token: TENANT_10_TOKEN, scopes: ['run'], hosts: ['10.*'] },
        { name: 'tenantlocal', token: TENANT_LOCAL_TOKEN, scopes: ['run'], hosts: ['localhost'] },
      ],
    });
  });
  after(async () => {
    await service?.stop();
  });
  afterEach(() => settle(service));

  describe('hosts, patterns, counts and groups', () => {
    test('a hosts list: 202, then finished with counts by status and hosts grouped by identical output, largest group first', async () => {
      const [p0, p1] = [ports[0]!, ports[16]!];
      const r = await service.request('POST', '/v1/batches', {
        hosts: [`127.0.0.1:${p0}`, `localhost:${p0}`, `127.0.0.1:${p1}`],
        command: 'echo "port=${SSH_CONNECTION##* }"',
      });
      assert.equal(r.status, 202, JSON.stringify(r.body));
      assert.equal(r.body.status, 'running');
      assert.equal(r.body.hostCount, 3);
      assert.equal(r.body.submittedBy, 'admin');
      assert.equal(r.body.concurrency, 32);
      assert.equal(r.body.maxErrors, '100%');
      assert.equal(r.body.onBudgetExhausted, 'finish');
      assert.equal(r.body.finishedAt, null);

      const batch = await waitBatch(service, r.body.id);
      assert.equal(batch.status, 'finished');
      assert.notEqual(batch.finishedAt, null);
      assert.deepEqual(batch.counts, { byStatus: { ok: 3 }, byCode: {} });
      const user = sshd.user;
      assert.deepEqual(batch.groups, [
        {
          hosts: [
            { host: '127.0.0.1', port: p0, user },
            { host: 'localhost', port: p0, user },
          ],
          count: 2,
          status: 'ok',
          exitCode: 0,
          signal: null,
          stdout: `port=${p0}\n`,
          stderr: '',
          error: null,
        },
        { hosts: [{ host: '127.0.0.1', port: p1, user }], count: 1, status: 'ok', exitCode: 0, signal: null, stdout: `port=${p1}\n`, stderr: '', error: null },
      ]);

      const tasks = await batchTasks(service, r.body.id);
      assert.equal(tasks.length, 3);
      assert.ok(tasks.every((t) => t.batchId === r.body.id && t.status === 'ok' && t.submittedBy === 'admin'));
    });

    test('a pattern with a range and the batch port as default: refused hosts and ok hosts in their own groups', async () => {
      // 127.0.0.2-4 are loopback too, but the sshd listens on 127.0.0.1 only: refused.
      const p0 = ports[0]!;
      const r = await service.request('POST', '/v1/batches', { pattern: '127.0.0.[1-4],localhost', port: p0, command: 'echo same' });
      assert.equal(r.status, 202, JSON.stringify(r.body));
      assert.equal(r.body.hostCount, 5);
      const batch = await waitBatch(service, r.body.id);
      assert.equal(batch.status, 'finished', 'errors within the default budget (100%) finish the batch');
      assert.deepEqual(batch.counts, { byStatus: { ok: 2, error: 3 }, byCode: { 'connect-refused': 3 } });
      assert.equal(batch.groups.length, 2);
      const [refused, same] = batch.groups;
      assert.equal(refused.count, 3);
      assert.equal(refused.status, 'error');
      assert.deepEqual(refused.error, { code: 'connect-refused', stage: 'connecting' });
      assert.deepEqual(
        refused.hosts.map((h: { host: string; port: number }) => `${h.host}:${h.port}`),
        ['127.0.0.2', '127.0.0.3', '127.0.0.4'].map((h) => `${h}:${p0}`),
      );
      assert.equal(same.count, 2);
      assert.equal(same.status, 'ok');
      assert.equal(same.stdout, 'same\n');
      assert.deepEqual(
        same.hosts.map((h: { host: string }) => h.host),
        ['127.0.0.1', 'localhost'],
      );
    });

    test('duplicate entries in a hosts list run once (same user, host ignoring case, port — as within one pattern)', async () => {
      const p0 = ports[0]!;
      const inPattern = await service.request('POST', '/v1/batches', { pattern: `localhost:${p0},LOCALHOST:${p0}`, command: 'true' });
      assert.equal(inPattern.status, 202, JSON.stringify(inPattern.body));
      assert.equal(inPattern.body.hostCount, 1);
      await waitBatch(service, inPattern.body.id);

      const r = await service.request('POST', '/v1/batches', {
        hosts: [`127.0.0.1:${p0}`, `127.0.0.1:${p0}`, `localhost:${p0}`, `LOCALHOST:${p0}`],
        command: 'true',
      });
      assert.equal(r.status, 202, JSON.stringify(r.body));
      const batch = await waitBatch(service, r.body.id);
      assert.equal(batch.hostCount, 2, `hosts run: ${JSON.stringify(batch.groups.flatMap((g: any) => g.hosts))}`);
    });

    test('an unknown batch is 404 for GET and cancel', async () => {
      for (const [method, route] of [
        ['GET', '/v1/batches/00000000-0000-0000-0000-000000000000'],
        ['POST', '/v1/batches/00000000-0000-0000-0000-000000000000/cancel'],
      ] as const) {
        const r = await service.request(method, route);
        assert.equal(r.status, 404, `${method} ${route}`);
        assert.equal(r.body.error.code, 'not-found');
      }
    });
  });

  describe('the error budget', () => {
    test('maxErrors 1 with finish: the second error spends it; tasks never started end cancelled in stage queued', async () => {
      const [c1, c2] = await closedPorts(2);
      const good = [ports[0]!, ports[1]!, ports[2]!, ports[3]!];
      const hosts = [good[0], c1, c2, good[1], good[2], good[3]].map((p) => `127.0.0.1:${p}`);
      const r = await service.request('POST', '/v1/batches', { hosts, command: 'echo ok', concurrency: 1, maxErrors: 1, onBudgetExhausted: 'finish' });
      assert.equal(r.status, 202, JSON.stringify(r.body));
      assert.equal(r.body.maxErrors, 1);
      const batch = await waitBatch(service, r.body.id);
      assert.equal(batch.status, 'budget-exhausted');
      assert.deepEqual(batch.counts, { byStatus: { ok: 1, error: 2, cancelled: 3 }, byCode: { 'connect-refused': 2, cancelled: 3 } });

      const tasks = await batchTasks(service, r.body.id);
      assert.equal(byPort(tasks, good[0]!).status, 'ok');
      for (const p of [c1!, c2!]) assert.deepEqual(byPort(tasks, p).error.code, 'connect-refused');
      for (const p of good.slice(1)) {
        const t = byPort(tasks, p);
        assert.equal(t.status, 'cancelled', `the task on port ${p} never started`);
        assert.equal(t.error.code, 'cancelled');
        assert.equal(t.error.stage, 'queued');
        assert.match(t.error.message, /budget/);
        assert.deepEqual(
          t.stages.map((s: { stage: string }) => s.stage),
          ['queued'],
        );
      }
      const cancelledGroup = batch.groups.find((g: any) => g.error?.code === 'cancelled');
      assert.deepEqual({ count: cancelledGroup.count, stage: cancelledGroup.error.stage }, { count: 3, stage: 'queued' });
    });

    test('a percentage is of the hosts, rounded down: "50%" of 5 tolerates 2 errors, "60%" tolerates 3', async () => {
      const [c1, c2, c3] = await closedPorts(3);
      const hosts = [c1, c2, ports[0], c3, ports[1]].map((p) => `127.0.0.1:${p}`);

      const spent = await service.request('POST', '/v1/batches', { hosts, command: 'true', concurrency: 1, maxErrors: '50%' });
      assert.equal(spent.status, 202, JSON.stringify(spent.body));
      assert.equal(spent.body.maxErrors, '50%');
      const a = await waitBatch(service, spent.body.id);
      assert.equal(a.status, 'budget-exhausted');
      assert.deepEqual(a.counts, { byStatus: { ok: 1, error: 3, cancelled: 1 }, byCode: { 'connect-refused': 3, cancelled: 1 } });
      assert.equal(byPort(await batchTasks(service, spent.body.id), ports[1]!).error.stage, 'queued');

      const within = await service.request('POST', '/v1/batches', { hosts, command: 'true', concurrency: 1, maxErrors: '60%' });
      assert.equal(within.status, 202, JSON.stringify(within.body));
      const b = await waitBatch(service, within.body.id);
      assert.equal(b.status, 'finished');
      assert.deepEqual(b.counts, { byStatus: { ok: 2, error: 3 }, byCode: { 'connect-refused': 3 } });
    });

    test('finish: a task already running when the budget is spent runs to its end', async () => {
      const sleeper = marker(1);
      const [p0, p1, p2] = [ports[0]!, ports[1]!, ports[2]!];
      const r = await service.request('POST', '/v1/batches', {
        hosts: [p0, p1, p2].map((p) => `127.0.0.1:${p}`),
        command: sleeperAndFailer(p0, sleeper),
        concurrency: 2,
        maxErrors: 0,
        onBudgetExhausted: 'finish',
        timeouts: { commandMs: 30_000 },
      });
      assert.equal(r.status, 202, JSON.stringify(r.body));
      const batch = await waitBatch(service, r.body.id);
      assert.equal(batch.status, 'budget-exhausted');
      assert.deepEqual(batch.counts.byStatus, { ok: 1, 'nonzero-exit': 1, cancelled: 1 });
      const tasks = await batchTasks(service, r.body.id);
      assert.equal(byPort(tasks, p0).status, 'ok');
      assert.equal(byPort(tasks, p0).result.stdout, 'done\n');
      assert.equal(byPort(tasks, p1).result.exitCode, 3);
      assert.deepEqual({ status: byPort(tasks, p2).status, stage: byPort(tasks, p2).error.stage }, { status: 'cancelled', stage: 'queued' });
    });

    test('cancel: a task running when the budget is spent is cancelled too, and its remote process is gone', async () => {
      const sleeper = marker(600);
      const [p0, p1, p2] = [ports[0]!, ports[1]!, ports[2]!];
      const r = await service.request('POST', '/v1/batches', {
        hosts: [p0, p1, p2].map((p) => `127.0.0.1:${p}`),
        command: sleeperAndFailer(p0, sleeper),
        concurrency: 2,
        maxErrors: 0,
        onBudgetExhausted: 'cancel',
        timeouts: { commandMs: 30_000 },
      });
      assert.equal(r.status, 202, JSON.stringify(r.body));
      const batch = await waitBatch(service, r.body.id);
      assert.equal(batch.status, 'budget-exhausted');
      assert.equal(remoteCount(sleeper), 0, 'the remote sleep of the cancelled task must be gone');
      assert.deepEqual(batch.counts, { byStatus: { 'nonzero-exit': 1, cancelled: 2 }, byCode: { cancelled: 2 } });
      const tasks = await batchTasks(service, r.body.id);
      const running = byPort(tasks, p0);
      assert.equal(running.status, 'cancelled');
      assert.equal(running.error.code, 'cancelled');
      assert.equal(running.error.stage, 'running');
      assert.equal(running.result.killConfirmed, true);
      assert.equal(byPort(tasks, p1).result.exitCode, 3);
      assert.deepEqual({ status: byPort(tasks, p2).status, stage: byPort(tasks, p2).error.stage }, { status: 'cancelled', stage: 'queued' });
    });
  });

  describe('cancel', () => {
    test('cancel stops running and queued tasks (remote processes gone), leaves single tasks alone, and is idempotent', async () => {
      const sleeper = marker(600);
      const hostPorts = ports.slice(0, 4);
      const single = marker(1);
      const alone = await service.request('POST', '/v1/tasks', { host: '127.0.0.1', port: ports[5], command: `sleep ${single}; echo alive` });
      assert.equal(alone.status, 202);
      const r = await service.request('POST', '/v1/batches', { hosts: hostPorts.map((p) => `127.0.0.1:${p}`), command: `sleep ${sleeper}`, concurrency: 2 });
      assert.equal(r.status, 202, JSON.stringify(r.body));
      await waitUntil('two remote sleeps of the batch', () => remoteCount(sleeper) === 2);

      const cancelled = await service.request('POST', `/v1/batches/${r.body.id}/cancel`);
      assert.equal(cancelled.status, 200, JSON.stringify(cancelled.body));
      assert.equal(cancelled.body.status, 'cancelled');
      assert.notEqual(cancelled.body.finishedAt, null);
      assert.deepEqual(cancelled.body.counts, { byStatus: { cancelled: 4 }, byCode: { cancelled: 4 } });
      assert.equal(remoteCount(sleeper), 0, 'no remote sleep of the batch is left');

      const tasks = await batchTasks(service, r.body.id);
      const stages = tasks.map((t) => t.error.stage).sort();
      assert.deepEqual(stages, ['queued', 'queued', 'running', 'running']);
      for (const t of tasks.filter((x) => x.error.stage === 'running')) assert.equal(t.result.killConfirmed, true);
      assert.match(tasks[0].error.message, /batch cancelled by admin/);

      const again = await service.request('POST', `/v1/batches/${r.body.id}/cancel`);
      assert.equal(again.status, 200);
      assert.deepEqual(again.body, cancelled.body);

      // The single task is in its own flow: the batch cancel does not touch it.
      let t: any;
      await waitUntil('the single task to end', async () => {
        t = (await service.request('GET', `/v1/tasks/${alone.body.id}`)).body;
        return t.status !== 'queued' && t.status !== 'running';
      });
      assert.equal(t.status, 'ok');
      assert.equal(t.result.stdout, 'alive\n');
    });

    test('cancelling a finished batch changes nothing', async () => {
      const r = await service.request('POST', '/v1/batches', { hosts: [`127.0.0.1:${ports[0]}`], command: 'true' });
      const batch = await waitBatch(service, r.body.id);
      const cancelled = await service.request('POST', `/v1/batches/${r.body.id}/cancel`);
      assert.equal(cancelled.status, 200);
      assert.deepEqual(cancelled.body, batch);
      assert.equal(cancelled.body.status, 'finished');
    });
  });

  describe('bad input is a 400 naming the field, and creates nothing', () => {
    const hosts = ['127.0.0.1'];
    const cases: Array<[string, Record<string, unknown>, string, RegExp]> = [
      ['both hosts and pattern', { hosts, pattern: '127.0.0.1', command: 'true' }, 'hosts', /exactly one of "hosts".*or "pattern"/],
      ['neither hosts nor pattern', { command: 'true' }, 'hosts', /exactly one of/],
      ['an empty hosts list', { hosts: [], command: 'true' }, 'hosts', /body\.hosts/],
      ['a malformed range in hosts', { hosts: ['web[1-x]'], command: 'true' }, 'hosts', /in hosts\[0\]: bad range "1-x"/],
      ['a backwards range in hosts', { hosts: ['web1', 'web[3-1]'], command: 'true' }, 'hosts', /in hosts\[1\]: range "3-1" runs backwards/],
      ['a malformed range in the pattern', { pattern: 'web[3-1]', command: 'true' }, 'pattern', /in pattern: range "3-1" runs backwards/],
      ['a bad port in an entry', { hosts: ['a:99999'], command: 'true' }, 'hosts', /bad port "99999"/],
      ['maxErrors as text', { hosts, command: 'true', maxErrors: 'abc' }, 'maxErrors', /body\.maxErrors/],
      ['maxErrors negative', { hosts, command: 'true', maxErrors: -1 }, 'maxErrors', /body\.maxErrors/],
      ['maxErrors over 100%', { hosts, command: 'true', maxErrors: '150%' }, 'maxErrors', /bad maxErrors "150%"/],
      ['concurrency 0', { hosts, command: 'true', concurrency: 0 }, 'concurrency', /body\.concurrency: must be >= 1/],
      ['concurrency as text', { hosts, command: 'true', concurrency: '4' }, 'concurrency', /body\.concurrency: must be integer/],
      ['an unknown onBudgetExhausted', { hosts, command: 'true', onBudgetExhausted: 'explode' }, 'onBudgetExhausted', /body\.onBudgetExhausted/],
      ['more hosts than maxBatchHosts', { hosts: ['h[1-41]'], command: 'true' }, 'hosts', /41 hosts is more than the 40/],
      ['an unknown identity', { hosts, command: 'true', identity: 'nobody' }, 'identity', /unknown identity "nobody"/],
      ['a bad env name', { hosts, command: 'true', env: { 'BAD-NAME': '1' } }, 'env', /body\.env/],
      ['an unknown field', { hosts, command: 'true', colour: 'blue' }, 'colour', /body\.colour: unknown field/],
      ['a missing command', { hosts }, 'command', /body\.command: required/],
    ];
    for (const [what, body, field, message] of cases) {
      test(what, async () => {
        const before = await taskCount(service);
        const r = await service.request('POST', '/v1/batches', body);
        assert.equal(r.status, 400, JSON.stringify(r.body));
        assert.equal(r.body.error.code, 'bad-request');
        assert.match(r.body.error.message, message);
        assert.equal(r.body.error.field, field, r.body.error.message);
        assert.equal(await taskCount(service), before, 'a refused batch leaves no task behind');
      });
    }

    test('nothing bad produced a 500', () => {
      assert.ok(!service.logs().some((l) => l.msg === 'request failed'), 'no request failed with a 500');
    });
  });

  describe('scopes', () => {
    test('no token is 401; a read token may read a batch but not run or cancel one (403)', async () => {
      const body = { hosts: [`127.0.0.1:${ports[0]}`], command: 'true' };
      assert.equal((await service.request('POST', '/v1/batches', body, { token: null })).status, 401);
      const before = await taskCount(service);
      const run = await service.request('POST', '/v1/batches', body, { token: READ_TOKEN });
      assert.equal(run.status, 403);
      assert.equal(run.body.error.code, 'forbidden');
      assert.match(run.body.error.message, /"run" scope/);
      assert.equal(await taskCount(service), before);

      const r = await service.request('POST', '/v1/batches', body);
      await waitBatch(service, r.body.id);
      assert.equal((await service.request('GET', `/v1/batches/${r.body.id}`, undefined, { token: READ_TOKEN })).status, 200);
      const cancel = await service.request('POST', `/v1/batches/${r.body.id}/cancel`, undefined, { token: READ_TOKEN });
      assert.equal(cancel.status, 403);
    });

    test('a token restricted to hosts 10.* may not run a batch on 127.0.0.1, not even on one host of many (403, nothing created)', async () => {
      const before = await taskCount(service);
      for (const body of [
        { hosts: [`127.0.0.1:${ports[0]}`], command: 'true' },
        { hosts: ['10.0.0.1', `127.0.0.1:${ports[0]}`], command: 'true' },
        { pattern: '10.0.0.[1-3],localhost', command: 'true' },
      ]) {
        const r = await service.request('POST', '/v1/batches', body, { token: TENANT_10_TOKEN });
        assert.equal(r.status, 403, JSON.stringify(r.body));
        assert.equal(r.body.error.code, 'forbidden');
        assert.match(r.body.error.message, /token "tenant10" may not run tasks on "(127\.0\.0\.1|localhost)"/);
        assert.equal(r.body.error.field, 'host');
      }
      assert.equal(await taskCount(service), before);
    });

    test('a token restricted to localhost runs a batch there, recorded as its own', async () => {
      const refused = await service.request('POST', '/v1/batches', { hosts: [`127.0.0.1:${ports[0]}`], command: 'true' }, { token: TENANT_LOCAL_TOKEN });
      assert.equal(refused.status, 403);
      const r = await service.request('POST', '/v1/batches', { pattern: 'localhost', port: ports[0], command: 'echo mine' }, { token: TENANT_LOCAL_TOKEN });
      assert.equal(r.status, 202, JSON.stringify(r.body));
      assert.equal(r.body.submittedBy, 'tenantlocal');
      const batch = await waitBatch(service, r.body.id);
      assert.equal(batch.status, 'finished');
      assert.equal(batch.groups[0].stdout, 'mine\n');
      const [task] = await batchTasks(service, r.body.id);
      assert.equal(task.submittedBy, 'tenantlocal');
    });
  });
});

describe('limits', () => {
  let service: TestService;
  before(async () => {
    service = await startService({ limits: { globalConcurrency: 1, queueCapacity: 2 } });
  });
  after(async () => {
    await service?.stop();
  });
  afterEach(() => settle(service));

  test('fairness: a single task submitted after a 30-host batch starts after at most 2 more batch tasks', async () => {
    const batchPorts = ports.slice(1, 31);
    assert.equal(batchPorts.length, 30);
    const r = await service.request('POST', '/v1/batches', { hosts: batchPorts.map((p) => `127.0.0.1:${p}`), command: 'sleep 0.1', concurrency: 30 });
    assert.equal(r.status, 202, JSON.stringify(r.body));
    const single = await service.request('POST', '/v1/tasks', { host: '127.0.0.1', port: ports[0], command: 'echo single' });
    assert.equal(single.status, 202, JSON.stringify(single.body));

    const batch = await waitBatch(service, r.body.id, 120_000);
    assert.equal(batch.status, 'finished');
    assert.deepEqual(batch.counts.byStatus, { ok: 30 });
    let t: any;
    await waitUntil('the single task to end', async () => {
      t = (await service.request('GET', `/v1/tasks/${single.body.id}`)).body;
      return t.status !== 'queued' && t.status !== 'running';
    });
    assert.equal(t.status, 'ok');

    const submittedAt = Date.parse(t.createdAt);
    const singleStart = stageStart(t, 'connecting');
    const starts = (await batchTasks(service, r.body.id)).map((b) => stageStart(b, 'connecting')).sort((a, b) => a - b);
    assert.equal(starts.length, 30);
    const overtook = starts.filter((s) => s >= submittedAt && s < singleStart).length;
    const before = starts.filter((s) => s < singleStart).length;
    const detail = `batch tasks started before the single task: ${before} (of them after its submission: ${overtook})`;
    assert.ok(overtook <= 2, detail);
    assert.ok(before < 30, detail);
  });

  test('429 with Retry-After when the ad-hoc queue is full; the refused task is not recorded; cancel empties the queue', async () => {
    const long = marker(600);
    const task = (command: string) => ({ host: '127.0.0.1', port: ports[0], command });
    const running = await service.request('POST', '/v1/tasks', task(`sleep ${long}`));
    assert.equal(running.status, 202);
    await waitUntil('the long task to run remotely', () => remoteCount(long) === 1);
    const queued = [];
    for (let i = 0; i < 2; i++) {
      const q = await service.request('POST', '/v1/tasks', task(`echo queued ${i}`));
      assert.equal(q.status, 202, JSON.stringify(q.body));
      assert.equal(q.body.status, 'queued');
      queued.push(q.body.id as string);
    }
    const before = await taskCount(service);
    const refused = await service.request('POST', '/v1/tasks', task('echo refused'));
    assert.equal(refused.status, 429, JSON.stringify(refused.body));
    assert.equal(refused.body.error.code, 'queue-full');
    const retryAfter = refused.headers.get('retry-after');
    assert.match(retryAfter ?? '', /^\d+$/, 'a Retry-After header in seconds');
    assert.ok(Number(retryAfter) > 0);
    assert.equal(await taskCount(service), before, 'a refused task is not recorded');

    for (const id of queued) {
      const c = await service.request('POST', `/v1/tasks/${id}/cancel`);
      assert.equal(c.status, 200);
      assert.deepEqual({ status: c.body.status, code: c.body.error.code, stage: c.body.error.stage }, { status: 'cancelled', code: 'cancelled', stage: 'queued' });
    }
    const c = await service.request('POST', `/v1/tasks/${running.body.id}/cancel`);
    assert.equal(c.body.status, 'cancelled');
    assert.equal(c.body.result.killConfirmed, true);
    assert.equal(remoteCount(long), 0);

    const accepted = await service.request('POST', '/v1/tasks', { ...task('echo again'), wait: 30 });
    assert.equal(accepted.status, 200, JSON.stringify(accepted.body));
    assert.equal(accepted.body.result.stdout, 'again\n');
  });
});
