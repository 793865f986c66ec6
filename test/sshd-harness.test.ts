// Proves the test harness itself (test/support/sshd.ts, ssh-agent.ts) with OpenSSH's own
// client: keys, clean HOME, agent, parallel instances and a stop() that leaves nothing.
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { startAgent } from './support/ssh-agent.ts';
import { descendantPids, isAlive, sshCommand, startSshd, waitForExit } from './support/sshd.ts';
import type { Sshd, TestKey } from './support/sshd.ts';

const execFileAsync = promisify(execFile);

/** Environment for client tools: no agent from the outside world. */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, ...extra };
  if (extra.SSH_AUTH_SOCK === undefined) delete env.SSH_AUTH_SOCK;
  return env;
}

async function ssh(sshd: Sshd, remote: string, opts: { key?: TestKey; env?: Record<string, string> } = {}): Promise<string> {
  const [cmd, ...args] = sshCommand(sshd, opts.key);
  assert.ok(cmd !== undefined);
  try {
    const { stdout } = await execFileAsync(cmd, [...args, remote], { env: cleanEnv(opts.env), timeout: 15_000 });
    return stdout;
  } catch (err) {
    throw new Error(`${(err as Error).message}\nsshd log:\n${await sshd.logTail()}`, { cause: err });
  }
}

const keyBody = (publicKey: string): string => publicKey.split(/\s+/).slice(0, 2).join(' ');

void describe('sshd harness', () => {
  let sshd: Sshd;
  before(async () => {
    sshd = await startSshd();
  });
  after(async () => {
    await sshd.stop();
  });

  void test('OpenSSH client runs a command; the remote shell gets the clean HOME', async () => {
    const out = await ssh(sshd, 'echo ok; echo "$HOME"; echo "$USER"');
    assert.equal(out, `ok\n${sshd.home}\n${sshd.user}\n`);
    assert.notEqual(sshd.home, process.env.HOME);
    assert.ok(sshd.home.startsWith(sshd.dir));
    assert.match(sshd.knownHostsLine, new RegExp(`^\\[127\\.0\\.0\\.1\\]:${sshd.port} ssh-ed25519 AAAA`));
    assert.equal(sshd.hostPublicKey.readUInt32BE(0), 'ssh-ed25519'.length);
    assert.equal(sshd.hostPublicKey.subarray(4, 15).toString(), 'ssh-ed25519');
    assert.equal(sshd.clientKey.type, 'ed25519');
    assert.equal(sshd.clientKey.passphrase, undefined);
  });

  void test('addClientKey: unencrypted rsa authenticates; a passphrase key opens only with its passphrase', async () => {
    const rsa = await sshd.addClientKey('rsa');
    assert.equal(await ssh(sshd, 'echo rsa', { key: rsa }), 'rsa\n');

    const locked = await sshd.addClientKey('ecdsa', 'correct horse');
    assert.equal(locked.passphrase, 'correct horse');
    const { stdout } = await execFileAsync('ssh-keygen', ['-y', '-P', 'correct horse', '-f', locked.path]);
    assert.equal(keyBody(stdout), keyBody(locked.publicKey));
    await assert.rejects(execFileAsync('ssh-keygen', ['-y', '-P', 'wrong', '-f', locked.path]));
    assert.ok(readFileSync(sshd.authorizedKeysPath, 'utf8').includes(keyBody(locked.publicKey)));
    // BatchMode never asks for a passphrase: without an agent this key cannot be used.
    await assert.rejects(ssh(sshd, 'true', { key: locked }));
  });

  void test('ssh-agent helper: holds the keys (passphrase ones too) and the client uses them', async () => {
    const locked = await sshd.addClientKey('ed25519', 'agent secret');
    const agent = await startAgent([sshd.clientKey, locked]);
    try {
      const env = { SSH_AUTH_SOCK: agent.socketPath };
      const { stdout } = await execFileAsync('ssh-add', ['-L'], { env: cleanEnv(env) });
      const listed = stdout.trim().split('\n').map(keyBody);
      assert.deepEqual(listed.sort(), [keyBody(sshd.clientKey.publicKey), keyBody(locked.publicKey)].sort());
      const fingerprints = await execFileAsync('ssh-add', ['-l'], { env: cleanEnv(env) });
      assert.equal(fingerprints.stdout.trim().split('\n').length, 2);
      // The encrypted key file plus the agent: ssh signs through the agent.
      assert.equal(await ssh(sshd, 'echo via-agent', { key: locked, env }), 'via-agent\n');
    } finally {
      await agent.stop();
    }
    assert.equal(isAlive(agent.pid), false);
    assert.equal(existsSync(agent.socketPath), false);
  });
});

void test('stop() kills sshd, its connection processes and the remote command; removes the dir', async () => {
  const sshd = await startSshd();
  const marker = `sleep 30.${process.pid}${Date.now() % 1000}`;
  const [cmd, ...args] = sshCommand(sshd);
  assert.ok(cmd !== undefined);
  const client = spawn(cmd, [...args, marker], { env: cleanEnv(), stdio: 'ignore' });
  try {
    // Wait until the remote command runs under our sshd.
    const until = Date.now() + 10_000;
    let remote: number[] = [];
    while (remote.length === 0 && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 25));
      remote = await pgrep(marker);
    }
    assert.ok(remote.length > 0, `remote command never started; log:\n${await sshd.logTail()}`);
    const tree = descendantPids(sshd.pid);
    for (const pid of remote) assert.ok(tree.includes(pid), 'the remote command descends from our sshd');

    await sshd.stop();
    assert.equal(isAlive(sshd.pid), false, 'listener gone');
    assert.throws(() => process.kill(sshd.pid, 0), { code: 'ESRCH' });
    assert.deepEqual(tree.filter(isAlive), [], 'connection processes gone');
    assert.deepEqual(await pgrep(marker), [], 'remote command gone');
    assert.equal(existsSync(sshd.dir), false, 'temp dir removed');
    assert.ok(await waitForExit(client, 5000), 'the client saw the connection end');
    await sshd.stop(); // idempotent
  } finally {
    if (client.exitCode === null && client.signalCode === null) client.kill('SIGKILL');
    await sshd.stop();
  }
});

void test('two harnesses in parallel get different ports and both serve', async () => {
  const [a, b] = await Promise.all([startSshd(), startSshd()]);
  try {
    assert.notEqual(a.port, b.port);
    assert.notEqual(a.dir, b.dir);
    const [outA, outB] = await Promise.all([ssh(a, 'echo a'), ssh(b, 'echo b')]);
    assert.equal(outA, 'a\n');
    assert.equal(outB, 'b\n');
  } finally {
    await Promise.all([a.stop(), b.stop()]);
  }
});

void test('extraConfig is appended and invalid config fails with sshd -t output', async () => {
  const sshd = await startSshd({ extraConfig: ['AcceptEnv LEASH_TEST_*'] });
  try {
    assert.ok(readFileSync(sshd.configPath, 'utf8').includes('AcceptEnv LEASH_TEST_*'));
    assert.equal(await ssh(sshd, 'echo extra'), 'extra\n');
  } finally {
    await sshd.stop();
  }
  await assert.rejects(startSshd({ extraConfig: ['NoSuchKeyword yes'] }), /rejected the config[\s\S]*NoSuchKeyword/);
});

async function pgrep(pattern: string): Promise<number[]> {
  try {
    const { stdout } = await execFileAsync('pgrep', ['-x', '-f', pattern]);
    return stdout.trim().split('\n').filter(Boolean).map(Number);
  } catch {
    return []; // exit 1: no match
  }
}
