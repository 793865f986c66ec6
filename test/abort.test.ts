import assert from 'node:assert/strict';
import { getEventListeners } from 'node:events';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { LinkedAbort, onAbort, waitUntil, type Settle } from '../src/lifecycle/abort.ts';
import { withDeadline } from '../src/lifecycle/deadline.ts';
import { ResourceLedger } from '../src/lifecycle/ledger.ts';

function listeners(signal: AbortSignal): number {
  return getEventListeners(signal, 'abort').length;
}

/**
 * A body that waits on "I/O" until its signal aborts, and tears it down then. The I/O is a
 * ref'd timer standing in for a socket: ledger timers are unref'd, so without something
 * real to wait on the event loop would end before any deadline fires.
 */
function waitForAbort(signal: AbortSignal, onAbortSeen?: () => void): Promise<never> {
  return waitUntil<never>(signal, () => {
    const io = setTimeout(() => {}, 10_000);
    signal.addEventListener('abort', () => onAbortSeen?.(), { once: true });
    return () => clearTimeout(io);
  });
}

void describe('onAbort', () => {
  void test('fires once with the reason when the signal aborts, then holds no listener', () => {
    const controller = new AbortController();
    const reasons: unknown[] = [];
    onAbort(controller.signal, (r) => reasons.push(r));
    assert.equal(listeners(controller.signal), 1);
    const reason = new Error('stop');
    controller.abort(reason);
    controller.abort(new Error('again'));
    assert.deepEqual(reasons, [reason]);
    assert.equal(listeners(controller.signal), 0);
  });

  void test('the disposer removes the listener and fn never runs', () => {
    const controller = new AbortController();
    let calls = 0;
    const dispose = onAbort(controller.signal, () => calls++);
    assert.equal(listeners(controller.signal), 1);
    dispose();
    assert.equal(listeners(controller.signal), 0);
    dispose();
    controller.abort();
    assert.equal(calls, 0);
  });

  void test('fires at once, synchronously, for an already-aborted signal and adds no listener', () => {
    const reason = new Error('before');
    const signal = AbortSignal.abort(reason);
    const reasons: unknown[] = [];
    const dispose = onAbort(signal, (r) => reasons.push(r));
    assert.deepEqual(reasons, [reason]);
    assert.equal(listeners(signal), 0);
    dispose();
    assert.deepEqual(reasons, [reason]);
  });

  void test('an undefined signal never fires and the disposer is harmless', () => {
    let calls = 0;
    const dispose = onAbort(undefined, () => calls++);
    dispose();
    assert.equal(calls, 0);
  });

  void test('many guarded waits on one long-lived signal leave no listener behind', () => {
    const parent = new AbortController();
    for (let i = 0; i < 1000; i++) onAbort(parent.signal, () => {})();
    assert.equal(listeners(parent.signal), 0);
  });
});

void describe('LinkedAbort', () => {
  void test('aborts with the parent reason when the parent aborts', () => {
    const parent = new AbortController();
    const link = new LinkedAbort(parent.signal);
    assert.equal(link.signal.aborted, false);
    const reason = new Error('cancel');
    parent.abort(reason);
    assert.equal(link.signal.aborted, true);
    assert.equal(link.signal.reason, reason);
    link.dispose();
  });

  void test('is aborted at once when the parent already was', () => {
    const reason = new Error('early');
    const link = new LinkedAbort(AbortSignal.abort(reason));
    assert.equal(link.signal.aborted, true);
    assert.equal(link.signal.reason, reason);
    link.dispose();
  });

  void test('can abort on its own without touching the parent; the first reason wins', () => {
    const parent = new AbortController();
    const link = new LinkedAbort(parent.signal);
    const first = new Error('deadline');
    link.abort(first);
    link.abort(new Error('second'));
    assert.equal(link.signal.reason, first);
    assert.equal(parent.signal.aborted, false);
    parent.abort(new Error('parent'));
    assert.equal(link.signal.reason, first);
    link.dispose();
  });

  void test('dispose unlinks from the parent', () => {
    const parent = new AbortController();
    const link = new LinkedAbort(parent.signal);
    assert.equal(listeners(parent.signal), 1);
    link.dispose();
    assert.equal(listeners(parent.signal), 0);
    parent.abort(new Error('late'));
    assert.equal(link.signal.aborted, false);
  });

  void test('works without a parent', () => {
    const link = new LinkedAbort();
    assert.equal(link.signal.aborted, false);
    link.abort('why');
    assert.equal(link.signal.reason, 'why');
    link.dispose();
  });
});

/** A waitUntil whose settle and cleanup count are exposed to the test. */
function counted<T>(signal: AbortSignal): { promise: Promise<T>; settle: () => Settle<T>; cleanups: () => number } {
  let settle: Settle<T> | undefined;
  let cleanups = 0;
  const promise = waitUntil<T>(signal, (s) => {
    settle = s;
    return () => cleanups++;
  });
  return { promise, settle: () => settle!, cleanups: () => cleanups };
}

void describe('waitUntil', () => {
  void test('resolve runs the cleanup exactly once and removes the abort listener', async () => {
    const controller = new AbortController();
    const w = counted<string>(controller.signal);
    assert.equal(listeners(controller.signal), 1);
    assert.equal(w.cleanups(), 0);
    w.settle().resolve('banner');
    w.settle().resolve('again');
    w.settle().reject(new Error('late'));
    assert.equal(await w.promise, 'banner');
    assert.equal(w.cleanups(), 1);
    assert.equal(listeners(controller.signal), 0);
    controller.abort(new Error('after'));
    assert.equal(w.cleanups(), 1);
  });

  void test('reject runs the cleanup exactly once and removes the abort listener', async () => {
    const controller = new AbortController();
    const w = counted<string>(controller.signal);
    const err = new Error('closed');
    w.settle().reject(err);
    w.settle().reject(new Error('again'));
    w.settle().resolve('late');
    await assert.rejects(w.promise, (e) => e === err);
    assert.equal(w.cleanups(), 1);
    assert.equal(listeners(controller.signal), 0);
  });

  void test('abort rejects with the signal reason and runs the cleanup exactly once', async () => {
    const controller = new AbortController();
    const w = counted<string>(controller.signal);
    const reason = new Error('handshake deadline');
    controller.abort(reason);
    assert.equal(w.cleanups(), 1, 'cleanup runs synchronously on abort');
    w.settle().resolve('too late');
    await assert.rejects(w.promise, (e) => e === reason);
    assert.equal(w.cleanups(), 1);
    assert.equal(listeners(controller.signal), 0);
  });

  void test('an already-aborted signal rejects with its reason after one cleanup', async () => {
    const reason = new Error('cancelled earlier');
    const signal = AbortSignal.abort(reason);
    const w = counted<string>(signal);
    await assert.rejects(w.promise, (e) => e === reason);
    assert.equal(w.cleanups(), 1);
    assert.equal(listeners(signal), 0);
  });

  void test('resolving synchronously inside start still runs the cleanup once', async () => {
    const controller = new AbortController();
    let cleanups = 0;
    const value = await waitUntil<number>(controller.signal, ({ resolve }) => {
      resolve(7);
      return () => cleanups++;
    });
    assert.equal(value, 7);
    assert.equal(cleanups, 1);
    assert.equal(listeners(controller.signal), 0);
    controller.abort();
    assert.equal(cleanups, 1);
  });

  void test('rejecting synchronously inside start still runs the cleanup once', async () => {
    const controller = new AbortController();
    let cleanups = 0;
    const err = new Error('refused');
    const promise = waitUntil<number>(controller.signal, ({ reject }) => {
      reject(err);
      return () => cleanups++;
    });
    await assert.rejects(promise, (e) => e === err);
    assert.equal(cleanups, 1);
    assert.equal(listeners(controller.signal), 0);
  });

  void test('a start without cleanup is allowed', async () => {
    const controller = new AbortController();
    const value = await waitUntil<string>(controller.signal, ({ resolve }) => {
      setImmediate(() => resolve('done'));
    });
    assert.equal(value, 'done');
    assert.equal(listeners(controller.signal), 0);
  });

  void test('an event-driven wait detaches its event listener whichever way it ends', async () => {
    const controller = new AbortController();
    const source = new EventTarget();
    const promise = waitUntil<string>(controller.signal, ({ resolve }) => {
      const onReady = (): void => resolve('ready');
      source.addEventListener('ready', onReady);
      return () => source.removeEventListener('ready', onReady);
    });
    assert.equal(getEventListeners(source, 'ready').length, 1);
    controller.abort(new Error('stop'));
    await assert.rejects(promise, /stop/);
    assert.equal(getEventListeners(source, 'ready').length, 0);
    assert.equal(listeners(controller.signal), 0);
  });
});

void describe('withDeadline', () => {
  const timeoutError = (): Error => new Error('handshake-timeout');

  void test('the body signal aborts with onTimeout() after ms', async () => {
    const ledger = new ResourceLedger();
    const started = Date.now();
    let abortedAfter = -1;
    const err = await withDeadline({ ledger, owner: 't1', ms: 30, onTimeout: timeoutError, label: 'handshake' }, (signal) =>
      waitForAbort(signal, () => (abortedAfter = Date.now() - started)),
    ).then(
      () => assert.fail('the body should have been aborted'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof Error);
    assert.equal(err.message, 'handshake-timeout');
    assert.ok(abortedAfter >= 25, `aborted after ${abortedAfter} ms`);
    assert.ok(abortedAfter < 1000, `aborted after ${abortedAfter} ms`);
    assert.equal(ledger.liveCount(), 0);
    assert.deepEqual(ledger.stats().get('timer'), { opened: 1, closed: 1 });
  });

  void test('while the body runs, the ledger holds one timer owned by the task and labelled', async () => {
    const ledger = new ResourceLedger();
    let during: unknown;
    await withDeadline({ ledger, owner: 'task-42', ms: 5_000, onTimeout: timeoutError, label: 'auth' }, () => {
      during = ledger.live().map((e) => ({ kind: e.kind, owner: e.owner, attrs: e.attrs }));
      return Promise.resolve();
    });
    assert.deepEqual(during, [{ kind: 'timer', owner: 'task-42', attrs: { ms: 5_000, deadline: 'auth' } }]);
  });

  void test('the timer entry is released when the body finishes early, and never fires', async () => {
    const ledger = new ResourceLedger();
    let timeouts = 0;
    let bodySignal: AbortSignal | undefined;
    const value = await withDeadline(
      { ledger, owner: 't1', ms: 40, onTimeout: () => (timeouts++, new Error('late')), label: 'connect' },
      async (signal) => {
        bodySignal = signal;
        await sleep(1);
        return 'connected';
      },
    );
    assert.equal(value, 'connected');
    assert.equal(ledger.liveCount(), 0);
    await sleep(80);
    assert.equal(timeouts, 0);
    assert.equal(bodySignal?.aborted, false);
  });

  void test('the timer entry is released when the body throws', async () => {
    const ledger = new ResourceLedger();
    await assert.rejects(
      withDeadline({ ledger, owner: 't1', ms: 5_000, onTimeout: timeoutError, label: 'auth' }, () =>
        Promise.reject(new Error('auth-failed')),
      ),
      /auth-failed/,
    );
    assert.equal(ledger.liveCount(), 0);
  });

  void test('ms 0 disables the timer: no ledger entry and no abort', async () => {
    const ledger = new ResourceLedger();
    let entriesDuring = -1;
    let timeouts = 0;
    const aborted = await withDeadline(
      { ledger, owner: 't1', ms: 0, onTimeout: () => (timeouts++, new Error('never')), label: 'command' },
      async (signal) => {
        entriesDuring = ledger.liveCount();
        await sleep(20);
        return signal.aborted;
      },
    );
    assert.equal(entriesDuring, 0);
    assert.equal(aborted, false);
    assert.equal(timeouts, 0);
    assert.equal(ledger.stats().get('timer'), undefined);
  });

  void test('ms 0 still honours the parent signal', async () => {
    const ledger = new ResourceLedger();
    const parent = new AbortController();
    const reason = new Error('cancelled');
    const promise = withDeadline({ ledger, owner: 't1', ms: 0, parent: parent.signal, onTimeout: timeoutError, label: 'command' }, (signal) =>
      waitForAbort(signal),
    );
    parent.abort(reason);
    await assert.rejects(promise, (e) => e === reason);
    assert.equal(listeners(parent.signal), 0);
  });

  void test('parent abort propagates to the body with the parent reason, and the timer is released', async () => {
    const ledger = new ResourceLedger();
    const parent = new AbortController();
    const reason = new Error('task cancelled');
    let timeouts = 0;
    const promise = withDeadline(
      { ledger, owner: 't1', ms: 5_000, parent: parent.signal, onTimeout: () => (timeouts++, new Error('x')), label: 'channel' },
      (signal) => waitForAbort(signal),
    );
    assert.equal(listeners(parent.signal), 1);
    parent.abort(reason);
    await assert.rejects(promise, (e) => e === reason);
    assert.equal(timeouts, 0);
    assert.equal(ledger.liveCount(), 0);
    assert.equal(listeners(parent.signal), 0);
  });

  void test('an already-aborted parent aborts the body signal from the start', async () => {
    const ledger = new ResourceLedger();
    const reason = new Error('already');
    const seen = await withDeadline(
      { ledger, owner: 't1', ms: 5_000, parent: AbortSignal.abort(reason), onTimeout: timeoutError, label: 'dns' },
      (signal) => Promise.resolve<unknown>(signal.reason),
    );
    assert.equal(seen, reason);
    assert.equal(ledger.liveCount(), 0);
  });

  void test('a long-lived parent collects no listener across many deadlines', async () => {
    const ledger = new ResourceLedger();
    const parent = new AbortController();
    for (let i = 0; i < 200; i++) {
      await withDeadline({ ledger, owner: `t${i}`, ms: 1_000, parent: parent.signal, onTimeout: timeoutError, label: 'connect' }, () =>
        Promise.resolve(i),
      );
    }
    assert.equal(listeners(parent.signal), 0);
    assert.equal(ledger.liveCount(), 0);
    assert.deepEqual(ledger.stats().get('timer'), { opened: 200, closed: 200 });
  });

  void test('a deadline nested in another: the inner one fires first and the outer entry stays until its body ends', async () => {
    const ledger = new ResourceLedger();
    const inner = new Error('inner');
    const outer = await withDeadline({ ledger, owner: 't1', ms: 5_000, onTimeout: () => new Error('outer'), label: 'task' }, async (outerSignal) => {
      const e = await withDeadline({ ledger, owner: 't1', ms: 10, parent: outerSignal, onTimeout: () => inner, label: 'stage' }, (signal) =>
        waitForAbort(signal),
      ).catch((err: unknown) => err);
      return { e, live: ledger.liveCount(), outerAborted: outerSignal.aborted };
    });
    assert.deepEqual(outer, { e: inner, live: 1, outerAborted: false });
    assert.equal(ledger.liveCount(), 0);
  });
});
