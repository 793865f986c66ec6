import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { setImmediate as tick } from 'node:timers/promises';
import { ResourceLedger } from '../src/lifecycle/ledger.ts';
import { KeyedLimiter } from '../src/ssh/keyed-limiter.ts';

const ledger = new ResourceLedger();
const wait = (signal = new AbortController().signal, ms = 0) => ({ ledger, owner: 'test', signal, ms, onTimeout: () => new Error('timed out') });

void describe('KeyedLimiter', () => {
  void test('at most `limit` holders per key; others wait and are served in arrival order; keys are independent', async () => {
    const limiter = new KeyedLimiter(2);
    const a = await limiter.acquire('bastion', wait());
    const b = await limiter.acquire('bastion', wait());
    const other = await limiter.acquire('other', wait());
    const order: string[] = [];
    const c = limiter.acquire('bastion', wait()).then((release) => (order.push('c'), release));
    const d = limiter.acquire('bastion', wait()).then((release) => (order.push('d'), release));
    await tick();
    assert.deepEqual(order, []);
    assert.equal(limiter.held('bastion'), 2);
    a();
    a(); // idempotent: frees one slot, once
    const releaseC = await c;
    await tick();
    assert.deepEqual(order, ['c']);
    assert.equal(limiter.held('bastion'), 2);
    b();
    const releaseD = await d;
    assert.deepEqual(order, ['c', 'd']);
    for (const release of [releaseC, releaseD, other]) release();
    assert.equal(limiter.held('bastion'), 0);
    assert.equal(limiter.held('other'), 0);
  });

  void test('a wait ends with the signal or the deadline, and leaves the line without taking a slot', async () => {
    const limiter = new KeyedLimiter(1);
    const held = await limiter.acquire('k', wait());
    const cancel = new AbortController();
    const cancelled = limiter.acquire('k', wait(cancel.signal));
    cancel.abort(new Error('cancelled by the test'));
    await assert.rejects(cancelled, /cancelled by the test/);
    // Ledger timers are unref'd (a deadline never keeps a process alive): hold the loop open.
    const keepAlive = setInterval(() => {}, 1000);
    try {
      await assert.rejects(limiter.acquire('k', wait(undefined, 20)), /timed out/);
    } finally {
      clearInterval(keepAlive);
    }
    assert.equal(ledger.liveCount(), 0, 'the deadline timer is released');
    held();
    assert.equal(limiter.held('k'), 0);
    const again = await limiter.acquire('k', wait());
    again();
  });
});
