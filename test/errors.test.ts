import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  ERROR_CATALOG,
  ERROR_CODES,
  LeashError,
  asTaskError,
  cancelledError,
  isErrorCode,
  isLeashError,
} from '../src/lifecycle/errors.ts';

/**
 * The contract: DESIGN.md "Task lifecycle", copied verbatim. These strings are used by the
 * CLI, the API, metric labels and the database; changing one breaks users.
 */
const DESIGN_ERROR_CODES = [
  'dns-error',
  'connect-refused',
  'connect-timeout',
  'handshake-timeout',
  'hostkey-unknown',
  'hostkey-mismatch',
  'auth-failed',
  'auth-timeout',
  'channel-open-failed',
  'command-timeout',
  'idle-timeout',
  'connection-lost',
  'cancelled',
  'protocol-error',
  'internal',
];

void describe('error codes', () => {
  void test('the codes are exactly the list in DESIGN.md, in its order', () => {
    assert.deepEqual([...ERROR_CODES], DESIGN_ERROR_CODES);
  });

  void test('every code is documented in the catalog, and the catalog documents nothing else', () => {
    assert.deepEqual(Object.keys(ERROR_CATALOG).sort(), [...ERROR_CODES].sort());
    for (const code of ERROR_CODES) {
      const text = ERROR_CATALOG[code];
      assert.equal(typeof text, 'string', code);
      assert.ok(text.trim().length > 0, `${code} has an empty description`);
    }
  });

  void test('codes are unique kebab-case strings', () => {
    assert.equal(new Set(ERROR_CODES).size, ERROR_CODES.length);
    for (const code of ERROR_CODES) assert.match(code, /^[a-z]+(-[a-z]+)*$/);
  });

  void test('isErrorCode accepts every code and nothing else', () => {
    for (const code of ERROR_CODES) assert.equal(isErrorCode(code), true, code);
    const others: unknown[] = ['', 'timeout', 'Internal', 'dns_error', ' cancelled', 'toString', '__proto__', 42, null, undefined, {}, ['internal']];
    others.forEach((value, i) => assert.equal(isErrorCode(value), false, `others[${i}]`));
  });
});

void describe('LeashError', () => {
  void test('carries code, stage, message, name and cause', () => {
    const cause = new Error('ECONNREFUSED');
    const err = new LeashError('connect-refused', 'connecting', 'ssh: connect 10.0.0.1:22 refused', { cause });
    assert.ok(err instanceof Error);
    assert.equal(err.name, 'LeashError');
    assert.equal(err.code, 'connect-refused');
    assert.equal(err.stage, 'connecting');
    assert.equal(err.message, 'ssh: connect 10.0.0.1:22 refused');
    assert.equal(err.cause, cause);
  });

  void test('toJSON is exactly {code, stage, message}, in that order, without the cause', () => {
    const err = new LeashError('auth-failed', 'auth', 'publickey rejected', { cause: new Error('secret detail') });
    const json = err.toJSON();
    assert.deepEqual(json, { code: 'auth-failed', stage: 'auth', message: 'publickey rejected' });
    assert.deepEqual(Object.keys(json), ['code', 'stage', 'message']);
    assert.equal(JSON.stringify(err), '{"code":"auth-failed","stage":"auth","message":"publickey rejected"}');
  });

  void test('isLeashError checks the class and, when given, the code', () => {
    const err = new LeashError('idle-timeout', 'running', 'no output for 30s');
    assert.equal(isLeashError(err), true);
    assert.equal(isLeashError(err, 'idle-timeout'), true);
    assert.equal(isLeashError(err, 'command-timeout'), false);
    assert.equal(isLeashError(new Error('x')), false);
    assert.equal(isLeashError({ code: 'idle-timeout', stage: 'running', message: 'x' }), false);
  });

  void test('cancelledError builds a cancelled error, with a cause only when given', () => {
    const plain = cancelledError('queued', 'cancelled by user');
    assert.deepEqual(plain.toJSON(), { code: 'cancelled', stage: 'queued', message: 'cancelled by user' });
    assert.equal('cause' in plain, false);
    const cause = new Error('SIGINT');
    assert.equal(cancelledError('running', 'interrupted', cause).cause, cause);
  });
});

void describe('asTaskError', () => {
  void test('a LeashError passes through unchanged, whatever the stage given', () => {
    const err = new LeashError('handshake-timeout', 'handshake', 'no banner within 10s');
    assert.equal(asTaskError(err, 'handshake'), err);
    assert.equal(asTaskError(err, 'running'), err);
    assert.equal(err.stage, 'handshake');
  });

  void test('a cancelled error already in the given stage passes through unchanged', () => {
    const err = cancelledError('auth', 'cancelled by API');
    assert.equal(asTaskError(err, 'auth'), err);
  });

  void test('a cancelled error from another stage is re-staged to the given stage, keeping message and cause', () => {
    const cause = new Error('DELETE /v1/tasks/7');
    const err = cancelledError('queued', 'cancelled by API', cause);
    const restaged = asTaskError(err, 'running');
    assert.notEqual(restaged, err);
    assert.ok(restaged instanceof LeashError);
    assert.deepEqual(restaged.toJSON(), { code: 'cancelled', stage: 'running', message: 'cancelled by API' });
    assert.equal(restaged.cause, cause);
    assert.equal(err.stage, 'queued', 'the canceller’s error is not mutated');
  });

  void test('an AbortError (a bare abort()) becomes cancelled in the given stage, with the cause kept', () => {
    const controller = new AbortController();
    controller.abort();
    const reason: unknown = controller.signal.reason;
    const err = asTaskError(reason, 'channel');
    assert.deepEqual(err.toJSON(), { code: 'cancelled', stage: 'channel', message: 'cancelled' });
    assert.equal(err.cause, reason);
  });

  void test('an Error named AbortError from elsewhere also counts as a cancel', () => {
    const abort = Object.assign(new Error('The operation was aborted'), { name: 'AbortError' });
    const err = asTaskError(abort, 'connecting');
    assert.equal(err.code, 'cancelled');
    assert.equal(err.stage, 'connecting');
    assert.equal(err.cause, abort);
  });

  void test('any other Error becomes internal in the given stage, naming the message and keeping the cause', () => {
    const bug = new TypeError("Cannot read properties of undefined (reading 'write')");
    const err = asTaskError(bug, 'running');
    assert.equal(err.code, 'internal');
    assert.equal(err.stage, 'running');
    assert.equal(err.message, "unexpected failure: Cannot read properties of undefined (reading 'write')");
    assert.equal(err.cause, bug);
  });

  void test('a TimeoutError (AbortSignal.timeout) is not mistaken for a cancel', () => {
    const timeout = new DOMException('The operation was aborted due to timeout', 'TimeoutError');
    const err = asTaskError(timeout, 'connecting');
    assert.equal(err.code, 'internal');
    assert.equal(err.cause, timeout);
  });

  void test('non-Error values become internal with the value as cause', () => {
    for (const [value, text] of [
      ['boom', 'boom'],
      [42, '42'],
      [undefined, 'undefined'],
      [null, 'null'],
      [{ code: 'auth-failed' }, '[object Object]'],
    ] as const) {
      const err = asTaskError(value, 'auth');
      assert.equal(err.code, 'internal');
      assert.equal(err.stage, 'auth');
      assert.equal(err.message, `unexpected failure: ${text}`);
      assert.equal(err.cause, value);
    }
  });

  void test('asTaskError never throws, even for a value String() cannot convert', () => {
    const odd: unknown = Object.create(null);
    let err: LeashError | undefined;
    assert.doesNotThrow(() => {
      err = asTaskError(odd, 'auth');
    });
    assert.equal(err?.code, 'internal');
    assert.equal(err?.cause, odd);
  });
});
