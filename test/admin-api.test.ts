import assert from 'node:assert/strict';
import { readFile, rm, stat } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { gunzipSync } from 'node:zlib';
import { assertNothingAlive } from './support/assert-clean.ts';
import { runCli, tempHome } from './support/cli.ts';
import { ADMIN_TOKEN, READ_TOKEN, startTestService, type TestService } from './support/service.ts';

/**
 * The admin listener (/debug) of a real service: its own port, admin scope only, dumps as
 * text and JSON, profiles in pprof and Chrome's format one at a time, and `leash debug`
 * reading all of it from another process.
 */

let service: TestService;
let admin: string;
let home: { home: string; remove: () => Promise<void> };

before(async () => {
  service = await startTestService(null, { demo: true });
  assert.ok(service.running.adminUrl, 'the test config turns the admin listener on');
  admin = service.running.adminUrl;
  home = await tempHome();
});

after(async () => {
  await service.stop();
  await home.remove();
  await assertNothingAlive();
});

interface Got {
  readonly status: number;
  readonly type: string;
  readonly disposition: string;
  readonly body: Buffer;
  text(): string;
  json(): any;
}

/** A GET to the admin listener (or a unix socket), bounded. */
function get(route: string, options: { token?: string | null; socketPath?: string; base?: string } = {}): Promise<Got> {
  const token = options.token === undefined ? ADMIN_TOKEN : options.token;
  const url = new URL(route, options.base ?? admin);
  return new Promise((resolve, reject) => {
    const req = http.get(
      url,
      { headers: token ? { authorization: `Bearer ${token}` } : {}, signal: AbortSignal.timeout(60_000), ...(options.socketPath ? { socketPath: options.socketPath } : {}) },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const body = Buffer.concat(chunks);
          resolve({
            status: res.statusCode ?? 0,
            type: String(res.headers['content-type'] ?? ''),
            disposition: String(res.headers['content-disposition'] ?? ''),
            body,
            text: () => body.toString('utf8'),
            json: () => JSON.parse(body.toString('utf8')),
          });
        });
      },
    );
    req.on('error', reject);
  });
}

async function submit(command: string): Promise<string> {
  const demo = service.running.demo!;
  const r = await service.request('POST', '/v1/tasks', { host: demo.host, port: demo.port, command });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  return r.body.id as string;
}

async function waitForStage(id: string, stage: string): Promise<void> {
  const until = Date.now() + 20_000;
  for (;;) {
    const r = await service.request('GET', `/v1/tasks/${id}`);
    if (r.body.stage === stage || (r.body.status === stage && stage !== 'running')) return;
    if (Date.now() > until) assert.fail(`task ${id} never reached ${stage}: ${JSON.stringify(r.body)}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

void describe('admin listener', () => {
  void test('is its own listener, not the API port, and only the admin scope reads it', async () => {
    assert.notEqual(new URL(admin).port, new URL(service.url).port);
    assert.equal((await service.request('GET', '/debug/tasks')).status, 404, 'the API port has no /debug');
    const anonymous = await get('/debug/tasks', { token: null });
    assert.equal(anonymous.status, 401);
    assert.equal(anonymous.json().error.code, 'unauthorized');
    assert.equal((await get('/debug/tasks', { token: READ_TOKEN })).status, 403);
    const index = await get('/debug/');
    assert.equal(index.status, 200);
    assert.match(index.text(), /\/debug\/tasks\?debug=1/);
    assert.match(index.text(), /\/debug\/heapsnapshot\?confirm=1 .*PAUSES THE PROCESS/);
  });

  void test('dumps a running task in text and JSON, with its command redacted', async () => {
    const id = await submit('sleep 30; echo password=hunter2');
    try {
      await waitForStage(id, 'running');
      const one = await get('/debug/tasks?debug=1');
      assert.equal(one.status, 200);
      assert.match(one.type, /^text\/plain/);
      assert.match(one.text(), /^tasks: total 1\n\n1 @ stage=running waiting=command-output for up to \S+ oldest=\S+ e\.g\. \S+\n#\tat /);
      assert.match(one.text(), /#\tat .*src\/service\/task-service\.ts/, 'the creation site is the service code that created it');

      const two = await get('/debug/tasks?debug=2');
      assert.match(two.text(), new RegExp(`task ${id} \\[running, \\d+(ms|s)\\] host=127\\.0\\.0\\.1:\\d+ user=\\S+ waiting=command-output`));
      assert.match(two.text(), /\tcommand: sleep 30; echo password=\[redacted\]\n/);
      assert.ok(!two.text().includes('hunter2'));

      const json = (await get('/debug/tasks?debug=2&format=json')).json();
      assert.equal(json.total, 1);
      assert.equal(json.tasks[0].id, id);
      assert.deepEqual(json.tasks[0].stages.map((s: { stage: string }) => s.stage), ['queued', 'connecting', 'handshake', 'auth', 'channel', 'running']);

      const resources = await get('/debug/resources?debug=1');
      assert.match(resources.text(), /^resources: total \d+\n/);
      assert.match(resources.text(), /\n1 @ kind=ssh-connection owner=pool oldest=/, 'a pooled connection belongs to the pool');
      assert.match(resources.text(), /\n1 @ kind=channel owner=task oldest=/, 'its channel to the task');
      assert.match(resources.text(), /\n1 @ kind=database owner=store oldest=/);
      const listed = (await get('/debug/resources?debug=2&format=json')).json();
      const channel = listed.resources.find((r: { kind: string; owner: string }) => r.kind === 'channel' && r.owner === id);
      assert.ok(channel, JSON.stringify(listed));
      assert.equal(channel.ownerStage, 'running');
    } finally {
      await service.request('POST', `/v1/tasks/${id}/cancel`);
      await waitForStage(id, 'cancelled');
    }
    assert.equal((await get('/debug/tasks')).text(), 'tasks: total 0\n');
  });

  void test('leaks: the watchdog is on, nothing flagged in a healthy service', async () => {
    const text = await get('/debug/leaks');
    assert.equal(text.status, 200);
    assert.match(text.text(), /^leaks: \d+ flagged now; flagged since start: /);
    const json = (await get('/debug/leaks?format=json')).json();
    assert.equal(json.enabled, true);
    assert.equal(json.counts['task-past-deadline'], 0);
    assert.equal(json.counts['resource-of-finished-task'], 0);
  });

  void test('bad queries name the parameter', async () => {
    const r = await get('/debug/tasks?debug=3');
    assert.equal(r.status, 400);
    assert.equal(r.json().error.field, 'debug');
    assert.equal((await get('/debug/resources?format=xml')).json().error.field, 'format');
    assert.equal((await get('/debug/pprof/profile?seconds=zero')).json().error.field, 'seconds');
    assert.equal((await get('/debug/nothing')).status, 404);
  });

  void test('a CPU profile in pprof format, one at a time (409 while one runs), and in Chrome DevTools format', async () => {
    const first = get('/debug/pprof/profile?seconds=2');
    await new Promise((resolve) => setTimeout(resolve, 300));
    const second = await get('/debug/pprof/profile?seconds=1');
    assert.equal(second.status, 409);
    assert.equal(second.json().error.code, 'conflict');
    const profile = await first;
    assert.equal(profile.status, 200);
    assert.match(profile.disposition, /^attachment; filename="leash-cpu-[^":]+\.pb\.gz"$/);
    assert.ok(gunzipSync(profile.body).length > 0, 'a gzipped protobuf');

    const chrome = await get('/debug/pprof/profile?seconds=1&format=cpuprofile');
    assert.equal(chrome.status, 200);
    const parsed = chrome.json();
    assert.ok(Array.isArray(parsed.nodes) && parsed.nodes.length > 0);
    assert.match(chrome.disposition, /\.cpuprofile"$/);
  });

  void test('the sampled heap profile, and a full heap snapshot only with confirm=1', async () => {
    const heap = await get('/debug/pprof/heap');
    assert.equal(heap.status, 200);
    assert.ok(gunzipSync(heap.body).length > 0);
    const unconfirmed = await get('/debug/heapsnapshot');
    assert.equal(unconfirmed.status, 400);
    assert.match(unconfirmed.json().error.message, /pauses the whole process/);
    const snapshot = await get('/debug/heapsnapshot?confirm=1');
    assert.equal(snapshot.status, 200);
    assert.match(snapshot.disposition, /\.heapsnapshot"$/);
    const parsed = JSON.parse(snapshot.text()) as { snapshot?: { meta?: unknown } };
    assert.ok(parsed.snapshot?.meta, 'a V8 heap snapshot');
    assert.ok(service.logs().some((l) => /taking a full heap snapshot/.test(String(l.msg))), 'the pause is logged');
  });
});

void describe('leash debug (CLI)', () => {
  const env = (): Record<string, string> => ({ LEASH_ADMIN_TOKEN: ADMIN_TOKEN });

  void test('tasks, resources and leaks print the dumps; the token comes from LEASH_ADMIN_TOKEN', async () => {
    const tasks = await runCli(['debug', 'tasks', '--admin', admin], { home: home.home, env: env() });
    assert.equal(tasks.code, 0, tasks.stderr);
    assert.equal(tasks.stdout, 'tasks: total 0\n');
    const resources = await runCli(['debug', 'resources', '--debug', '2', '--admin', admin], { home: home.home, env: env() });
    assert.equal(resources.code, 0, resources.stderr);
    assert.match(resources.stdout, /^resources: total \d+\n\nresource \d+ /);
    const leaks = await runCli(['debug', 'leaks', '--json', '--admin', admin], { home: home.home, env: env() });
    assert.equal(leaks.code, 0, leaks.stderr);
    assert.equal(JSON.parse(leaks.stdout).enabled, true);
  });

  void test('without a token it says what is missing; a wrong target or flag is a usage error', async () => {
    const anonymous = await runCli(['debug', 'tasks', '--admin', admin], { home: home.home });
    assert.equal(anonymous.code, 1);
    assert.match(anonymous.stderr, /answered 401: unauthorized: missing bearer token.*set LEASH_ADMIN_TOKEN/);
    const unknown = await runCli(['debug', 'goroutines'], { home: home.home });
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /unknown debug target "goroutines": tasks, resources, leaks, profile or heap/);
    const badDebug = await runCli(['debug', 'tasks', '--debug', '3', '--admin', admin], { home: home.home, env: env() });
    assert.equal(badDebug.code, 2);
    assert.match(badDebug.stderr, /bad --debug "3"/);
  });

  void test('an unreachable admin listener is a clear error, not a hang', async () => {
    const closed = await runCli(['debug', 'tasks', '--admin', 'http://127.0.0.1:1'], { home: home.home, env: env() });
    assert.equal(closed.code, 1);
    assert.match(closed.stderr, /cannot reach the admin listener at http:\/\/127\.0\.0\.1:1 \(ECONNREFUSED\): is leash serve running\?/);
    assert.ok(!closed.stderr.includes(ADMIN_TOKEN), 'the token never shows');
  });

  void test('profile and heap are written to files, with how to open them', async () => {
    const file = path.join(home.home, 'cpu.pb.gz');
    const profile = await runCli(['debug', 'profile', '--seconds', '1', '-o', file, '--admin', admin], { home: home.home, env: env() });
    assert.equal(profile.code, 0, profile.stderr);
    assert.match(profile.stdout, /wrote CPU profile \(pprof\) to .*cpu\.pb\.gz\nopen it with: go tool pprof -http=127\.0\.0\.1:0 .*cpu\.pb\.gz/);
    assert.ok(gunzipSync(await readFile(file)).length > 0);
    assert.equal((await stat(file)).mode & 0o777, 0o600, 'profiles name functions and paths: owner-only');

    const heap = await runCli(['debug', 'heap', '--admin', admin], { home: home.home, env: env(), cwd: home.home });
    assert.equal(heap.code, 0, heap.stderr);
    const written = /wrote heap profile \(pprof\) to (\S+)\n/.exec(heap.stdout)?.[1];
    assert.ok(written && written.startsWith(home.home), heap.stdout);
    assert.match(path.basename(written), /^leash-heap-[^:]+\.pb\.gz$/);
    assert.ok(gunzipSync(await readFile(written)).length > 0);
    await rm(written);
  });
});

void describe('leash serve and its admin address', () => {
  void test('an admin address in use refuses to start with one line naming it and the setting, exit 1', async () => {
    const holder = net.createServer();
    await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
    const port = (holder.address() as net.AddressInfo).port;
    const dir = await tempHome();
    try {
      const r = await runCli(['serve', '--listen', '127.0.0.1:0', '--admin-listen', `127.0.0.1:${port}`, '--data', path.join(dir.home, 'data')], { home: dir.home });
      assert.equal(r.code, 1, r.stderr);
      assert.equal(r.stderr, `leash: cannot listen on 127.0.0.1:${port} for the admin (/debug) listener: the address is in use (is another leash serve running?); choose another with adminListen / --admin-listen / LEASH_ADMIN_LISTEN (or off)\n`);
    } finally {
      await new Promise<void>((resolve) => holder.close(() => resolve()));
      await dir.remove();
    }
  });
});

void describe('admin listener on a unix socket', () => {
  void test('serves /debug on the socket, and leash debug reads it with --admin unix:PATH', async () => {
    const dir = await tempHome();
    const socketPath = path.join(dir.home, 'admin.sock');
    const other = await startTestService(null, { extra: { adminListen: `unix:${socketPath}` } });
    try {
      assert.equal(other.running.adminUrl, `unix:${socketPath}`);
      const r = await get('/debug/tasks', { socketPath, base: 'http://localhost' });
      assert.equal(r.status, 200);
      assert.equal(r.text(), 'tasks: total 0\n');
      const cli = await runCli(['debug', 'tasks', '--admin', `unix:${socketPath}`], { home: dir.home, env: env() });
      assert.equal(cli.code, 0, cli.stderr);
      assert.equal(cli.stdout, 'tasks: total 0\n');
    } finally {
      await other.stop();
      await dir.remove();
    }
  });

  function env(): Record<string, string> {
    return { LEASH_ADMIN_TOKEN: ADMIN_TOKEN };
  }
});
