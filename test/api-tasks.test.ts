// The task API over a real socket, against the real sshd of the test harness: sync and
// async tasks, server-sent events and resume, cancel, auth scopes, and bad input.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { after, afterEach, before, describe, test } from 'node:test';
import { ledger } from '../src/lifecycle/ledger.ts';
import { assertNothingAlive } from './support/assert-clean.ts';
import { ADMIN_TOKEN, READ_TOKEN, readEvents, startTestService, type TestService } from './support/service.ts';
import { startSshd, type Sshd } from './support/sshd.ts';

let sshd: Sshd;
let service: TestService;

before(async () => {
  sshd = await startSshd();
  service = await startTestService(sshd);
});
after(async () => {
  await service?.stop();
  await sshd?.stop();
  await assertNothingAlive();
});
afterEach(async () => {
  // Every task of a test has ended before the next starts.
  const until = Date.now() + 10_000;
  while (service.running && (await service.request('GET', '/v1/tasks?status=running')).body.tasks.length > 0 && Date.now() < until) {
    await new Promise((r) => setTimeout(r, 50));
  }
});

const task = (command: string, extra: Record<string, unknown> = {}) => ({ host: '127.0.0.1', port: sshd.port, command, ...extra });

function remoteRunning(marker: string): boolean {
  try {
    execFileSync('pgrep', ['-f', `^sleep ${marker.replaceAll('.', '\\.')}`]);
    return true;
  } catch {
    return false;
  }
}

async function waitUntil(what: string, check: () => boolean | Promise<boolean>, ms = 15_000): Promise<void> {
  const until = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('tasks', () => {
  test('POST with wait returns the finished task (200) with the contract fields', async () => {
    const r = await service.request('POST', '/v1/tasks', task('echo hello; echo oops >&2; exit 3', { wait: 20 }));
    assert.equal(r.status, 200, JSON.stringify(r.body));
    const t = r.body;
    assert.equal(t.status, 'nonzero-exit');
    assert.equal(t.stage, null);
    assert.equal(t.result.exitCode, 3);
    assert.equal(t.result.stdout, 'hello\n');
    assert.equal(t.result.stderr, 'oops\n');
    assert.equal(t.error, null);
    assert.equal(t.identity, 'sshd');
    assert.equal(t.submittedBy, 'admin');
    assert.deepEqual(
      t.stages.map((s: { stage: string }) => s.stage),
      ['queued', 'connecting', 'handshake', 'auth', 'channel', 'running', 'closing'],
    );
    const again = await service.request('GET', `/v1/tasks/${t.id}`);
    assert.deepEqual(again.body, t);
  });

  test('POST without wait returns 202 at once; the task is then polled to its end', async () => {
    const r = await service.request('POST', '/v1/tasks', task('sleep 0.3; echo later'));
    assert.equal(r.status, 202);
    assert.ok(['queued', 'running'].includes(r.body.status));
    let t = r.body;
    await waitUntil('the task to finish', async () => {
      t = (await service.request('GET', `/v1/tasks/${r.body.id}`)).body;
      return t.status === 'ok';
    });
    assert.equal(t.result.stdout, 'later\n');
  });

  test('a wait that runs out answers 202 with the live task', async () => {
    const r = await service.request('POST', '/v1/tasks', task('sleep 2', { wait: 0.3 }));
    assert.equal(r.status, 202);
    assert.equal(r.body.status, 'running');
    await service.request('POST', `/v1/tasks/${r.body.id}/cancel`);
  });

  test('a client that gives up on a long wait leaves no wait behind', async () => {
    const body = JSON.stringify(task('sleep 1', { wait: 60 }));
    await assert.rejects(
      fetch(`${service.url}/v1/tasks`, {
        method: 'POST',
        headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
        body,
        signal: AbortSignal.timeout(300),
      }),
    );
    await waitUntil('the wait to be dropped', () => !ledger.live().some((e) => e.attrs.purpose === 'wait'), 5000);
  });

  test('tasks to one host share a pooled connection; reuse: false and retries are per task', async () => {
    const first = await service.request('POST', '/v1/tasks', task('echo a', { wait: 20 }));
    const second = await service.request('POST', '/v1/tasks', task('echo b', { wait: 20 }));
    assert.equal(second.body.status, 'ok', JSON.stringify(second.body.error));
    assert.equal(first.body.result.stdout, 'a\n');
    assert.deepEqual(
      second.body.stages.map((s: { stage: string }) => s.stage),
      ['queued', 'channel', 'running', 'closing'],
      'the second borrowed the first one\'s connection',
    );
    const own = await service.request('POST', '/v1/tasks', task('echo c', { wait: 20, reuse: false, retries: 1 }));
    assert.equal(own.body.status, 'ok');
    assert.ok(own.body.stages.some((s: { stage: string }) => s.stage === 'handshake'), 'reuse: false dials its own');
    const bad = await service.request('POST', '/v1/tasks', task('true', { retries: 9 }));
    assert.equal(bad.status, 400);
    assert.match(bad.body.error.message, /retries/);
    const metrics = await service.request('GET', '/metrics');
    assert.match(String(metrics.body), /^leash_ssh_connections\{state="idle"\} [1-9]/m, 'the pooled connection shows as idle');
  });

  test('an unreachable host is an error with its code and stage, not an HTTP error', async () => {
    const r = await service.request('POST', '/v1/tasks', { host: '127.0.0.1', port: 1, command: 'true', wait: 20 });
    assert.equal(r.status, 200);
    assert.equal(r.body.status, 'error');
    assert.deepEqual({ code: r.body.error.code, stage: r.body.error.stage }, { code: 'connect-refused', stage: 'connecting' });
  });

  test('GET /v1/tasks lists newest first, filters, and pages with a cursor', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push((await service.request('POST', '/v1/tasks', task(`echo ${i}`, { wait: 20 }))).body.id);
    const first = await service.request('GET', '/v1/tasks?limit=2&status=ok');
    assert.equal(first.status, 200);
    assert.deepEqual(first.body.tasks.map((t: { id: string }) => t.id), [ids[2], ids[1]]);
    const second = await service.request('GET', `/v1/tasks?limit=2&status=ok&cursor=${encodeURIComponent(first.body.nextCursor)}`);
    assert.equal(second.body.tasks[0].id, ids[0]);
    const byHost = await service.request('GET', '/v1/tasks?host=no-such-host');
    assert.deepEqual(byHost.body.tasks, []);
  });
});

describe('server-sent events', () => {
  test('stages, output chunks and the final result, in order', async () => {
    // A connection of its own, so that every stage shows (a pooled one skips connecting to auth).
    const r = await service.request('POST', '/v1/tasks', task('echo one; sleep 0.2; echo two >&2; sleep 0.2', { reuse: false }));
    const events = await readEvents(service.url, r.body.id);
    const kinds = events.map((e) => e.event);
    assert.equal(kinds[kinds.length - 1], 'result');
    const stages = events.filter((e) => e.event === 'stage').map((e) => e.data.stage);
    assert.deepEqual(stages, ['queued', 'connecting', 'handshake', 'auth', 'channel', 'running', 'closing']);
    const output = events.filter((e) => e.event === 'output');
    assert.deepEqual(output.map((e) => [e.data.stream, e.data.data]), [
      ['stdout', 'one\n'],
      ['stderr', 'two\n'],
    ]);
    const result = events[events.length - 1]!;
    assert.equal(result.id, 'result');
    assert.equal(result.data.status, 'ok');
    // Numbered ids, increasing.
    const numbers = events.slice(0, -1).map((e) => Number(e.id));
    assert.deepEqual(numbers, [...numbers].sort((a, b) => a - b));
  });

  test('resume with Last-Event-ID gets only what came after', async () => {
    const r = await service.request('POST', '/v1/tasks', task('echo a; sleep 0.5; echo b'));
    const head = await readEvents(service.url, r.body.id, { until: (e) => e.event === 'output' });
    const last = head[head.length - 1]!;
    assert.equal(last.data.data, 'a\n');
    const rest = await readEvents(service.url, r.body.id, { lastEventId: last.id! });
    assert.ok(rest.every((e) => e.id === 'result' || Number(e.id) > Number(last.id)));
    assert.deepEqual(rest.filter((e) => e.event === 'output').map((e) => e.data.data), ['b\n']);
    assert.equal(rest[rest.length - 1]!.event, 'result');
    const none = await readEvents(service.url, r.body.id, { lastEventId: 'result' });
    assert.deepEqual(none, []);
  });

  test('a finished task streams its stages and result', async () => {
    const r = await service.request('POST', '/v1/tasks', task('echo done', { wait: 20 }));
    const events = await readEvents(service.url, r.body.id);
    assert.equal(events[events.length - 1]!.data.result.stdout, 'done\n');
    assert.ok(events.filter((e) => e.event === 'stage').length >= 6);
  });
});

describe('cancel', () => {
  test('cancelling a running task kills the remote process and reports it; cancel again is the same', async () => {
    const marker = `604.${process.pid}${Date.now() % 10000}`;
    const r = await service.request('POST', '/v1/tasks', task(`sleep ${marker}`));
    await waitUntil('the remote sleep', () => remoteRunning(marker));
    const cancelled = await service.request('POST', `/v1/tasks/${r.body.id}/cancel`);
    assert.equal(cancelled.status, 200);
    assert.equal(cancelled.body.status, 'cancelled');
    assert.equal(cancelled.body.error.code, 'cancelled');
    assert.equal(cancelled.body.result.killConfirmed, true);
    assert.equal(remoteRunning(marker), false);
    const again = await service.request('POST', `/v1/tasks/${r.body.id}/cancel`);
    assert.deepEqual(again.body, cancelled.body);
  });

  test('cancelling an unknown task is 404', async () => {
    const r = await service.request('POST', '/v1/tasks/00000000-0000-0000-0000-000000000000/cancel');
    assert.equal(r.status, 404);
    assert.equal(r.body.error.code, 'not-found');
  });
});

describe('auth', () => {
  test('no token is 401, an unknown token is 401', async () => {
    for (const token of [null, 'not-a-real-token-at-all']) {
      const r = await service.request('GET', '/v1/tasks', undefined, { token });
      assert.equal(r.status, 401);
      assert.equal(r.body.error.code, 'unauthorized');
      assert.ok(!JSON.stringify(r.body).includes('not-a-real-token'));
    }
  });

  test('a read token reads but may not run or cancel (403)', async () => {
    assert.equal((await service.request('GET', '/v1/tasks', undefined, { token: READ_TOKEN })).status, 200);
    const run = await service.request('POST', '/v1/tasks', task('true'), { token: READ_TOKEN });
    assert.equal(run.status, 403);
    assert.match(run.body.error.message, /"run" scope/);
  });

  test('probes and the API docs need no token; metrics do', async () => {
    assert.equal((await service.request('GET', '/healthz', undefined, { token: null })).status, 200);
    assert.equal((await service.request('GET', '/readyz', undefined, { token: null })).status, 200);
    const openapi = await service.request('GET', '/openapi.json', undefined, { token: null });
    assert.equal(openapi.status, 200);
    // Generated from the schemas that validate requests: the same fields, the same rules.
    const body = openapi.body.paths['/v1/tasks'].post.requestBody.content['application/json'].schema;
    assert.equal(body.additionalProperties, false);
    assert.deepEqual(body.required, ['host', 'command']);
    assert.equal(body.properties.port.maximum, 65535);
    for (const route of ['/v1/tasks/{id}', '/v1/tasks/{id}/events', '/v1/tasks/{id}/cancel', '/v1/batches', '/v1/batches/{id}', '/v1/batches/{id}/cancel']) {
      assert.ok(openapi.body.paths[route], route);
    }
    assert.equal((await service.request('GET', '/docs/', undefined, { token: null })).status, 200);
    assert.equal((await service.request('GET', '/metrics', undefined, { token: null })).status, 401);
    const metrics = await service.request('GET', '/metrics', undefined, { token: READ_TOKEN });
    assert.equal(metrics.status, 200);
    assert.match(String(metrics.body), /^leash_tasks_started_total \d+$/m);
    assert.match(String(metrics.body), /^leash_tasks_in_flight\{stage="running"\} \d+$/m);
    assert.match(String(metrics.body), /^process_cpu_user_seconds_total /m);
  });
});

describe('bad input is a 4xx naming the problem', () => {
  const cases: Array<[string, unknown, number, RegExp, string | undefined]> = [
    ['a wrong type', { host: 'a', port: '22', command: 'x' }, 400, /body\.port: must be integer/, 'port'],
    ['an unknown field', { host: 'a', command: 'x', colour: 'blue' }, 400, /body\.colour: unknown field/, 'colour'],
    ['a missing field', { host: 'a' }, 400, /body\.command: required/, 'command'],
    ['a bad duration', { host: 'a', command: 'x', timeouts: { commandMs: -5 } }, 400, /body\.timeouts\.commandMs/, 'timeouts.commandMs'],
    ['a duration given as text', { host: 'a', command: 'x', timeouts: { commandMs: '10s' } }, 400, /body\.timeouts\.commandMs: must be integer/, 'timeouts.commandMs'],
    ['a bad host', { host: 'web[1-3]', command: 'x' }, 400, /give one host name/, 'host'],
    ['a malformed host', { host: 'bad host!', command: 'x' }, 400, /bad host/, 'host'],
    ['an unknown identity', { host: 'a', command: 'x', identity: 'nobody' }, 400, /unknown identity "nobody"/, 'identity'],
    ['a bad env name', { host: 'a', command: 'x', env: { 'BAD-NAME': '1' } }, 400, /body\.env/, 'env'],
    ['not JSON', '{"host":', 400, /JSON/, undefined],
  ];
  for (const [what, body, status, message, field] of cases) {
    test(what, async () => {
      const r = await service.request('POST', '/v1/tasks', body);
      assert.equal(r.status, status, JSON.stringify(r.body));
      assert.match(r.body.error.message, message);
      assert.equal(r.body.error.field, field);
    });
  }

  test('a body over the limit is 413', async () => {
    const r = await service.request('POST', '/v1/tasks', { host: 'a', command: 'x', stdin: 'y'.repeat(2 * 1024 * 1024) });
    assert.equal(r.status, 413);
    assert.equal(r.body.error.code, 'too-large');
  });

  test('a body that is not JSON is 415', async () => {
    const r = await service.request('POST', '/v1/tasks', 'host=a', { headers: { 'content-type': 'application/x-www-form-urlencoded' } });
    assert.equal(r.status, 415);
  });

  test('an unknown route is a JSON 404', async () => {
    const r = await service.request('GET', '/v1/nothing');
    assert.equal(r.status, 404);
    assert.equal(r.body.error.code, 'not-found');
  });

  test('nothing bad produced a 500', () => {
    assert.ok(!service.logs().some((l) => l.msg === 'request failed'), 'no request failed with a 500');
    void ADMIN_TOKEN;
  });
});
