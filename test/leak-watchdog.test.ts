import assert from 'node:assert/strict';
import net from 'node:net';
import { afterEach, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { createMetrics } from '../src/diagnostics/metrics.ts';
import { renderLeaks } from '../src/diagnostics/leak-dump.ts';
import { LEAK_KINDS, LeakWatchdog, type LeakFinding, type LeakKind, type LeakWatchdogOptions } from '../src/lifecycle/leak-watchdog.ts';
import { ResourceLedger, type ResourceHandle } from '../src/lifecycle/ledger.ts';
import { TaskTable, type LiveTask } from '../src/lifecycle/task-table.ts';
import { assertNothingAlive } from './support/assert-clean.ts';

/**
 * Each kind of leak is injected through the seam the watchdog reads — a ledger and a task
 * table of the test's own, and a socket opened with plain net.connect — and must be
 * reported within one interval, naming the creation site of the leaking thing.
 */

const INTERVAL_MS = 100;
/** One interval, plus room for a loaded machine to run the timer late (a bound, not a speed claim). */
const WITHIN_MS = INTERVAL_MS + 400;
const TARGET = { host: '127.0.0.1', port: 22, user: 'leash' };

interface Fixture {
  readonly ledger: ResourceLedger;
  readonly tasks: TaskTable;
  readonly watchdog: LeakWatchdog;
  readonly logged: Array<{ fields: Record<string, unknown>; message: string }>;
}

let current: Fixture | null = null;

function start(options: Partial<LeakWatchdogOptions> = {}): Fixture {
  const ledger = new ResourceLedger();
  const tasks = new TaskTable();
  const logged: Fixture['logged'] = [];
  const watchdog = new LeakWatchdog({
    ledger,
    tasks,
    log: { warn: (fields, message) => logged.push({ fields, message }) },
    intervalMs: INTERVAL_MS,
    components: new Set(['pool']),
    graceMs: 0,
    ...options,
  });
  watchdog.start();
  current = { ledger, tasks, watchdog, logged };
  return current;
}

afterEach(async () => {
  if (current) {
    current.watchdog.stop();
    for (const task of current.tasks.live()) current.tasks.finish(task, 'cancelled');
    assert.deepEqual(current.ledger.live().map((e) => `${e.kind} ${e.site.top()}`), [], 'the test released what it leaked');
    current = null;
  }
  await assertNothingAlive();
});

/** Waits, bounded, until the watchdog flags something of `kind`. */
async function flagged(f: Fixture, kind: LeakKind, withinMs = WITHIN_MS): Promise<LeakFinding[]> {
  const until = Date.now() + withinMs;
  for (;;) {
    const found = f.watchdog.findings().filter((x) => x.kind === kind);
    if (found.length > 0) return found;
    if (Date.now() > until) assert.fail(`no ${kind} finding within ${withinMs} ms; findings: ${JSON.stringify(f.watchdog.findings())}`);
    await sleep(10);
  }
}

async function cleared(f: Fixture, kind: LeakKind): Promise<void> {
  const until = Date.now() + WITHIN_MS;
  while (f.watchdog.findings().some((x) => x.kind === kind)) {
    if (Date.now() > until) assert.fail(`${kind} still flagged after it was fixed`);
    await sleep(10);
  }
}

function siteOf(finding: LeakFinding | undefined): string {
  return (finding?.site ?? []).join('\n');
}

// Named functions, so that the creation site the watchdog reports can be checked by name.
function submitStuckTask(tasks: TaskTable, hardDeadlineMs: number | null): LiveTask {
  const task = tasks.create({ target: TARGET, hardDeadlineMs });
  task.enter('connecting');
  task.enter('handshake');
  task.wait('server-banner');
  return task;
}

function forgetAChannel(ledger: ResourceLedger, owner: string): ResourceHandle {
  return ledger.open('channel', owner, { purpose: 'exec' });
}

function connectBehindTheLedger(port: number): net.Socket {
  return net.connect({ host: '127.0.0.1', port });
}

function growThePool(ledger: ResourceLedger): ResourceHandle {
  return ledger.open('ssh-connection', 'pool', { host: '127.0.0.1' });
}

async function listening(): Promise<{ server: net.Server; port: number; close: () => Promise<void> }> {
  const accepted = new Set<net.Socket>();
  const server = net.createServer((s) => {
    accepted.add(s);
    s.on('close', () => accepted.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    server,
    port,
    close: async () => {
      for (const s of accepted) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

void describe('leak watchdog', () => {
  void test('a task past its hard deadline is flagged within one interval, with its creation site, and logged once', async () => {
    const f = start();
    const task = submitStuckTask(f.tasks, 50);
    const [finding] = await flagged(f, 'task-past-deadline');
    assert.equal(finding?.subject, `task:${task.id}`);
    assert.match(finding?.message ?? '', /stage handshake waiting on server-banner, past its hard deadline/);
    assert.match(siteOf(finding), /submitStuckTask .*test\/leak-watchdog\.test\.ts/);

    await sleep(3 * INTERVAL_MS);
    assert.equal(f.logged.length, 1, 'logged once, however many checks see it');
    assert.match(f.logged[0]?.message ?? '', /^leak: task \d+ .* past its hard deadline/);
    assert.deepEqual(f.logged[0]?.fields.site, finding?.site);

    f.tasks.finish(task, 'error', 'handshake-timeout');
    await cleared(f, 'task-past-deadline');
    assert.equal(f.watchdog.counts().get('task-past-deadline'), 1, 'the count stays: it is a total');
  });

  void test('a task with no hard deadline is flagged once older than the maximum task age', async () => {
    const f = start({ maxTaskAgeMs: 150 });
    const task = submitStuckTask(f.tasks, null);
    await sleep(100);
    assert.equal(f.watchdog.findings().length, 0, 'not before the maximum age');
    const [finding] = await flagged(f, 'task-past-deadline', 150 + WITHIN_MS);
    assert.match(finding?.message ?? '', /older than the maximum task age .* no hard deadline/);
    f.tasks.finish(task, 'cancelled');
  });

  void test('a resource whose owner task finished is flagged, naming where it was opened', async () => {
    const f = start();
    const task = submitStuckTask(f.tasks, null);
    const channel = forgetAChannel(f.ledger, task.id);
    await sleep(2 * INTERVAL_MS);
    assert.equal(f.watchdog.findings().length, 0, 'owned by a live task: fine');
    f.tasks.finish(task, 'ok');
    const [finding] = await flagged(f, 'resource-of-finished-task');
    assert.match(finding?.message ?? '', new RegExp(`channel #\\d+ is still open, owned by task ${task.id}, which finished`));
    assert.match(siteOf(finding), /forgetAChannel .*test\/leak-watchdog\.test\.ts/);
    channel.release();
    await cleared(f, 'resource-of-finished-task');
  });

  void test('the grace lets cleanup that runs right after a task finishes go unflagged', async () => {
    const f = start({ graceMs: 60_000 });
    const task = submitStuckTask(f.tasks, null);
    const channel = forgetAChannel(f.ledger, task.id);
    f.tasks.finish(task, 'ok');
    await sleep(3 * INTERVAL_MS);
    assert.deepEqual(f.watchdog.findings(), []);
    channel.release();
  });

  void test('a client socket no ledger entry owns is flagged with the code that connected it; an attached one is not', async () => {
    const server = await listening();
    const f = start();
    const owned = net.connect({ host: '127.0.0.1', port: server.port });
    const handle = f.ledger.open('socket', 'pool', { host: '127.0.0.1' });
    handle.attach(owned);
    const stray = connectBehindTheLedger(server.port);
    try {
      const found = await flagged(f, 'unowned-socket');
      await sleep(2 * INTERVAL_MS);
      assert.equal(f.watchdog.findings().filter((x) => x.kind === 'unowned-socket').length, 1, 'only the stray one');
      assert.match(found[0]?.message ?? '', /a client socket \(to 127\.0\.0\.1:\d+\).* is in no ledger entry/);
      assert.match(siteOf(found[0]), /connectBehindTheLedger .*test\/leak-watchdog\.test\.ts/);
    } finally {
      stray.destroy();
      owned.destroy();
      handle.release();
    }
    await cleared(f, 'unowned-socket');
    await server.close();
  });

  void test('opened - closed growing while no task is in flight is flagged; growth under load is not', async () => {
    const f = start({ growthWindow: 1 });
    const busy = submitStuckTask(f.tasks, null);
    const pool = [growThePool(f.ledger)];
    await sleep(2 * INTERVAL_MS);
    pool.push(growThePool(f.ledger));
    await sleep(2 * INTERVAL_MS);
    assert.deepEqual(f.watchdog.findings(), [], 'growth while a task runs is work');
    f.tasks.finish(busy, 'ok');
    await sleep(2 * INTERVAL_MS); // an idle baseline
    pool.push(growThePool(f.ledger));
    const [finding] = await flagged(f, 'resource-growth');
    assert.equal(finding?.subject, 'growth:ssh-connection');
    assert.match(finding?.message ?? '', /live ssh-connection entries grew from 2 to 3 over 1 idle checks with no task in flight/);
    assert.match(siteOf(finding), /growThePool .*test\/leak-watchdog\.test\.ts/);
    for (const handle of pool) handle.release();
    await cleared(f, 'resource-growth');
  });

  void test('a thousand stuck tasks from one site are one log line with a count, and one group in /debug/leaks', async () => {
    const f = start();
    const stuck = Array.from({ length: 1000 }, () => submitStuckTask(f.tasks, 10));
    const found = await flagged(f, 'task-past-deadline');
    await sleep(2 * INTERVAL_MS);
    assert.equal(f.watchdog.findings().length, 1000, `all of them: ${found.length} at first`);
    assert.equal(f.watchdog.counts().get('task-past-deadline'), 1000);
    const counted = f.logged.reduce((n, l) => n + Number(l.fields.count), 0);
    assert.equal(counted, 1000, 'each finding logged exactly once');
    assert.ok(f.logged.length <= 3, `grouped into few lines, got ${f.logged.length}`);
    const text = renderLeaks(f.watchdog.findings(), f.watchdog.counts(), true, Date.now());
    assert.match(text, /^leaks: 1000 flagged now; flagged since start: task-past-deadline 1000\n\n1000 @ task-past-deadline flagged /);
    assert.match(text, /#\tat submitStuckTask /);
    for (const task of stuck) f.tasks.finish(task, 'cancelled');
  });

  void test('leash_leaks_total reports the counts, every kind present from the start', async () => {
    const f = start();
    const metrics = createMetrics({ ledger: f.ledger, tasks: f.tasks, defaultMetrics: false, runtimeMetrics: false, leaks: () => f.watchdog.counts(), leakKinds: LEAK_KINDS });
    try {
      let text = await metrics.render();
      for (const kind of LEAK_KINDS) assert.match(text, new RegExp(`^leash_leaks_total\\{kind="${kind}"\\} 0$`, 'm'));
      const task = submitStuckTask(f.tasks, 10);
      await flagged(f, 'task-past-deadline');
      text = await metrics.render();
      assert.match(text, /^leash_leaks_total\{kind="task-past-deadline"\} 1$/m);
      f.tasks.finish(task, 'cancelled');
      text = await metrics.render();
      assert.match(text, /^leash_leaks_total\{kind="task-past-deadline"\} 1$/m, 'a counter: it does not go down');
    } finally {
      metrics.close();
    }
  });
});
