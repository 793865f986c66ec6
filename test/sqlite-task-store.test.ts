import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import Database from 'better-sqlite3';
import type { ErrorCode } from '../src/lifecycle/errors.ts';
import { ResourceLedger } from '../src/lifecycle/ledger.ts';
import type { Stage, TerminalStatus } from '../src/lifecycle/stages.ts';
import type { TaskReport } from '../src/lifecycle/task-report.ts';
import { openStore, parseStoreUrl, StoreUrlError } from '../src/store/open-store.ts';
import { MIGRATIONS, SCHEMA_VERSION, SchemaTooNewError } from '../src/store/sqlite-migrations.ts';
import { SqliteTaskStore } from '../src/store/sqlite-task-store.ts';
import { StoreCursorError } from '../src/store/task-store.ts';
import type { NewBatch, NewTask, StoredTask, TaskStore } from '../src/store/task-store.ts';

const TIMEOUTS = { connectMs: 5000, handshakeMs: 5000, authMs: 5000, channelMs: 5000, commandMs: 60000, idleMs: 0 };

function newTask(id: string, overrides: Partial<NewTask> = {}): NewTask {
  return {
    id,
    target: { host: 'web01.example.com', port: 22, user: 'deploy' },
    command: 'uptime',
    identity: 'default',
    execId: `exec-${id}`,
    envNames: [],
    timeouts: TIMEOUTS,
    maxOutputBytes: 1024 * 1024,
    batchId: null,
    submittedBy: 'ci-token',
    createdAt: 1_700_000_000_000,
    ...overrides,
  };
}

function newBatch(id: string, hostCount: number, overrides: Partial<NewBatch> = {}): NewBatch {
  return {
    id,
    command: 'uptime',
    hostCount,
    concurrency: 10,
    maxErrors: '10%',
    onBudgetExhausted: 'cancel',
    submittedBy: 'ci-token',
    createdAt: 1_700_000_000_000,
    ...overrides,
  };
}

function report(task: NewTask, status: TerminalStatus, fields: Partial<TaskReport> = {}): TaskReport {
  return {
    id: task.id,
    host: task.target.host,
    port: task.target.port,
    user: task.target.user,
    status,
    exitCode: status === 'ok' ? 0 : null,
    signal: null,
    exitStatusMissing: false,
    stdout: '',
    stderr: '',
    truncated: false,
    bytesDropped: { stdout: 0, stderr: 0 },
    killConfirmed: null,
    durationMs: 42,
    stages: [
      { stage: 'queued', startedAt: new Date(task.createdAt).toISOString(), durationMs: 1 },
      { stage: 'connecting', startedAt: new Date(task.createdAt + 1).toISOString(), durationMs: 41 },
    ],
    error: null,
    ...fields,
  };
}

function failure(task: NewTask, code: ErrorCode, stage: Stage): TaskReport {
  return report(task, 'error', { exitCode: null, error: { code, stage, message: `${code} in ${stage}` } });
}

/** A temp dir for one test, a ledger, and the promise that the database is released at the end. */
async function withStoreDir(fn: (dir: string, ledger: ResourceLedger) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'leash-store-'));
  const ledger = new ResourceLedger();
  try {
    await fn(dir, ledger);
    assert.equal(ledger.liveCount('database'), 0, 'every database is closed at the end of the test');
    assert.deepEqual(
      ledger.live().filter((e) => e.kind === 'database'),
      [],
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function open(dir: string, ledger: ResourceLedger, name = 'leash.db'): Promise<SqliteTaskStore> {
  return SqliteTaskStore.open(path.join(dir, 'data', name), { ledger });
}

async function mustGet(store: TaskStore, id: string): Promise<StoredTask> {
  const task = await store.getTask(id);
  assert.ok(task, `task ${id} exists`);
  return task;
}

void describe('SqliteTaskStore basics', () => {
  void test('createTask/getTask round trip; the open database is in the ledger', async () => {
    await withStoreDir(async (dir, ledger) => {
      const store = await open(dir, ledger);
      assert.ok(existsSync(path.join(dir, 'data', 'leash.db')), 'the parent directory and the file are created');
      const entries = ledger.live().filter((e) => e.kind === 'database');
      assert.equal(entries.length, 1);
      assert.equal(entries[0]?.owner, 'store');

      const input = newTask('t-1', { envNames: ['TOKEN', 'REGION'], batchId: null, identity: null, submittedBy: null });
      const created = await store.createTask(input);
      const expected: StoredTask = {
        ...input,
        status: 'queued',
        stage: 'queued',
        stages: [{ stage: 'queued', startedAt: new Date(input.createdAt).toISOString(), durationMs: 0 }],
        updatedAt: input.createdAt,
        finishedAt: null,
        report: null,
        interruptedReason: null,
      };
      assert.deepEqual(created, expected);
      assert.deepEqual(await store.getTask('t-1'), expected);
      assert.equal(await store.getTask('nope'), null);
      await store.ping();
      await assert.rejects(store.createTask(input), /createTask: UNIQUE constraint failed/);
      await store.close();
    });
  });

  void test('the jump hosts of a task are kept (first hop first) and come back with it; none is no field', async () => {
    await withStoreDir(async (dir, ledger) => {
      const store = await open(dir, ledger);
      const jump = [
        { host: 'bastion.example.com', port: 2222, user: 'jumper' },
        { host: '10.0.0.1', port: 22, user: 'deploy' },
      ];
      await store.createTask(newTask('j-1', { jump }));
      await store.createTask(newTask('j-2'));
      assert.deepEqual((await store.getTask('j-1'))?.jump, jump);
      assert.equal('jump' in ((await store.getTask('j-2')) ?? {}), false);
      const interrupted = await store.interruptUnfinished('the test said so', Date.now());
      assert.deepEqual(interrupted.find((t) => t.id === 'j-1')?.jump, jump, 'what the restart reaper reads');
      await store.close();
    });
  });

  void test('createBatch creates the batch and all its tasks; a failing insert leaves nothing', async () => {
    await withStoreDir(async (dir, ledger) => {
      const store = await open(dir, ledger);
      const tasks = ['a', 'b', 'c'].map((h, i) => newTask(`b1-${i}`, { batchId: 'b1', target: { host: h, port: 22, user: 'root' } }));
      const batch = await store.createBatch(newBatch('b1', 3), tasks);
      assert.deepEqual(batch, { ...newBatch('b1', 3), status: 'running', finishedAt: null });
      assert.deepEqual(await store.getBatch('b1'), batch);
      for (const t of tasks) assert.equal((await mustGet(store, t.id)).status, 'queued');

      // A duplicate id inside the batch: the batch row and the first tasks must roll back.
      const dup = [newTask('b2-0', { batchId: 'b2' }), newTask('b2-1', { batchId: 'b2' }), newTask('b2-0', { batchId: 'b2' })];
      await assert.rejects(store.createBatch(newBatch('b2', 3), dup), /UNIQUE constraint failed: tasks\.id/);
      assert.equal(await store.getBatch('b2'), null);
      assert.equal(await store.getTask('b2-0'), null);
      assert.equal(await store.getTask('b2-1'), null);

      // A clash with an existing task rolls back too.
      const clash = [newTask('b3-0', { batchId: 'b3' }), newTask('b1-0', { batchId: 'b3' })];
      await assert.rejects(store.createBatch(newBatch('b3', 2), clash), /UNIQUE/);
      assert.equal(await store.getBatch('b3'), null);
      assert.equal(await store.getTask('b3-0'), null);
      assert.equal((await mustGet(store, 'b1-0')).batchId, 'b1', 'the existing task is untouched');

      // Tasks claiming another batch are refused before anything is written.
      await assert.rejects(store.createBatch(newBatch('b4', 1), [newTask('b4-0', { batchId: 'other' })]), /belongs to batch other/);
      assert.equal(await store.getBatch('b4'), null);

      // A task may not name a batch that does not exist (foreign key).
      await assert.rejects(store.createTask(newTask('orphan', { batchId: 'missing' })), /FOREIGN KEY/);
      await store.close();
    });
  });

  void test('markStage appends to the history with durations; running from connecting on; never backwards', async () => {
    await withStoreDir(async (dir, ledger) => {
      const store = await open(dir, ledger);
      const t = newTask('t-1', { createdAt: 10_000 });
      await store.createTask(t);
      await store.markStage('t-1', 'connecting', 10_100);
      let s = await mustGet(store, 't-1');
      assert.equal(s.status, 'running');
      assert.equal(s.stage, 'connecting');
      await store.markStage('t-1', 'handshake', 10_250);
      await store.markStage('t-1', 'auth', 10_300);
      await store.markStage('t-1', 'connecting', 10_400); // backwards: ignored
      await store.markStage('t-1', 'auth', 10_400); // same stage: ignored
      s = await mustGet(store, 't-1');
      assert.equal(s.stage, 'auth');
      assert.deepEqual(s.stages, [
        { stage: 'queued', startedAt: new Date(10_000).toISOString(), durationMs: 100 },
        { stage: 'connecting', startedAt: new Date(10_100).toISOString(), durationMs: 150 },
        { stage: 'handshake', startedAt: new Date(10_250).toISOString(), durationMs: 50 },
        { stage: 'auth', startedAt: new Date(10_300).toISOString(), durationMs: 0 },
      ]);
      // Skipping stages is allowed (e.g. straight to closing).
      await store.markStage('t-1', 'closing', 10_500);
      s = await mustGet(store, 't-1');
      assert.equal(s.stage, 'closing');
      assert.equal(s.stages.at(-2)?.durationMs, 200);

      // A terminal task is left alone.
      await store.finishTask('t-1', report(t, 'ok'));
      const finished = await mustGet(store, 't-1');
      await store.markStage('t-1', 'running', 20_000);
      assert.deepEqual(await mustGet(store, 't-1'), finished);

      await assert.rejects(store.markStage('missing', 'connecting', 1), /markStage: no task missing/);
      await store.close();
    });
  });

  void test('finishTask stores the report and ignores an already-terminal task', async () => {
    await withStoreDir(async (dir, ledger) => {
      const store = await open(dir, ledger);
      const t = newTask('t-1');
      await store.createTask(t);
      await store.markStage('t-1', 'connecting', t.createdAt + 5);
      const before = Date.now();
      const r = report(t, 'nonzero-exit', { exitCode: 3, stdout: 'out\n'.repeat(1000), stderr: 'ünïcødé ✓\n', truncated: true, bytesDropped: { stdout: 10, stderr: 0 }, killConfirmed: true });
      await store.finishTask('t-1', r);
      const s = await mustGet(store, 't-1');
      assert.equal(s.status, 'nonzero-exit');
      assert.equal(s.stage, null);
      assert.deepEqual(s.report, r);
      assert.deepEqual(s.stages, r.stages);
      assert.ok(s.finishedAt !== null && s.finishedAt >= before && s.finishedAt <= Date.now());

      await store.finishTask('t-1', report(t, 'ok', { stdout: 'second' }));
      assert.deepEqual(await mustGet(store, 't-1'), s, 'the second report is ignored');

      // Straight from queued to a terminal error (e.g. cancelled while queued).
      const q = newTask('t-2');
      await store.createTask(q);
      const cancelled = report(q, 'cancelled', { exitCode: null, error: { code: 'cancelled', stage: 'queued', message: 'cancelled by caller' } });
      await store.finishTask('t-2', cancelled);
      assert.deepEqual((await mustGet(store, 't-2')).report, cancelled);

      await assert.rejects(store.finishTask('missing', r), /finishTask: no task missing/);
      await store.close();
    });
  });
});

void describe('SqliteTaskStore listing', () => {
  void test('filters by status, host and batch, newest first', async () => {
    await withStoreDir(async (dir, ledger) => {
      const store = await open(dir, ledger);
      await store.createBatch(newBatch('b1', 2), [
        newTask('b-0', { batchId: 'b1', createdAt: 50, target: { host: 'h1', port: 22, user: 'u' } }),
        newTask('b-1', { batchId: 'b1', createdAt: 51, target: { host: 'h2', port: 22, user: 'u' } }),
      ]);
      for (let i = 0; i < 6; i++) {
        const t = newTask(`t-${i}`, { createdAt: 100 + i, target: { host: i % 2 === 0 ? 'h1' : 'h2', port: 22, user: 'u' } });
        await store.createTask(t);
        if (i < 2) await store.finishTask(t.id, report(t, 'ok'));
      }
      const ids = async (q: Parameters<TaskStore['listTasks']>[0]): Promise<string[]> => (await store.listTasks(q)).tasks.map((t) => t.id);
      assert.deepEqual(await ids({ limit: 100 }), ['t-5', 't-4', 't-3', 't-2', 't-1', 't-0', 'b-1', 'b-0']);
      assert.deepEqual(await ids({ limit: 100, status: 'ok' }), ['t-1', 't-0']);
      assert.deepEqual(await ids({ limit: 100, status: 'queued' }), ['t-5', 't-4', 't-3', 't-2', 'b-1', 'b-0']);
      assert.deepEqual(await ids({ limit: 100, host: 'h1' }), ['t-4', 't-2', 't-0', 'b-0']);
      assert.deepEqual(await ids({ limit: 100, batchId: 'b1' }), ['b-1', 'b-0']);
      assert.deepEqual(await ids({ limit: 100, batchId: 'b1', host: 'h2', status: 'queued' }), ['b-1']);
      assert.deepEqual(await ids({ limit: 100, host: 'nowhere' }), []);
      assert.equal((await store.listTasks({ limit: 100 })).nextCursor, null);

      await assert.rejects(store.listTasks({ limit: 0 }), RangeError);
      await assert.rejects(store.listTasks({ limit: 1001 }), RangeError);
      await assert.rejects(store.listTasks({ limit: 10, cursor: 'not a cursor' }), StoreCursorError);
      await assert.rejects(store.listTasks({ limit: 10, cursor: Buffer.from('{"a":1}').toString('base64url') }), StoreCursorError);
      await store.close();
    });
  });

  void test('paging 250 tasks by 100: no duplicates, no gaps, newest first, stable under concurrent inserts', async () => {
    await withStoreDir(async (dir, ledger) => {
      const store = await open(dir, ledger);
      // Three tasks share each created_at: the id breaks the tie.
      const original: NewTask[] = [];
      for (let i = 0; i < 250; i++) original.push(newTask(`t-${String(i).padStart(3, '0')}`, { createdAt: 1_000 + Math.floor(i / 3) }));
      // Insert in a shuffled order: the order of insertion must not matter.
      for (const t of [...original].sort(() => Math.random() - 0.5)) await store.createTask(t);
      const expected = [...original].sort((a, b) => b.createdAt - a.createdAt || (a.id < b.id ? 1 : -1)).map((t) => t.id);

      const seen: string[] = [];
      let cursor: string | null = null;
      let pages = 0;
      let extra = 0;
      do {
        const page = await store.listTasks({ limit: 100, ...(cursor ? { cursor } : {}) });
        pages++;
        seen.push(...page.tasks.map((t) => t.id));
        cursor = page.nextCursor;
        assert.equal(typeof cursor === 'string' || cursor === null, true);
        // New tasks arrive between pages: newer than everything, and one at the very time of
        // the page's last task but ordered before it (larger id). None may shift the pages.
        for (let k = 0; k < 7; k++) await store.createTask(newTask(`new-${extra++}`, { createdAt: 5_000 + extra }));
        const last = page.tasks.at(-1);
        if (last) await store.createTask(newTask(`zz-${extra++}`, { createdAt: last.createdAt }));
      } while (cursor !== null);
      assert.equal(pages, 3);
      assert.deepEqual(seen, expected, 'every original task once, newest first');
      assert.equal(new Set(seen).size, 250);

      // Pages by the same cursor are repeatable.
      const first = await store.listTasks({ limit: 100 });
      assert.ok(first.nextCursor);
      const a = await store.listTasks({ limit: 100, cursor: first.nextCursor });
      const b = await store.listTasks({ limit: 100, cursor: first.nextCursor });
      assert.deepEqual(a, b);
      await store.close();
    });
  });
});

void describe('SqliteTaskStore restart, retention, batches', () => {
  void test('interruptUnfinished after a restart: queued/running become interrupted, terminal ones untouched, running batch cancelled', async () => {
    await withStoreDir(async (dir, ledger) => {
      const first = await open(dir, ledger);
      const queued = newTask('queued', { createdAt: 1_000 });
      const running = newTask('running', { createdAt: 1_000 });
      const done = newTask('done', { createdAt: 1_000 });
      await first.createBatch(newBatch('live-batch', 1), [newTask('in-batch', { batchId: 'live-batch', createdAt: 1_000 })]);
      await first.createBatch(newBatch('old-batch', 1), [newTask('old', { batchId: 'old-batch', createdAt: 900 })]);
      await first.finishTask('old', report(newTask('old'), 'ok'));
      await first.finishBatch('old-batch', 'finished', 999);
      for (const t of [queued, running, done]) await first.createTask(t);
      await first.markStage('running', 'connecting', 1_100);
      await first.markStage('running', 'running', 1_300);
      await first.finishTask('done', report(done, 'ok', { stdout: 'fine' }));
      const doneBefore = await mustGet(first, 'done');
      const oldBatchBefore = await first.getBatch('old-batch');
      // The process dies: nothing else is written (close only releases the file handle).
      await first.close();

      const second = await open(dir, ledger);
      const interrupted = await second.interruptUnfinished('leash stopped', 5_000);
      assert.deepEqual(interrupted.map((t) => t.id).sort(), ['in-batch', 'queued', 'running'], 'queued, running and the batch task');
      assert.equal(interrupted.find((t) => t.id === 'running')?.execId, 'exec-running', 'the exec id survives, to find orphans');
      assert.ok(interrupted.every((t) => t.status === 'interrupted'));
      for (const id of ['queued', 'running', 'in-batch']) {
        const t = await mustGet(second, id);
        assert.equal(t.status, 'interrupted', id);
        assert.equal(t.stage, null);
        assert.equal(t.interruptedReason, 'leash stopped');
        assert.equal(t.finishedAt, 5_000);
        assert.equal(t.report, null);
      }
      assert.deepEqual((await mustGet(second, 'running')).stages, [
        { stage: 'queued', startedAt: new Date(1_000).toISOString(), durationMs: 100 },
        { stage: 'connecting', startedAt: new Date(1_100).toISOString(), durationMs: 200 },
        { stage: 'running', startedAt: new Date(1_300).toISOString(), durationMs: 3_700 },
      ]);
      assert.deepEqual(await mustGet(second, 'done'), doneBefore);
      const live = await second.getBatch('live-batch');
      assert.equal(live?.status, 'cancelled');
      assert.equal(live.finishedAt, 5_000);
      assert.deepEqual(await second.getBatch('old-batch'), oldBatchBefore);
      assert.deepEqual(await second.interruptUnfinished('again', 6_000), [], 'nothing left to interrupt');
      // An interrupted task is terminal: a late report is ignored.
      await second.finishTask('queued', report(queued, 'ok'));
      assert.equal((await mustGet(second, 'queued')).status, 'interrupted');
      await second.close();
    });
  });

  void test('pruneHistory by age and by rows never touches live tasks; empty finished batches go too', async () => {
    await withStoreDir(async (dir, ledger) => {
      const store = await open(dir, ledger);
      const live = [newTask('live-q'), newTask('live-r')];
      for (const t of live) await store.createTask(t);
      await store.markStage('live-r', 'connecting', Date.now());

      const old: NewTask[] = [];
      for (let i = 0; i < 5; i++) old.push(newTask(`old-${i}`));
      await store.createBatch(newBatch('old-batch', 2), [newTask('ob-0', { batchId: 'old-batch' }), newTask('ob-1', { batchId: 'old-batch' })]);
      for (const t of [...old, newTask('ob-0'), newTask('ob-1')]) {
        if (!(await store.getTask(t.id))) await store.createTask(t);
        await store.finishTask(t.id, report(t, 'ok'));
      }
      await store.finishBatch('old-batch', 'finished', Date.now());
      await store.createBatch(newBatch('live-batch', 1), [newTask('lb-0', { batchId: 'live-batch' })]);
      await sleep(20);
      const cutoff = Date.now();
      const recent: NewTask[] = [];
      for (let i = 0; i < 10; i++) recent.push(newTask(`new-${String(i).padStart(2, '0')}`));
      for (const t of recent) {
        await store.createTask(t);
        await store.finishTask(t.id, report(t, 'error', { error: { code: 'connect-refused', stage: 'connecting', message: 'refused' } }));
      }

      // Age: everything finished before `cutoff` goes (7 tasks), newer ones and live ones stay.
      const maxAgeMs = 60_000;
      assert.equal(await store.pruneHistory({ maxAgeMs, maxRows: 0 }, cutoff - 1 + maxAgeMs), 7);
      for (const t of [...old, newTask('ob-0'), newTask('ob-1')]) assert.equal(await store.getTask(t.id), null, t.id);
      assert.equal(await store.getBatch('old-batch'), null, 'the finished batch left with no tasks is removed');
      assert.equal((await store.getBatch('live-batch'))?.status, 'running');
      for (const t of recent) assert.ok(await store.getTask(t.id), t.id);

      // Rows: keep the 3 newest terminal tasks; live ones never count and never go.
      assert.equal(await store.pruneHistory({ maxAgeMs: 0, maxRows: 3 }, Date.now()), 7);
      const left = (await store.listTasks({ limit: 100 })).tasks.map((t) => t.id).sort();
      assert.deepEqual(left, ['lb-0', 'live-q', 'live-r', 'new-07', 'new-08', 'new-09']);
      // Both limits at 0: nothing to do. Far in the future by age: live tasks still stay.
      assert.equal(await store.pruneHistory({ maxAgeMs: 0, maxRows: 0 }, Date.now()), 0);
      assert.equal(await store.pruneHistory({ maxAgeMs: 1, maxRows: 1 }, Date.now() + 86_400_000), 3);
      const remaining = (await store.listTasks({ limit: 100 })).tasks.map((t) => t.id).sort();
      assert.deepEqual(remaining, ['lb-0', 'live-q', 'live-r']);
      assert.equal((await store.getBatch('live-batch'))?.status, 'running');
      await store.close();
    });
  });

  void test('batchCounts and batchGroups (largest group first, hosts sorted, live tasks not grouped)', async () => {
    await withStoreDir(async (dir, ledger) => {
      const store = await open(dir, ledger);
      const hosts = ['h5', 'h3', 'h1', 'h2', 'h4', 'h6', 'h7', 'h8'];
      const tasks = hosts.map((h, i) => newTask(`t-${i}`, { batchId: 'b', createdAt: 100 + i, target: { host: h, port: 22, user: 'root' } }));
      await store.createBatch(newBatch('b', tasks.length), tasks);
      const by = (host: string): NewTask => {
        const t = tasks.find((x) => x.target.host === host);
        assert.ok(t);
        return t;
      };
      for (const h of ['h5', 'h3', 'h1']) await store.finishTask(by(h).id, report(by(h), 'ok', { stdout: 'hello\n', durationMs: Number(h.slice(1)) }));
      await store.finishTask(by('h2').id, report(by('h2'), 'ok', { stdout: 'other\n' }));
      await store.finishTask(by('h4').id, report(by('h4'), 'nonzero-exit', { exitCode: 2, stderr: 'no such file\n' }));
      await store.finishTask(by('h6').id, failure(by('h6'), 'connect-refused', 'connecting'));
      await store.finishTask(by('h7').id, failure(by('h7'), 'connect-refused', 'connecting'));
      await store.markStage(by('h8').id, 'connecting', 200); // still live

      assert.deepEqual(await store.batchCounts('b'), {
        byStatus: { ok: 4, 'nonzero-exit': 1, error: 2, running: 1 },
        byCode: { 'connect-refused': 2 },
      });
      const groups = await store.batchGroups('b');
      const host = (h: string) => ({ host: h, port: 22, user: 'root' });
      assert.deepEqual(groups, [
        { hosts: ['h1', 'h3', 'h5'].map(host), status: 'ok', exitCode: 0, signal: null, stdout: 'hello\n', stderr: '', errorCode: null, errorStage: null },
        { hosts: ['h6', 'h7'].map(host), status: 'error', exitCode: null, signal: null, stdout: '', stderr: '', errorCode: 'connect-refused', errorStage: 'connecting' },
        { hosts: ['h2'].map(host), status: 'ok', exitCode: 0, signal: null, stdout: 'other\n', stderr: '', errorCode: null, errorStage: null },
        { hosts: ['h4'].map(host), status: 'nonzero-exit', exitCode: 2, signal: null, stdout: '', stderr: 'no such file\n', errorCode: null, errorStage: null },
      ]);
      assert.deepEqual(await store.batchGroups('unknown'), []);
      assert.deepEqual(await store.batchCounts('unknown'), { byStatus: {}, byCode: {} });

      await store.finishBatch('b', 'budget-exhausted', 300);
      await store.finishBatch('b', 'finished', 400); // already final: ignored
      const b = await store.getBatch('b');
      assert.equal(b?.status, 'budget-exhausted');
      assert.equal(b.finishedAt, 300);
      await assert.rejects(store.finishBatch('nope', 'finished', 1), /no batch nope/);
      await store.close();
    });
  });
});

void describe('SqliteTaskStore schema and opening', () => {
  void test('migrations are numbered 1..n, and reopening runs none twice', async () => {
    assert.deepEqual(
      MIGRATIONS.map((m) => m.version),
      MIGRATIONS.map((_, i) => i + 1),
    );
    await withStoreDir(async (dir, ledger) => {
      const first = await open(dir, ledger);
      assert.deepEqual(first.migrationsApplied, MIGRATIONS.map((m) => m.version));
      await first.createTask(newTask('kept'));
      await first.close();
      const second = await open(dir, ledger);
      assert.deepEqual(second.migrationsApplied, []);
      assert.ok(await second.getTask('kept'), 'data survives the reopen');
      await second.close();

      const raw = new Database(path.join(dir, 'data', 'leash.db'), { readonly: true });
      try {
        const rows = raw.prepare<[], { version: number }>('SELECT version FROM schema_migrations ORDER BY version').all();
        assert.deepEqual(rows.map((r) => r.version), MIGRATIONS.map((m) => m.version));
        assert.equal(raw.pragma('journal_mode', { simple: true }), 'wal');
      } finally {
        raw.close();
      }
    });
  });

  void test('a database whose schema is newer than the code is refused', async () => {
    await withStoreDir(async (dir, ledger) => {
      const store = await open(dir, ledger);
      await store.close();
      const file = path.join(dir, 'data', 'leash.db');
      const raw = new Database(file);
      raw.prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)').run(SCHEMA_VERSION + 1, 'from the future', Date.now());
      raw.close();
      await assert.rejects(SqliteTaskStore.open(file, { ledger }), (err: unknown) => {
        assert.ok(err instanceof SchemaTooNewError);
        assert.match(err.message, new RegExp(`schema version ${SCHEMA_VERSION + 1}, newer than this leash knows \\(${SCHEMA_VERSION}\\)`));
        assert.ok(err.message.includes(file), 'names the file');
        return true;
      });
      assert.equal(ledger.liveCount('database'), 0, 'the refused database is closed');
    });
  });

  void test('a path that cannot be created gives a clear error', async () => {
    await withStoreDir(async (dir, ledger) => {
      const blocker = path.join(dir, 'not-a-dir');
      await writeFile(blocker, 'a regular file');
      const file = path.join(blocker, 'sub', 'leash.db');
      await assert.rejects(SqliteTaskStore.open(file, { ledger }), (err: unknown) => {
        assert.ok(err instanceof Error);
        assert.match(err.message, /cannot create its directory/);
        assert.ok(err.message.includes(file));
        return true;
      });
      // A file that is not a database at all.
      const garbage = path.join(dir, 'garbage.db');
      await writeFile(garbage, randomBytes(8192));
      await assert.rejects(SqliteTaskStore.open(garbage, { ledger }), /task database .*garbage\.db: cannot use it: file is not a database/);
      assert.equal(ledger.liveCount('database'), 0);
    });
  });

  void test('every method after close rejects clearly; close is idempotent and releases once', async () => {
    await withStoreDir(async (dir, ledger) => {
      const store = await open(dir, ledger);
      await store.close();
      await store.close();
      assert.equal(ledger.stats().get('database')?.opened, 1);
      assert.equal(ledger.stats().get('database')?.closed, 1);
      const t = newTask('x');
      const calls: Array<[string, () => Promise<unknown>]> = [
        ['createTask', () => store.createTask(t)],
        ['createBatch', () => store.createBatch(newBatch('b', 0), [])],
        ['markStage', () => store.markStage('x', 'connecting', 1)],
        ['finishTask', () => store.finishTask('x', report(t, 'ok'))],
        ['getTask', () => store.getTask('x')],
        ['listTasks', () => store.listTasks({ limit: 1 })],
        ['getBatch', () => store.getBatch('b')],
        ['finishBatch', () => store.finishBatch('b', 'finished', 1)],
        ['batchCounts', () => store.batchCounts('b')],
        ['batchGroups', () => store.batchGroups('b')],
        ['interruptUnfinished', () => store.interruptUnfinished('r', 1)],
        ['pruneHistory', () => store.pruneHistory({ maxAgeMs: 1, maxRows: 1 }, 1)],
        ['ping', () => store.ping()],
      ];
      for (const [name, call] of calls) {
        await assert.rejects(call(), new RegExp(`task store .*leash\\.db is closed \\(${name}\\)`), name);
      }
    });
  });
});

void describe('openStore', () => {
  void test('sqlite:PATH opens a store; relative paths are from the current directory', async () => {
    assert.equal(parseStoreUrl('sqlite:rel/leash.db'), path.resolve('rel/leash.db'));
    assert.equal(parseStoreUrl('sqlite:/abs/leash.db'), '/abs/leash.db');
    assert.equal(parseStoreUrl('sqlite::memory:'), ':memory:');
    await withStoreDir(async (dir, ledger) => {
      const file = path.join(dir, 'x', 'leash.db');
      const store = await openStore(`sqlite:${file}`, { ledger });
      assert.ok(store instanceof SqliteTaskStore);
      assert.equal(store.location, file);
      await store.ping();
      await store.close();
      assert.ok(existsSync(file));

      const memory = await openStore('sqlite::memory:', { ledger });
      await memory.createTask(newTask('m'));
      assert.equal((await memory.getTask('m'))?.id, 'm');
      await memory.close();
    });
  });

  void test('postgres and unknown URLs are refused with StoreUrlError', async () => {
    const ledger = new ResourceLedger();
    for (const url of ['postgres://leash:pw@db/leash', 'postgresql://db/leash', 'POSTGRES://x']) {
      await assert.rejects(openStore(url, { ledger }), (err: unknown) => {
        assert.ok(err instanceof StoreUrlError);
        assert.equal(err.message, 'postgres stores are not supported yet; use sqlite:PATH');
        return true;
      });
    }
    await assert.rejects(openStore('mysql://root:hunter2@db/leash', { ledger }), (err: unknown) => {
      assert.ok(err instanceof StoreUrlError);
      assert.match(err.message, /unsupported store URL "mysql:\/\/root:\*\*\*@db\/leash": expected sqlite:PATH/);
      assert.ok(!err.message.includes('hunter2'), 'the password is masked');
      return true;
    });
    await assert.rejects(openStore('leash.db', { ledger }), /unsupported store URL "leash\.db": expected sqlite:PATH/);
    await assert.rejects(openStore('sqlite:', { ledger }), /names no file/);
    await assert.rejects(openStore('sqlite://host/leash.db', { ledger }), /"\/\/" authority part/);
    assert.equal(ledger.liveCount('database'), 0);
  });
});

void describe('secrets never stored', () => {
  void test('env values never reach the database file: the store API has no field for them', async () => {
    await withStoreDir(async (dir, ledger) => {
      const sentinel = `SENTINEL-${randomBytes(16).toString('hex')}`;
      const envName = `LEASH_TEST_ENV_${randomBytes(4).toString('hex').toUpperCase()}`;
      // The caller's request, as the service receives it: env has values; only names go to the store.
      const request = { command: 'printenv HOME', env: { [envName]: sentinel, OTHER: `${sentinel}-2` } };
      const store = await open(dir, ledger);
      const ids: string[] = [];
      for (let i = 0; i < 20; i++) {
        const t = newTask(`s-${i}`, { command: request.command, envNames: Object.keys(request.env) });
        await store.createTask(t);
        await store.markStage(t.id, 'connecting', t.createdAt + 1);
        await store.finishTask(t.id, report(t, 'ok', { stdout: '/home/deploy\n' }));
        ids.push(t.id);
      }
      await store.createBatch(newBatch('sb', 1, { command: request.command }), [newTask('sb-0', { batchId: 'sb', envNames: Object.keys(request.env) })]);
      // The type has no field for a value: a literal carrying one does not compile…
      // @ts-expect-error -- NewTask has no `env`
      const typed: NewTask = { ...newTask('never-used'), env: request.env };
      void typed;
      // …and a careless caller passing a wider object (structural typing allows it) still
      // gets only the known fields stored: nothing is serialised wholesale.
      const sloppy = { ...newTask('sloppy', { envNames: Object.keys(request.env) }), env: request.env, stdin: sentinel, password: sentinel };
      await store.createTask(sloppy);
      await store.finishTask('sloppy', { ...report(sloppy, 'ok'), env: request.env } as TaskReport);
      assert.equal(Object.hasOwn(await mustGet(store, 'sloppy'), 'env'), false);
      assert.deepEqual((await mustGet(store, 's-0')).envNames, [envName, 'OTHER']);

      const file = path.join(dir, 'data', 'leash.db');
      const bytes = async (): Promise<Buffer> => {
        const parts = [await readFile(file)];
        for (const extra of ['-wal', '-shm', '-journal']) if (existsSync(file + extra)) parts.push(await readFile(file + extra));
        return Buffer.concat(parts);
      };
      // Positive control: the env name itself is stored and the grep finds it.
      const open_ = await bytes();
      assert.ok(open_.includes(Buffer.from(envName)), 'the grep sees stored text (env name)');
      assert.ok(!open_.includes(Buffer.from(sentinel)), 'the env value is not in the database or its WAL');
      await store.close();
      const closed = await bytes();
      assert.ok(closed.includes(Buffer.from(envName)));
      assert.ok(!closed.includes(Buffer.from(sentinel)), 'the env value is not in the database after close');
    });
  });
});
