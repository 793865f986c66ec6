import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { SshConfig, SshConfigError, type SshHostConfig } from '../src/ssh/ssh-config.ts';

const HOME = '/home/ann';
const OPTIONS = { home: HOME, localUser: 'ann' };

let dir = '';
before(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'leash-ssh-config-'));
});
after(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

let fileCount = 0;
/** Writes `lines` to a fresh file under the temp dir and loads it. */
async function load(lines: readonly string[], options: object = OPTIONS): Promise<SshConfig> {
  const file = path.join(dir, `config-${++fileCount}`);
  await fs.writeFile(file, lines.join('\n'));
  return SshConfig.load(file, options);
}

/** The SshConfigError that loading `lines` raises. */
async function loadError(lines: readonly string[]): Promise<SshConfigError> {
  const file = path.join(dir, `bad-${++fileCount}`);
  await fs.writeFile(file, lines.join('\n'));
  try {
    await SshConfig.load(file, OPTIONS);
  } catch (error) {
    assert.ok(error instanceof SshConfigError, `expected SshConfigError, got ${String(error)}`);
    assert.equal(error.file, file);
    assert.ok(error.message.startsWith(`${file}:${error.line}: `), error.message);
    return error;
  }
  throw new assert.AssertionError({ message: `no error for ${JSON.stringify(lines)}` });
}

const EMPTY: Omit<SshHostConfig, 'alias' | 'hostName'> = {
  user: null,
  port: null,
  identityFiles: [],
  proxyJump: null,
  proxyCommand: null,
  connectTimeoutMs: null,
  serverAliveIntervalMs: null,
  serverAliveCountMax: null,
  strictHostKeyChecking: null,
  userKnownHostsFiles: null,
};

void describe('SshConfig: first match wins', () => {
  void test('the first value obtained wins across blocks; Host * at the end supplies defaults', async () => {
    const config = await load([
      '# comment',
      'Host web1',
      '  HostName 10.0.0.1',
      '  user deploy',
      '',
      'Host web*',
      '  HostName ignored.example',
      '  Port 2222',
      '  User ignored',
      'Host *',
      '  User fallback',
      '  Port 22',
      '  ForwardAgent yes',
      '  Compression yes',
    ]);
    assert.deepEqual(config.resolve('web1'), { ...EMPTY, alias: 'web1', hostName: '10.0.0.1', user: 'deploy', port: 2222 });
    assert.deepEqual(config.resolve('web2'), {
      ...EMPTY,
      alias: 'web2',
      hostName: 'ignored.example',
      user: 'ignored',
      port: 2222,
    });
    assert.deepEqual(config.resolve('db'), { ...EMPTY, alias: 'db', hostName: 'db', user: 'fallback', port: 22 });
  });

  void test('directives before any Host apply to every host and win over later blocks', async () => {
    const config = await load(['Port 2200', 'Host a', '  Port 1']);
    assert.equal(config.resolve('a').port, 2200);
  });

  void test('keywords are case-insensitive and accept = as the separator', async () => {
    const config = await load(['HOST a', '  hostname=real.example', '  PORT = 2022', '  uSeR\tbob']);
    const a = config.resolve('a');
    assert.deepEqual([a.hostName, a.port, a.user], ['real.example', 2022, 'bob']);
  });

  void test('patterns: *, ? (exactly one character), several per line, !negation', async () => {
    const config = await load([
      'Host *.prod !bastion.prod',
      '  User produser',
      'Host db? "quoted name"',
      '  Port 5000',
      'Host a,b',
      '  Port 6000',
      'Host !nomatch',
      '  Port 7000',
    ]);
    assert.equal(config.resolve('web.prod').user, 'produser');
    assert.equal(config.resolve('bastion.prod').user, null, 'negated pattern excludes the host');
    assert.equal(config.resolve('db1').port, 5000);
    assert.equal(config.resolve('quoted name').port, 5000);
    assert.equal(config.resolve('db').port, null, '? is one character, not zero');
    assert.equal(config.resolve('db12').port, null);
    // A Host line's patterns are separated by spaces; a comma is literal (unlike Match host).
    assert.equal(config.resolve('a').port, null);
    assert.equal(config.resolve('a,b').port, 6000);
    // A Host line with only a negated pattern never matches.
    assert.equal(config.resolve('other').port, null);
  });

  void test('Host patterns are case-sensitive, as in OpenSSH', async () => {
    const config = await load(['Host Web', '  Port 1']);
    assert.equal(config.resolve('Web').port, 1);
    assert.equal(config.resolve('web').port, null);
  });

  void test('HostName expands %h and %%', async () => {
    const config = await load(['Host *', '  HostName %h.internal.example%%']);
    assert.equal(config.resolve('box').hostName, 'box.internal.example%');
  });
});

void describe('SshConfig: values', () => {
  void test('IdentityFile accumulates in order, with ~ and %d/%u/%h/%r/%n/%p/%% expanded', async () => {
    const config = await load([
      'Host jump',
      '  HostName jump.example',
      '  User ops',
      '  Port 2022',
      '  IdentityFile ~/.ssh/id_%h_%r',
      '  IdentityFile "~/keys/my key"',
      'Host *',
      '  IdentityFile %d/.ssh/%u-%n-%p%%',
      '  IdentityFile /etc/keys/shared',
      '  IdentityFile relative/key',
    ]);
    assert.deepEqual(config.resolve('jump').identityFiles, [
      '/home/ann/.ssh/id_jump.example_ops',
      '/home/ann/keys/my key',
      '/home/ann/.ssh/ann-jump-2022%',
      '/etc/keys/shared',
      'relative/key',
    ]);
    // %r defaults to the local user, %p to 22.
    assert.deepEqual(config.resolve('other').identityFiles, [
      '/home/ann/.ssh/ann-other-22%',
      '/etc/keys/shared',
      'relative/key',
    ]);
  });

  void test('ProxyJump: several hops with user and port, IPv6, ssh:// URIs; none', async () => {
    const config = await load([
      'Host direct',
      '  ProxyJump none',
      'Host inner',
      '  ProxyJump alice@bastion.example:2222,hop2,[fe80::1]:22,ssh://bob@hop4:23',
      'Host *',
      '  ProxyJump default-bastion',
    ]);
    assert.deepEqual(config.resolve('inner').proxyJump, [
      { host: 'bastion.example', user: 'alice', port: 2222 },
      { host: 'hop2', user: null, port: null },
      { host: 'fe80::1', user: null, port: 22 },
      { host: 'hop4', user: 'bob', port: 23 },
    ]);
    assert.equal(config.resolve('direct').proxyJump, null, 'none wins over the later default');
    assert.deepEqual(config.resolve('x').proxyJump, [{ host: 'default-bastion', user: null, port: null }]);
  });

  void test('ProxyJump and ProxyCommand: whichever comes first wins, the other stays null', async () => {
    const config = await load([
      'Host cmd',
      '  ProxyCommand ssh -W %h:%p gateway',
      'Host *',
      '  ProxyJump bastion',
    ]);
    const cmd = config.resolve('cmd');
    assert.equal(cmd.proxyCommand, 'ssh -W %h:%p gateway');
    assert.equal(cmd.proxyJump, null);
    const other = config.resolve('other');
    assert.equal(other.proxyCommand, null);
    assert.deepEqual(other.proxyJump, [{ host: 'bastion', user: null, port: null }]);
  });

  void test('ConnectTimeout and ServerAlive* convert to ms and counts, time units accepted', async () => {
    const config = await load([
      'Host a',
      '  ConnectTimeout 5',
      '  ServerAliveInterval 1m30s',
      '  ServerAliveCountMax 4',
      'Host *',
      '  ConnectTimeout 0',
      '  ServerAliveInterval 0',
      '  ServerAliveCountMax 0',
    ]);
    const a = config.resolve('a');
    assert.deepEqual([a.connectTimeoutMs, a.serverAliveIntervalMs, a.serverAliveCountMax], [5000, 90_000, 4]);
    const b = config.resolve('b');
    assert.deepEqual([b.connectTimeoutMs, b.serverAliveIntervalMs, b.serverAliveCountMax], [0, 0, 0]);
  });

  void test('StrictHostKeyChecking maps onto leash policies', async () => {
    const cases: Array<[string, string]> = [
      ['yes', 'strict'],
      ['ask', 'strict'],
      ['accept-new', 'accept-new'],
      ['no', 'off'],
      ['off', 'off'],
      ['YES', 'strict'],
    ];
    const config = await load(cases.flatMap(([value], i) => [`Host h${i}`, `  StrictHostKeyChecking ${value}`]));
    cases.forEach(([value, policy], i) => {
      assert.equal(config.resolve(`h${i}`).strictHostKeyChecking, policy, value);
    });
  });

  void test('UserKnownHostsFile: several files, ~ expanded; none is an empty list; first line wins', async () => {
    const config = await load([
      'Host a',
      '  UserKnownHostsFile ~/.ssh/known_hosts "/etc/with space/kh" ~/.ssh/kh_%h',
      'Host b',
      '  UserKnownHostsFile none',
      'Host *',
      '  UserKnownHostsFile /ignored/for/a',
    ]);
    assert.deepEqual(config.resolve('a').userKnownHostsFiles, [
      '/home/ann/.ssh/known_hosts',
      '/etc/with space/kh',
      '/home/ann/.ssh/kh_a',
    ]);
    assert.deepEqual(config.resolve('b').userKnownHostsFiles, []);
    assert.deepEqual(config.resolve('c').userKnownHostsFiles, ['/ignored/for/a']);
  });
});

void describe('SshConfig: Match', () => {
  void test('Match all, Match host (against HostName so far, comma lists, !), originalhost, user, localuser', async () => {
    const config = await load([
      'Host short',
      '  HostName short.corp.example',
      'Match host *.corp.example',
      '  User corp',
      'Match originalhost SHORT',
      '  Port 1111',
      'Match !host *.corp.example,other',
      '  Port 2222',
      'Match localuser ann host x*',
      '  IdentityFile ~/.ssh/x',
      'Match localuser bob',
      '  IdentityFile ~/.ssh/never',
      'Match user corp',
      '  ConnectTimeout 3',
      'Match all',
      '  ServerAliveCountMax 9',
    ]);
    const short = config.resolve('short');
    assert.equal(short.user, 'corp', 'Match host sees the HostName set earlier');
    assert.equal(short.port, 1111, 'Match originalhost is case-insensitive');
    assert.equal(short.connectTimeoutMs, 3000, 'Match user sees the User set earlier');
    assert.equal(short.serverAliveCountMax, 9);
    const xbox = config.resolve('xbox');
    assert.equal(xbox.user, null);
    assert.equal(xbox.port, 2222);
    assert.deepEqual(xbox.identityFiles, ['/home/ann/.ssh/x']);
    assert.equal(xbox.connectTimeoutMs, null);
    assert.equal(config.resolve('other').port, null, 'a negated match excludes');
  });

  void test('Match exec is refused with file and line (it would run a command)', async () => {
    const error = await loadError(['Host a', '  Port 1', 'Match exec "test -f /tmp/x"', '  User u']);
    assert.equal(error.line, 3);
    assert.match(error.message, /:3: Match exec is not supported by leash/);
  });

  void test('Match exec is refused even when negated or after other criteria', async () => {
    assert.equal((await loadError(['Match host a !exec "true"'])).line, 1);
  });

  void test('other Match criteria leash cannot evaluate are refused, unknown ones too', async () => {
    for (const criterion of ['canonical', 'final', 'tagged foo', 'localnetwork 10.0.0.0/8', 'version x', 'sessiontype shell', 'command ls']) {
      const error = await loadError(['', `Match ${criterion}`]);
      assert.equal(error.line, 2, criterion);
      assert.match(error.message, /not supported by leash/, criterion);
    }
    const unknown = await loadError(['Match hostt a']);
    assert.match(unknown.message, /:1: unknown Match criterion "hostt"/);
    const missing = await loadError(['Host a', 'Match host']);
    assert.equal(missing.line, 2);
    const mixed = await loadError(['Match all host a']);
    assert.match(mixed.message, /:1: Match all cannot be combined/);
  });
});

void describe('SshConfig: Include', () => {
  void test('relative to ~/.ssh, globs in sorted order, spliced at the Include line, conditional inside a block', async () => {
    const home = path.join(dir, 'home-include');
    const confD = path.join(home, '.ssh', 'conf.d');
    await fs.mkdir(path.join(confD, 'subdir'), { recursive: true });
    await fs.writeFile(path.join(confD, 'b.conf'), 'Host *\n  User from-b\n');
    await fs.writeFile(path.join(confD, 'a.conf'), 'Host web\n  Port 2001\n');
    await fs.writeFile(path.join(confD, '.hidden.conf'), 'Host *\n  Port 9\n');
    await fs.writeFile(path.join(home, 'only-for-db'), 'Port 3306\nHost *\n  User from-db-include\n');
    const config = await load(
      [
        'Host web',
        '  User web-user',
        'Host db',
        `  Include ${path.join(home, 'only-for-db')}`,
        'Host *',
        '  Include conf.d/*.conf missing-is-fine',
        '  Port 22',
      ],
      { home, localUser: 'ann' },
    );
    assert.deepEqual([config.resolve('web').user, config.resolve('web').port], ['web-user', 2001]);
    assert.deepEqual([config.resolve('db').user, config.resolve('db').port], ['from-db-include', 3306]);
    assert.deepEqual([config.resolve('x').user, config.resolve('x').port], ['from-b', 22]);
  });

  void test('errors in an included file name that file and its line; unreadable and self-include are errors', async () => {
    const home = path.join(dir, 'home-include-bad');
    await fs.mkdir(path.join(home, '.ssh'), { recursive: true });
    const bad = path.join(home, '.ssh', 'bad.conf');
    await fs.writeFile(bad, '# fine\nHost *\n  Port 99999\n');
    const file = path.join(dir, 'include-bad');
    await fs.writeFile(file, 'Include bad.conf\n');
    await assert.rejects(SshConfig.load(file, { home }), (error: unknown) => {
      assert.ok(error instanceof SshConfigError);
      assert.equal(error.file, bad);
      assert.equal(error.line, 3);
      assert.match(error.message, /bad\.conf:3: bad Port "99999"/);
      return true;
    });

    const loop = path.join(dir, 'include-loop');
    await fs.writeFile(loop, `\nInclude ${loop}\n`);
    await assert.rejects(SshConfig.load(loop, { home }), /:2: Include nested more than 16 deep/);

    if (process.getuid?.() !== 0) {
      const locked = path.join(home, '.ssh', 'locked.conf');
      await fs.writeFile(locked, 'Port 1\n', { mode: 0o000 });
      const includer = path.join(dir, 'include-locked');
      await fs.writeFile(includer, 'Include locked.conf\n');
      await assert.rejects(SshConfig.load(includer, { home }), /include-locked:1: cannot read included file .*locked\.conf: permission denied/);
    }
  });
});

void describe('SshConfig: missing and unreadable files', () => {
  void test('a missing file is an empty config unless required', async () => {
    const missing = path.join(dir, 'no-such-config');
    const config = await SshConfig.load(missing, OPTIONS);
    assert.deepEqual(config.resolve('host1'), { ...EMPTY, alias: 'host1', hostName: 'host1' });
    await assert.rejects(SshConfig.load(missing, { ...OPTIONS, required: true }), (error: unknown) => {
      assert.ok(error instanceof SshConfigError);
      assert.equal(error.line, null);
      assert.equal(error.message, `${missing}: no such file`);
      return true;
    });
  });

  void test('a directory is an error, not an empty config', async () => {
    await assert.rejects(SshConfig.load(dir, OPTIONS), /: is a directory \(EISDIR\)$/);
  });

  void test('parse() works on text without touching the disk', () => {
    const config = SshConfig.parse('Host a\n  Port 2\n', 'inline', OPTIONS);
    assert.equal(config.resolve('a').port, 2);
  });
});

void describe('SshConfig: bad values name FILE:LINE', () => {
  const cases: Array<[string, readonly string[], number, RegExp]> = [
    ['Port abc', ['Host a', '  HostName x', '', '  Port abc'], 4, /bad Port "abc": expected a number from 1 to 65535/],
    ['Port 0', ['Port 0'], 1, /bad Port "0"/],
    ['Port in an inactive block', ['Host never', '  Port 70000'], 2, /bad Port "70000"/],
    ['ConnectTimeout -1', ['Host *', '  ConnectTimeout -1'], 2, /bad ConnectTimeout "-1"/],
    ['ServerAliveInterval x', ['# c', 'ServerAliveInterval 10x'], 2, /bad ServerAliveInterval "10x"/],
    ['ServerAliveCountMax -3', ['ServerAliveCountMax -3'], 1, /bad ServerAliveCountMax "-3"/],
    ['StrictHostKeyChecking maybe', ['', '', 'StrictHostKeyChecking maybe'], 3, /bad StrictHostKeyChecking "maybe": expected yes, ask, accept-new, no or off/],
    ['ProxyJump bad port', ['Host a', '  ProxyJump ok:22,bastion:99999'], 2, /bad ProxyJump hop "bastion:99999": bad port "99999"/],
    ['ProxyJump empty hop', ['ProxyJump a,,b'], 1, /bad ProxyJump hop ""/],
    ['ProxyJump empty user', ['ProxyJump @b'], 1, /empty user name/],
    ['Port with no value', ['Host a', '  Port'], 2, /Port needs a value/],
    ['Host with no pattern', ['Host a', 'Host'], 2, /needs a value/],
    ['unbalanced quote', ['Host a', '  User "bob'], 2, /unbalanced quotes/],
    ['no keyword', ['Host a', '  = value'], 2, /expected a keyword/],
    ['unsupported token', ['IdentityFile ~/.ssh/%C'], 1, /token %C is not supported/],
    ['~user', ['IdentityFile ~bob/.ssh/id'], 1, /~user paths are not supported/],
    ['${ENV}', ['UserKnownHostsFile ${HOME}/kh'], 1, /environment variables/],
    ['HostName token', ['HostName %u.example'], 1, /token %u is not supported \(leash expands %%, %h\)/],
  ];
  for (const [name, lines, line, pattern] of cases) {
    void test(name, async () => {
      const error = await loadError(lines);
      assert.equal(error.line, line, error.message);
      assert.match(error.message, pattern);
    });
  }

  void test('CRLF line endings keep line numbers right', async () => {
    const file = path.join(dir, 'crlf');
    await fs.writeFile(file, 'Host a\r\n  User u\r\n\r\n  Port nope\r\n');
    await assert.rejects(SshConfig.load(file, OPTIONS), new RegExp(`^SshConfigError: ${file}:4: bad Port "nope"`));
    await fs.writeFile(file, 'Host a\r\n  User u\r\n  Port 2\r\n');
    const a = (await SshConfig.load(file, OPTIONS)).resolve('a');
    assert.deepEqual([a.user, a.port], ['u', 2]);
  });
});
