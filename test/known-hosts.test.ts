import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import {
  findHostKeys,
  fingerprintSha256,
  formatKnownHostsLine,
  hashHostName,
  keyBlobType,
  lookupName,
  parseKnownHosts,
  parseKnownHostsLine,
  patternsMatch,
  wildcardMatch,
  type KnownHostEntry,
} from '../src/ssh/known-hosts.ts';

import { generateKeyPair } from '../src/ssh/ephemeral-keys.ts';
const run = promisify(execFile);

interface TestKey {
  /** `ssh-ed25519 AAAA...` */
  readonly pub: string;
  readonly type: string;
  readonly blob: Buffer;
  readonly b64: string;
}

function makeKey(kind: 'ed25519' | 'ecdsa' | 'rsa'): TestKey {
  const { publicKey, publicBlob: blob, publicLine } = generateKeyPair(kind);
  return { pub: publicLine, type: publicKey.type, blob, b64: blob.toString('base64') };
}

const ed = makeKey('ed25519');
const ec = makeKey('ecdsa');
const rsa = makeKey('rsa');

let dir = '';
before(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'leash-known-hosts-'));
});
after(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

/** Entries of `text` (as file `kh`), asserting it parsed without warnings. */
function entriesOf(text: string): KnownHostEntry[] {
  const parsed = parseKnownHosts(text, 'kh');
  assert.deepEqual(parsed.warnings, []);
  return parsed.entries;
}

/** Line numbers of the plain keys in `text` that apply to host:port. */
function lines(text: string, host: string, port = 22): number[] {
  return findHostKeys(entriesOf(text), host, port).known.map((e) => e.line);
}

void describe('fingerprintSha256', () => {
  for (const key of [ed, ec, rsa]) {
    void test(`${key.type}: equals ssh-keygen -lf`, async () => {
      const file = path.join(dir, `fp-${key.type}.pub`);
      await fs.writeFile(file, `${key.pub} comment\n`);
      const { stdout } = await run('ssh-keygen', ['-E', 'sha256', '-lf', file]);
      const expected = stdout.trim().split(/\s+/)[1];
      assert.match(expected ?? '', /^SHA256:[A-Za-z0-9+/]+$/);
      assert.equal(fingerprintSha256(key.blob), expected);
      assert.ok(!fingerprintSha256(key.blob).endsWith('='));
    });
  }
});

void describe('parsing', () => {
  void test('a plain line: patterns, type, key, comment', () => {
    const [e] = entriesOf(`Web1.Example.com,10.0.0.1 ${ed.pub} my host key\n`);
    assert.ok(e);
    assert.equal(e.marker, null);
    assert.equal(e.keyType, 'ssh-ed25519');
    assert.ok(e.key.equals(ed.blob));
    assert.equal(e.comment, 'my host key');
    assert.equal(e.line, 1);
    assert.deepEqual(e.patterns, [
      { kind: 'pattern', pattern: 'web1.example.com', negated: false },
      { kind: 'pattern', pattern: '10.0.0.1', negated: false },
    ]);
  });

  void test('blank lines, comments, CRLF, tabs and a BOM are fine; line numbers count every line', () => {
    const text = `\uFEFF# comment\n\n   \n  # indented comment\nhost1\t${ed.pub}\r\nhost2 ${ec.pub}`;
    const entries = entriesOf(text);
    assert.deepEqual(
      entries.map((e) => [e.line, e.keyType]),
      [
        [5, 'ssh-ed25519'],
        [6, 'ecdsa-sha2-nistp256'],
      ],
    );
    assert.equal(entries[0]?.comment, '');
  });

  void test('keyBlobType reads the embedded type', () => {
    assert.equal(keyBlobType(ed.blob), 'ssh-ed25519');
    assert.equal(keyBlobType(ec.blob), 'ecdsa-sha2-nistp256');
    assert.equal(keyBlobType(rsa.blob), 'ssh-rsa');
    assert.equal(keyBlobType(Buffer.from([0, 0, 0, 9, 1])), null);
    assert.equal(keyBlobType(Buffer.alloc(0)), null);
  });
});

void describe('host patterns', () => {
  void test('plain names match exactly and case-insensitively, on port 22 only', () => {
    const text = `Web1.Example.COM ${ed.pub}\n`;
    assert.deepEqual(lines(text, 'web1.example.com'), [1]);
    assert.deepEqual(lines(text, 'WEB1.example.com'), [1]);
    assert.deepEqual(lines(text, 'web1.example.co'), []);
    assert.deepEqual(lines(text, 'xweb1.example.com'), []);
    assert.deepEqual(lines(text, 'web1.example.com', 2222), []);
  });

  void test('wildcards * and ?', () => {
    const text = `*.example.com ${ed.pub}\nweb? ${ed.pub}\n`;
    assert.deepEqual(lines(text, 'a.example.com'), [1]);
    assert.deepEqual(lines(text, 'a.b.EXAMPLE.com'), [1]);
    assert.deepEqual(lines(text, 'example.com'), []);
    assert.deepEqual(lines(text, 'web1'), [2]);
    assert.deepEqual(lines(text, 'web'), []);
    assert.deepEqual(lines(text, 'web10'), []);
    // `*` alone matches every lookup name, bracketed ones included, as in OpenSSH.
    assert.deepEqual(lines(`* ${ed.pub}\n`, 'anything', 2222), [1]);
    assert.deepEqual(lines(`[*.example.com]:2222 ${ed.pub}\n`, 'db.example.com', 2222), [1]);
    assert.deepEqual(lines(`[*.example.com]:2222 ${ed.pub}\n`, 'db.example.com', 2223), []);
  });

  // A backtracking matcher would take exponential time on the last pattern: the test would
  // hang until the runner's timeout rather than fail a timing assertion.
  void test('wildcard matching is literal apart from * and ?, and linear on hostile patterns', () => {
    assert.ok(wildcardMatch('[h]:2?', '[h]:22'));
    assert.ok(!wildcardMatch('[h]:2?', 'h:22'));
    assert.ok(wildcardMatch('a*b*c', 'aXXbYYc'));
    assert.ok(!wildcardMatch('a*b*c', 'aXXbYY'));
    assert.ok(wildcardMatch('**', ''));
    assert.ok(!wildcardMatch('*a*a*a*a*a*a*a*a*a*b', 'a'.repeat(5000)));
  });

  void test('a comma list matches any of its names', () => {
    const text = `alpha,beta,[gamma]:2200 ${ed.pub}\n`;
    assert.deepEqual(lines(text, 'alpha'), [1]);
    assert.deepEqual(lines(text, 'beta'), [1]);
    assert.deepEqual(lines(text, 'gamma', 2200), [1]);
    assert.deepEqual(lines(text, 'gamma'), []);
    assert.deepEqual(lines(text, 'delta'), []);
  });

  void test('negation: a matching !pattern excludes the host whatever its position', () => {
    const text = `*.example.com,!bad.example.com ${ed.pub}\n!Bad2.example.com,*.example.com ${ec.pub}\n`;
    assert.deepEqual(lines(text, 'good.example.com'), [1, 2]);
    assert.deepEqual(lines(text, 'bad.example.com'), [2]);
    assert.deepEqual(lines(text, 'bad2.example.com'), [1]);
    // Only negated patterns: never a match.
    assert.deepEqual(lines(`!bad ${ed.pub}\n`, 'good'), []);
  });

  void test('[host]:port applies to that port only; port 22 is looked up as the bare name', () => {
    const text = `[10.1.2.3]:2222 ${ed.pub}\n[10.1.2.3]:22 ${ec.pub}\n`;
    assert.deepEqual(lines(text, '10.1.2.3', 2222), [1]);
    assert.deepEqual(lines(text, '10.1.2.3', 2223), []);
    assert.deepEqual(lines(text, '10.1.2.3', 22), []);
    assert.equal(lookupName('Host', 22), 'host');
    assert.equal(lookupName('Host', 2222), '[host]:2222');
    assert.equal(lookupName('::1', 2222), '[::1]:2222');
    assert.equal(lookupName('[::1]', 2222), '[::1]:2222');
  });

  void test('hashed names written by ssh-keygen -H match, for port 22 and [host]:port', async () => {
    const file = path.join(dir, 'hashed_known_hosts');
    await fs.writeFile(
      file,
      [`Web1.Example.com,[web1.example.com]:2222 ${ed.pub} c1`, `db.example.com ${rsa.pub}`, `[10.0.0.7]:2200 ${ec.pub}`, ''].join('\n'),
    );
    await run('ssh-keygen', ['-H', '-f', file]);
    const parsed = parseKnownHosts(await fs.readFile(file, 'utf8'), file);
    assert.deepEqual(parsed.warnings, []);
    assert.equal(parsed.entries.length, 4, 'ssh-keygen -H writes one line per name');
    for (const e of parsed.entries) {
      assert.deepEqual(
        e.patterns.map((p) => p.kind),
        ['hashed'],
      );
    }
    const hit = (host: string, port: number): string[] => findHostKeys(parsed.entries, host, port).known.map((e) => e.keyType);
    assert.deepEqual(hit('web1.example.com', 22), ['ssh-ed25519']);
    assert.deepEqual(hit('WEB1.example.com', 22), ['ssh-ed25519']);
    assert.deepEqual(hit('web1.example.com', 2222), ['ssh-ed25519']);
    assert.deepEqual(hit('db.example.com', 22), ['ssh-rsa']);
    assert.deepEqual(hit('10.0.0.7', 2200), ['ecdsa-sha2-nistp256']);
    assert.deepEqual(hit('10.0.0.7', 22), []);
    assert.deepEqual(hit('web2.example.com', 22), []);
  });

  void test('hashHostName writes lines ssh-keygen -F finds', async () => {
    const file = path.join(dir, 'our_hashed');
    await fs.writeFile(file, `${hashHostName('[web9.example.com]:2022')} ${ed.pub}\n`);
    const { stdout } = await run('ssh-keygen', ['-F', '[web9.example.com]:2022', '-f', file]);
    assert.match(stdout, /found: line 1/);
    const entries = entriesOf(await fs.readFile(file, 'utf8'));
    assert.ok(patternsMatch(entries[0]?.patterns ?? [], '[web9.example.com]:2022'));
    assert.ok(!patternsMatch(entries[0]?.patterns ?? [], 'web9.example.com'));
  });
});

void describe('markers', () => {
  void test('@revoked lines are found as revoked, not as known keys', () => {
    const entries = entriesOf(`@revoked * ${ed.pub}\n@revoked a.example.com ${ec.pub}\nb.example.com ${rsa.pub}\n`);
    const a = findHostKeys(entries, 'a.example.com', 22);
    assert.deepEqual(
      a.revoked.map((e) => e.line),
      [1, 2],
    );
    assert.deepEqual(a.known, []);
    const b = findHostKeys(entries, 'b.example.com', 2222);
    assert.deepEqual(
      b.revoked.map((e) => e.line),
      [1],
    );
    assert.deepEqual(b.known, []);
    assert.equal(entries[0]?.marker, 'revoked');
  });

  void test('@cert-authority lines are parsed, reported as unsupported, and never match', () => {
    const parsed = parseKnownHosts(`# CA\n@cert-authority *.example.com ${ed.pub} ca\n`, '/etc/kh');
    assert.equal(parsed.entries.length, 1);
    assert.equal(parsed.entries[0]?.marker, 'cert-authority');
    assert.equal(parsed.warnings.length, 1);
    assert.match(parsed.warnings[0] ?? '', /^\/etc\/kh:2: @cert-authority .*not supported/);
    const m = findHostKeys(parsed.entries, 'a.example.com', 22);
    assert.deepEqual([m.known, m.revoked], [[], []]);
  });
});

void describe('malformed lines', () => {
  const blob = (parts: Buffer[]): string =>
    Buffer.concat(
      parts.flatMap((p) => {
        const len = Buffer.alloc(4);
        len.writeUInt32BE(p.length);
        return [len, p];
      }),
    ).toString('base64');
  const cases: [string, string, RegExp][] = [
    ['unknown marker', `@trusted host ${ed.pub}`, /unknown marker "@trusted"/],
    ['marker alone', '@revoked', /marker without host patterns/],
    ['host alone', 'host', /without a key/],
    ['type without data', 'host ssh-ed25519', /without key data/],
    ['SSH1 key', 'host 2048 35 1234567', /protocol 1/],
    ['bad base64', 'host ssh-ed25519 AAAA$$$$', /not valid base64/],
    ['base64 of the wrong length', `host ssh-ed25519 ${ed.b64.slice(0, -1)}`, /not valid base64/],
    ['type differs from blob', `host ssh-rsa ${ed.b64}`, /key type "ssh-rsa" does not match the key data's type "ssh-ed25519"/],
    ['truncated blob', `host ssh-ed25519 ${ed.blob.subarray(0, ed.blob.length - 4).toString('base64')}`, /not an SSH public key blob/],
    ['short ed25519 key', `host ssh-ed25519 ${blob([Buffer.from('ssh-ed25519'), Buffer.alloc(31)])}`, /well-formed ssh-ed25519/],
    ['curve differs', `host ecdsa-sha2-nistp256 ${blob([Buffer.from('ecdsa-sha2-nistp256'), Buffer.from('nistp384'), Buffer.alloc(65)])}`, /curve/],
    ['hash type', `|2|abc|def ${ed.pub}`, /unknown hash type/],
    ['hash shape', `|1|${Buffer.alloc(20).toString('base64')} ${ed.pub}`, /\|1\|salt\|hash/],
    ['hash length', `|1|${Buffer.alloc(20).toString('base64')}|AAAA ${ed.pub}`, /20 bytes/],
    ['negated hash', `!|1|x|y ${ed.pub}`, /cannot be negated/],
    ['empty negation', `a,! ${ed.pub}`, /empty negated/],
    ['no patterns', `,, ${ed.pub}`, /no host patterns/],
  ];

  for (const [what, line, problem] of cases) {
    void test(`${what}: skipped with a file:line warning`, () => {
      const text = `good1 ${ed.pub}\n# comment\n${line}\ngood2 ${ec.pub}\n`;
      const parsed = parseKnownHosts(text, '/tmp/known');
      assert.deepEqual(
        parsed.entries.map((e) => e.line),
        [1, 4],
      );
      assert.equal(parsed.warnings.length, 1, parsed.warnings.join(' | '));
      const w = parsed.warnings[0] ?? '';
      assert.ok(w.startsWith('/tmp/known:3: '), w);
      assert.match(w, problem);
      assert.ok(!w.includes('\n'));
    });
  }

  void test('garbage never throws', () => {
    const junk = ['\u0000\u0001 \u0002', '@', '|', '| |', '!', `${'x'.repeat(10000)} ${'y'.repeat(100)} ${'z'.repeat(4)}`, 'host ssh-ed25519 ====', 'host ssh-ed25519 AAAAAAAA'];
    for (const line of junk) {
      const r = parseKnownHostsLine(line, 'f', 1);
      assert.ok(r !== null && 'warning' in r, `expected a warning for ${JSON.stringify(line.slice(0, 30))}`);
      assert.ok(r.warning.length < 300);
    }
  });
});

void describe('formatKnownHostsLine', () => {
  void test('host or [host]:port, lower-cased, with the blob type', () => {
    assert.equal(formatKnownHostsLine('Web1', 22, ed.blob), `web1 ssh-ed25519 ${ed.b64}`);
    assert.equal(formatKnownHostsLine('10.0.0.1', 2222, rsa.blob), `[10.0.0.1]:2222 ssh-rsa ${rsa.b64}`);
    assert.equal(formatKnownHostsLine('fe80::1%eth0', 2222, ec.blob), `[fe80::1%eth0]:2222 ecdsa-sha2-nistp256 ${ec.b64}`);
  });

  void test('refuses names that would not be an exact plain pattern', () => {
    for (const bad of ['a b', 'a,b', '*.x', 'h?', '!h', '|1|x', '@h', '', 'a\nb']) {
      assert.equal(formatKnownHostsLine(bad, 22, ed.blob), null, bad);
    }
    assert.equal(formatKnownHostsLine('ok', 22, Buffer.from('junk')), null);
  });

  void test('a written line parses back and matches its host', () => {
    const line = formatKnownHostsLine('Db.Example.com', 2200, ec.blob) ?? '';
    assert.deepEqual(lines(line, 'db.example.com', 2200), [1]);
  });
});
