// `leash run` reading OpenSSH's client config, as a user meets it: aliases in ~/.ssh/config
// (or --ssh-config FILE) reach real sshd processes with no other flags, ProxyJump and -J go
// through a bastion, and a config leash cannot use is one line and exit 2.
import assert from 'node:assert/strict';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { jsonLines, runCli, tempHome } from './support/cli.ts';
import { startSshd, type Sshd } from './support/sshd.ts';

let target: Sshd;
let bastion: Sshd;

before(async () => {
  [target, bastion] = await Promise.all([startSshd(), startSshd()]);
});
after(async () => {
  await Promise.all([target?.stop(), bastion?.stop()]);
});

/** A temp HOME with `~/.ssh/config` holding `config` (when given) and a known_hosts file trusting both sshds. */
async function homeWith(config?: string): Promise<{ home: string; knownHosts: string; configPath: string; remove: () => Promise<void> }> {
  const { home, remove } = await tempHome();
  const knownHosts = path.join(home, 'trusted_hosts');
  await writeFile(knownHosts, `${target.knownHostsLine}\n${bastion.knownHostsLine}\n`);
  const configPath = path.join(home, '.ssh', 'config');
  await mkdir(path.dirname(configPath), { recursive: true, mode: 0o700 });
  if (config !== undefined) await writeFile(configPath, config);
  return { home, knownHosts, configPath, remove };
}

/** A `Host` block for `sshd` under `alias`, plus any `extra` lines. */
function hostBlock(alias: string, sshd: Sshd, knownHosts: string, extra: string[] = []): string {
  return [
    `Host ${alias}`,
    `  HostName 127.0.0.1`,
    `  Port ${sshd.port}`,
    `  User ${sshd.user}`,
    `  IdentityFile ${sshd.clientKey.path}`,
    `  UserKnownHostsFile ${knownHosts}`,
    ...extra.map((l) => `  ${l}`),
    '',
  ].join('\n');
}

/** How many logins the bastion has accepted so far (its sshd log, LogLevel VERBOSE). */
async function bastionLogins(): Promise<number> {
  const log = await readFile(bastion.logPath, 'utf8');
  return log.match(/Accepted publickey/g)?.length ?? 0;
}

void describe('leash run with an ssh config', () => {
  void test('an alias of ~/.ssh/config is enough: HostName, Port, User, IdentityFile, UserKnownHostsFile', async () => {
    const h = await homeWith();
    try {
      // A missing IdentityFile is skipped quietly, as ssh does.
      await writeFile(h.configPath, `Host other\n  User nobody\n\n${hostBlock('myalias', target, h.knownHosts, ['IdentityFile ~/.ssh/absent_key'])}`);
      const r = await runCli(['run', '--hosts', 'myalias', '--json', '--', 'echo hi'], { home: h.home });
      assert.equal(r.code, 0, r.stderr + r.stdout);
      const [line, ...rest] = jsonLines(r.stdout);
      assert.deepEqual(rest, []);
      assert.equal(line!.host, '127.0.0.1');
      assert.equal(line!.port, target.port);
      assert.equal(line!.user, target.user);
      assert.equal(line!.stdout, 'hi\n');
      assert.equal(r.stderr, '');
    } finally {
      await h.remove();
    }
  });

  void test('--ssh-config FILE names the config; a named file must exist', async () => {
    const h = await homeWith();
    try {
      const file = path.join(h.home, 'elsewhere.conf');
      await writeFile(file, hostBlock('myalias', target, h.knownHosts));
      const ok = await runCli(['run', '--ssh-config', file, '--hosts', 'myalias', '--', 'echo hi'], { home: h.home });
      assert.equal(ok.code, 0, ok.stderr + ok.stdout);
      assert.match(ok.stdout, /^hi$/m);

      const missing = path.join(h.home, 'no-such.conf');
      const r = await runCli(['run', '--ssh-config', missing, '--hosts', 'myalias', '--', 'true'], { home: h.home });
      assert.equal(r.code, 2);
      assert.equal(r.stderr, `leash: ${missing}: no such file\n`);
    } finally {
      await h.remove();
    }
  });

  void test('precedence: user@ and :port in the entry > the config > -u / -p', async () => {
    const h = await homeWith();
    try {
      const config = hostBlock('wronguser', target, h.knownHosts).replace(`User ${target.user}`, 'User nosuchuser');
      await writeFile(h.configPath, config + hostBlock('myalias', target, h.knownHosts));
      // -u and -p lose to the config's User and Port.
      const a = await runCli(['run', '--hosts', 'myalias', '-u', 'nosuchuser', '-p', '1', '--json', '--', 'true'], { home: h.home });
      assert.equal(a.code, 0, a.stderr + a.stdout);
      // user@ in the entry wins over the config's User.
      const b = await runCli(['run', '--hosts', `${target.user}@wronguser`, '--json', '--', 'true'], { home: h.home });
      assert.equal(b.code, 0, b.stderr + b.stdout);
      assert.equal(jsonLines(b.stdout)[0]!.user, target.user);
      // :port in the entry wins over the config's Port.
      const c = await runCli(['run', '--hosts', 'myalias:1', '--connect-timeout', '2s', '--json', '--', 'true'], { home: h.home });
      assert.equal(c.code, 1);
      assert.equal(jsonLines(c.stdout)[0]!.port, 1);
    } finally {
      await h.remove();
    }
  });

  void test('StrictHostKeyChecking accept-new records the key in leash known_hosts; --host-key-policy wins', async () => {
    const h = await homeWith();
    try {
      await writeFile(h.configPath, hostBlock('myalias', target, '/dev/null', ['StrictHostKeyChecking accept-new']));
      const own = path.join(h.home, 'leash-known-hosts');
      const strict = await runCli(['run', '--hosts', 'myalias', '--known-hosts', own, '--host-key-policy', 'strict', '--json', '--', 'true'], { home: h.home });
      assert.equal(strict.code, 1);
      assert.equal((jsonLines(strict.stdout)[0]!.error as { code: string }).code, 'hostkey-unknown');
      const accepted = await runCli(['run', '--hosts', 'myalias', '--known-hosts', own, '--json', '--', 'true'], { home: h.home });
      assert.equal(accepted.code, 0, accepted.stderr + accepted.stdout);
      assert.ok((await readFile(own, 'utf8')).includes(target.hostKeyLine));
    } finally {
      await h.remove();
    }
  });

  void test('ProxyJump in the config goes through the bastion, each alias with its own IdentityFile', async () => {
    const h = await homeWith();
    try {
      await writeFile(h.configPath, hostBlock('bastion', bastion, h.knownHosts) + hostBlock('inside', target, h.knownHosts, ['ProxyJump bastion']));
      const before = await bastionLogins();
      const r = await runCli(['run', '--hosts', 'inside', '--json', '--', 'echo through'], { home: h.home });
      assert.equal(r.code, 0, r.stderr + r.stdout);
      const [line] = jsonLines(r.stdout);
      assert.equal(line!.port, target.port);
      assert.equal(line!.stdout, 'through\n');
      assert.ok((await bastionLogins()) > before, 'the bastion accepted a login');
    } finally {
      await h.remove();
    }
  });

  void test('-J on the command line: an alias of the config, or [user@]host:port', async () => {
    const h = await homeWith();
    try {
      await writeFile(h.configPath, hostBlock('bastion', bastion, h.knownHosts) + hostBlock('direct', target, h.knownHosts));
      const before = await bastionLogins();
      const viaAlias = await runCli(['run', '--hosts', 'direct', '-J', 'bastion', '--', 'echo through'], { home: h.home });
      assert.equal(viaAlias.code, 0, viaAlias.stderr + viaAlias.stdout);
      assert.match(viaAlias.stdout, /^through$/m);
      const afterAlias = await bastionLogins();
      assert.ok(afterAlias > before, 'the bastion accepted a login');

      const keys = ['-i', target.clientKey.path, '-i', bastion.clientKey.path, '--known-hosts', h.knownHosts];
      const hop = `${bastion.user}@127.0.0.1:${bastion.port}`;
      const raw = await runCli(['run', '--no-ssh-config', '--hosts', `127.0.0.1:${target.port}`, '--jump', hop, ...keys, '--', 'echo through'], { home: h.home });
      assert.equal(raw.code, 0, raw.stderr + raw.stdout);
      assert.ok((await bastionLogins()) > afterAlias, 'the bastion accepted a login');

      const bad = await runCli(['run', '--hosts', 'direct', '-J', 'bastion:99999', '--', 'true'], { home: h.home });
      assert.equal(bad.code, 2);
      assert.match(bad.stderr, /^leash: bad -J hop "bastion:99999": bad port "99999"/);
    } finally {
      await h.remove();
    }
  });
});

void describe('a config leash cannot use: exit 2, one line', () => {
  void test('a bad Port is FILE:LINE: problem, no stack', async () => {
    const h = await homeWith('Host myalias\n  HostName 127.0.0.1\n  Port 99999\n');
    try {
      const r = await runCli(['run', '--hosts', 'myalias', '--', 'true'], { home: h.home });
      assert.equal(r.code, 2);
      assert.equal(r.stdout, '');
      assert.equal(r.stderr, `leash: ${h.configPath}:3: bad Port "99999": expected a number from 1 to 65535\n`);
    } finally {
      await h.remove();
    }
  });

  void test('ProxyCommand is refused, naming the host and pointing at ProxyJump', async () => {
    const h = await homeWith('Host other\n  HostName 127.0.0.1\n\nHost walled\n  ProxyCommand nc -x proxy:1080 %h %p\n');
    try {
      const r = await runCli(['run', '--hosts', 'other,walled', '--', 'true'], { home: h.home });
      assert.equal(r.code, 2);
      assert.equal(r.stdout, '');
      const lines = r.stderr.trimEnd().split('\n');
      assert.equal(lines.length, 1, r.stderr);
      assert.match(lines[0]!, /^leash: host walled: .*ProxyCommand.*use ProxyJump/);
    } finally {
      await h.remove();
    }
  });

  void test('an IdentityFile that exists but cannot be read names the file', async () => {
    const h = await homeWith();
    try {
      const dir = path.join(h.home, 'key-is-a-dir');
      await mkdir(dir);
      await writeFile(h.configPath, `Host myalias\n  HostName 127.0.0.1\n  IdentityFile ${dir}\n`);
      const r = await runCli(['run', '--hosts', 'myalias', '--', 'true'], { home: h.home });
      assert.equal(r.code, 2);
      assert.equal(r.stderr.trimEnd().split('\n').length, 1, r.stderr);
      assert.ok(r.stderr.startsWith(`leash: key file ${dir}`), r.stderr);
    } finally {
      await h.remove();
    }
  });

  void test('--no-ssh-config ignores a broken ~/.ssh/config', async () => {
    const h = await homeWith('Host myalias\n  Port notaport\n');
    try {
      const args = ['--hosts', `127.0.0.1:${target.port}`, '-i', target.clientKey.path, '--known-hosts', h.knownHosts, '--', 'echo hi'];
      const broken = await runCli(['run', ...args], { home: h.home });
      assert.equal(broken.code, 2);
      assert.match(broken.stderr, /^leash: .*config:2: bad Port "notaport"/);
      const r = await runCli(['run', '--no-ssh-config', ...args], { home: h.home });
      assert.equal(r.code, 0, r.stderr + r.stdout);
      assert.match(r.stdout, /^hi$/m);
    } finally {
      await h.remove();
    }
  });
});
