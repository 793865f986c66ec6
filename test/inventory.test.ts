import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { HostListError, MAX_HOSTS } from '../src/service/host-list.ts';
import { MAX_INVENTORY_BYTES, readInventory } from '../src/cli/inventory.ts';
import { UsageError } from '../src/cli/usage-error.ts';

const DEFAULTS = { user: 'ops', port: 22 };

let dir = '';
let counter = 0;

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'leash-inventory-'));
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Writes `content` to a fresh file in the temp dir and returns its path. */
async function file(content: string | Buffer): Promise<string> {
  const p = path.join(dir, `inventory-${++counter}.txt`);
  await writeFile(p, content);
  return p;
}

/** Asserts a one-line usage error (bad file: UsageError; bad entry: HostListError) containing every one of `parts`. */
async function rejects(p: string, ...parts: Array<string | RegExp>): Promise<void> {
  await assert.rejects(readInventory(p, DEFAULTS), (err: unknown) => {
    assert.ok(err instanceof UsageError || err instanceof HostListError, `expected a usage error, got ${String(err)}`);
    assert.ok(!err.message.includes('\n'), `one line: ${err.message}`);
    for (const part of parts) {
      if (typeof part === 'string') assert.ok(err.message.includes(part), `"${part}" in: ${err.message}`);
      else assert.match(err.message, part);
    }
    return true;
  });
}

void describe('readInventory', () => {
  void test('one host per line, every entry form', async () => {
    const p = await file('web1\nroot@db.example.com\ncache:2222\nadmin@10.0.0.1:8022\nu@[::1]:2200\n');
    assert.deepEqual(await readInventory(p, DEFAULTS), [
      { host: 'web1', port: 22, user: 'ops' },
      { host: 'db.example.com', port: 22, user: 'root' },
      { host: 'cache', port: 2222, user: 'ops' },
      { host: '10.0.0.1', port: 8022, user: 'admin' },
      { host: '::1', port: 2200, user: 'u' },
    ]);
  });

  void test('several entries per line, ranges with commas inside brackets', async () => {
    const p = await file('a, b,c\nnode[1-2,5]\n10.0.0.[1-2],x\n');
    assert.deepEqual(
      (await readInventory(p, DEFAULTS)).map((h) => h.host),
      ['a', 'b', 'c', 'node1', 'node2', 'node5', '10.0.0.1', '10.0.0.2', 'x'],
    );
  });

  void test('comments (full line and trailing), blank and whitespace-only lines', async () => {
    const p = await file('# the fleet\n\n   \nweb1 # primary\n\t# indented comment\nweb2#no space\n  web3  \n#web4\n');
    assert.deepEqual(
      (await readInventory(p, DEFAULTS)).map((h) => h.host),
      ['web1', 'web2', 'web3'],
    );
  });

  void test('CRLF line endings, a UTF-8 BOM, no final newline', async () => {
    const p = await file('\uFEFFweb1\r\nweb2\r\nweb3');
    assert.deepEqual(
      (await readInventory(p, DEFAULTS)).map((h) => h.host),
      ['web1', 'web2', 'web3'],
    );
  });

  void test('defaults apply to entries without user or port', async () => {
    const p = await file('web1\nroot@web2:2\n');
    assert.deepEqual(await readInventory(p, { user: 'deploy', port: 2200 }), [
      { host: 'web1', port: 2200, user: 'deploy' },
      { host: 'web2', port: 2, user: 'root' },
    ]);
  });

  void test('duplicates across lines are removed, keeping the first', async () => {
    const p = await file('b\na\nops@b:22\nweb[1-3]\nweb2,a:2222\n');
    assert.deepEqual(await readInventory(p, DEFAULTS), [
      { host: 'b', port: 22, user: 'ops' },
      { host: 'a', port: 22, user: 'ops' },
      { host: 'web1', port: 22, user: 'ops' },
      { host: 'web2', port: 22, user: 'ops' },
      { host: 'web3', port: 22, user: 'ops' },
      { host: 'a', port: 2222, user: 'ops' },
    ]);
  });

  void test('an empty or comment-only file gives no hosts', async () => {
    assert.deepEqual(await readInventory(await file(''), DEFAULTS), []);
    assert.deepEqual(await readInventory(await file('# nothing yet\n\n'), DEFAULTS), []);
  });

  void test('a symlink to an inventory is followed', async () => {
    const target = await file('web1\n');
    const link = path.join(dir, 'link.txt');
    await symlink(target, link);
    assert.deepEqual(await readInventory(link, DEFAULTS), [{ host: 'web1', port: 22, user: 'ops' }]);
  });

  void test('a missing file names the path and says "no such file"', async () => {
    const p = path.join(dir, 'does-not-exist.txt');
    await rejects(p, `cannot read inventory ${JSON.stringify(p)}: no such file`);
  });

  void test('a path through a regular file', async () => {
    const p = path.join(await file('x'), 'sub');
    await rejects(p, JSON.stringify(p), 'not a directory');
  });

  void test('a directory', async () => {
    const p = path.join(dir, 'a-directory');
    await mkdir(p);
    await rejects(p, JSON.stringify(p), /: is a directory$/);
  });

  void test('a file that is not UTF-8 text', async () => {
    const p = await file(Buffer.from([0x77, 0x65, 0x62, 0xff, 0xfe, 0x0a]));
    await rejects(p, JSON.stringify(p), /: not UTF-8 text$/);
  });

  void test('a file over the size cap', async () => {
    const p = await file(Buffer.alloc(MAX_INVENTORY_BYTES + 1, '#'));
    await rejects(p, JSON.stringify(p), /: larger than 16 MiB$/);
  });

  void test('a file exactly at the size cap is read', async () => {
    const p = await file(Buffer.alloc(MAX_INVENTORY_BYTES, '#'));
    assert.deepEqual(await readInventory(p, DEFAULTS), []);
  });

  void test('a bad entry names path:line and the entry', async () => {
    const p = await file('# header\nweb1\n\nweb2, bad host ,web3\n');
    await rejects(p, `bad host entry "bad host" in ${p}:4: `, /contains " "/);
  });

  void test('line numbers count comment, blank and CRLF lines', async () => {
    const p = await file('#1\r\n\r\nok\r\nweb[5-1]\r\n');
    await rejects(p, `bad host entry "web[5-1]" in ${p}:4: range "5-1" runs backwards`);
  });

  void test('every LIST rejection applies: empty entries, ports, IPv6, ranges', async () => {
    await rejects(await file('a,,b\n'), /^bad host list "a,,b" in .+:1: empty entry/);
    await rejects(await file('ok\nh:70000\n'), ':2: ', 'bad port "70000"');
    await rejects(await file('::1\n'), ':1: ', 'in brackets');
    await rejects(await file('web[1-\n'), ':1: ', 'without a matching');
    await rejects(await file('@h\n'), ':1: ', 'empty user');
  });

  void test('a trailing comment does not hide an empty entry', async () => {
    await rejects(await file('a, # b\n'), /^bad host list "a," in .+:1: empty entry/);
  });

  void test('the host cap holds across lines', async () => {
    const half = MAX_HOSTS / 2;
    const p = await file(`a[1-${half}]\nb[1-${half}]\nc1\n`);
    await rejects(p, `bad host entry "c1" in ${p}:3: takes the total past ${MAX_HOSTS} hosts`);
  });

  void test('the host cap counts repeated lines, so the work stays bounded', async () => {
    const p = await file(`a[1-60000]\n`.repeat(200));
    await rejects(p, `in ${p}:2: takes the total past ${MAX_HOSTS} hosts`);
  });

  void test('a single line over the cap', async () => {
    const p = await file(`h[1-${MAX_HOSTS + 1}]\n`);
    await rejects(p, `in ${p}:1: expands to more than ${MAX_HOSTS} hosts`);
  });
});
