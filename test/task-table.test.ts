import assert from 'node:assert/strict';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { STAGES, TERMINAL_STATUSES, canEnter, stageIndex, type Stage } from '../src/lifecycle/stages.ts';
import { TaskTable, type LiveTask, type TaskFinishEvent, type TaskStageEvent } from '../src/lifecycle/task-table.ts';

const target = { host: 'web01', port: 22, user: 'deploy' };

/** Collects what is published on `name` while `fn` runs (seeing each as it comes), then unsubscribes. */
function collect<T>(name: string, fn: () => void, onMessage?: (message: T) => void): T[] {
  const seen: T[] = [];
  const listener = (message: unknown): void => {
    seen.push(message as T);
    onMessage?.(message as T);
  };
  subscribe(name, listener);
  try {
    fn();
  } finally {
    unsubscribe(name, listener);
  }
  return seen;
}

void describe('stages', () => {
  void test('the stage order is the contract of DESIGN.md', () => {
    assert.deepEqual(STAGES, ['queued', 'connecting', 'handshake', 'auth', 'channel', 'running', 'closing']);
    assert.deepEqual(TERMINAL_STATUSES, ['ok', 'nonzero-exit', 'error', 'cancelled', 'interrupted']);
    assert.deepEqual(
      STAGES.map((s) => stageIndex(s)),
      [0, 1, 2, 3, 4, 5, 6],
    );
  });

  void test('canEnter allows exactly the later stages', () => {
    for (const from of STAGES) {
      for (const to of STAGES) {
        assert.equal(canEnter(from, to), stageIndex(to) > stageIndex(from), `${from} → ${to}`);
      }
    }
  });
});

void describe('TaskTable ids and lookup', () => {
  void test('ids count up per table and tasks start queued', () => {
    const table = new TaskTable();
    const a = table.create({ target });
    const b = table.create({ target });
    assert.equal(a.id, '1');
    assert.equal(b.id, '2');
    assert.equal(a.stage, 'queued');
    assert.equal(a.waiting, null);
    assert.equal(a.finished, false);
    assert.deepEqual(a.target, target);
    assert.equal(new TaskTable().create({ target }).id, '1', 'each table numbers its own tasks');
    table.finish(a, 'ok');
    table.finish(b, 'ok');
  });

  void test('an explicit id is used as given; a duplicate live id throws', () => {
    const table = new TaskTable();
    const t = table.create({ id: 'f1c0', target, attrs: { command: 'uptime' } });
    assert.equal(t.id, 'f1c0');
    assert.deepEqual(t.attrs, { command: 'uptime' });
    assert.throws(() => table.create({ id: 'f1c0', target }), /duplicate task id f1c0/);
    assert.equal(table.size, 1);
    table.finish(t, 'ok');
  });

  void test('get, live (oldest first) and size follow the table', () => {
    const table = new TaskTable();
    const a = table.create({ target });
    const b = table.create({ target });
    const c = table.create({ target });
    assert.equal(table.size, 3);
    assert.equal(table.get(b.id), b);
    assert.deepEqual(table.live(), [a, b, c]);
    table.finish(b, 'error');
    assert.equal(table.get(b.id), undefined);
    assert.deepEqual(table.live(), [a, c]);
    assert.equal(table.size, 2);
    table.finish(a, 'ok');
    table.finish(c, 'ok');
    assert.equal(table.size, 0);
  });

  void test('the creation site points at the caller of create()', () => {
    const table = new TaskTable();
    const t = table.create({ target });
    assert.match(t.site.top(), /test\/task-table\.test\.ts:\d+:\d+/);
    assert.doesNotMatch(t.site.top(), /src\/lifecycle\/task-table\.ts/);
    table.finish(t, 'ok');
  });
});

void describe('LiveTask stages', () => {
  void test('history records every stage entered, in order, with non-decreasing times', async () => {
    const table = new TaskTable();
    const before = Date.now();
    const t = table.create({ target });
    const path: Stage[] = ['connecting', 'handshake', 'auth', 'channel', 'running', 'closing'];
    for (const stage of path) {
      await sleep(2);
      t.enter(stage);
      assert.equal(t.stage, stage);
    }
    const after = Date.now();
    assert.deepEqual(
      t.history.map((m) => m.stage),
      ['queued', ...path],
    );
    assert.equal(t.history[0]!.at, t.createdAt);
    assert.ok(t.createdAt >= before);
    for (let i = 1; i < t.history.length; i++) {
      assert.ok(t.history[i]!.at >= t.history[i - 1]!.at, `mark ${i} is not earlier than mark ${i - 1}`);
    }
    assert.ok(t.history.at(-1)!.at > t.createdAt, 'time passed between queued and closing');
    assert.ok(t.history.at(-1)!.at <= after);
    table.finish(t, 'ok');
  });

  void test('a stage may be skipped', () => {
    const table = new TaskTable();
    const t = table.create({ target });
    t.enter('connecting');
    t.enter('closing');
    assert.deepEqual(
      t.history.map((m) => m.stage),
      ['queued', 'connecting', 'closing'],
    );
    table.finish(t, 'cancelled');
  });

  void test('moving backwards throws and leaves the stage unchanged', () => {
    const table = new TaskTable();
    const t = table.create({ id: 'b1', target });
    t.enter('auth');
    assert.throws(() => t.enter('handshake'), /task b1: illegal stage change auth → handshake/);
    assert.throws(() => t.enter('queued'), /illegal stage change auth → queued/);
    assert.equal(t.stage, 'auth');
    assert.equal(t.history.length, 2);
    table.finish(t, 'error');
  });

  void test('re-entering the same stage throws', () => {
    const table = new TaskTable();
    const t = table.create({ target });
    assert.throws(() => t.enter('queued'), /illegal stage change queued → queued/);
    t.enter('running');
    assert.throws(() => t.enter('running'), /illegal stage change running → running/);
    assert.equal(t.history.length, 2);
    table.finish(t, 'ok');
  });

  void test('entering any stage after finish throws', () => {
    const table = new TaskTable();
    const t = table.create({ id: 'f9', target });
    t.enter('connecting');
    table.finish(t, 'error');
    assert.equal(t.finished, true);
    assert.throws(() => t.enter('closing'), /task f9: cannot enter closing after finishing/);
    assert.equal(t.stage, 'connecting');
  });
});

void describe('LiveTask wait', () => {
  void test('wait sets what the task waits on and when the wait began', async () => {
    const table = new TaskTable();
    const t = table.create({ target });
    assert.equal(t.waitingSince, t.createdAt);
    await sleep(3);
    const before = Date.now();
    t.wait('server-banner');
    assert.equal(t.waiting, 'server-banner');
    assert.ok(t.waitingSince >= before);
    assert.ok(t.waitingSince > t.createdAt);
    table.finish(t, 'ok');
  });

  void test('waiting on the same thing again keeps the original waitingSince', async () => {
    const table = new TaskTable();
    const t = table.create({ target });
    t.wait('auth-response');
    const since = t.waitingSince;
    await sleep(3);
    t.wait('auth-response');
    assert.equal(t.waitingSince, since);
    await sleep(3);
    t.wait('channel-open');
    assert.equal(t.waiting, 'channel-open');
    assert.ok(t.waitingSince > since);
    table.finish(t, 'ok');
  });

  void test('wait(null) clears the wait; entering a stage clears it too', async () => {
    const table = new TaskTable();
    const t = table.create({ target });
    t.wait('dns');
    t.wait(null);
    assert.equal(t.waiting, null);
    t.wait('tcp-connect');
    const since = t.waitingSince;
    await sleep(3);
    t.enter('connecting');
    assert.equal(t.waiting, null);
    assert.ok(t.waitingSince > since);
    assert.equal(t.waitingSince, t.history.at(-1)!.at);
    table.finish(t, 'ok');
  });

  void test('wait after finish is ignored', () => {
    const table = new TaskTable();
    const t = table.create({ target });
    t.wait('exit-status');
    const since = t.waitingSince;
    table.finish(t, 'ok');
    t.wait('something-else');
    assert.equal(t.waiting, 'exit-status');
    assert.equal(t.waitingSince, since);
  });
});

void describe('TaskTable finish', () => {
  void test('finish removes the task from live() and marks it finished', () => {
    const table = new TaskTable();
    const t = table.create({ target });
    table.finish(t, 'ok');
    assert.equal(t.finished, true);
    assert.deepEqual(table.live(), []);
    assert.equal(table.size, 0);
  });

  void test('finish is idempotent: the second call publishes nothing', () => {
    const table = new TaskTable();
    const t = table.create({ target });
    const events = collect<TaskFinishEvent>('leash:task:finish', () => {
      table.finish(t, 'error');
      table.finish(t, 'ok');
    });
    assert.equal(events.length, 1);
    assert.equal(events[0]!.status, 'error');
    assert.equal(table.size, 0);
  });

  void test('finishing a task again does not remove a later task that reuses its id', () => {
    const table = new TaskTable();
    const first = table.create({ id: 'job-7', target });
    table.finish(first, 'interrupted');
    const second = table.create({ id: 'job-7', target });
    table.finish(first, 'ok'); // a late, duplicate finish of the first task
    assert.equal(table.get('job-7'), second, 'the live task with that id stays in the table');
    assert.equal(second.finished, false);
    table.finish(second, 'ok');
    assert.equal(table.size, 0);
  });

  void test('a finished id can be used again by a new task', () => {
    const table = new TaskTable();
    const first = table.create({ id: 'retry', target });
    table.finish(first, 'error');
    const second = table.create({ id: 'retry', target });
    assert.notEqual(second, first);
    assert.equal(second.stage, 'queued');
    table.finish(second, 'ok');
  });
});

void describe('LiveTask hardDeadline', () => {
  void test('hardDeadline is createdAt + hardDeadlineMs', () => {
    const table = new TaskTable();
    const t = table.create({ target, hardDeadlineMs: 45_000 });
    assert.equal(t.hardDeadline, t.createdAt + 45_000);
    table.finish(t, 'ok');
  });

  void test('hardDeadline is null when unbounded or not given', () => {
    const table = new TaskTable();
    const a = table.create({ target, hardDeadlineMs: null });
    const b = table.create({ target });
    assert.equal(a.hardDeadline, null);
    assert.equal(b.hardDeadline, null);
    table.finish(a, 'ok');
    table.finish(b, 'ok');
  });
});

void describe('diagnostics channels', () => {
  void test("'leash:task:stage' publishes every stage change with the task", () => {
    const table = new TaskTable();
    let t: LiveTask | undefined;
    const events = collect<TaskStageEvent>('leash:task:stage', () => {
      t = table.create({ target });
      t.enter('connecting');
      t.enter('handshake');
      assert.throws(() => t!.enter('connecting'));
      t.enter('closing');
    });
    assert.ok(t);
    assert.deepEqual(
      events.map((e) => e.stage),
      ['connecting', 'handshake', 'closing'],
    );
    for (const e of events) assert.equal(e.task, t);
    table.finish(t, 'ok');
  });

  void test('the stage event is published after the task has moved', () => {
    const table = new TaskTable();
    const t = table.create({ target });
    const seen: Array<{ stage: Stage; history: number; waiting: string | null }> = [];
    t.wait('dns');
    collect<TaskStageEvent>('leash:task:stage', () => t.enter('connecting'), (e) => {
      seen.push({ stage: e.task.stage, history: e.task.history.length, waiting: e.task.waiting });
    });
    assert.deepEqual(seen, [{ stage: 'connecting', history: 2, waiting: null }]);
    table.finish(t, 'ok');
  });

  void test("'leash:task:finish' publishes the task and its status once the task has left the table", () => {
    const table = new TaskTable();
    const t = table.create({ target });
    let inTableDuringEvent: boolean | undefined;
    let finishedDuringEvent: boolean | undefined;
    const events = collect<TaskFinishEvent>('leash:task:finish', () => {
      table.finish(t, 'nonzero-exit');
    }, (e) => {
      inTableDuringEvent = table.get(e.task.id) !== undefined;
      finishedDuringEvent = e.task.finished;
    });
    assert.equal(events.length, 1);
    assert.equal(events[0]!.task, t);
    assert.equal(events[0]!.status, 'nonzero-exit');
    assert.equal(inTableDuringEvent, false);
    assert.equal(finishedDuringEvent, true);
  });
});
