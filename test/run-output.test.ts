import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { afterEach, beforeEach, describe, test } from 'node:test';
import { foldHosts } from '../src/cli/host-fold.ts';
import { expandHostPattern } from '../src/service/host-list.ts';
import { RunOutput, groupReports, toJsonLine } from '../src/cli/run-output.ts';
import type { TaskReport } from '../src/lifecycle/task-report.ts';

/** The `--json` fields of DESIGN.md "Contracts", in order. */
const CONTRACT_FIELDS = ['host', 'port', 'user', 'status', 'exitCode', 'signal', 'stdout', 'stderr', 'truncated', 'durationMs', 'stages', 'error'];

const CLEAR_LINE = '\r\x1b[2K';
const ESC = '\x1b';

/** A finished task as the service reports it; `over` changes what a test cares about. */
function report(host: string, over: Partial<TaskReport> = {}): TaskReport {
  return {
    id: `id-${host}`,
    host,
    port: 22,
    user: 'deploy',
    status: 'ok',
    exitCode: 0,
    signal: null,
    exitStatusMissing: false,
    stdout: '',
    stderr: '',
    truncated: false,
    bytesDropped: { stdout: 0, stderr: 0 },
    killConfirmed: null,
    durationMs: 1234,
    stages: [
      { stage: 'connecting', startedAt: '2025-01-01T00:00:00.000Z', durationMs: 3 },
      { stage: 'running', startedAt: '2025-01-01T00:00:00.003Z', durationMs: 1231 },
    ],
    error: null,
    ...over,
  };
}

function failed(host: string, code: 'connect-timeout' | 'auth-failed', stage: 'connecting' | 'auth', message = `${code} on ${host}`): TaskReport {
  return report(host, { status: 'error', exitCode: null, error: { code, stage, message } });
}

/** Everything written to either stream, in order, so interleaving can be checked. */
interface Write {
  readonly to: 'out' | 'err';
  readonly text: string;
}

class FakeTerminal {
  readonly writes: Write[] = [];
  readonly out: Writable & { isTTY?: boolean };
  readonly err: Writable & { isTTY?: boolean };

  constructor(tty: { out: boolean; err: boolean }) {
    this.out = this.#stream('out', tty.out);
    this.err = this.#stream('err', tty.err);
  }

  #stream(to: 'out' | 'err', isTTY: boolean): Writable & { isTTY?: boolean } {
    const writes = this.writes;
    const stream = new Writable({
      decodeStrings: false,
      write(chunk: unknown, _encoding, callback) {
        writes.push({ to, text: String(chunk) });
        callback();
      },
    });
    return Object.assign(stream, { isTTY });
  }

  text(to: 'out' | 'err'): string {
    return this.writes
      .filter((w) => w.to === to)
      .map((w) => w.text)
      .join('');
  }
}

/** Runs NO_COLOR-sensitive tests with NO_COLOR as given, restoring the caller's value after. */
let savedNoColor: string | undefined;
beforeEach(() => {
  savedNoColor = process.env.NO_COLOR;
  delete process.env.NO_COLOR;
});
afterEach(() => {
  if (savedNoColor === undefined) delete process.env.NO_COLOR;
  else process.env.NO_COLOR = savedNoColor;
});

void describe('RunOutput --json', () => {
  void test('writes exactly one line per report, contract fields first and in order', () => {
    const term = new FakeTerminal({ out: false, err: false });
    const output = new RunOutput(term, { json: true, group: false }, 3);
    const reports = [
      report('web01', { stdout: 'up 3 days\n' }),
      failed('web02', 'connect-timeout', 'connecting'),
      report('web03', { status: 'nonzero-exit', exitCode: 2, stderr: 'no such file\n' }),
    ];
    for (const r of reports) output.report(r);
    output.finish();
    const out = term.text('out');
    assert.ok(out.endsWith('\n'));
    const lines = out.slice(0, -1).split('\n');
    assert.equal(lines.length, 3);
    const parsed = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    for (const p of parsed) assert.deepEqual(Object.keys(p).slice(0, CONTRACT_FIELDS.length), CONTRACT_FIELDS);
    assert.deepEqual(
      parsed.map((p) => [p.host, p.status, p.exitCode]),
      [
        ['web01', 'ok', 0],
        ['web02', 'error', null],
        ['web03', 'nonzero-exit', 2],
      ],
    );
    assert.equal(parsed[0]!.stdout, 'up 3 days\n');
    assert.deepEqual(parsed[1]!.error, { code: 'connect-timeout', stage: 'connecting', message: 'connect-timeout on web02' });
    assert.equal(parsed[0]!.error, null);
    assert.deepEqual(parsed[0]!.stages, reports[0]!.stages);
  });

  void test('each line is written as it comes, one write per report', () => {
    const term = new FakeTerminal({ out: false, err: false });
    const output = new RunOutput(term, { json: true, group: false }, 2);
    output.report(report('web01'));
    assert.equal(term.writes.length, 1);
    assert.equal(term.writes[0]!.text.split('\n').length, 2);
    output.report(report('web02'));
    assert.equal(term.writes.length, 2);
    output.finish();
  });

  void test('writes nothing on stderr, even when stderr is a terminal', () => {
    const term = new FakeTerminal({ out: true, err: true });
    const output = new RunOutput(term, { json: true, group: false }, 2);
    output.report(report('web01'));
    output.report(failed('web02', 'auth-failed', 'auth'));
    output.finish();
    assert.equal(term.text('err'), '');
    assert.ok(!term.text('out').includes(ESC), 'no colour in JSON');
  });

  void test('toJsonLine keeps the extras after the contract fields', () => {
    const line = toJsonLine(report('web01', { killConfirmed: true, exitStatusMissing: true, bytesDropped: { stdout: 5, stderr: 0 } }));
    assert.deepEqual(Object.keys(line), [...CONTRACT_FIELDS, 'bytesDropped', 'exitStatusMissing', 'killConfirmed']);
    assert.equal(line.killConfirmed, true);
  });

  void test('--json --group writes one line per group with its hosts and count', () => {
    const term = new FakeTerminal({ out: false, err: false });
    const output = new RunOutput(term, { json: true, group: true }, 3);
    output.report(failed('db1', 'auth-failed', 'auth'));
    output.report(report('web01', { stdout: 'ok\n' }));
    output.report(report('web02', { stdout: 'ok\n' }));
    assert.equal(term.text('out'), '', 'grouped output waits for the end');
    output.finish();
    const lines = term.text('out').trimEnd().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.equal(lines.length, 2);
    assert.equal(lines[0]!.count, 2);
    assert.deepEqual(lines[0]!.hosts, [
      { host: 'web01', port: 22, user: 'deploy' },
      { host: 'web02', port: 22, user: 'deploy' },
    ]);
    assert.equal(lines[1]!.count, 1);
    assert.deepEqual(lines[1]!.error, { code: 'auth-failed', stage: 'auth' });
    assert.equal(term.text('err'), '');
  });
});

void describe('RunOutput text', () => {
  void test('writes one block per report: header, stdout, stderr', () => {
    const term = new FakeTerminal({ out: false, err: false });
    const output = new RunOutput(term, { json: false, group: false }, 2);
    output.report(report('web01', { stdout: 'line 1\nline 2\n' }));
    output.report(report('web02', { port: 2222, status: 'nonzero-exit', exitCode: 3, stdout: 'partial', stderr: 'boom\n', durationMs: 850 }));
    assert.equal(
      term.text('out'),
      [
        '── web01  ok  exit 0  1.2s',
        'line 1',
        'line 2',
        '── web02:2222  nonzero-exit  exit 3  850ms',
        'partial',
        '── stderr',
        'boom',
        '',
      ].join('\n'),
    );
    assert.equal(term.writes.filter((w) => w.to === 'out').length, 2, 'one write per block');
    output.finish();
  });

  void test('a failed host names the code, the stage, the message and the kill outcome', () => {
    const term = new FakeTerminal({ out: false, err: false });
    const output = new RunOutput(term, { json: false, group: false }, 3);
    output.report(failed('web01', 'connect-timeout', 'connecting', 'no answer within 5s'));
    output.report(report('web02', { status: 'error', exitCode: null, killConfirmed: true, error: { code: 'command-timeout', stage: 'running', message: 'still running' } }));
    output.report(report('web03', { status: 'error', exitCode: null, killConfirmed: false, error: { code: 'idle-timeout', stage: 'running', message: 'silent' } }));
    const headers = term.text('out').trimEnd().split('\n');
    assert.deepEqual(headers, [
      '── web01  error  connect-timeout in connecting: no answer within 5s  1.2s',
      '── web02  error  command-timeout in running: still running (remote process killed)  1.2s',
      '── web03  error  idle-timeout in running: silent (remote kill NOT confirmed)  1.2s',
    ]);
    output.finish();
  });

  void test('a command killed by a signal says so', () => {
    const term = new FakeTerminal({ out: false, err: false });
    const output = new RunOutput(term, { json: false, group: false }, 1);
    output.report(report('web01', { status: 'nonzero-exit', exitCode: null, signal: 'SIGKILL' }));
    assert.equal(term.text('out'), '── web01  nonzero-exit  killed by SIGKILL  1.2s\n');
    output.finish();
  });

  void test('truncated output says how much was dropped', () => {
    const term = new FakeTerminal({ out: false, err: false });
    const output = new RunOutput(term, { json: false, group: false }, 1);
    output.report(report('web01', { stdout: 'headtail', truncated: true, bytesDropped: { stdout: 4096, stderr: 7 } }));
    assert.match(term.text('out'), /\n\(output truncated: 4096 bytes of stdout and 7 of stderr dropped between head and tail\)\n$/);
    output.finish();
  });

  void test('finish writes one summary line on stderr with counts per status and per code', () => {
    const term = new FakeTerminal({ out: false, err: false });
    const output = new RunOutput(term, { json: false, group: false }, 4);
    output.report(report('web01'));
    output.report(failed('web02', 'connect-timeout', 'connecting'));
    output.report(report('web03'));
    output.report(failed('web04', 'auth-failed', 'auth'));
    assert.equal(term.text('err'), '', 'no progress line when stderr is not a terminal');
    output.finish();
    const err = term.text('err');
    assert.match(err, /^4 hosts: 2 ok, 2 error \(connect-timeout 1, auth-failed 1\) in \d+ms\n$/);
    assert.ok(!err.includes('\r') && !err.includes(ESC));
  });

  void test('the summary of one host is singular', () => {
    const term = new FakeTerminal({ out: false, err: false });
    const output = new RunOutput(term, { json: false, group: false }, 1);
    output.report(report('web01'));
    output.finish();
    assert.match(term.text('err'), /^1 host: 1 ok in \d+ms\n$/);
  });
});

void describe('RunOutput progress line (stderr is a terminal)', () => {
  void test('draws the progress line with \\r\\x1b[2K after each report', () => {
    const term = new FakeTerminal({ out: false, err: true });
    const output = new RunOutput(term, { json: false, group: false }, 3);
    output.report(report('web01'));
    output.report(failed('web02', 'connect-timeout', 'connecting'));
    const progress = term.writes.filter((w) => w.to === 'err' && w.text !== CLEAR_LINE).map((w) => w.text);
    assert.deepEqual(progress, [`${CLEAR_LINE}1/3 done`, `${CLEAR_LINE}2/3 done · 1 not ok (connect-timeout 1)`]);
    output.finish();
  });

  void test('clears the progress line before every stdout block and before the summary', () => {
    const term = new FakeTerminal({ out: false, err: true });
    const output = new RunOutput(term, { json: false, group: false }, 3);
    output.report(report('web01', { stdout: 'a\n' }));
    output.report(report('web02', { stdout: 'b\n' }));
    output.notice('warning: web03 has a new host key');
    output.report(report('web03', { stdout: 'c\n' }));
    output.finish();
    const w = term.writes;
    // The first block comes before any progress line, so nothing needs clearing.
    assert.equal(w[0]!.to, 'out');
    for (let i = 1; i < w.length; i++) {
      if (w[i]!.to === 'out') assert.deepEqual(w[i - 1], { to: 'err', text: CLEAR_LINE }, `write ${i} (a block) follows a clear`);
    }
    const last = w.at(-1)!;
    assert.equal(last.to, 'err');
    assert.match(last.text, /^3 hosts: 3 ok in \d+ms\n$/);
    assert.deepEqual(w.at(-2), { to: 'err', text: CLEAR_LINE });
    const noticeAt = w.findIndex((x) => x.text === 'warning: web03 has a new host key\n');
    assert.ok(noticeAt > 0);
    assert.deepEqual(w[noticeAt - 1], { to: 'err', text: CLEAR_LINE }, 'a notice clears the progress line first');
    assert.equal(w[noticeAt + 1]?.text, `${CLEAR_LINE}2/3 done`, 'and redraws it after');
    assert.equal(term.text('out'), '── web01  ok  exit 0  1.2s\na\n── web02  ok  exit 0  1.2s\nb\n── web03  ok  exit 0  1.2s\nc\n');
  });

  void test('nothing terminal-specific reaches stdout', () => {
    const term = new FakeTerminal({ out: false, err: true });
    const output = new RunOutput(term, { json: false, group: false }, 2);
    output.report(report('web01'));
    output.report(failed('web02', 'auth-failed', 'auth'));
    output.finish();
    assert.ok(!term.text('out').includes('\r'));
    assert.ok(!term.text('out').includes(ESC));
  });
});

void describe('RunOutput --group', () => {
  void test('folds identical results into one block with the host count, largest group first', () => {
    const term = new FakeTerminal({ out: false, err: false });
    const output = new RunOutput(term, { json: false, group: true }, 6);
    output.report(failed('db1', 'connect-timeout', 'connecting', 'db1: no answer'));
    output.report(report('web02', { stdout: 'v1.2\n' }));
    output.report(report('web01', { stdout: 'v1.2\n' }));
    output.report(failed('web07', 'connect-timeout', 'connecting', 'web07: no answer'));
    output.report(report('web03', { stdout: 'v1.2\n' }));
    output.report(report('web09', { stdout: 'v1.3\n' }));
    assert.equal(term.text('out'), '', 'nothing is printed before finish');
    output.finish();
    const out = term.text('out');
    const headers = out.split('\n').filter((l) => l.startsWith('──'));
    assert.deepEqual(headers, [
      '── web[01-03] (3)  ok  exit 0',
      '── db1,web07 (2)  error  connect-timeout in connecting',
      '── web09  ok  exit 0  1.2s',
    ]);
    assert.equal(out.split('v1.2\n').length - 1, 1, 'the shared output is printed once');
    assert.ok(!out.includes('no answer'), 'a group does not show one host’s message for all');
    assert.match(term.text('err'), /^6 hosts: 2 error, 4 ok \(connect-timeout 2\) in \d+ms\n$/);
  });

  void test('results that differ in output, exit code, error stage or kill outcome are not folded', () => {
    const groups = groupReports([
      report('a1', { stdout: 'x' }),
      report('a2', { stdout: 'y' }),
      report('a3', { stdout: 'x', status: 'nonzero-exit', exitCode: 1 }),
      failed('a4', 'auth-failed', 'auth'),
      report('a5', { status: 'error', exitCode: null, error: { code: 'auth-failed', stage: 'connecting', message: 'm' } }),
      report('a6', { stdout: 'x' }),
      report('a7', { status: 'error', exitCode: null, killConfirmed: true, error: { code: 'command-timeout', stage: 'running', message: 'm7' } }),
      report('a8', { status: 'error', exitCode: null, killConfirmed: false, error: { code: 'command-timeout', stage: 'running', message: 'm8' } }),
      report('a9', { status: 'error', exitCode: null, killConfirmed: true, error: { code: 'command-timeout', stage: 'running', message: 'm9' } }),
    ]);
    assert.deepEqual(
      groups.map((g) => g.map((r) => r.host)),
      [['a1', 'a6'], ['a7', 'a9'], ['a2'], ['a3'], ['a4'], ['a5'], ['a8']],
    );
  });

  void test('hosts reached as different users are told apart in a folded block', () => {
    const term = new FakeTerminal({ out: false, err: false });
    const output = new RunOutput(term, { json: false, group: true }, 2);
    output.report(report('web01', { user: 'root' }));
    output.report(report('web01', { user: 'deploy' }));
    output.finish();
    const header = term.text('out').split('\n')[0]!;
    assert.match(header, /root@web01/, header);
    assert.match(header, /deploy@web01/, header);
  });
});

void describe('RunOutput colour', () => {
  void test('colours the status on a terminal', () => {
    const term = new FakeTerminal({ out: true, err: false });
    const output = new RunOutput(term, { json: false, group: false }, 2);
    output.report(report('web01'));
    output.report(failed('web02', 'auth-failed', 'auth'));
    output.finish();
    const out = term.text('out');
    assert.ok(out.includes('\x1b[32mok\x1b[0m'), JSON.stringify(out));
    assert.ok(out.includes('\x1b[31merror\x1b[0m'), JSON.stringify(out));
  });

  void test('NO_COLOR turns colour off on a terminal', () => {
    process.env.NO_COLOR = '1';
    const term = new FakeTerminal({ out: true, err: true });
    const output = new RunOutput(term, { json: false, group: false }, 2);
    output.report(report('web01', { stdout: 'hi\n' }));
    output.report(failed('web02', 'auth-failed', 'auth'));
    output.finish();
    const out = term.text('out');
    assert.ok(!out.includes(ESC), JSON.stringify(out));
    assert.ok(out.startsWith('── web01  ok  exit 0'));
  });

  void test('no colour when stdout is not a terminal', () => {
    const term = new FakeTerminal({ out: false, err: true });
    const output = new RunOutput(term, { json: false, group: false }, 1);
    output.report(report('web01'));
    output.finish();
    assert.ok(!term.text('out').includes(ESC));
  });
});

void describe('host labels', () => {
  void test('an IPv6 host with a port is written in brackets, as --hosts takes it', () => {
    const term = new FakeTerminal({ out: false, err: false });
    const output = new RunOutput(term, { json: false, group: false }, 1);
    output.report(report('2001:db8::1', { port: 2222 }));
    output.finish();
    assert.match(term.text('out'), /^── \[2001:db8::1\]:2222 {2}ok/);
  });
});

void describe('foldHosts', () => {
  void test('folds consecutive numbers into ranges: web01,web02,web03,web07 → web[01-03,07]', () => {
    assert.equal(foldHosts(['web01', 'web02', 'web03', 'web07']), 'web[01-03,07]');
  });

  void test('sorts numbers and drops duplicates', () => {
    assert.equal(foldHosts(['web07', 'web03', 'web01', 'web02', 'web01', 'web03']), 'web[01-03,07]');
    assert.equal(foldHosts(['web01', 'web01']), 'web01');
  });

  void test('a single name, or none', () => {
    assert.equal(foldHosts(['web01']), 'web01');
    assert.equal(foldHosts([]), '');
  });

  void test('unpadded numbers fold regardless of width', () => {
    assert.equal(foldHosts(['node9', 'node10', 'node11', 'node1']), 'node[1,9-11]');
  });

  void test('keeps zero-padded and unpadded numbers of the same width apart', () => {
    assert.equal(foldHosts(['web1', 'web02', 'web3']), 'web[1,3],web02');
    assert.equal(foldHosts(['n001', 'n002', 'n01']), 'n[001-002],n01');
  });

  void test('keeps the suffix after the number', () => {
    assert.equal(foldHosts(['web01.example.com', 'web02.example.com', 'web02.example.org']), 'web[01-02].example.com,web02.example.org');
  });

  void test('only the last number varies', () => {
    assert.equal(foldHosts(['r1n1', 'r1n2', 'r2n1']), 'r1n[1-2],r2n1');
  });

  void test('plain names come last, in input order, without duplicates', () => {
    assert.equal(foldHosts(['db', 'web2', 'cache', 'web1', 'db']), 'web[1-2],db,cache');
  });

  void test('IP:port labels fold on the port only when the address is the same', () => {
    assert.equal(foldHosts(['10.0.0.1:2222', '10.0.0.2:2222']), '10.0.0.1:2222,10.0.0.2:2222');
    assert.equal(foldHosts(['10.0.0.1:2222', '10.0.0.1:2223']), '10.0.0.1:[2222-2223]');
    assert.equal(foldHosts(['10.0.0.1', '10.0.0.2', '10.0.0.3']), '10.0.0.[1-3]');
  });

  void test('folding the hosts of web[01-20] gives back web[01-20]', () => {
    // expandHostPattern pads to the start bound's width, so web10..web20 belong to the
    // padded range (ClusterShell folds them the same way).
    assert.equal(foldHosts(expandHostPattern('web[01-20]')), 'web[01-20]');
    assert.equal(foldHosts(expandHostPattern('web[08-12]')), 'web[08-12]');
    assert.equal(foldHosts(expandHostPattern('n[098-101]')), 'n[098-101]');
  });

  void test('folding is the inverse of expanding for unpadded ranges', () => {
    for (const pattern of ['web[1-12]', 'node[1-3,7,9-10]', 'a[5]b', 'x[100-102].lan']) {
      const folded = foldHosts(expandHostPattern(pattern));
      assert.deepEqual(expandHostPattern(folded), expandHostPattern(pattern), `${pattern} → ${folded}`);
    }
  });
});
