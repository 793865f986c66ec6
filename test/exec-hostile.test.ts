// The SSH core against servers that misbehave in one way each: every task ends with the
// exact error code, within its deadline plus one second, and leaves nothing alive.
import assert from 'node:assert/strict';
import { afterEach, describe, test } from 'node:test';
import type { ErrorCode } from '../src/lifecycle/errors.ts';
import type { Stage } from '../src/lifecycle/stages.ts';
import type { TaskReport } from '../src/lifecycle/task-report.ts';
import type { Credentials } from '../src/ssh/credentials.ts';
import { assertNothingAlive } from './support/assert-clean.ts';
import { collector } from './support/gc.ts';
import { startHostileServer, TEST_PASSWORD, TEST_USER, type HostileBehaviour, type HostileServer, type HostileServerOptions } from './support/hostile-servers.ts';
import { runOne, testSpec, timed, type TestSpecOptions } from './support/run-task.ts';

const password: Credentials = { keys: [], agentSocket: null, password: TEST_PASSWORD };
const SLACK_MS = 1000;

let server: HostileServer | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
  await assertNothingAlive();
});

/** Runs `command` against a fresh server of `behaviour` and checks code, stage and time bound. */
async function expectFailure(
  behaviour: HostileBehaviour,
  spec: TestSpecOptions,
  expected: { code: ErrorCode; stage: Stage; boundMs: number },
  serverOptions: HostileServerOptions = {},
): Promise<TaskReport> {
  server = await startHostileServer(behaviour, serverOptions);
  const target = { host: server.host, port: server.port, user: TEST_USER, knownHostsLine: server.knownHostsLine };
  const { value: report, ms } = await timed(() => runOne(testSpec(target, 'run-forever', password, spec)));
  assert.equal(report.error?.code, expected.code, JSON.stringify(report.error));
  assert.equal(report.error?.stage, expected.stage);
  assert.equal(report.status, 'error');
  assert.ok(ms <= expected.boundMs + SLACK_MS, `ended after ${Math.round(ms)} ms; bound ${expected.boundMs} + ${SLACK_MS} ms`);
  return report;
}

describe('before the connection is ready', () => {
  test('a server that accepts TCP and never speaks: handshake-timeout', async () => {
    const report = await expectFailure('silent-tcp', { timeouts: { handshakeMs: 1000 } }, { code: 'handshake-timeout', stage: 'handshake', boundMs: 1000 });
    assert.match(report.error!.message, /waiting for server-banner/);
  });

  test('a server that sends its banner and goes silent: handshake-timeout', async () => {
    const report = await expectFailure('banner-then-silent', { timeouts: { handshakeMs: 1000 } }, { code: 'handshake-timeout', stage: 'handshake', boundMs: 1000 });
    assert.match(report.error!.message, /waiting for key-exchange/);
  });

  test('a server that stalls in the middle of the key exchange: handshake-timeout', async () => {
    await expectFailure('stall-mid-kex', { timeouts: { handshakeMs: 1000 } }, { code: 'handshake-timeout', stage: 'handshake', boundMs: 1000 });
    assert.ok(server!.saw('client-kex-init'), 'the client got as far as its key exchange init');
  });

  test('a password the server rejects: auth-failed, at once', async () => {
    const wrong: Credentials = { keys: [], agentSocket: null, password: 'not-the-password' };
    await expectFailure('cooperative', { credentials: wrong, timeouts: { authMs: 10_000 } }, { code: 'auth-failed', stage: 'auth', boundMs: 0 });
  });

  test('a server that never answers authentication: auth-timeout', async () => {
    await expectFailure('never-answers-auth', { timeouts: { authMs: 1000 } }, { code: 'auth-timeout', stage: 'auth', boundMs: 1000 });
  });
});

describe('after the connection is ready', () => {
  test('a server that refuses the session channel: channel-open-failed', async () => {
    await expectFailure('refuse-channel', {}, { code: 'channel-open-failed', stage: 'channel', boundMs: 1000 });
  });

  test('a command that never ends: command-timeout, and the kill is not confirmed', async () => {
    const report = await expectFailure('exec-never-ends', { timeouts: { commandMs: 1000 } }, { code: 'command-timeout', stage: 'running', boundMs: 1000 });
    assert.equal(report.killConfirmed, false);
  });

  test('one byte per second: the command deadline still holds', async () => {
    const report = await expectFailure('drip-feed', { timeouts: { commandMs: 1500 } }, { code: 'command-timeout', stage: 'running', boundMs: 1500 }, { dripIntervalMs: 200 });
    assert.ok(report.stdout.length >= 3, `dripped ${report.stdout.length} bytes`);
  });

  test('one byte per second against an idle deadline that is longer: no idle-timeout, command-timeout', async () => {
    await expectFailure('drip-feed', { timeouts: { commandMs: 1500, idleMs: 500 } }, { code: 'command-timeout', stage: 'running', boundMs: 1500 }, { dripIntervalMs: 200 });
  });

  test('silence longer than the idle deadline: idle-timeout', async () => {
    await expectFailure('drip-feed', { timeouts: { idleMs: 500 } }, { code: 'idle-timeout', stage: 'running', boundMs: 500 }, { dripIntervalMs: 5000 });
  });

  test('a server that closes the connection mid-stream: connection-lost, with the output so far', async () => {
    const report = await expectFailure('close-mid-stream', {}, { code: 'connection-lost', stage: 'running', boundMs: 1000 }, { closeAfterBytes: 64 * 1024 });
    assert.equal(report.stdout.length, 64 * 1024);
  });

  test('a server that resets the connection mid-stream: connection-lost', async () => {
    await expectFailure('close-mid-stream', {}, { code: 'connection-lost', stage: 'running', boundMs: 1000 }, { closeWith: 'rst' });
  });

  test('a server that goes silent after auth: SSH keepalive declares it lost', async () => {
    const keepalive = { intervalMs: 300, countMax: 2 };
    const report = await expectFailure('silent-after-auth', { keepalive }, { code: 'connection-lost', stage: 'channel', boundMs: (keepalive.countMax + 1) * keepalive.intervalMs });
    assert.match(report.error!.message, /keepalive/);
  });
});

describe('bounded memory', () => {
  test('endless output: the cap holds while the stream is drained, and memory stays flat', async () => {
    const gc = collector();
    server = await startHostileServer('endless-output');
    const target = { host: server.host, port: server.port, user: TEST_USER, knownHostsLine: server.knownHostsLine };
    const spec = testSpec(target, 'flood', password, { timeouts: { commandMs: 3000 }, maxOutputBytes: 64 * 1024 });
    gc();
    const before = process.memoryUsage().heapUsed;
    const report = await runOne(spec);
    gc();
    const grown = process.memoryUsage().heapUsed - before;
    assert.equal(report.error?.code, 'command-timeout');
    assert.equal(Buffer.byteLength(report.stdout), 64 * 1024);
    assert.ok(report.bytesDropped.stdout > 16 * 1024 * 1024, `streamed ${report.bytesDropped.stdout} bytes`);
    assert.ok(grown < 8 * 1024 * 1024, `heap grew ${grown} bytes`);
  });
});
