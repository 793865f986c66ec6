import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { ResourceLedger, type ResourceHandle } from '../src/lifecycle/ledger.ts';
import { collector } from './support/gc.ts';

/** The creation-site frame must point here, at the caller, never into the ledger itself. */
const THIS_FILE = /test\/ledger\.test\.ts:\d+:\d+/;
const LEDGER_FILE = /src\/lifecycle\/ledger\.ts/;

void describe('ResourceLedger open/release', () => {
  void test('open registers an entry with kind, owner, attrs and creation time', () => {
    const ledger = new ResourceLedger();
    const before = Date.now();
    const handle = ledger.open('socket', 'task-1', { remote: '10.0.0.1:22' });
    const after = Date.now();
    const [entry, ...rest] = ledger.live();
    assert.equal(rest.length, 0);
    assert.ok(entry);
    assert.equal(entry.id, handle.id);
    assert.equal(entry.kind, 'socket');
    assert.equal(entry.owner, 'task-1');
    assert.deepEqual(entry.attrs, { remote: '10.0.0.1:22' });
    assert.ok(entry.createdAt >= before && entry.createdAt <= after, `createdAt ${entry.createdAt} in [${before}, ${after}]`);
    assert.equal(handle.released, false);
    handle.release();
  });

  void test('ids are distinct and increasing', () => {
    const ledger = new ResourceLedger();
    const a = ledger.open('socket', 'x');
    const b = ledger.open('channel', 'x');
    const c = ledger.open('socket', 'y');
    assert.ok(a.id < b.id && b.id < c.id, `${a.id} < ${b.id} < ${c.id}`);
    for (const h of [a, b, c]) h.release();
  });

  void test('release removes the entry exactly once; a second release returns false', () => {
    const ledger = new ResourceLedger();
    const handle = ledger.open('channel', 'task-1');
    assert.equal(ledger.liveCount(), 1);
    assert.equal(handle.release(), true);
    assert.equal(handle.released, true);
    assert.equal(ledger.liveCount(), 0);
    assert.equal(handle.release(), false);
    assert.equal(handle.release(), false);
    assert.deepEqual(ledger.stats().get('channel'), { opened: 1, closed: 1 });
  });

  void test('opened/closed counters are kept per kind', () => {
    const ledger = new ResourceLedger();
    const sockets = [ledger.open('socket', 'a'), ledger.open('socket', 'b'), ledger.open('socket', 'c')];
    const conn = ledger.open('ssh-connection', 'a');
    sockets[0]!.release();
    sockets[0]!.release();
    sockets[1]!.release();
    conn.release();
    assert.deepEqual(ledger.stats().get('socket'), { opened: 3, closed: 2 });
    assert.deepEqual(ledger.stats().get('ssh-connection'), { opened: 1, closed: 1 });
    assert.equal(ledger.stats().get('channel'), undefined);
    assert.equal(ledger.liveCount('socket'), 1);
    assert.equal(ledger.liveCount('ssh-connection'), 0);
    assert.equal(ledger.liveCount('channel'), 0);
    sockets[2]!.release();
    assert.deepEqual(ledger.stats().get('socket'), { opened: 3, closed: 3 });
  });

  void test('onRelease runs once, on the first release only', () => {
    const ledger = new ResourceLedger();
    let calls = 0;
    const handle = ledger.open('child-process', 'task-1', {}, () => calls++);
    assert.equal(calls, 0);
    handle.release();
    handle.release();
    assert.equal(calls, 1);
  });

  void test('onRelease that throws still removes the entry, and runs only once', () => {
    const ledger = new ResourceLedger();
    let calls = 0;
    const handle = ledger.open('agent-socket', 'task-1', {}, () => {
      calls++;
      throw new Error('close failed');
    });
    assert.throws(() => handle.release(), /close failed/);
    assert.equal(calls, 1);
    assert.equal(handle.released, true);
    assert.equal(ledger.liveCount(), 0);
    assert.deepEqual(ledger.stats().get('agent-socket'), { opened: 1, closed: 1 });
    assert.equal(handle.release(), false);
    assert.equal(calls, 1);
  });
});

void describe('ResourceLedger ownership', () => {
  void test('transfer changes the owner seen by ownedBy and live', () => {
    const ledger = new ResourceLedger();
    const handle = ledger.open('ssh-connection', 'task-1');
    handle.transfer('pool');
    assert.equal(handle.owner, 'pool');
    assert.deepEqual(ledger.ownedBy('task-1'), []);
    assert.deepEqual(
      ledger.ownedBy('pool').map((e) => e.id),
      [handle.id],
    );
    assert.equal(ledger.live()[0]?.owner, 'pool');
    handle.release();
  });

  void test('transfer after release is refused and changes nothing', () => {
    const ledger = new ResourceLedger();
    const handle = ledger.open('ssh-connection', 'task-1');
    handle.release();
    assert.throws(() => handle.transfer('pool'), /cannot transfer released ssh-connection/);
    assert.equal(handle.owner, 'task-1');
    assert.equal(ledger.liveCount(), 0);
  });

  void test('ownedBy, live and liveCount list what is alive, oldest first', () => {
    const ledger = new ResourceLedger();
    const a1 = ledger.open('socket', 'a');
    const b1 = ledger.open('socket', 'b');
    const a2 = ledger.open('channel', 'a');
    const a3 = ledger.open('timer', 'a');
    assert.deepEqual(
      ledger.live().map((e) => e.id),
      [a1.id, b1.id, a2.id, a3.id],
    );
    assert.deepEqual(
      ledger.ownedBy('a').map((e) => e.id),
      [a1.id, a2.id, a3.id],
    );
    assert.deepEqual(ledger.ownedBy('nobody'), []);
    assert.equal(ledger.liveCount(), 4);
    assert.equal(ledger.liveCount('socket'), 2);
    a2.release();
    assert.deepEqual(
      ledger.ownedBy('a').map((e) => e.kind),
      ['socket', 'timer'],
    );
    assert.equal(ledger.liveCount(), 3);
    assert.equal(ledger.liveCount('channel'), 0);
    for (const h of [a1, b1, a3]) h.release();
    assert.equal(ledger.liveCount(), 0);
    assert.deepEqual(ledger.live(), []);
  });
});

void describe('ResourceLedger handover keeps nothing of the creator alive', () => {
  void test('a transferred entry does not hold the closures of the code that created it', async () => {
    const ledger = new ResourceLedger();
    const gc = collector();
    let handle: ResourceHandle | undefined;
    let creatorData: WeakRef<object> | undefined;
    // Like a batch's fan-out: a large list in scope where a connection is opened.
    (() => {
      const tasks = Array.from({ length: 1000 }, (_, i) => ({ i }));
      creatorData = new WeakRef(tasks);
      [0].forEach(() => {
        handle = ledger.open('ssh-connection', 'task-1', { n: tasks.length });
      });
    })();
    handle!.transfer('pool');
    // Let the creating frames go, then collect.
    await sleep(0);
    gc();
    assert.equal(creatorData.deref(), undefined, 'the creator\'s list was collected');
    assert.match(ledger.live()[0]!.site.top(), /ledger\.test\.ts/);
    handle!.release();
  });
});

void describe('ResourceLedger timeout', () => {
  void test('fires once, after ms, and removes its entry', async () => {
    const ledger = new ResourceLedger();
    let fired = 0;
    const started = Date.now();
    let firedAfter = -1;
    const handle = ledger.timeout('task-1', 20, () => {
      fired++;
      firedAfter = Date.now() - started;
    }, { deadline: 'connect' });
    const entry = ledger.live()[0];
    assert.equal(entry?.kind, 'timer');
    assert.equal(entry?.owner, 'task-1');
    assert.deepEqual(entry?.attrs, { ms: 20, deadline: 'connect' });
    assert.equal(ledger.liveCount('timer'), 1);
    await sleep(60);
    assert.equal(fired, 1);
    assert.ok(firedAfter >= 15, `fired after ${firedAfter} ms`);
    assert.equal(handle.released, true);
    assert.equal(ledger.liveCount(), 0);
    assert.deepEqual(ledger.stats().get('timer'), { opened: 1, closed: 1 });
    assert.equal(handle.release(), false);
    await sleep(30);
    assert.equal(fired, 1);
  });

  void test('the entry is already gone while fn runs', async () => {
    const ledger = new ResourceLedger();
    let liveDuringFn = -1;
    ledger.timeout('task-1', 1, () => {
      liveDuringFn = ledger.liveCount();
    });
    await sleep(20);
    assert.equal(liveDuringFn, 0);
  });

  void test('releasing before it fires clears the timer and fn never runs', async () => {
    const ledger = new ResourceLedger();
    let fired = 0;
    const handle = ledger.timeout('task-1', 10, () => fired++);
    assert.equal(handle.release(), true);
    assert.equal(ledger.liveCount(), 0);
    await sleep(40);
    assert.equal(fired, 0);
    assert.deepEqual(ledger.stats().get('timer'), { opened: 1, closed: 1 });
  });

  void test('a pending ledger timeout does not keep the process alive (unref)', () => {
    const script = [
      "import { ResourceLedger } from './src/lifecycle/ledger.ts';",
      'const ledger = new ResourceLedger();',
      "ledger.timeout('t', 60_000, () => { console.log('fired'); process.exitCode = 3; });",
      "console.log('armed', ledger.liveCount('timer'));",
    ].join('\n');
    const started = Date.now();
    const out = execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      cwd: new URL('..', import.meta.url),
      encoding: 'utf8',
      timeout: 15_000,
      killSignal: 'SIGKILL',
    });
    const took = Date.now() - started;
    assert.equal(out, 'armed 1\n');
    assert.ok(took < 15_000, `exited after ${took} ms`);
  });
});

void describe('ResourceLedger creation site', () => {
  void test('open() records the caller as the top frame, not ledger.ts', () => {
    const ledger = new ResourceLedger();
    const handle = ledger.open('socket', 'task-1');
    const top = ledger.live()[0]!.site.top();
    assert.match(top, THIS_FILE);
    assert.doesNotMatch(top, LEDGER_FILE);
    handle.release();
  });

  void test('timeout() records the caller as the top frame, not ledger.ts', () => {
    const ledger = new ResourceLedger();
    const handle = ledger.timeout('task-1', 60_000, () => {});
    const top = ledger.live()[0]!.site.top();
    assert.match(top, THIS_FILE);
    assert.doesNotMatch(top, LEDGER_FILE);
    handle.release();
  });

  void test('the creation site names the line of the call', () => {
    const ledger = new ResourceLedger();
    const line = Number(/:(\d+):\d+\)?$/.exec(new Error().stack!.split('\n')[1]!)?.[1]);
    const handle = ledger.open('socket', 'task-1');
    const top = ledger.live()[0]!.site.top();
    assert.match(top, new RegExp(`ledger\\.test\\.ts:${line + 1}:`));
    handle.release();
  });
});
