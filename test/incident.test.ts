import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { COMPONENT_OWNERS } from '../src/app/app.ts';
import { ledger } from '../src/lifecycle/ledger.ts';
import { assertNothingAlive } from './support/assert-clean.ts';
import { startHostileServer, type HostileServer } from './support/hostile-servers.ts';
import { apiRequest, READ_TOKEN, startTestService, type TestService } from './support/service.ts';

/**
 * DESIGN.md's incident, reproduced against the service and caught by its diagnostics: a
 * thousand tasks to a server that accepts TCP and never speaks. With the handshake deadline
 * disabled they pile up — and the dump, the gauge and the watchdog must say so plainly.
 * With the default deadlines they all end `handshake-timeout` and everything returns to zero.
 */

const TASKS = 1000;
/** Room for a thousand concurrent handshakes to one target (the defaults queue them, 8 at a time). */
const LIMITS = { globalConcurrency: 2000, perHost: 2000, perTargetHandshakes: 2000, queueCapacity: 5000 };

let silent: HostileServer | null = null;

after(async () => {
  await silent?.close();
  await assertNothingAlive(10_000);
});

async function submitAll(service: TestService, port: number): Promise<string[]> {
  const ids: string[] = [];
  const body = { host: '127.0.0.1', port, command: 'uptime' };
  // 50 clients at a time: fast enough, and no more sockets than the test needs.
  for (let i = 0; i < TASKS; i += 50) {
    const batch = await Promise.all(Array.from({ length: Math.min(50, TASKS - i) }, () => service.request('POST', '/v1/tasks', body)));
    for (const r of batch) {
      assert.equal(r.status, 202, JSON.stringify(r.body));
      ids.push(r.body.id as string);
    }
  }
  return ids;
}

async function admin(service: TestService, route: string): Promise<string> {
  const r = await apiRequest(service.running.adminUrl!, 'GET', route);
  assert.equal(r.status, 200, String(r.body));
  return typeof r.body === 'string' ? r.body : JSON.stringify(r.body);
}

/** One sample of /metrics (read scope), or undefined. */
async function metric(service: TestService, name: string, labels: string): Promise<number | undefined> {
  const r = await apiRequest(service.url, 'GET', '/metrics', undefined, { token: READ_TOKEN });
  const line = String(r.body)
    .split('\n')
    .find((l) => l.startsWith(`${name}{${labels}} `) || (labels === '' && l.startsWith(`${name} `)));
  return line === undefined ? undefined : Number(line.split(' ').pop());
}

async function eventually<T>(what: string, limitMs: number, probe: () => Promise<T>, ok: (value: T) => boolean): Promise<T> {
  const until = Date.now() + limitMs;
  for (;;) {
    const value = await probe();
    if (ok(value)) return value;
    if (Date.now() > until) assert.fail(`${what}: still ${JSON.stringify(value)} after ${limitMs} ms`);
    await sleep(200);
  }
}

void describe('the incident: 1000 tasks to a server that never speaks', () => {
  void test('handshake deadline disabled: ONE group of 1000 at handshake, the gauge says 1000, the watchdog flags them', async () => {
    silent = await startHostileServer('silent-tcp');
    const service = await startTestService(null, {
      demo: true,
      extra: {
        defaults: { timeouts: { handshakeMs: 0 } },
        limits: LIMITS,
        diagnostics: { watchdogIntervalMs: '250ms', maxTaskAgeMs: '3s' },
        // The incident's stack had no pool: every task dialled on its own (the pool would have
        // held all but 4 of them back, waiting for a connection slot).
        pool: { reuse: false },
        shutdownGraceMs: '1s',
      },
    });
    try {
      assert.ok(
        service.logs().some((l) => l.level === 40 && /a stage deadline is disabled \(defaults\.timeouts\.handshakeMs\)/.test(String(l.msg))),
        'starting with a disabled deadline is allowed, with a warning',
      );
      await submitAll(service, silent.port);

      await eventually('tasks in handshake', 30_000, () => metric(service, 'leash_tasks_in_flight', 'stage="handshake"'), (n) => n === TASKS);
      const dump = await eventually('one group of 1000 in the dump', 10_000, () => admin(service, '/debug/tasks?debug=1'), (t) => t.includes(`${TASKS} @ stage=handshake waiting=server-banner`));
      const blocks = dump.trim().split('\n\n');
      assert.equal(blocks[0], `tasks: total ${TASKS}`);
      assert.equal(blocks.length, 2, `exactly one group:\n${dump.slice(0, 2000)}`);
      assert.match(blocks[1] ?? '', /^1000 @ stage=handshake waiting=server-banner for up to \S+ oldest=\S+ e\.g\. /);
      assert.match(blocks[1] ?? '', /\n#\tat .*src\/service\/task-service\.ts/);

      // Past maxTaskAgeMs (3 s), within an interval, every one of them is flagged.
      const leaks = await eventually('watchdog findings', 15_000, () => admin(service, '/debug/leaks?format=json'), (t) => (JSON.parse(t) as { counts: Record<string, number> }).counts['task-past-deadline'] === TASKS);
      const parsed = JSON.parse(leaks) as { groups: Array<{ kind: string; count: number; examples: string[] }> };
      const group = parsed.groups.find((g) => g.kind === 'task-past-deadline');
      assert.equal(group?.count, TASKS, 'one group of findings');
      assert.match(group?.examples[0] ?? '', /in stage handshake waiting on server-banner, older than the maximum task age 3s/);
      assert.equal(await metric(service, 'leash_leaks_total', 'kind="task-past-deadline"'), TASKS);
      assert.ok(((await metric(service, 'leash_task_oldest_age_seconds', 'stage="handshake"')) ?? 0) >= 3);
      assert.equal(await metric(service, 'leash_max_task_deadline_seconds', ''), 0, 'nothing bounds a task');
      const logged = service.logs().filter((l) => l.leak === 'task-past-deadline');
      assert.equal(logged.reduce((n, l) => n + Number(l.count), 0), TASKS, 'each logged once');
      // Grouped per check: as many lines as checks that found new ones, never one per task.
      assert.ok(logged.length < 50, `in a few grouped lines, got ${logged.length}`);
    } finally {
      await service.stop();
    }
    await assertNothingAlive(10_000);
  });

  void test('default deadlines: all 1000 end handshake-timeout; dumps, gauges and the ledger return to zero', async () => {
    silent ??= await startHostileServer('silent-tcp');
    const service = await startTestService(null, { demo: true, extra: { limits: LIMITS, pool: { reuse: false }, diagnostics: { watchdogIntervalMs: '1s' } } });
    try {
      const ids = await submitAll(service, silent.port);
      // The default handshake deadline is 15 s; all of them must be over well within twice that.
      await eventually('finished with handshake-timeout', 60_000, () => metric(service, 'leash_tasks_finished_total', 'status="error",code="handshake-timeout"'), (n) => n === TASKS);
      for (const id of [ids[0]!, ids[TASKS - 1]!]) {
        const t = await service.request('GET', `/v1/tasks/${id}`);
        assert.equal(t.body.error?.code, 'handshake-timeout');
        assert.equal(t.body.error?.stage, 'handshake');
      }

      assert.equal(await admin(service, '/debug/tasks?debug=1'), 'tasks: total 0\n');
      assert.equal(await admin(service, '/debug/tasks?debug=2'), 'tasks: total 0\n');
      for (const stage of ['queued', 'connecting', 'handshake']) {
        assert.equal(await metric(service, 'leash_tasks_in_flight', `stage="${stage}"`), 0, stage);
        assert.equal(await metric(service, 'leash_task_oldest_age_seconds', `stage="${stage}"`), 0, stage);
      }
      for (const kind of ['socket', 'ssh-connection', 'timer']) {
        const opened = (await metric(service, 'leash_resources_opened_total', `kind="${kind}"`)) ?? 0;
        const closed = (await metric(service, 'leash_resources_closed_total', `kind="${kind}"`)) ?? 0;
        // Every task opened a socket; none got an SSH client (made only once a server speaks).
        if (kind === 'socket') assert.ok(opened >= TASKS, `${kind}: ${opened} opened`);
        if (kind === 'ssh-connection') assert.equal(opened, 0, 'no SSH client for a server that never spoke');
        // A kind never opened in this process has no series yet.
        assert.equal((await metric(service, 'leash_resources_live', `kind="${kind}"`)) ?? 0, opened - closed, kind);
      }
      assert.equal(await metric(service, 'leash_resources_live', 'kind="socket"'), 0);
      assert.equal((await metric(service, 'leash_resources_live', 'kind="ssh-connection"')) ?? 0, 0);
      const owners = new Set(ledger.live().map((e) => e.owner));
      assert.deepEqual([...owners].filter((o) => !COMPONENT_OWNERS.has(o)), [], 'nothing in the ledger is owned by a task');
      const resources = await admin(service, '/debug/resources?debug=1');
      assert.doesNotMatch(resources, /owner=task/);
      assert.equal(await metric(service, 'leash_leaks_total', 'kind="task-past-deadline"'), 0, 'bounded tasks are never flagged');
      assert.equal(await metric(service, 'leash_leaks_total', 'kind="resource-of-finished-task"'), 0);
    } finally {
      await service.stop();
    }
  });
});
