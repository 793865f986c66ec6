import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promises as fs } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { HostKeyFileError, HostKeyVerifier, type HostKeyPolicy, type HostKeyVerdict } from '../src/ssh/host-key-verifier.ts';
import { fingerprintSha256 } from '../src/ssh/known-hosts.ts';

import { generateKeyPair } from '../src/ssh/ephemeral-keys.ts';
const run = promisify(execFile);

interface TestKey {
  readonly type: string;
  readonly blob: Buffer;
  /** `type base64` */
  readonly pub: string;
}

function makeKey(kind: 'ed25519' | 'ecdsa' | 'rsa'): TestKey {
  const { publicKey, publicBlob: blob, publicLine } = generateKeyPair(kind);
  return { type: publicKey.type, blob, pub: publicLine };
}

const ed = makeKey('ed25519');
const ed2 = makeKey('ed25519');
const ec = makeKey('ecdsa');
const rsa = makeKey('rsa');

let root = '';
let n = 0;
before(async () => {
  root = await fs.mkdtemp(path.join(os.tmpdir(), 'leash-host-keys-'));
});
after(async () => {
  await fs.rm(root, { recursive: true, force: true });
});

/** A fresh directory for one test. */
async function scratch(): Promise<string> {
  const d = path.join(root, `t${++n}`);
  await fs.mkdir(d);
  return d;
}

/** Writes `lines` to `file` (newline-terminated). */
async function writeLines(file: string, lines: string[]): Promise<void> {
  await fs.writeFile(file, lines.map((l) => `${l}\n`).join(''));
}

/** A verifier over `readLines` in a read-only file, plus `ownLines` in its own file. */
async function setup(policy: HostKeyPolicy, readLines: string[], ownLines?: string[]): Promise<{ v: HostKeyVerifier; readFile: string; ownFile: string }> {
  const d = await scratch();
  const readFile = path.join(d, 'ssh_known_hosts');
  const ownFile = path.join(d, 'leash', 'known_hosts');
  await writeLines(readFile, readLines);
  if (ownLines) {
    await fs.mkdir(path.dirname(ownFile));
    await writeLines(ownFile, ownLines);
  }
  const v = await HostKeyVerifier.load({ policy, readFiles: [readFile], ownFile });
  return { v, readFile, ownFile };
}

function assertVerdict(v: HostKeyVerdict, outcome: HostKeyVerdict['outcome'], key: TestKey, mentions: string[] = []): void {
  assert.equal(v.outcome, outcome, v.message);
  assert.equal(v.keyType, key.type);
  assert.equal(v.fingerprint, fingerprintSha256(key.blob));
  assert.ok(v.message.includes(v.fingerprint), `names the fingerprint: ${v.message}`);
  assert.ok(v.message.includes(key.type), `names the key type: ${v.message}`);
  assert.ok(!v.message.includes('\n'), 'one line');
  for (const m of mentions) assert.ok(v.message.includes(m), `mentions ${m}: ${v.message}`);
}

void describe('HostKeyVerifier: strict', () => {
  void test('a known key matches, from either file, on port 22 and [host]:port', async () => {
    const { v } = await setup('strict', [`web1 ${ed.pub}`, `[web1]:2222 ${ec.pub}`], [`db ${rsa.pub}`]);
    assertVerdict(await v.verify('web1', 22, ed.blob), 'match', ed, ['web1']);
    assertVerdict(await v.verify('WEB1', 2222, ec.blob), 'match', ec, ['[web1]:2222']);
    assertVerdict(await v.verify('db', 22, rsa.blob), 'match', rsa, ['db']);
    assert.deepEqual(v.warnings, []);
  });

  void test('an unknown host is refused', async () => {
    const { v, ownFile } = await setup('strict', [`web1 ${ed.pub}`]);
    assertVerdict(await v.verify('web2', 22, ed.blob), 'unknown', ed, ['web2', 'strict']);
    assertVerdict(await v.verify('web1', 2222, ed.blob), 'unknown', ed, ['[web1]:2222']);
    await assert.rejects(fs.stat(ownFile), { code: 'ENOENT' });
  });

  void test('a different key for a known host is a mismatch naming file:line of the known key', async () => {
    const { v, readFile } = await setup('strict', ['# header', `web1 ${ed.pub}`]);
    const verdict = await v.verify('web1', 22, ed2.blob);
    assertVerdict(verdict, 'mismatch', ed2, ['web1', `${readFile}:2`, fingerprintSha256(ed.blob)]);
  });

  void test('a host with a key of another type known is a mismatch too', async () => {
    const { v } = await setup('strict', [`web1 ${rsa.pub}`]);
    assertVerdict(await v.verify('web1', 22, ed.blob), 'mismatch', ed, ['ssh-rsa']);
  });

  void test('a revoked key is refused, even when also listed as known', async () => {
    const { v, readFile } = await setup('strict', [`@revoked * ${ed2.pub}`, `web1 ${ed2.pub}`, `@revoked web9 ${ec.pub}`]);
    assertVerdict(await v.verify('web1', 22, ed2.blob), 'revoked', ed2, [`${readFile}:1`, 'web1']);
    assertVerdict(await v.verify('anything', 2022, ed2.blob), 'revoked', ed2);
    assertVerdict(await v.verify('web9', 22, ec.blob), 'revoked', ec);
    // The @revoked line for web9 does not make web9's other keys known, nor revoke ec elsewhere.
    assertVerdict(await v.verify('web9', 22, ed.blob), 'unknown', ed);
    assertVerdict(await v.verify('web8', 22, ec.blob), 'unknown', ec);
  });

  void test('hashed lines from ssh-keygen -H match', async () => {
    const d = await scratch();
    const file = path.join(d, 'known_hosts');
    await writeLines(file, [`web1.example.com ${ed.pub}`, `[web1.example.com]:2222 ${rsa.pub}`]);
    await run('ssh-keygen', ['-H', '-f', file]);
    assert.ok((await fs.readFile(file, 'utf8')).startsWith('|1|'));
    const v = await HostKeyVerifier.load({ policy: 'strict', readFiles: [file], ownFile: path.join(d, 'own') });
    assertVerdict(await v.verify('web1.example.com', 22, ed.blob), 'match', ed);
    assertVerdict(await v.verify('web1.example.com', 2222, rsa.blob), 'match', rsa);
    assertVerdict(await v.verify('web1.example.com', 2222, ed.blob), 'mismatch', ed);
    assert.deepEqual(v.knownKeyTypes('web1.example.com', 22), ['ssh-ed25519']);
  });

  void test('@cert-authority lines and malformed lines are warnings naming file:line, and are skipped', async () => {
    const { v, readFile, ownFile } = await setup(
      'strict',
      [`@cert-authority *.example.com ${ed.pub}`, 'web1 ssh-ed25519', `web1 ${ec.pub}`],
      [`db ssh-rsa ${ed.pub.split(' ')[1] ?? ''}`],
    );
    assert.equal(v.warnings.length, 3, v.warnings.join('\n'));
    assert.match(v.warnings[0] ?? '', new RegExp(`^${readFile}:1: @cert-authority`));
    assert.match(v.warnings[1] ?? '', new RegExp(`^${readFile}:2: .*without key data`));
    assert.match(v.warnings[2] ?? '', new RegExp(`^${ownFile}:1: .*does not match`));
    assertVerdict(await v.verify('a.example.com', 22, ed.blob), 'unknown', ed);
    assertVerdict(await v.verify('web1', 22, ec.blob), 'match', ec);
    assertVerdict(await v.verify('db', 22, ed.blob), 'unknown', ed);
  });
});

void describe('HostKeyVerifier: accept-new', () => {
  void test('records an unknown host once, then matches; a fresh load matches too', async () => {
    const { v, ownFile, readFile } = await setup('accept-new', [`other ${ed.pub}`]);
    const before = await fs.readFile(readFile, 'utf8');
    const first = await v.verify('New.Example.com', 22, ed2.blob);
    assertVerdict(first, 'accepted-new', ed2, ['new.example.com', ownFile]);
    assertVerdict(await v.verify('new.example.com', 22, ed2.blob), 'match', ed2, [`${ownFile}:1`]);
    assertVerdict(await v.verify('new.example.com', 2222, ec.blob), 'accepted-new', ec);
    assert.equal(await fs.readFile(ownFile, 'utf8'), `new.example.com ${ed2.pub}\n[new.example.com]:2222 ${ec.pub}\n`);
    assert.equal(await fs.readFile(readFile, 'utf8'), before, 'read-only files are never written');
    assert.equal((await fs.stat(ownFile)).mode & 0o777, 0o600);

    const fresh = await HostKeyVerifier.load({ policy: 'strict', readFiles: [], ownFile });
    assertVerdict(await fresh.verify('new.example.com', 22, ed2.blob), 'match', ed2);
    assertVerdict(await fresh.verify('new.example.com', 2222, ec.blob), 'match', ec, [`${ownFile}:2`]);

    // OpenSSH reads the line as well.
    const { stdout } = await run('ssh-keygen', ['-F', '[new.example.com]:2222', '-f', ownFile]);
    assert.match(stdout, /found: line 2/);
  });

  void test('concurrent verifies of the same new key write one line; all accept', async () => {
    const { v, ownFile } = await setup('accept-new', []);
    const verdicts = await Promise.all(Array.from({ length: 25 }, () => v.verify('10.9.8.7', 2200, ec.blob)));
    assert.deepEqual(
      verdicts.map((x) => x.outcome).sort(),
      ['accepted-new', ...Array<string>(24).fill('match')],
    );
    assert.equal(await fs.readFile(ownFile, 'utf8'), `[10.9.8.7]:2200 ${ec.pub}\n`);
    const fresh = await HostKeyVerifier.load({ policy: 'strict', readFiles: [], ownFile });
    assertVerdict(await fresh.verify('10.9.8.7', 2200, ec.blob), 'match', ec);
  });

  void test('concurrent verifies of different keys for one new host: the first is recorded, the rest mismatch', async () => {
    const { v, ownFile } = await setup('accept-new', []);
    const keys = [ed, ed2, ec, rsa];
    const verdicts = await Promise.all(keys.map((k) => v.verify('race', 22, k.blob)));
    assert.deepEqual(
      verdicts.map((x) => x.outcome),
      ['accepted-new', 'mismatch', 'mismatch', 'mismatch'],
    );
    assert.equal(await fs.readFile(ownFile, 'utf8'), `race ${ed.pub}\n`);
  });

  void test('concurrent verifies of many new hosts each write their own line', async () => {
    const { v, ownFile } = await setup('accept-new', []);
    const hosts = Array.from({ length: 20 }, (_, i) => `h${i}`);
    const verdicts = await Promise.all(hosts.flatMap((h) => [v.verify(h, 22, ed.blob), v.verify(h, 22, ed.blob)]));
    assert.equal(verdicts.filter((x) => x.outcome === 'accepted-new').length, 20);
    const lines = (await fs.readFile(ownFile, 'utf8')).trimEnd().split('\n');
    assert.deepEqual([...lines].sort(), hosts.map((h) => `${h} ${ed.pub}`).sort());
  });

  void test('a mismatch is never recorded and leaves the file untouched', async () => {
    const { v, ownFile } = await setup('accept-new', [], [`web1 ${ed.pub}`]);
    const before = await fs.readFile(ownFile, 'utf8');
    assertVerdict(await v.verify('web1', 22, ed2.blob), 'mismatch', ed2, [`${ownFile}:1`]);
    assertVerdict(await v.verify('web1', 22, ec.blob), 'mismatch', ec);
    assert.equal(await fs.readFile(ownFile, 'utf8'), before);
  });

  void test('a revoked key is refused and not recorded', async () => {
    const { v, ownFile } = await setup('accept-new', [`@revoked * ${ed2.pub}`]);
    assertVerdict(await v.verify('brand-new', 22, ed2.blob), 'revoked', ed2);
    await assert.rejects(fs.stat(ownFile), { code: 'ENOENT' });
  });

  void test('appends after a last line with no newline, and names the right line', async () => {
    const d = await scratch();
    const ownFile = path.join(d, 'own');
    await fs.writeFile(ownFile, `# mine\n\nweb1 ${ed.pub}`);
    const v = await HostKeyVerifier.load({ policy: 'accept-new', readFiles: [], ownFile });
    assertVerdict(await v.verify('web2', 22, ec.blob), 'accepted-new', ec);
    assert.equal(await fs.readFile(ownFile, 'utf8'), `# mine\n\nweb1 ${ed.pub}\nweb2 ${ec.pub}\n`);
    assertVerdict(await v.verify('web2', 22, ed.blob), 'mismatch', ed, [`${ownFile}:4`]);
  });

  void test('a host recorded meanwhile by another process is not written twice', async () => {
    const { v, ownFile } = await setup('accept-new', []);
    await fs.mkdir(path.dirname(ownFile));
    await writeLines(ownFile, [`web1 ${ed.pub}`]);
    assertVerdict(await v.verify('web1', 22, ed.blob), 'match', ed, [`${ownFile}:1`]);
    assertVerdict(await v.verify('web1', 22, ec.blob), 'mismatch', ec);
    assert.equal(await fs.readFile(ownFile, 'utf8'), `web1 ${ed.pub}\n`);
  });

  void test('a key that cannot be saved is trusted for this run only, and says so', async () => {
    const d = await scratch();
    const ownFile = path.join(d, 'blocker', 'known_hosts');
    const v = await HostKeyVerifier.load({ policy: 'accept-new', readFiles: [], ownFile });
    await fs.writeFile(path.join(d, 'blocker'), 'not a directory');
    const verdict = await v.verify('web1', 22, ed.blob);
    assertVerdict(verdict, 'accepted-new', ed, ['not saved', ownFile]);
    assertVerdict(await v.verify('web1', 22, ed.blob), 'match', ed);
  });

  void test('a host name that cannot be written as a plain pattern is not recorded', async () => {
    const { v, ownFile } = await setup('accept-new', []);
    assertVerdict(await v.verify('evil host,*', 22, ed.blob), 'unknown', ed);
    await assert.rejects(fs.stat(ownFile), { code: 'ENOENT' });
  });

  void test('fromLines: accepted keys live in memory only', async () => {
    const v = HostKeyVerifier.fromLines([`web1 ${ed.pub}`], 'accept-new');
    assert.equal(v.ownFile, null);
    assertVerdict(await v.verify('web2', 22, ec.blob), 'accepted-new', ec, ['this run only']);
    assertVerdict(await v.verify('web2', 22, ec.blob), 'match', ec);
    assertVerdict(await v.verify('web1', 22, ed2.blob), 'mismatch', ed2, ['(inline):1']);
  });
});

void describe('HostKeyVerifier: off', () => {
  void test('every key is unchecked: known, unknown, mismatched or revoked', async () => {
    const { v, ownFile } = await setup('off', [`web1 ${ed.pub}`, `@revoked * ${ec.pub}`]);
    for (const [host, key] of [
      ['web1', ed],
      ['web1', ed2],
      ['web2', rsa],
      ['web3', ec],
    ] as const) {
      assertVerdict(await v.verify(host, 22, key.blob), 'unchecked', key, [host]);
    }
    await assert.rejects(fs.stat(ownFile), { code: 'ENOENT' });
  });
});

void describe('HostKeyVerifier: knownKeyTypes', () => {
  void test('ssh2 algorithm names of the known keys, in ssh2 preference order; rsa gives all three', async () => {
    const { v } = await setup('strict', [`web1 ${rsa.pub}`, `web1,web2 ${ed.pub}`, `web2 ${ec.pub}`, `@revoked web3 ${ed.pub}`, `web4 ${rsa.pub}`]);
    assert.deepEqual(v.knownKeyTypes('web1', 22), ['ssh-ed25519', 'rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa']);
    assert.deepEqual(v.knownKeyTypes('web2', 22), ['ssh-ed25519', 'ecdsa-sha2-nistp256']);
    assert.deepEqual(v.knownKeyTypes('web4', 22), ['rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa']);
    assert.deepEqual(v.knownKeyTypes('web3', 22), []);
    assert.deepEqual(v.knownKeyTypes('web1', 2222), []);

    const require = createRequire(import.meta.url);
    const constants = require('ssh2/lib/protocol/constants.js') as { SUPPORTED_SERVER_HOST_KEY: string[] };
    for (const name of [...v.knownKeyTypes('web1', 22), ...v.knownKeyTypes('web2', 22)]) {
      assert.ok(constants.SUPPORTED_SERVER_HOST_KEY.includes(name), `${name} is an ssh2 serverHostKey name`);
    }
  });

  void test('a type ssh2 cannot use is left out', () => {
    const sk = Buffer.concat([lenPrefixed('sk-ssh-ed25519@openssh.com'), lenPrefixed(Buffer.alloc(32)), lenPrefixed('ssh:')]);
    const v = HostKeyVerifier.fromLines([`web1 sk-ssh-ed25519@openssh.com ${sk.toString('base64')}`], 'strict');
    assert.deepEqual(v.warnings, []);
    assert.deepEqual(v.knownKeyTypes('web1', 22), []);
  });

  void test('preferredAlgorithms puts the known types first, then the rest of the defaults, and is null when nothing is known', async () => {
    const { v } = await setup('strict', [`web4 ${rsa.pub}`]);
    assert.deepEqual(v.preferredAlgorithms('web4', 22), [
      'rsa-sha2-512',
      'rsa-sha2-256',
      'ssh-rsa',
      'ssh-ed25519',
      'ecdsa-sha2-nistp256',
      'ecdsa-sha2-nistp384',
      'ecdsa-sha2-nistp521',
    ]);
    assert.equal(v.preferredAlgorithms('nowhere', 22), null);
  });

  void test('accept-new adds the recorded type', async () => {
    const { v } = await setup('accept-new', []);
    assert.deepEqual(v.knownKeyTypes('web1', 22), []);
    await v.verify('web1', 22, ec.blob);
    assert.deepEqual(v.knownKeyTypes('web1', 22), ['ecdsa-sha2-nistp256']);
  });
});

void describe('HostKeyVerifier.load: files', () => {
  void test('missing files are fine', async () => {
    const d = await scratch();
    const v = await HostKeyVerifier.load({ policy: 'strict', readFiles: [path.join(d, 'nope'), path.join(d, 'no', 'such')], ownFile: path.join(d, 'x', 'y') });
    assert.deepEqual(v.warnings, []);
    assert.equal(v.policy, 'strict');
    assertVerdict(await v.verify('web1', 22, ed.blob), 'unknown', ed);
  });

  void test('a read file that is a directory is a HostKeyFileError naming it', async () => {
    const d = await scratch();
    const bad = path.join(d, 'known_hosts.d');
    await fs.mkdir(bad);
    await assert.rejects(HostKeyVerifier.load({ policy: 'strict', readFiles: [bad], ownFile: path.join(d, 'own') }), (err: unknown) => {
      assert.ok(err instanceof HostKeyFileError);
      assert.equal(err.path, bad);
      assert.equal(err.code, 'EISDIR');
      assert.ok(err.message.includes(bad), err.message);
      assert.match(err.message, /directory/);
      assert.ok(!err.message.includes('\n'));
      return true;
    });
  });

  void test('an own file that is a directory is a HostKeyFileError too', async () => {
    const d = await scratch();
    await assert.rejects(HostKeyVerifier.load({ policy: 'accept-new', readFiles: [], ownFile: d }), (err: unknown) => err instanceof HostKeyFileError && err.path === d);
  });
});

function lenPrefixed(data: string | Buffer): Buffer {
  const b = typeof data === 'string' ? Buffer.from(data) : data;
  const len = Buffer.alloc(4);
  len.writeUInt32BE(b.length);
  return Buffer.concat([len, b]);
}
