// `leash run` as a user meets it: a child process with flags, exit codes, JSON lines,
// grouped output, Ctrl-C, and one clear line for every kind of bad input.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { jsonLines, runCli, startCli, tempHome } from './support/cli.ts';
import { startHostileServer, type HostileServer } from './support/hostile-servers.ts';
import { startSshd, type Sshd } from './support/sshd.ts';

let sshd: Sshd;
let sshd2: Sshd;
let home: string;
let removeHome: () => Promise<void>;
let knownHosts: string;

before(async () => {
  [sshd, sshd2] = await Promise.all([startSshd(), startSshd()]);
  ({ home, remove: removeHome } = await tempHome());
  knownHosts = path.join(home, 'known_hosts');
  await writeFile(knownHosts, `${sshd.knownHostsLine}\n${sshd2.knownHostsLine}\n`);
});
after(async () => {
  await Promise.all([sshd?.stop(), sshd2?.stop()]);
  await removeHome?.();
});

/** Flags that reach the test sshd: its key, and a known_hosts file that trusts it. */
const reach = (): string[] => ['-i', sshd.clientKey.path, '--known-hosts', knownHosts];

/** A loopback port with nothing listening. */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

describe('results and exit codes', () => {
  test('--json prints one object per host with the contract fields; exit 0 when all are ok', async () => {
    const r = await runCli(['run', '--hosts', `127.0.0.1:${sshd.port}`, ...reach(), '--json', '--', 'echo', 'hi'], { home });
    assert.equal(r.code, 0, r.stderr);
    const [line, ...rest] = jsonLines(r.stdout);
    assert.deepEqual(rest, []);
    assert.deepEqual(Object.keys(line!).slice(0, 12), [
      'host',
      'port',
      'user',
      'status',
      'exitCode',
      'signal',
      'stdout',
      'stderr',
      'truncated',
      'durationMs',
      'stages',
      'error',
    ]);
    assert.equal(line!.host, '127.0.0.1');
    assert.equal(line!.port, sshd.port);
    assert.equal(line!.user, sshd.user);
    assert.equal(line!.status, 'ok');
    assert.equal(line!.stdout, 'hi\n');
    assert.equal(line!.error, null);
    assert.equal(r.stderr, '', 'nothing on stderr in --json mode');
  });

  test('exit 1 when any host is not ok, each failure with its code and stage', async () => {
    const port = await closedPort();
    const hosts = `127.0.0.1:${sshd.port},127.0.0.1:${port}`;
    const r = await runCli(['run', '--hosts', hosts, ...reach(), '--json', '--', 'exit 0'], { home });
    assert.equal(r.code, 1, r.stderr);
    const lines = jsonLines(r.stdout);
    assert.equal(lines.length, 2);
    const refused = lines.find((l) => l.port === port)!;
    assert.equal(refused.status, 'error');
    assert.deepEqual({ ...(refused.error as object), message: undefined }, { code: 'connect-refused', stage: 'connecting', message: undefined });
  });

  test('a non-zero remote exit is exit status 1 and shows in the text output', async () => {
    const r = await runCli(['run', '--hosts', `127.0.0.1:${sshd.port}`, ...reach(), '--', 'echo out; echo err >&2; exit 4'], { home });
    assert.equal(r.code, 1);
    assert.match(r.stdout, /127\.0\.0\.1:\d+ {2}nonzero-exit {2}exit 4/);
    assert.match(r.stdout, /^out$/m);
    assert.match(r.stdout, /^err$/m);
    assert.match(r.stderr, /1 host: 1 nonzero-exit in /);
  });

  test('--group folds hosts with identical output into one block', async () => {
    const hosts = `127.0.0.1:${sshd.port},127.0.0.1:${sshd2.port}`;
    const key2 = ['-i', sshd2.clientKey.path];
    const r = await runCli(['run', '--hosts', hosts, ...reach(), ...key2, '--group', '--', 'echo same'], { home });
    assert.equal(r.code, 0, r.stderr);
    const headers = r.stdout.split('\n').filter((l) => l.startsWith('──'));
    assert.equal(headers.length, 1, r.stdout);
    assert.match(headers[0]!, /\(2\) {2}ok/);
    assert.equal(r.stdout.match(/^same$/gm)?.length, 1);
  });

  test('--group --json prints one object per group', async () => {
    const hosts = `127.0.0.1:${sshd.port},127.0.0.1:${sshd2.port}`;
    const r = await runCli(['run', '--hosts', hosts, ...reach(), '-i', sshd2.clientKey.path, '--group', '--json', '--', 'echo same'], { home });
    const [group, ...rest] = jsonLines(r.stdout);
    assert.deepEqual(rest, []);
    assert.equal(group!.count, 2);
    assert.equal(group!.stdout, 'same\n');
  });

  test('accept-new records the host key in the --known-hosts file', async () => {
    const fresh = path.join(home, 'fresh-known-hosts');
    const args = ['run', '--hosts', `127.0.0.1:${sshd.port}`, '-i', sshd.clientKey.path, '--known-hosts', fresh, '--json', '--', 'true'];
    const strict = await runCli(args, { home });
    assert.equal(strict.code, 1);
    assert.equal((jsonLines(strict.stdout)[0]!.error as { code: string }).code, 'hostkey-unknown');
    const accepted = await runCli([...args.slice(0, 1), '--host-key-policy', 'accept-new', ...args.slice(1)], { home });
    assert.equal(accepted.code, 0, accepted.stdout);
    assert.ok((await readFile(fresh, 'utf8')).includes(sshd.hostKeyLine));
  });

  test('a passphrase comes from LEASH_KEY_PASSPHRASE', async () => {
    const key = await sshd.addClientKey('ed25519', 'open sesame');
    const args = ['run', '--hosts', `127.0.0.1:${sshd.port}`, '-i', key.path, '--known-hosts', knownHosts, '--', 'true'];
    const without = await runCli(args, { home });
    assert.equal(without.code, 2);
    assert.match(without.stderr, /is encrypted .*LEASH_KEY_PASSPHRASE/);
    const withIt = await runCli(args, { home, env: { LEASH_KEY_PASSPHRASE: 'open sesame' } });
    assert.equal(withIt.code, 0, withIt.stderr);
  });
});

describe('the process ends on its own', () => {
  let silent: HostileServer;
  before(async () => {
    silent = await startHostileServer('silent-tcp');
  });
  after(() => silent?.close());

  test('after a handshake timeout against a server that never speaks', async () => {
    const args = ['run', '--hosts', `127.0.0.1:${silent.port}`, ...reach(), '--handshake-timeout', '500ms', '--json', '--', 'true'];
    const r = await runCli(args, { home, limitMs: 20_000 });
    assert.equal(r.code, 1, `exit ${r.code} signal ${r.signal}: ${r.stderr}`);
    assert.equal((jsonLines(r.stdout)[0]!.error as { code: string }).code, 'handshake-timeout');
  });
});

describe('Ctrl-C', () => {
  test('SIGINT cancels every task, kills the remote processes and exits 130', async () => {
    const marker = `603.${process.pid}${Date.now() % 10000}`;
    const cli = startCli(['run', '--hosts', `127.0.0.1:${sshd.port}`, ...reach(), '--json', '--', `sleep ${marker}`], { home, limitMs: 30_000 });
    // Anchored: the leash process's own argv also contains the command.
    const pattern = `^sleep ${marker.replaceAll('.', '\\.')}`;
    const running = (): boolean => {
      try {
        execFileSync('pgrep', ['-f', pattern]);
        return true;
      } catch {
        return false;
      }
    };
    const until = Date.now() + 15_000;
    while (!running() && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
    assert.ok(running(), 'the remote command started');
    cli.child.kill('SIGINT');
    const r = await cli.done;
    assert.equal(r.code, 130, `signal ${r.signal} after ${r.ms} ms: ${r.stderr}`);
    const [line] = jsonLines(r.stdout);
    assert.equal(line!.status, 'cancelled');
    assert.equal(line!.killConfirmed, true);
    assert.equal(running(), false, 'the remote sleep is gone');
  });
});

describe('bad input: exit 2 with one line naming the problem', () => {
  const cases: Array<[string, string[], RegExp]> = [
    ['an unknown flag', ['run', '--hosts', 'a', '--frobnicate', '--', 'true'], /unknown option --frobnicate/],
    ['a malformed host', ['run', '--hosts', 'web01:notaport', '--', 'true'], /bad host entry "web01:notaport"/],
    ['a malformed range', ['run', '--hosts', 'web[01-3', '--', 'true'], /web\[01-3/],
    ['a reversed range', ['run', '--hosts', 'web[5-1]', '--', 'true'], /web\[5-1\]/],
    ['a missing key file', ['run', '--hosts', 'a', '-i', '/nonexistent/key', '--', 'true'], /key file \/nonexistent\/key: no such file/],
    ['a bad duration', ['run', '--hosts', 'a', '--timeout', '10x', '--', 'true'], /bad duration "10x" for --timeout/],
    ['a missing command', ['run', '--hosts', 'a'], /missing command/],
    ['no hosts', ['run', '--', 'true'], /no hosts/],
    ['a bad host key policy', ['run', '--hosts', 'a', '--host-key-policy', 'yolo', '--', 'true'], /--host-key-policy "yolo"/],
    ['a bad concurrency', ['run', '--hosts', 'a', '--concurrency', '0', '--', 'true'], /--concurrency "0"/],
    ['an unset password variable', ['run', '--hosts', 'a', '--password-env', 'NOPE_NOT_SET', '--', 'true'], /NOPE_NOT_SET/],
    ['an unknown command', ['frobnicate'], /unknown command "frobnicate"/],
  ];
  for (const [what, args, expected] of cases) {
    test(what, async () => {
      const r = await runCli(args, { home });
      assert.equal(r.code, 2, `${what}: ${r.stderr}`);
      assert.equal(r.stdout, '');
      const lines = r.stderr.trimEnd().split('\n');
      assert.equal(lines.length, 1, r.stderr);
      assert.match(lines[0]!, expected);
    });
  }

  test('an unreadable known_hosts file', async () => {
    const dir = path.join(home, 'known-hosts-dir');
    await mkdir(dir, { recursive: true });
    const r = await runCli(['run', '--hosts', 'a', '-i', sshd.clientKey.path, '--known-hosts', dir, '--', 'true'], { home });
    assert.equal(r.code, 2);
    assert.ok(r.stderr.includes(dir), r.stderr);
    assert.equal(r.stderr.trimEnd().split('\n').length, 1);
  });
});
