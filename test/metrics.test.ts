import assert from 'node:assert/strict';
import { channel } from 'node:diagnostics_channel';
import { createRequire } from 'node:module';
import type { IntervalHistogram } from 'node:perf_hooks';
import { describe, test } from 'node:test';
import { setImmediate as settleImmediate, setTimeout as sleep } from 'node:timers/promises';
import { register as globalRegistry } from 'prom-client';
import { createMetrics, STAGE_SECONDS_BUCKETS, type LeashMetrics, type MetricsOptions } from '../src/diagnostics/metrics.ts';
import { ERROR_CODES } from '../src/lifecycle/errors.ts';
import { LEAK_KINDS } from '../src/lifecycle/leak-watchdog.ts';
import { ResourceLedger } from '../src/lifecycle/ledger.ts';
import { STAGES, TERMINAL_STATUSES } from '../src/lifecycle/stages.ts';
import { TaskTable } from '../src/lifecycle/task-table.ts';
import { collector } from './support/gc.ts';

const target = { host: 'web01', port: 22, user: 'deploy' };
const finishChannel = channel('leash:task:finish');

interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

/** Parses the Prometheus text exposition format (one sample per non-comment line). */
function parse(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `unparseable exposition line: ${line}`);
    const labels: Record<string, string> = {};
    for (const lm of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[lm[1]!] = lm[2]!;
    const raw = m[3]!;
    const value = raw === '+Inf' ? Infinity : raw === '-Inf' ? -Infinity : Number(raw);
    samples.push({ name: m[1]!, labels, value });
  }
  return samples;
}

/** The value of the sample with exactly this name and label set, or undefined. */
function sample(samples: readonly Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  const want = Object.entries(labels).sort();
  const found = samples.filter((s) => s.name === name && JSON.stringify(Object.entries(s.labels).sort()) === JSON.stringify(want));
  assert.ok(found.length <= 1, `duplicate sample ${name}${JSON.stringify(labels)}`);
  return found[0]?.value;
}

function sum(samples: readonly Sample[]): number {
  return samples.reduce((n, s) => n + s.value, 0);
}

function named(samples: readonly Sample[], name: string): Sample[] {
  return samples.filter((s) => s.name === name);
}

async function scrape(metrics: LeashMetrics): Promise<Sample[]> {
  return parse(await metrics.render());
}

/** One metrics instance at a time: the task channels are process-wide. */
async function withMetrics(
  options: Partial<MetricsOptions>,
  fn: (metrics: LeashMetrics, tasks: TaskTable, ledger: ResourceLedger) => Promise<void>,
): Promise<void> {
  const tasks = options.tasks ?? new TaskTable();
  const ledger = options.ledger ?? new ResourceLedger();
  const metrics = createMetrics({ defaultMetrics: false, ...options, tasks, ledger });
  try {
    await fn(metrics, tasks, ledger);
  } finally {
    metrics.close();
  }
  assert.equal(tasks.size, 0, 'test left live tasks');
  assert.equal(ledger.liveCount(), 0, 'test left live ledger entries');
}

void describe('leash metrics', () => {
  void test('tasks_started_total, tasks_finished_total{status,code} and tasks_in_flight{stage}', async () => {
    await withMetrics({}, async (metrics, tasks) => {
      let s = await scrape(metrics);
      assert.equal(sample(s, 'leash_tasks_started_total'), 0);
      assert.equal(named(s, 'leash_tasks_finished_total').length, 0);
      for (const stage of STAGES) assert.equal(sample(s, 'leash_tasks_in_flight', { stage }), 0, stage);

      const a = tasks.create({ target });
      const b = tasks.create({ target });
      const c = tasks.create({ target });
      b.enter('connecting');
      c.enter('handshake');
      c.enter('running');

      s = await scrape(metrics);
      assert.equal(sample(s, 'leash_tasks_started_total'), 3);
      assert.equal(named(s, 'leash_tasks_in_flight').length, STAGES.length);
      const expected: Record<string, number> = { queued: 1, connecting: 1, running: 1 };
      for (const stage of STAGES) assert.equal(sample(s, 'leash_tasks_in_flight', { stage }), expected[stage] ?? 0, stage);

      tasks.finish(a, 'ok');
      tasks.finish(b, 'error', 'connect-timeout');
      tasks.finish(c, 'cancelled', 'cancelled');
      tasks.finish(c, 'ok'); // idempotent: not counted twice

      s = await scrape(metrics);
      assert.equal(sample(s, 'leash_tasks_started_total'), 3);
      assert.equal(sample(s, 'leash_tasks_finished_total', { status: 'ok', code: 'none' }), 1);
      assert.equal(sample(s, 'leash_tasks_finished_total', { status: 'error', code: 'connect-timeout' }), 1);
      assert.equal(sample(s, 'leash_tasks_finished_total', { status: 'cancelled', code: 'cancelled' }), 1);
      assert.equal(named(s, 'leash_tasks_finished_total').length, 3);
      for (const stage of STAGES) assert.equal(sample(s, 'leash_tasks_in_flight', { stage }), 0, stage);
    });
  });

  void test('task_stage_seconds{stage}: one observation per stage left, the last one at finish', async () => {
    await withMetrics({}, async (metrics, tasks) => {
      let s = await scrape(metrics);
      for (const stage of STAGES) assert.equal(sample(s, 'leash_task_stage_seconds_count', { stage }), 0, stage);

      const a = tasks.create({ target });
      a.enter('connecting');
      await sleep(60);
      a.enter('handshake');
      a.enter('running');
      tasks.finish(a, 'ok');
      const b = tasks.create({ target });
      tasks.finish(b, 'error', 'dns-error');

      s = await scrape(metrics);
      const counts: Record<string, number> = { queued: 2, connecting: 1, handshake: 1, running: 1 };
      for (const stage of STAGES) {
        assert.equal(sample(s, 'leash_task_stage_seconds_count', { stage }), counts[stage] ?? 0, stage);
        assert.equal(sample(s, 'leash_task_stage_seconds_bucket', { stage, le: '+Inf' }), counts[stage] ?? 0, stage);
      }
      const les = named(s, 'leash_task_stage_seconds_bucket')
        .filter((x) => x.labels.stage === 'connecting')
        .map((x) => x.labels.le);
      assert.deepEqual(les, [...STAGE_SECONDS_BUCKETS.map(String), '+Inf']);
      assert.equal(STAGE_SECONDS_BUCKETS[0], 0.005);
      assert.equal(STAGE_SECONDS_BUCKETS.at(-1), 600);
      // ~60 ms in `connecting`: not in the 25 ms bucket, counted by 10 s.
      assert.equal(sample(s, 'leash_task_stage_seconds_bucket', { stage: 'connecting', le: '0.025' }), 0);
      assert.equal(sample(s, 'leash_task_stage_seconds_bucket', { stage: 'connecting', le: '10' }), 1);
      const sum = sample(s, 'leash_task_stage_seconds_sum', { stage: 'connecting' }) ?? 0;
      assert.ok(sum >= 0.05 && sum < 10, `connecting sum ${sum}`);
    });
  });

  void test('resources_live{kind} and ssh_connections{state} are read from the ledger at scrape', async () => {
    await withMetrics({}, async (metrics, _tasks, ledger) => {
      let s = await scrape(metrics);
      assert.equal(named(s, 'leash_resources_live').length, 0);
      assert.equal(sample(s, 'leash_ssh_connections', { state: 'open' }), 0);

      const handles = [
        ledger.open('socket', 'task-1'),
        ledger.open('socket', 'task-2'),
        ledger.open('ssh-connection', 'task-1'),
        ledger.open('ssh-connection', 'pool'),
        ledger.open('channel', 'task-1'),
      ];
      handles[4]!.release();

      s = await scrape(metrics);
      assert.equal(sample(s, 'leash_resources_live', { kind: 'socket' }), 2);
      assert.equal(sample(s, 'leash_resources_live', { kind: 'ssh-connection' }), 2);
      assert.equal(sample(s, 'leash_resources_live', { kind: 'channel' }), 0, 'a kind once opened stays, at 0');
      assert.equal(sample(s, 'leash_resources_live', { kind: 'timer' }), undefined, 'a kind never opened is absent');
      assert.equal(sample(s, 'leash_ssh_connections', { state: 'open' }), 2);

      for (const h of handles) h.release();
      s = await scrape(metrics);
      for (const kind of ['socket', 'ssh-connection', 'channel']) assert.equal(sample(s, 'leash_resources_live', { kind }), 0, kind);
      assert.equal(sample(s, 'leash_ssh_connections', { state: 'open' }), 0);
    });
  });

  void test('default process_* and nodejs_* metrics are in this registry, not the global one', async () => {
    const globalBefore = globalRegistry.getMetricsAsArray().length;
    await withMetrics({ defaultMetrics: true }, async (metrics) => {
      const s = await scrape(metrics);
      assert.ok(sample(s, 'process_cpu_user_seconds_total') !== undefined);
      assert.ok(sample(s, 'process_resident_memory_bytes') !== undefined || sample(s, 'process_start_time_seconds') !== undefined);
      assert.ok(sample(s, 'nodejs_eventloop_lag_seconds') !== undefined);
      assert.ok(named(s, 'nodejs_heap_size_used_bytes').length === 1);
      assert.match(metrics.contentType, /^text\/plain/);
      assert.ok(metrics.registry.getSingleMetric('leash_tasks_started_total'));
    });
    assert.equal(globalRegistry.getMetricsAsArray().length, globalBefore);
    assert.equal(globalRegistry.getSingleMetric('leash_tasks_started_total'), undefined);

    await withMetrics({ defaultMetrics: false }, async (metrics) => {
      const s = await scrape(metrics);
      assert.equal(s.filter((x) => x.name.startsWith('process_') || x.name.startsWith('nodejs_')).length, 0);
    });
  });

  void test('prefix option', async () => {
    await withMetrics({ prefix: 'other_' }, async (metrics, tasks) => {
      tasks.finish(tasks.create({ target }), 'ok');
      const s = await scrape(metrics);
      assert.equal(sample(s, 'other_tasks_started_total'), 1);
      assert.equal(sample(s, 'other_tasks_finished_total', { status: 'ok', code: 'none' }), 1);
      assert.equal(s.filter((x) => x.name.startsWith('leash_')).length, 0);
    });
  });

  void test('labels never carry a host or a command, only values from fixed sets', async () => {
    await withMetrics({ defaultMetrics: false, leaks: () => new Map([['task-past-deadline', 1]]), leakKinds: LEAK_KINDS }, async (metrics, tasks, ledger) => {
      const secretTarget = { host: 'secret-host.example', port: 2222, user: 'root' };
      const t = tasks.create({ id: 'task-secret-host.example', target: secretTarget, attrs: { command: 'echo hunter2' } });
      const conn = ledger.open('ssh-connection', t.id, { host: 'secret-host.example', command: 'echo hunter2' });
      t.enter('connecting');
      t.wait('secret-host.example');
      t.enter('running');
      let text = await metrics.render();
      conn.release();
      tasks.finish(t, 'error', 'connection-lost');
      text += await metrics.render();
      assert.ok(!text.includes('secret-host'), 'host appears in /metrics');
      assert.ok(!text.includes('hunter2'), 'command appears in /metrics');
      assert.ok(!text.includes('task-secret'), 'task id appears in /metrics');

      const allowed: Record<string, ReadonlySet<string>> = {
        stage: new Set(STAGES),
        status: new Set(TERMINAL_STATUSES),
        code: new Set([...ERROR_CODES, 'none']),
        // Resource kinds, GC kinds (leash_gc_*) and leak kinds (leash_leaks_total).
        kind: new Set(['socket', 'ssh-connection', 'channel', 'timer', 'agent-socket', 'child-process', 'server', 'database', 'minor', 'major', 'incremental', 'weakcb', 'other', ...LEAK_KINDS]),
        state: new Set(['open', 'idle', 'busy', 'connecting']),
        le: new Set([...STAGE_SECONDS_BUCKETS.map(String), '+Inf']),
      };
      for (const s of parse(text)) {
        for (const [key, value] of Object.entries(s.labels)) {
          const set = allowed[key];
          assert.ok(set, `unexpected label ${key} on ${s.name}`);
          assert.ok(set.has(value), `label ${key}="${value}" on ${s.name} is not from its fixed set`);
        }
      }
    });
  });

  void test('the finish event is read defensively: a missing or unknown code counts as "none"', async () => {
    await withMetrics({}, async (metrics, tasks) => {
      const a = tasks.create({ target });
      const b = tasks.create({ target });
      const c = tasks.create({ target });
      // Published directly, as an older publisher without `code` (or a broken one) would.
      finishChannel.publish({ task: a, status: 'error' });
      finishChannel.publish({ task: b, status: 'error', code: 'not-a-code' });
      finishChannel.publish({ task: c, status: 'error', code: 'auth-failed' });
      finishChannel.publish({ task: c, status: 'bogus-status', code: 'auth-failed' }); // already counted, ignored
      finishChannel.publish({ status: 'ok' }); // no task: ignored
      finishChannel.publish(null);
      const s = await scrape(metrics);
      assert.equal(sample(s, 'leash_tasks_finished_total', { status: 'error', code: 'none' }), 2);
      assert.equal(sample(s, 'leash_tasks_finished_total', { status: 'error', code: 'auth-failed' }), 1);
      assert.equal(named(s, 'leash_tasks_finished_total').length, 2);
      // The real finish later is the same task: not counted again.
      for (const t of [a, b, c]) tasks.finish(t, 'ok');
      const after = await scrape(metrics);
      assert.equal(sample(after, 'leash_tasks_finished_total', { status: 'ok', code: 'none' }), undefined);
    });
  });

  void test('counts only the tasks of its own table, including tasks live before it was created', async () => {
    const tasks = new TaskTable();
    const early = tasks.create({ target });
    early.enter('connecting');
    const other = new TaskTable();
    await withMetrics({ tasks }, async (metrics) => {
      const o = other.create({ target });
      o.enter('running');
      other.finish(o, 'ok');
      early.enter('running');
      tasks.finish(early, 'nonzero-exit');
      const s = await scrape(metrics);
      assert.equal(sample(s, 'leash_tasks_started_total'), 0, 'early started before the metrics existed');
      assert.equal(sample(s, 'leash_tasks_finished_total', { status: 'nonzero-exit', code: 'none' }), 1);
      assert.equal(sample(s, 'leash_tasks_finished_total', { status: 'ok', code: 'none' }), undefined, 'other table counted');
      assert.equal(sample(s, 'leash_task_stage_seconds_count', { stage: 'connecting' }), 1);
      assert.equal(sample(s, 'leash_task_stage_seconds_count', { stage: 'running' }), 1);
      assert.equal(sample(s, 'leash_task_stage_seconds_count', { stage: 'queued' }), 0, 'queued was left before the metrics existed');
    });
  });

  void test('close() unsubscribes and is idempotent; render still works after it', async () => {
    const tasks = new TaskTable();
    const ledger = new ResourceLedger();
    const metrics = createMetrics({ tasks, ledger, defaultMetrics: false });
    const a = tasks.create({ target });
    a.enter('connecting');
    metrics.close();
    metrics.close();
    a.enter('running');
    tasks.finish(a, 'ok');
    tasks.finish(tasks.create({ target }), 'ok');
    const s = await scrape(metrics);
    assert.equal(sample(s, 'leash_tasks_started_total'), 1);
    assert.equal(named(s, 'leash_tasks_finished_total').length, 0);
    assert.equal(sample(s, 'leash_task_stage_seconds_count', { stage: 'queued' }), 1);
    assert.equal(sample(s, 'leash_task_stage_seconds_count', { stage: 'connecting' }), 0);
    assert.equal(sample(s, 'leash_task_stage_seconds_count', { stage: 'running' }), 0);
    for (const stage of STAGES) assert.equal(sample(s, 'leash_tasks_in_flight', { stage }), 0, stage);
  });

  void test('resources_opened_total and resources_closed_total{kind} follow the ledger totals', async () => {
    await withMetrics({ runtimeMetrics: false }, async (metrics, _tasks, ledger) => {
      const a = ledger.open('socket', 'task-1');
      const b = ledger.open('socket', 'task-2');
      const t = ledger.timeout('task-1', 60_000, () => undefined);
      a.release();
      let s = await scrape(metrics);
      assert.equal(sample(s, 'leash_resources_opened_total', { kind: 'socket' }), 2);
      assert.equal(sample(s, 'leash_resources_closed_total', { kind: 'socket' }), 1);
      assert.equal(sample(s, 'leash_resources_opened_total', { kind: 'timer' }), 1);
      assert.equal(sample(s, 'leash_resources_closed_total', { kind: 'timer' }), 0);
      b.release();
      t.release();
      s = await scrape(metrics);
      assert.equal(sample(s, 'leash_resources_opened_total', { kind: 'socket' }), 2, 'counters do not reset between scrapes');
      assert.equal(sample(s, 'leash_resources_closed_total', { kind: 'socket' }), 2);
      assert.equal(sample(s, 'leash_resources_closed_total', { kind: 'timer' }), 1);
    });
  });

  void test('task_oldest_age_seconds{stage}: the oldest live task of each stage, 0 for an empty stage; max_task_deadline_seconds', async () => {
    await withMetrics({ runtimeMetrics: false, maxTaskDeadlineSeconds: 3725 }, async (metrics, tasks) => {
      const old = tasks.create({ target });
      old.enter('connecting');
      await sleep(60);
      const young = tasks.create({ target });
      young.enter('connecting');
      const queued = tasks.create({ target });
      const s = await scrape(metrics);
      const connecting = sample(s, 'leash_task_oldest_age_seconds', { stage: 'connecting' }) ?? -1;
      assert.ok(connecting >= 0.05, `the oldest connecting task is at least 60 ms old, got ${connecting}`);
      assert.ok((sample(s, 'leash_task_oldest_age_seconds', { stage: 'queued' }) ?? -1) < connecting);
      assert.equal(sample(s, 'leash_task_oldest_age_seconds', { stage: 'running' }), 0);
      assert.equal(named(s, 'leash_task_oldest_age_seconds').length, STAGES.length, 'every stage present');
      assert.equal(sample(s, 'leash_max_task_deadline_seconds'), 3725);
      for (const t of [old, young, queued]) tasks.finish(t, 'cancelled');
    });
  });

  void test('event-loop delay: a blocked loop shows in leash_event_loop_delay_max_seconds', async () => {
    await withMetrics({}, async (metrics) => {
      await scrape(metrics); // start a fresh window
      await sleep(150);
      const until = Date.now() + 80;
      while (Date.now() < until); // block the event loop for 80 ms
      await sleep(30);
      const s = await scrape(metrics);
      const max = sample(s, 'leash_event_loop_delay_max_seconds') ?? 0;
      assert.ok(max >= 0.05, `an 80 ms block must show as ≥ 50 ms of delay, got ${max}`);
      assert.ok((sample(s, 'leash_event_loop_delay_p99_seconds') ?? -1) >= 0);
      assert.ok((sample(s, 'leash_event_loop_delay_p50_seconds') ?? -1) >= 0);
    });
  });

  void test('gc_total counts every collection (prom-client records only the first of each batch)', async () => {
    const gc = collector();
    await withMetrics({}, async (metrics) => {
      const before = sum(named(await scrape(metrics), 'leash_gc_total'));
      for (let i = 0; i < 8; i++) gc();
      // GC entries reach observers asynchronously; wait (bounded) for all of them.
      const until = Date.now() + 5000;
      let after = before;
      while (after - before < 8 && Date.now() < until) {
        await sleep(20);
        after = sum(named(await scrape(metrics), 'leash_gc_total'));
      }
      assert.ok(after - before >= 8, `8 forced collections, counted ${after - before}`);
      const s = await scrape(metrics);
      assert.ok((sample(s, 'leash_gc_total', { kind: 'major' }) ?? 0) >= 8);
      assert.ok((sample(s, 'leash_gc_seconds_total', { kind: 'major' }) ?? 0) > 0);
    });
  });

  void test('default metrics are collected once per process, however many instances, and close() leaves no handles', async () => {
    const settle = async (): Promise<void> => {
      await settleImmediate();
      await sleep(20);
      await settleImmediate();
    };
    const countByType = (names: readonly string[]): Map<string, number> => {
      const m = new Map<string, number>();
      for (const n of names) m.set(n, (m.get(n) ?? 0) + 1);
      return m;
    };
    // prom-client's event-loop delay sampler cannot be stopped; it must be started at most once.
    const perfHooks = createRequire(import.meta.url)('node:perf_hooks') as {
      monitorEventLoopDelay: (options?: { resolution?: number }) => IntervalHistogram;
    };
    const original = perfHooks.monitorEventLoopDelay;
    const created: IntervalHistogram[] = [];
    await settle();
    const before = countByType(process.getActiveResourcesInfo());
    perfHooks.monitorEventLoopDelay = (options) => {
      const h = original(options);
      created.push(h);
      return h;
    };
    const instances: LeashMetrics[] = [];
    try {
      for (let i = 0; i < 3; i++) {
        const m = createMetrics({ tasks: new TaskTable(), ledger: new ResourceLedger() });
        await m.render();
        m.close();
        instances.push(m);
      }
    } finally {
      perfHooks.monitorEventLoopDelay = original;
    }
    assert.ok(created.length <= 1, `${created.length} event-loop delay samplers for 3 instances`);
    await settle();
    const after = countByType(process.getActiveResourcesInfo());
    for (const [type, n] of after) assert.ok(n <= (before.get(type) ?? 0), `${type}: ${before.get(type) ?? 0} before, ${n} after close`);
  });

});
