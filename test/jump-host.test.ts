import assert from 'node:assert/strict';
import { appendFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, afterEach, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { ledger } from '../src/lifecycle/ledger.ts';
import { taskTable } from '../src/lifecycle/task-table.ts';
import type { TaskReport } from '../src/lifecycle/task-report.ts';
import { runTask } from '../src/service/task-runner.ts';
import { DEFAULT_KEEPALIVE, DEFAULT_MAX_OUTPUT_BYTES, DEFAULT_TIMEOUTS, type TaskSpec } from '../src/service/task-spec.ts';
import { ConnectionPool } from '../src/ssh/connection-pool.ts';
import { readPrivateKey, type Credentials } from '../src/ssh/credentials.ts';
import { HostKeyVerifier } from '../src/ssh/host-key-verifier.ts';
import { SshRemoteExec } from '../src/ssh/remote-exec.ts';
import { assertNothingAlive } from './support/assert-clean.ts';
import { startTestService } from './support/service.ts';
import { startSshd, type Sshd } from './support/sshd.ts';

/**
 * ProxyJump through real OpenSSH: a bastion sshd forwards to a target sshd. The target is
 * reached only through the bastion (no TCP socket of ours to it), hops are pooled and
 * shared, and a hop's failure names the hop.
 */

let bastion: Sshd;
let target: Sshd;
let second: Sshd;
let credentials: Credentials;
let hostKeys: HostKeyVerifier;
let pool: ConnectionPool | null = null;

before(async () => {
  [bastion, target, second] = await Promise.all([startSshd(), startSshd(), startSshd()]);
  // One identity that every host accepts (each harness sshd authorizes its own key).
  credentials = { keys: await Promise.all([bastion, target, second].map((s) => readPrivateKey(s.clientKey.path))), agentSocket: null, password: null };
  hostKeys = HostKeyVerifier.fromLines([bastion.knownHostsLine, target.knownHostsLine, second.knownHostsLine], 'strict');
});

after(async () => {
  await Promise.all([bastion.stop(), target.stop(), second.stop()]);
});

afterEach(async () => {
  await pool?.close();
  pool = null;
  await assertNothingAlive();
});

const hop = (s: Sshd): TaskSpec['target'] => ({ host: s.host, port: s.port, user: s.user });

function spec(command: string, jump: readonly Sshd[], extra: Partial<TaskSpec> = {}): TaskSpec {
  return {
    target: hop(target),
    command,
    timeouts: { ...DEFAULT_TIMEOUTS, connectMs: 3000, handshakeMs: 3000, authMs: 3000 },
    keepalive: DEFAULT_KEEPALIVE,
    maxOutputBytes: DEFAULT_MAX_OUTPUT_BYTES,
    credentials,
    hostKeys,
    jump: jump.map(hop),
    ...extra,
  };
}

function run(s: TaskSpec, p: ConnectionPool | null): Promise<TaskReport> {
  return runTask(s, { remote: new SshRemoteExec({ pool: p }), ledger, tasks: taskTable }, { signal: new AbortController().signal });
}

void describe('jump hosts', () => {
  void test('a command runs on the target through the bastion; no socket of ours goes to the target', async () => {
    const running = run(spec('echo "on $SSH_CONNECTION"; sleep 0.5', [bastion]), null);
    let seen = false;
    const until = Date.now() + 10_000;
    while (!seen && Date.now() < until) {
      const live = ledger.live();
      const channel = live.find((e) => e.kind === 'channel' && e.attrs.purpose === 'jump');
      if (channel) {
        seen = true;
        assert.equal(channel.attrs.port, target.port);
        const sockets = live.filter((e) => e.kind === 'socket');
        assert.deepEqual(sockets.map((e) => e.attrs.port), [bastion.port], 'the only TCP socket goes to the bastion');
      }
      await sleep(10);
    }
    assert.ok(seen, 'the forwarded channel showed in the ledger');
    const report = await running;
    assert.equal(report.status, 'ok', JSON.stringify(report.error));
    // sshd reports the client end of the connection: the bastion's side, not ours directly.
    assert.match(report.stdout, new RegExp(`^on 127\\.0\\.0\\.1 \\d+ 127\\.0\\.0\\.1 ${target.port}\\n$`));
    assert.deepEqual(report.stages.map((s) => s.stage), ['queued', 'connecting', 'handshake', 'auth', 'channel', 'running', 'closing']);
  });

  void test('two hops: bastion, then a second jump host, then the target', async () => {
    const report = await run(spec('echo two hops', [bastion, second]), null);
    assert.equal(report.status, 'ok', JSON.stringify(report.error));
    assert.equal(report.stdout, 'two hops\n');
  });

  void test('pooled: tasks share the bastion connection and the target connection', async () => {
    pool = new ConnectionPool(ledger);
    const before = ledger.stats().get('socket')?.opened ?? 0;
    for (let i = 0; i < 3; i++) assert.equal((await run(spec(`echo ${i}`, [bastion]), pool)).status, 'ok');
    assert.equal((ledger.stats().get('socket')?.opened ?? 0) - before, 1, 'one TCP connection, to the bastion');
    assert.deepEqual(pool.stats(), { idle: 1, busy: 1, connecting: 0 }, 'the target connection idles; the bastion carries its forward');
    // A target connection without reuse still borrows the pooled bastion.
    assert.equal((await run(spec('true', [bastion], { reuse: false }), pool)).status, 'ok');
    assert.equal((ledger.stats().get('socket')?.opened ?? 0) - before, 1);
  });

  void test('handshakes through one jump host are limited across tasks; every task still succeeds', async () => {
    const remote = new SshRemoteExec({ jumpHandshakes: 1 });
    let most = 0;
    let inHandshake = 0;
    const watch = setInterval(() => {
      inHandshake = taskTable.live().filter((t) => t.stage === 'handshake' || t.stage === 'auth').length;
      most = Math.max(most, inHandshake);
    }, 1);
    try {
      const reports = await Promise.all(
        Array.from({ length: 4 }, (_, i) => runTask(spec(`echo ${i}`, [bastion]), { remote, ledger, tasks: taskTable }, { signal: new AbortController().signal })),
      );
      for (const r of reports) assert.equal(r.status, 'ok', JSON.stringify(r.error));
    } finally {
      clearInterval(watch);
    }
    assert.equal(most, 1, 'one handshake through the bastion at a time');
  });

  void test('the bastion refuses to forward: connect-refused naming the jump host and the target', async () => {
    const closed = { ...hop(target), port: 1 };
    const report = await run({ ...spec('true', [bastion]), target: closed }, null);
    assert.equal(report.error?.code, 'connect-refused');
    assert.equal(report.error?.stage, 'connecting');
    assert.match(report.error?.message ?? '', new RegExp(`jump host 127\\.0\\.0\\.1:${bastion.port} could not connect to 127\\.0\\.0\\.1:1`));
  });

  void test('a jump host that is down: its error names the hop', async () => {
    const down = { ...hop(bastion), port: 1 };
    const report = await run({ ...spec('true', []), jump: [down] }, null);
    assert.equal(report.error?.code, 'connect-refused');
    assert.match(report.error?.message ?? '', /^jump host \S+@127\.0\.0\.1:1: /);
  });

  void test('the API: a task with jump runs through the bastion; a bad jump entry is a 400 naming the field', async () => {
    // The service's identity is the target's key; let the bastion accept it too.
    await appendFile(bastion.authorizedKeysPath, `${target.clientKey.publicKey}\n`);
    const dir = await mkdtemp(path.join(os.tmpdir(), 'leash-jump-'));
    const knownHosts = path.join(dir, 'known_hosts');
    await writeFile(knownHosts, `${bastion.knownHostsLine}\n${target.knownHostsLine}\n`);
    const service = await startTestService(target, { extra: { hostKeys: { policy: 'strict', readFiles: [knownHosts], knownHostsFile: path.join(dir, 'own_known_hosts') } } });
    try {
      const r = await service.request('POST', '/v1/tasks', { host: '127.0.0.1', port: target.port, command: 'echo via bastion', jump: [`127.0.0.1:${bastion.port}`], wait: 20 });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.equal(r.body.status, 'ok', JSON.stringify(r.body.error));
      assert.equal(r.body.result.stdout, 'via bastion\n');
      const bad = await service.request('POST', '/v1/tasks', { host: '127.0.0.1', command: 'true', jump: ['web[1-2]'] });
      assert.equal(bad.status, 400);
      assert.equal(bad.body.error.field, 'jump');
    } finally {
      await service.stop();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
