import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { HostListError, MAX_HOSTS, expandHostPattern, parseHostList, type HostBudget, type HostSpec } from '../src/service/host-list.ts';

const DEFAULTS = { user: 'ops', port: 22 };

function hosts(list: string, source = '--hosts'): HostSpec[] {
  return parseHostList(list, DEFAULTS, source);
}

function names(list: string): string[] {
  return hosts(list).map((h) => h.host);
}

/**
 * Asserts `list` is rejected with a one-line HostListError that names `entry` (quoted, as
 * the user typed it) and the source, and whose reason matches `why`.
 */
function rejects(list: string, entry: string, why: RegExp, source = '--hosts'): void {
  assert.throws(
    () => parseHostList(list, DEFAULTS, source),
    (err: unknown) => {
      assert.ok(err instanceof HostListError, `expected a HostListError for ${list}, got ${String(err)}`);
      assert.equal(err.name, 'HostListError');
      assert.ok(err.message.includes(JSON.stringify(entry)), `names the entry ${entry}: ${err.message}`);
      assert.ok(err.message.includes(` in ${source}`), `names the source: ${err.message}`);
      assert.ok(!err.message.includes('\n'), `one line: ${err.message}`);
      assert.match(err.message, why);
      return true;
    },
  );
}

void describe('parseHostList: entries', () => {
  void test('a bare host takes the default user and port', () => {
    assert.deepEqual(hosts('web1'), [{ host: 'web1', port: 22, user: 'ops' }]);
    assert.deepEqual(parseHostList('web1', { user: 'deploy', port: 2200 }), [{ host: 'web1', port: 2200, user: 'deploy' }]);
  });

  void test('user@host, host:port and user@host:port', () => {
    assert.deepEqual(hosts('root@db.example.com,cache:2222,admin@10.1.2.3:8022'), [
      { host: 'db.example.com', port: 22, user: 'root' },
      { host: 'cache', port: 2222, user: 'ops' },
      { host: '10.1.2.3', port: 8022, user: 'admin' },
    ]);
  });

  void test('ports 1 and 65535, leading zeros', () => {
    assert.equal(hosts('h:1')[0]?.port, 1);
    assert.equal(hosts('h:65535')[0]?.port, 65535);
    assert.equal(hosts('h:022')[0]?.port, 22);
  });

  void test('host names: letters, digits, "-", ".", "_", a trailing dot, IPv4', () => {
    assert.deepEqual(names('a-b.c_d.example.com,WEB01,example.com.,192.168.0.1,0.0.0.0,x'), [
      'a-b.c_d.example.com',
      'WEB01',
      'example.com.',
      '192.168.0.1',
      '0.0.0.0',
      'x',
    ]);
  });

  void test('users with dots, dashes, underscores and digits', () => {
    assert.deepEqual(
      hosts('first.last@h,svc-deploy_2@h').map((h) => h.user),
      ['first.last', 'svc-deploy_2'],
    );
  });

  void test('whitespace around entries is ignored', () => {
    assert.deepEqual(names(' a , b ,c'), ['a', 'b', 'c']);
  });

  void test('IPv6 literals in brackets, with user and port; brackets are removed', () => {
    assert.deepEqual(hosts('[::1],root@[::1]:2222,[2001:db8::10]:22,[fe80::1%eth0],[::ffff:10.0.0.1]'), [
      { host: '::1', port: 22, user: 'ops' },
      { host: '::1', port: 2222, user: 'root' },
      { host: '2001:db8::10', port: 22, user: 'ops' },
      { host: 'fe80::1%eth0', port: 22, user: 'ops' },
      { host: '::ffff:10.0.0.1', port: 22, user: 'ops' },
    ]);
  });

  void test('duplicates are removed, keeping the first (host case-insensitive)', () => {
    assert.deepEqual(hosts('b,a,ops@b:22,B,a:2222,root@a,web[1-2],web[2-3]'), [
      { host: 'b', port: 22, user: 'ops' },
      { host: 'a', port: 22, user: 'ops' },
      { host: 'a', port: 2222, user: 'ops' },
      { host: 'a', port: 22, user: 'root' },
      { host: 'web1', port: 22, user: 'ops' },
      { host: 'web2', port: 22, user: 'ops' },
      { host: 'web3', port: 22, user: 'ops' },
    ]);
    assert.deepEqual(names('[::1],[::1]:22,node[1-3,2]'), ['::1', 'node1', 'node2', 'node3']);
  });

  void test('the source is optional', () => {
    assert.throws(() => parseHostList('a,,b', DEFAULTS), { name: 'HostListError', message: /^bad host list "a,,b": empty entry/ });
  });
});

void describe('parseHostList: ranges', () => {
  void test('zero-padded range', () => {
    const got = names('web[01-20].example.com');
    assert.equal(got.length, 20);
    assert.equal(got[0], 'web01.example.com');
    assert.equal(got[8], 'web09.example.com');
    assert.equal(got[19], 'web20.example.com');
  });

  void test('padding follows the start bound', () => {
    assert.deepEqual(names('n[8-11]'), ['n8', 'n9', 'n10', 'n11']);
    assert.deepEqual(names('n[008-010]'), ['n008', 'n009', 'n010']);
    assert.deepEqual(names('n[0-2]'), ['n0', 'n1', 'n2']);
    assert.deepEqual(names('n[098-101]'), ['n098', 'n099', 'n100', 'n101']);
  });

  void test('IPv4 ranges', () => {
    assert.deepEqual(names('10.0.0.[1-5]'), ['10.0.0.1', '10.0.0.2', '10.0.0.3', '10.0.0.4', '10.0.0.5']);
    assert.deepEqual(names('10.0.[0-1].[254-255]'), ['10.0.0.254', '10.0.0.255', '10.0.1.254', '10.0.1.255']);
  });

  void test('lists and ranges in one bracket; commas inside brackets do not split entries', () => {
    assert.deepEqual(names('node[1-3,7,10-11]'), ['node1', 'node2', 'node3', 'node7', 'node10', 'node11']);
    assert.deepEqual(names('a,node[1,3],b'), ['a', 'node1', 'node3', 'b']);
  });

  void test('single-number and one-element ranges', () => {
    assert.deepEqual(names('db[07]'), ['db07']);
    assert.deepEqual(names('db[5-5]'), ['db5']);
  });

  void test('several brackets: cartesian product, first bracket slowest', () => {
    assert.deepEqual(names('r[1-2]n[01-03]'), ['r1n01', 'r1n02', 'r1n03', 'r2n01', 'r2n02', 'r2n03']);
    assert.deepEqual(names('[1-2].x'), ['1.x', '2.x']);
  });

  void test('range in the leading position, with user and port applied to every host', () => {
    assert.deepEqual(hosts('root@[1-2]-rack.dc:2200'), [
      { host: '1-rack.dc', port: 2200, user: 'root' },
      { host: '2-rack.dc', port: 2200, user: 'root' },
    ]);
  });

  void test('exactly the host cap is allowed', () => {
    assert.equal(hosts(`h[1-${MAX_HOSTS}]`).length, MAX_HOSTS);
  });

  void test('a shared budget counts across calls', () => {
    const budget: HostBudget = { limit: 5, used: 0 };
    assert.equal(parseHostList('a[1-3]', DEFAULTS, 'f:1', budget).length, 3);
    assert.equal(budget.used, 3);
    assert.throws(() => parseHostList('b[1-3]', DEFAULTS, 'f:2', budget), {
      name: 'HostListError',
      message: 'bad host entry "b[1-3]" in f:2: takes the total past 5 hosts (the limit)',
    });
  });
});

void describe('parseHostList: rejections', () => {
  void test('empty list', () => {
    for (const list of ['', '   ']) {
      assert.throws(() => hosts(list), { name: 'HostListError', message: /^empty host list in --hosts/ });
    }
  });

  void test('empty entries', () => {
    rejects('a,,b', 'a,,b', /empty entry/);
    rejects(',a', ',a', /empty entry/);
    rejects('a,', 'a,', /empty entry/);
    rejects('a, ,b', 'a, ,b', /empty entry/);
    rejects(',', ',', /empty entry/);
  });

  void test('bad users', () => {
    rejects('@host', '@host', /empty user/);
    rejects('a b@host', 'a b@host', /bad user "a b"/);
    rejects('a\tb@host', 'a\tb@host', /bad user "a\\tb"/);
    rejects('a:b@host', 'a:b@host', /bad user "a:b"/);
    rejects('u[1]@host', 'u[1]@host', /bad user "u\[1\]"/);
    rejects('a@b@host', 'a@b@host', /more than one "@"/);
  });

  void test('missing host', () => {
    rejects('user@', 'user@', /missing host name/);
    rejects(':22', ':22', /missing host name/);
    rejects('user@:22', 'user@:22', /missing host name/);
  });

  void test('bad ports', () => {
    rejects('h:', 'h:', /missing port/);
    rejects('h:0', 'h:0', /bad port "0"/);
    rejects('h:65536', 'h:65536', /bad port "65536"/);
    rejects('h:99999999', 'h:99999999', /bad port "99999999"/);
    rejects('h:-1', 'h:-1', /bad port "-1"/);
    rejects('h:22a', 'h:22a', /bad port "22a"/);
    rejects('h:2.5', 'h:2.5', /bad port "2.5"/);
    rejects('h: 22', 'h: 22', /bad port " 22"/);
    rejects('[::1]:0', '[::1]:0', /bad port "0"/);
    rejects('[::1]:', '[::1]:', /missing port/);
    rejects('h:22:23', 'h:22:23', /more than one ":"/);
  });

  void test('bad host names', () => {
    rejects('a..b', 'a..b', /empty label/);
    rejects('.a', '.a', /empty label/);
    rejects('a b', 'a b', /contains " "/);
    rejects('web/1', 'web/1', /contains "\/"/);
    rejects('wéb', 'wéb', /contains "é"/);
    rejects('-oProxyCommand=x', '-oProxyCommand=x', /contains "="/);
    rejects('-web', '-web', /starts or ends with "-"/);
    rejects('web-.x', 'web-.x', /starts or ends with "-"/);
    rejects(`${'a'.repeat(64)}.com`, `${'a'.repeat(64)}.com`, /label longer than 63/);
    const long = Array.from({ length: 50 }, () => 'abcdef').join('.');
    assert.throws(() => hosts(long), { name: 'HostListError', message: /longer than 253 characters/ });
  });

  void test('bad IPv4 addresses', () => {
    rejects('10.0.0.256', '10.0.0.256', /"10\.0\.0\.256" is not a valid IPv4 address/);
    rejects('10.0.0', '10.0.0', /not a valid IPv4 address/);
    rejects('1234', '1234', /not a valid IPv4 address/);
    rejects('10.0.0.01', '10.0.0.01', /not a valid IPv4 address/);
    rejects('10.0.0.[250-256]', '10.0.0.[250-256]', /"10\.0\.0\.256" is not a valid IPv4 address/);
  });

  void test('IPv6 addresses must be bracketed and valid', () => {
    rejects('::1', '::1', /write an IPv6 address in brackets: \[::1\]/);
    rejects('fe80::1:22', 'fe80::1:22', /in brackets/);
    rejects('[::g]', '[::g]', /"::g" is not a valid IPv6 address/);
    rejects('[1:2]', '[1:2]', /not a valid IPv6 address/);
    rejects('[::1]x', '[::1]x', /unexpected "x" after the IPv6 address/);
    rejects('[::1]:22x', '[::1]:22x', /bad port "22x"/);
    rejects('web[1:3]', 'web[1:3]', /IPv6 address and must be the whole host/);
    rejects('[::1', '[::1', /"\[" without a matching "\]"/);
  });

  void test('malformed brackets', () => {
    rejects('web[1-3', 'web[1-3', /"\[" without a matching "\]"/);
    rejects('web1-3]', 'web1-3]', /"\]" without a matching "\["/);
    rejects('web[[1-2]]', 'web[[1-2]]', /nested brackets/);
    rejects('web[]', 'web[]', /empty range/);
  });

  void test('bad range items', () => {
    rejects('web[1,]', 'web[1,]', /empty item in "\[1,\]"/);
    rejects('web[,1]', 'web[,1]', /empty item/);
    rejects('web[a-c]', 'web[a-c]', /bad range "a-c"/);
    rejects('web[1-]', 'web[1-]', /bad range "1-"/);
    rejects('web[-3]', 'web[-3]', /bad range "-3"/);
    rejects('web[1-2-3]', 'web[1-2-3]', /bad range "1-2-3"/);
    rejects('web[1 - 3]', 'web[1 - 3]', /bad range "1 - 3"/);
    rejects('web[1.5]', 'web[1.5]', /bad range "1\.5"/);
    rejects('web[1-10/2]', 'web[1-10/2]', /bad range "1-10\/2"/);
  });

  void test('ranges that run backwards', () => {
    rejects('web[5-1]', 'web[5-1]', /range "5-1" runs backwards/);
    rejects('web[1-3,9-7]', 'web[1-3,9-7]', /range "9-7" runs backwards/);
  });

  void test('range bounds beyond safe integers', () => {
    rejects('web[1-99999999999999999999]', 'web[1-99999999999999999999]', /range bound too large/);
  });

  void test('expansion cap: a clear error instead of allocating millions', () => {
    rejects(`h[1-${MAX_HOSTS + 1}]`, `h[1-${MAX_HOSTS + 1}]`, /expands to more than 100000 hosts/);
    rejects('h[1-1000000000000]', 'h[1-1000000000000]', /expands to more than 100000 hosts/);
    rejects('a[1-1000]b[1-1000]', 'a[1-1000]b[1-1000]', /expands to more than 100000 hosts/);
    rejects('a[1-9000000000000000]b[1-9000000000000000]c[1-9000000000000000]', 'a[1-9000000000000000]b[1-9000000000000000]c[1-9000000000000000]', /expands to more than/);
    rejects(`a[1-60000],b[1-60000]`, 'b[1-60000]', /takes the total past 100000 hosts/);
  });

  void test('the first bad entry of a list is named', () => {
    rejects('good1,bad host,good2', 'bad host', /contains " "/);
  });

  void test('long entries are shortened in the message, which stays one line', () => {
    const entry = `${'a'.repeat(500)} b`;
    assert.throws(() => hosts(entry), (err: unknown) => {
      assert.ok(err instanceof HostListError);
      assert.ok(err.message.length < 400, err.message);
      assert.match(err.message, /^bad host entry "a+…a+ b" in --hosts/);
      return true;
    });
    rejects('a\nb', 'a\nb', /contains "\\n"/);
  });
});

void describe('expandHostPattern', () => {
  void test('no brackets: the name itself', () => {
    assert.deepEqual(expandHostPattern('web1.example.com'), ['web1.example.com']);
  });

  void test('ranges, lists, padding, several brackets', () => {
    assert.deepEqual(expandHostPattern('web[01-03]'), ['web01', 'web02', 'web03']);
    assert.deepEqual(expandHostPattern('node[1-2,7]'), ['node1', 'node2', 'node7']);
    assert.deepEqual(expandHostPattern('r[1-2]n[1-2]'), ['r1n1', 'r1n2', 'r2n1', 'r2n2']);
    assert.deepEqual(expandHostPattern('[9-10]x'), ['9x', '10x']);
  });

  void test('rejections are HostListErrors naming the pattern', () => {
    const cases: Array<[string, RegExp]> = [
      ['', /empty host name/],
      ['web[1-', /without a matching/],
      ['web]', /without a matching/],
      ['web[3-1]', /runs backwards/],
      ['web[x]', /bad range "x"/],
      ['[::1]', /IPv6 address/],
      [`h[0-${MAX_HOSTS}]`, /more than 100000 hosts/],
    ];
    for (const [pattern, why] of cases) {
      assert.throws(
        () => expandHostPattern(pattern),
        (err: unknown) => {
          assert.ok(err instanceof HostListError);
          assert.ok(err.message.startsWith(`bad host pattern ${JSON.stringify(pattern)}: `), err.message);
          assert.match(err.message, why);
          return true;
        },
      );
    }
  });
});
