import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { MAX_DURATION_MS, formatDuration, parseDuration } from '../src/cli/duration.ts';
import { UsageError } from '../src/cli/usage-error.ts';

/** Asserts a UsageError whose one-line message names the input and the flag. */
function rejects(text: string, flag: string, why?: RegExp): void {
  assert.throws(
    () => parseDuration(text, flag),
    (err: unknown) => {
      assert.ok(err instanceof UsageError, `expected a UsageError, got ${String(err)}`);
      assert.equal(err.name, 'UsageError');
      assert.ok(err.message.includes(JSON.stringify(text)), `message names the input: ${err.message}`);
      assert.ok(err.message.includes(flag), `message names the flag: ${err.message}`);
      assert.ok(!err.message.includes('\n'), 'one line');
      if (why) assert.match(err.message, why);
      return true;
    },
  );
}

void describe('parseDuration', () => {
  void test('accepts every unit', () => {
    assert.equal(parseDuration('500ms', '--timeout'), 500);
    assert.equal(parseDuration('10s', '--timeout'), 10_000);
    assert.equal(parseDuration('2m', '--timeout'), 120_000);
    assert.equal(parseDuration('1h', '--timeout'), 3_600_000);
  });

  void test('accepts decimals', () => {
    assert.equal(parseDuration('1.5s', '--timeout'), 1_500);
    assert.equal(parseDuration('0.5m', '--timeout'), 30_000);
    assert.equal(parseDuration('.25s', '--timeout'), 250);
    assert.equal(parseDuration('1.4ms', '--timeout'), 1);
    assert.equal(parseDuration('2.5h', '--timeout'), 9_000_000);
  });

  void test('accepts 0 (disabled), with or without a unit', () => {
    assert.equal(parseDuration('0', '--idle-timeout'), 0);
    assert.equal(parseDuration('0s', '--idle-timeout'), 0);
    assert.equal(parseDuration('0ms', '--idle-timeout'), 0);
    assert.equal(parseDuration('0.0', '--idle-timeout'), 0);
  });

  void test('ignores surrounding whitespace', () => {
    assert.equal(parseDuration(' 10s ', '--timeout'), 10_000);
  });

  void test('accepts exactly 7 days', () => {
    assert.equal(parseDuration('168h', '--timeout'), MAX_DURATION_MS);
  });

  void test('the message of the contract example', () => {
    assert.throws(() => parseDuration('10x', '--timeout'), {
      name: 'UsageError',
      message: 'bad duration "10x" for --timeout: unknown unit "x"; expected a number with a unit: ms, s, m or h (e.g. 500ms, 10s, 2m)',
    });
  });

  void test('rejects empty text', () => {
    rejects('', '--timeout', /expected a number with a unit/);
    rejects('   ', '--timeout', /expected a number with a unit/);
  });

  void test('rejects negative values', () => {
    rejects('-1s', '--timeout', /negative/);
    rejects('-500ms', '--connect-timeout', /negative/);
  });

  void test('rejects unitless non-zero numbers', () => {
    rejects('10', '--timeout', /missing unit/);
    rejects('1.5', '--handshake-timeout', /missing unit/);
  });

  void test('rejects unknown units', () => {
    rejects('10x', '--timeout', /unknown unit "x"/);
    rejects('10S', '--timeout', /unknown unit "S"/);
    rejects('3d', '--timeout', /unknown unit "d"/);
    rejects('10sec', '--timeout', /unknown unit "sec"/);
    rejects('1us', '--timeout', /unknown unit "us"/);
  });

  void test('rejects text that is not a number', () => {
    for (const text of ['NaN', 'Infinity', '-Infinity', 'NaNs', 'Infinitys', 's', 'ms', 'abc', '1e3s', '0x10s', '1,5s', '10 s', '1.s', '1m30s', '1..5s', '--1s']) {
      rejects(text, '--timeout', /expected a number with a unit/);
    }
  });

  void test('rejects durations below one millisecond', () => {
    rejects('0.4ms', '--timeout', /shorter than 1ms/);
  });

  void test('rejects absurd durations (over 7 days)', () => {
    rejects('169h', '--timeout', /longer than 7 days/);
    rejects('100000m', '--timeout', /longer than 7 days/);
    rejects(`${'9'.repeat(40)}s`, '--timeout', /longer than 7 days/);
    // Too many digits for a double: still "too long", and the quoted input is shortened.
    assert.throws(() => parseDuration(`${'9'.repeat(400)}s`, '--timeout'), (err: unknown) => {
      assert.ok(err instanceof UsageError);
      assert.match(err.message, /^bad duration "9+…9+s" for --timeout: longer than 7 days/);
      assert.ok(err.message.length < 200);
      return true;
    });
  });

  void test('quotes control characters so the message stays on one line', () => {
    rejects('1\ns', '--timeout');
  });
});

void describe('formatDuration', () => {
  void test('milliseconds below a second', () => {
    assert.equal(formatDuration(0), '0ms');
    assert.equal(formatDuration(850), '850ms');
    assert.equal(formatDuration(999.4), '999ms');
  });

  void test('seconds with one decimal below a minute', () => {
    assert.equal(formatDuration(999.6), '1.0s');
    assert.equal(formatDuration(1_000), '1.0s');
    assert.equal(formatDuration(1_234), '1.2s');
    assert.equal(formatDuration(59_940), '59.9s');
  });

  void test('minutes and seconds below an hour', () => {
    assert.equal(formatDuration(59_950), '1m00s');
    assert.equal(formatDuration(123_000), '2m03s');
    assert.equal(formatDuration(1_023_000), '17m03s');
    assert.equal(formatDuration(3_599_000), '59m59s');
  });

  void test('hours and minutes from an hour', () => {
    assert.equal(formatDuration(3_599_500), '1h00m');
    assert.equal(formatDuration(3_720_000), '1h02m');
    assert.equal(formatDuration(49 * 3_600_000), '49h00m');
  });

  void test('odd inputs', () => {
    assert.equal(formatDuration(-5), '0ms');
    assert.equal(formatDuration(Number.NaN), '?');
    assert.equal(formatDuration(Infinity), '∞');
  });

  void test('round-trips with parseDuration for whole units', () => {
    assert.equal(formatDuration(parseDuration('2m', '--timeout')), '2m00s');
    assert.equal(formatDuration(parseDuration('500ms', '--timeout')), '500ms');
  });
});
