// `leash run` on a terminal (a pty from util-linux `script`): secrets are asked for
// without echo, and progress is drawn on stderr.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { tempHome } from './support/cli.ts';
import { startHostileServer, TEST_PASSWORD, TEST_USER, type HostileServer } from './support/hostile-servers.ts';
import { startSshd, type Sshd } from './support/sshd.ts';

const BIN = path.resolve(import.meta.dirname, '..', 'bin', 'leash.js');

let sshd: Sshd;
let server: HostileServer;
let home: string;
let removeHome: () => Promise<void>;
let knownHosts: string;

before(async () => {
  [sshd, server] = await Promise.all([startSshd(), startHostileServer('cooperative')]);
  ({ home, remove: removeHome } = await tempHome());
  knownHosts = path.join(home, 'known_hosts');
  await writeFile(knownHosts, `${sshd.knownHostsLine}\n${server.knownHostsLine}\n`);
});
after(async () => {
  await Promise.all([sshd?.stop(), server?.close()]);
  await removeHome?.();
});

/**
 * Runs leash under a pty and types `answer` + Enter when `prompt` appears. Returns what the
 * terminal showed and the exit code. Bounded: a leash that never exits is killed.
 */
function onTerminal(args: string[], prompt: string, answer: string): Promise<{ code: number | null; screen: string }> {
  const command = [process.execPath, BIN, ...args].map((a) => `'${a.replaceAll("'", `'\\''`)}'`).join(' ');
  const child = spawn('script', ['-qec', command, '/dev/null'], {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: home, TERM: 'dumb' },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let screen = '';
  let answered = false;
  const onData = (d: Buffer): void => {
    screen += d.toString('utf8');
    if (!answered && screen.includes(prompt)) {
      answered = true;
      child.stdin.write(`${answer}\r`);
    }
  };
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);
  const limit = setTimeout(() => child.kill('SIGKILL'), 30_000);
  return new Promise((resolve) => {
    child.once('close', (code) => {
      clearTimeout(limit);
      child.stdin.destroy();
      resolve({ code, screen });
    });
  });
}

test('--ask-password asks on the terminal without echo, and the password works', async () => {
  const args = ['run', '--hosts', `${TEST_USER}@127.0.0.1:${server.port}`, '--known-hosts', knownHosts, '--ask-password', '--', 'echo hi'];
  const { screen } = await onTerminal(args, 'Password: ', TEST_PASSWORD);
  assert.ok(!screen.includes(TEST_PASSWORD), 'the password is not echoed');
  // The cooperative server is not a shell, so the command itself fails; auth did not.
  assert.ok(server.saw('auth-accepted'), screen);
  assert.doesNotMatch(screen, /auth-failed/);
});

test('a wrong password typed at the prompt is auth-failed', async () => {
  const args = ['run', '--hosts', `${TEST_USER}@127.0.0.1:${server.port}`, '--known-hosts', knownHosts, '--ask-password', '--', 'echo hi'];
  const { code, screen } = await onTerminal(args, 'Password: ', 'not-the-password');
  assert.equal(code, 1);
  assert.match(screen, /auth-failed in auth/);
});

test('an encrypted key asks for its passphrase, and progress is drawn on the terminal', async () => {
  const key = await sshd.addClientKey('ed25519', 'typed passphrase');
  const args = ['run', '--hosts', `127.0.0.1:${sshd.port}`, '-i', key.path, '--known-hosts', knownHosts, '--', 'echo typed-ok'];
  const { code, screen } = await onTerminal(args, `Passphrase for ${key.path}: `, 'typed passphrase');
  assert.equal(code, 0, screen);
  assert.match(screen, /typed-ok/);
  assert.ok(!screen.includes('typed passphrase'), 'the passphrase is not echoed');
  assert.ok(screen.includes('\r\x1b[2K1/1 done'), 'a progress line');
});
