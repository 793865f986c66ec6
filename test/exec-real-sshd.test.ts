// The SSH core against a real OpenSSH sshd on loopback: results, output, stdin/env, the
// remote kill on timeout and cancel, host key policies and every auth method.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, afterEach, before, describe, test } from 'node:test';
import { cancelledError } from '../src/lifecycle/errors.ts';
import type { Credentials } from '../src/ssh/credentials.ts';
import { generateKeyPair } from '../src/ssh/ephemeral-keys.ts';
import { HostKeyVerifier } from '../src/ssh/host-key-verifier.ts';
import { assertNothingAlive } from './support/assert-clean.ts';
import { keyCredentials, runOne, testSpec, timed } from './support/run-task.ts';
import { startAgent } from './support/ssh-agent.ts';
import { startSshd, type Sshd } from './support/sshd.ts';

let sshd: Sshd;
let creds: Credentials;
let scratch: string;

before(async () => {
  sshd = await startSshd();
  creds = await keyCredentials(sshd.clientKey.path);
  scratch = await mkdtemp(path.join(os.tmpdir(), 'leash-exec-'));
});
after(async () => {
  await sshd?.stop();
  await rm(scratch, { recursive: true, force: true });
});
afterEach(() => assertNothingAlive());

/** True when a process whose command line contains `marker` is running on the target. */
async function remoteProcessExists(marker: string): Promise<boolean> {
  // `[x]` keeps the pattern from matching the shell that runs pgrep itself.
  const pattern = `${marker.slice(0, -1)}[${marker.slice(-1)}]`;
  const report = await runOne(testSpec(sshd, `pgrep -f '${pattern}' >/dev/null && echo alive || echo gone`, creds));
  assert.equal(report.status, 'ok', JSON.stringify(report.error));
  return report.stdout.trim() === 'alive';
}

describe('results', () => {
  test('exit 0 is ok, with stdout, the stages in order and timings', async () => {
    const report = await runOne(testSpec(sshd, 'echo hello', creds));
    assert.equal(report.status, 'ok');
    assert.equal(report.exitCode, 0);
    assert.equal(report.signal, null);
    assert.equal(report.stdout, 'hello\n');
    assert.equal(report.stderr, '');
    assert.equal(report.error, null);
    assert.deepEqual(
      report.stages.map((s) => s.stage),
      ['queued', 'connecting', 'handshake', 'auth', 'channel', 'running', 'closing'],
    );
    assert.ok(report.stages.every((s) => s.durationMs >= 0));
  });

  test('a non-zero exit is a result, not an error', async () => {
    const report = await runOne(testSpec(sshd, 'echo out; echo err >&2; exit 3', creds));
    assert.equal(report.status, 'nonzero-exit');
    assert.equal(report.exitCode, 3);
    assert.equal(report.error, null);
    assert.equal(report.stdout, 'out\n');
    assert.equal(report.stderr, 'err\n');
  });

  test('death by signal is reported as the signal, without an exit code', async () => {
    const report = await runOne(testSpec(sshd, 'kill -TERM $$', creds));
    assert.equal(report.status, 'nonzero-exit');
    assert.equal(report.exitCode, null);
    assert.equal(report.signal, 'SIGTERM');
    assert.equal(report.exitStatusMissing, false);
  });

  test('stdout and stderr stay separate when interleaved', async () => {
    const report = await runOne(testSpec(sshd, 'for i in 1 2 3; do echo o$i; echo e$i >&2; done', creds));
    assert.equal(report.stdout, 'o1\no2\no3\n');
    assert.equal(report.stderr, 'e1\ne2\ne3\n');
  });

  test('environment variables reach the command, quoted safely', async () => {
    const value = `it's "quoted" $HOME; rm -rf /tmp/nope`;
    const report = await runOne(testSpec(sshd, 'printf %s "$LEASH_A"; printf "|%s" "$LEASH_B"', creds, { env: { LEASH_A: value, LEASH_B: 'two' } }));
    assert.equal(report.stdout, `${value}|two`);
  });

  test('stdin is delivered and closed', async () => {
    const report = await runOne(testSpec(sshd, 'cat; echo "<eof>"', creds, { stdin: 'line one\nline two\n' }));
    assert.equal(report.stdout, 'line one\nline two\n<eof>\n');
  });

  test('without stdin the command sees EOF at once instead of hanging', async () => {
    const report = await runOne(testSpec(sshd, 'cat; echo done', creds, { timeouts: { commandMs: 10_000 } }));
    assert.equal(report.status, 'ok');
    assert.equal(report.stdout, 'done\n');
  });
});

describe('output caps', () => {
  test('over 10 MiB of output keeps the exact head and tail and counts what was dropped', async () => {
    // seq 1..1500000 prints about 10.9 MB: distinct lines make head and tail checkable.
    const n = 1_500_000;
    let total = 0;
    for (let i = 1; i <= n; i++) total += String(i).length + 1;
    assert.ok(total > 10 * 1024 * 1024);
    const cap = 1024 * 1024;
    const report = await runOne(testSpec(sshd, `seq 1 ${n}; echo bye >&2`, creds, { maxOutputBytes: cap }));
    assert.equal(report.status, 'ok');
    assert.equal(report.truncated, true);
    assert.equal(report.bytesDropped.stdout, total - cap);
    assert.equal(report.bytesDropped.stderr, 0);
    assert.equal(report.stderr, 'bye\n');
    assert.equal(Buffer.byteLength(report.stdout), cap);
    assert.ok(report.stdout.startsWith('1\n2\n3\n'), 'head starts at the first line');
    assert.ok(report.stdout.endsWith(`${n - 1}\n${n}\n`), 'tail ends at the last line');
  });
});

describe('remote teardown', () => {
  test('a command timeout kills the remote process and its children, and says so', async () => {
    const marker = `600.${Date.now() % 100000}${Math.floor(Math.random() * 1000)}`;
    const command = `sleep ${marker}1 & sleep ${marker}2; wait`;
    const { value: report, ms } = await timed(() => runOne(testSpec(sshd, command, creds, { timeouts: { commandMs: 1000 } })));
    assert.equal(report.status, 'error');
    assert.equal(report.error?.code, 'command-timeout');
    assert.equal(report.error?.stage, 'running');
    assert.equal(report.killConfirmed, true);
    assert.ok(ms < 1000 + 3000, `ended in ${ms} ms`);
    assert.equal(await remoteProcessExists(`sleep ${marker}1`), false, 'background child is gone');
    assert.equal(await remoteProcessExists(`sleep ${marker}2`), false, 'foreground child is gone');
  });

  test('an idle timeout stops a silent command', async () => {
    const marker = `601.${Date.now() % 100000}`;
    const report = await runOne(testSpec(sshd, `echo start; sleep ${marker}`, creds, { timeouts: { idleMs: 700 } }));
    assert.equal(report.error?.code, 'idle-timeout');
    assert.equal(report.stdout, 'start\n');
    assert.equal(report.killConfirmed, true);
    assert.equal(await remoteProcessExists(`sleep ${marker}`), false);
  });

  test('output resets the idle deadline', async () => {
    const report = await runOne(testSpec(sshd, 'for i in 1 2 3 4 5; do echo $i; sleep 0.3; done', creds, { timeouts: { idleMs: 1000 } }));
    assert.equal(report.status, 'ok');
  });

  test('a cancel while running kills the remote process', async () => {
    const marker = `602.${Date.now() % 100000}`;
    const cancel = new AbortController();
    const running = runOne(testSpec(sshd, `sleep ${marker}`, creds), cancel.signal);
    // Wait until the command really runs on the server before cancelling.
    const until = Date.now() + 10_000;
    while (!(await remoteProcessExists(`sleep ${marker}`)) && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
    cancel.abort(cancelledError('running', 'test cancels'));
    const report = await running;
    assert.equal(report.status, 'cancelled');
    assert.equal(report.error?.code, 'cancelled');
    assert.equal(report.killConfirmed, true);
    assert.equal(await remoteProcessExists(`sleep ${marker}`), false);
  });

  test('a task cancelled before it starts never connects', async () => {
    const cancel = new AbortController();
    cancel.abort(cancelledError('queued', 'test cancels early'));
    const report = await runOne(testSpec(sshd, 'echo never', creds), cancel.signal);
    assert.equal(report.status, 'cancelled');
    assert.equal(report.error?.stage, 'queued');
    assert.deepEqual(report.stages.map((s) => s.stage), ['queued']);
  });
});

describe('host keys', () => {
  const otherKeyLine = (): string => {
    return `[127.0.0.1]:${sshd.port} ${generateKeyPair('ed25519').publicLine}`;
  };

  test('strict: an unknown host is refused and the command never runs', async () => {
    const marker = path.join(scratch, `unknown-${randomUUID()}`);
    const hostKeys = HostKeyVerifier.fromLines([], 'strict');
    const report = await runOne(testSpec(sshd, `touch ${marker}`, creds, { hostKeys }));
    assert.equal(report.error?.code, 'hostkey-unknown');
    assert.equal(report.error?.stage, 'handshake');
    assert.match(report.error?.message ?? '', /SHA256:[A-Za-z0-9+/]{43}/);
    assert.equal(existsSync(marker), false);
  });

  test('a mismatched key is refused and the command never runs', async () => {
    const marker = path.join(scratch, `mismatch-${randomUUID()}`);
    const hostKeys = HostKeyVerifier.fromLines([otherKeyLine()], 'accept-new');
    const report = await runOne(testSpec(sshd, `touch ${marker}`, creds, { hostKeys }));
    assert.equal(report.error?.code, 'hostkey-mismatch');
    assert.equal(existsSync(marker), false);
  });

  test('accept-new records the key in leash known_hosts, then matches it', async () => {
    const ownFile = path.join(scratch, `known-${randomUUID()}`, 'known_hosts');
    const load = (): Promise<HostKeyVerifier> => HostKeyVerifier.load({ policy: 'accept-new', readFiles: [], ownFile });
    const first = await runOne(testSpec(sshd, 'echo first', creds, { hostKeys: await load() }));
    assert.equal(first.status, 'ok');
    const recorded = await readFile(ownFile, 'utf8');
    assert.ok(recorded.includes(sshd.hostKeyLine), recorded);
    const strictAfter = await HostKeyVerifier.load({ policy: 'strict', readFiles: [], ownFile });
    const second = await runOne(testSpec(sshd, 'echo second', creds, { hostKeys: strictAfter }));
    assert.equal(second.status, 'ok');
  });

  test('accept-new never overwrites a known, different key', async () => {
    const ownFile = path.join(scratch, `known-${randomUUID()}`);
    const line = otherKeyLine();
    await writeFile(ownFile, `${line}\n`);
    const hostKeys = await HostKeyVerifier.load({ policy: 'accept-new', readFiles: [], ownFile });
    const report = await runOne(testSpec(sshd, 'echo no', creds, { hostKeys }));
    assert.equal(report.error?.code, 'hostkey-mismatch');
    assert.equal(await readFile(ownFile, 'utf8'), `${line}\n`);
  });
});

describe('authentication', () => {
  test('ecdsa and rsa keys', async () => {
    for (const type of ['ecdsa', 'rsa'] as const) {
      const key = await sshd.addClientKey(type);
      const report = await runOne(testSpec(sshd, 'echo ok', await keyCredentials(key.path)));
      assert.equal(report.status, 'ok', `${type}: ${JSON.stringify(report.error)}`);
    }
  });

  test('a key with a passphrase', async () => {
    const key = await sshd.addClientKey('ed25519', 'correct horse');
    const report = await runOne(testSpec(sshd, 'echo ok', await keyCredentials(key.path, 'correct horse')));
    assert.equal(report.status, 'ok');
  });

  test('a wrong password is auth-failed, and the message holds no secret', async () => {
    const password = `wrong-${randomUUID()}`;
    const report = await runOne(testSpec(sshd, 'echo never', creds, { credentials: { keys: [], agentSocket: null, password } }));
    assert.equal(report.error?.code, 'auth-failed');
    assert.equal(report.error?.stage, 'auth');
    assert.ok(!JSON.stringify(report).includes(password));
  });

  test('a key the server does not know is auth-failed', async () => {
    const stranger = path.join(scratch, `stranger-${randomUUID()}`);
    await writeFile(stranger, generateKeyPair('ed25519').privateKey, { mode: 0o600 });
    const report = await runOne(testSpec(sshd, 'echo never', await keyCredentials(stranger)));
    assert.equal(report.error?.code, 'auth-failed');
    assert.match(report.error?.message ?? '', /publickey/);
  });

  test('ssh-agent', async () => {
    const key = await sshd.addClientKey('ed25519');
    const agent = await startAgent([key]);
    try {
      const report = await runOne(testSpec(sshd, 'echo via-agent', creds, { credentials: { keys: [], agentSocket: agent.socketPath, password: null } }));
      assert.equal(report.status, 'ok', JSON.stringify(report.error));
      assert.equal(report.stdout, 'via-agent\n');
    } finally {
      await agent.stop();
    }
  });
});
