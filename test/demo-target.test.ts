import assert from 'node:assert/strict';
import { realpathSync } from 'node:fs';
import net from 'node:net';
import { homedir } from 'node:os';
import { test } from 'node:test';
import ssh2 from 'ssh2';
import { generateKeyPair } from '../src/ssh/ephemeral-keys.ts';
import type { Client, ClientChannel } from 'ssh2';
import { ResourceLedger } from '../src/lifecycle/ledger.ts';
import { startDemoTarget, type DemoTarget } from '../src/ssh/demo-target.ts';

const STEP_MS = 5_000;

interface Outcome {
  stdout: string;
  stderr: string;
  code: number | null | undefined;
  signal: string | undefined;
}

/** Runs `fn` against a fresh target on a private ledger; always closes it and checks the ledger. */
async function withTarget(fn: (target: DemoTarget, ledger: ResourceLedger) => Promise<void>): Promise<void> {
  const ledger = new ResourceLedger();
  const target = await startDemoTarget({ ledger, owner: 'demo-test' });
  try {
    await fn(target, ledger);
  } finally {
    await within(target.close(), 3_000, 'close()');
  }
  assert.deepEqual(ledger.ownedBy('demo-test').map((e) => `${e.kind}#${e.id} ${JSON.stringify(e.attrs)}`), []);
}

function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no result within ${ms} ms`)), ms);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

async function connect(target: DemoTarget, opts: { privateKey?: string; username?: string } = {}): Promise<Client> {
  const client = new ssh2.Client();
  const ready = new Promise<Client>((resolve, reject) => {
    client.once('ready', () => resolve(client));
    client.once('error', reject);
  });
  client.on('error', () => {}); // late errors must not crash the test process
  client.connect({
    host: target.host,
    port: target.port,
    username: opts.username ?? target.user,
    privateKey: opts.privateKey ?? target.clientPrivateKey,
    hostVerifier: (key: Buffer) => key.equals(target.hostKeyBlob),
    readyTimeout: STEP_MS,
  });
  try {
    return await within(ready, STEP_MS, 'connect');
  } catch (err) {
    client.destroy();
    throw err;
  }
}

function exec(client: Client, command: string, env?: Record<string, string>): Promise<ClientChannel> {
  return within(
    new Promise((resolve, reject) => {
      client.exec(command, env ? { env } : {}, (err, channel) => (err ? reject(err) : resolve(channel)));
    }),
    STEP_MS,
    `exec ${command}`,
  );
}

/** Collects output and the exit status until the channel closes. */
function outcome(channel: ClientChannel): Promise<Outcome> {
  const result: Outcome = { stdout: '', stderr: '', code: undefined, signal: undefined };
  channel.on('data', (d: Buffer) => (result.stdout += d.toString()));
  channel.stderr.on('data', (d: Buffer) => (result.stderr += d.toString()));
  channel.on('exit', (code: number | null, signal?: string) => {
    result.code = code;
    result.signal = signal;
  });
  return within(
    new Promise((resolve) => channel.once('close', () => resolve(result))),
    STEP_MS,
    'channel close',
  );
}

/** The first stdout line (the shell's `$$`), leaving the channel flowing. */
function firstLine(channel: ClientChannel): Promise<string> {
  let text = '';
  return within(
    new Promise((resolve) => {
      const onData = (d: Buffer): void => {
        text += d.toString();
        const nl = text.indexOf('\n');
        if (nl >= 0) {
          channel.off('data', onData);
          channel.resume();
          resolve(text.slice(0, nl));
        }
      };
      channel.on('data', onData);
    }),
    STEP_MS,
    'first line',
  );
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    assert.equal((err as NodeJS.ErrnoException).code, 'ESRCH');
    return false;
  }
}

async function waitGone(pid: number, ms = 3_000): Promise<void> {
  const until = Date.now() + ms;
  while (alive(pid)) {
    if (Date.now() > until) assert.fail(`process ${pid} still alive after ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

void test('exec reports stdout, stderr and the exit status', { timeout: 15_000 }, async () => {
  await withTarget(async (target) => {
    assert.equal(target.host, '127.0.0.1');
    assert.match(target.knownHostsLine, new RegExp(`^\\[127\\.0\\.0\\.1\\]:${target.port} ssh-ed25519 ${target.hostKeyBlob.toString('base64').replace(/[+/]/g, '\\$&')}$`));
    assert.ok(!JSON.stringify(target).includes('PRIVATE KEY'), 'the key is not serialised');
    const client = await connect(target);
    try {
      const result = await outcome(await exec(client, 'echo hello; echo err >&2; exit 3'));
      assert.deepEqual(result, { stdout: 'hello\n', stderr: 'err\n', code: 3, signal: undefined });
    } finally {
      client.end();
    }
  });
});

void test('stdin reaches the command and EOF ends it; env requests reach its environment', { timeout: 15_000 }, async () => {
  await withTarget(async (target) => {
    const client = await connect(target);
    try {
      const channel = await exec(client, 'cat');
      const done = outcome(channel);
      channel.write('line one\n');
      channel.end('line two\n');
      assert.deepEqual(await done, { stdout: 'line one\nline two\n', stderr: '', code: 0, signal: undefined });

      const env = await outcome(await exec(client, 'printf "%s|%s|%s" "$LEASH_DEMO" "$USER" "$PWD"', { LEASH_DEMO: 'yes' }));
      assert.equal(env.stdout, `yes|${target.user}|${realpathSync(homedir())}`);
      assert.equal(env.code, 0);
    } finally {
      client.end();
    }
  });
});

void test('large output arrives whole (backpressure both ways)', { timeout: 15_000 }, async () => {
  await withTarget(async (target) => {
    const client = await connect(target);
    try {
      // 8 MiB through `cat`: more than the channel windows, so both directions must pause.
      const channel = await exec(client, 'cat');
      let received = 0;
      channel.on('data', (d: Buffer) => (received += d.length));
      const done = outcome(channel);
      const chunk = Buffer.alloc(64 * 1024, 'x');
      for (let i = 0; i < 128; i++) {
        if (!channel.write(chunk)) await within(new Promise((r) => channel.once('drain', r)), STEP_MS, 'drain');
      }
      channel.end();
      const result = await done;
      assert.equal(result.code, 0);
      assert.equal(received, 128 * 64 * 1024);
    } finally {
      client.end();
    }
  });
});

void test('a client that does not read holds the command back instead of filling memory', { timeout: 15_000 }, async () => {
  await withTarget(async (target) => {
    const client = await connect(target);
    try {
      // 20 MB is far beyond every window and buffer on the way: the child must block writing.
      const channel = await exec(client, 'echo $$ >&2; exec head -c 20000000 /dev/zero');
      channel.pause();
      const pid = await within(
        new Promise<number>((resolve) => channel.stderr.once('data', (d: Buffer) => resolve(Number(d.toString().trim())))),
        STEP_MS,
        'pid',
      );
      await new Promise((r) => setTimeout(r, 300));
      assert.ok(alive(pid), 'the child is blocked on its full pipe');
      let received = 0;
      channel.on('data', (d: Buffer) => (received += d.length));
      const done = outcome(channel);
      channel.resume();
      const result = await done;
      assert.equal(result.code, 0);
      assert.equal(received, 20_000_000);
    } finally {
      client.end();
    }
  });
});

void test('a KILL signal request kills the command and is reported as its exit signal', { timeout: 15_000 }, async () => {
  await withTarget(async (target, ledger) => {
    const client = await connect(target);
    try {
      const channel = await exec(client, 'echo $$; exec sleep 30');
      const pid = Number(await firstLine(channel));
      assert.ok(pid > 0 && alive(pid));
      assert.equal(ledger.liveCount('child-process'), 1);
      const done = outcome(channel);
      channel.signal('KILL');
      channel.end();
      const result = await done;
      assert.equal(result.code, null);
      assert.equal(result.signal, 'SIGKILL');
      await waitGone(pid);
      assert.equal(ledger.liveCount('child-process'), 0);
    } finally {
      client.end();
    }
  });
});

void test('a client that disconnects takes its command with it', { timeout: 15_000 }, async () => {
  await withTarget(async (target, ledger) => {
    const client = await connect(target);
    // The shell and its background job: the whole process group must go.
    const channel = await exec(client, 'sleep 30 & echo $$ $!; wait');
    const pids = (await firstLine(channel)).split(' ').map(Number);
    assert.equal(pids.length, 2);
    for (const pid of pids) assert.ok(alive(pid));
    client.end();
    for (const pid of pids) await waitGone(pid);
    const until = Date.now() + 2_000;
    while (ledger.liveCount() > 1 && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(ledger.live().map((e) => e.kind), ['server'], 'socket and child released');
  });
});

void test('only the client key, for the current user, is accepted', { timeout: 15_000 }, async () => {
  await withTarget(async (target) => {
    const other = generateKeyPair('ed25519');
    await assert.rejects(connect(target, { privateKey: other.privateKey }), { level: 'client-authentication' });
    await assert.rejects(connect(target, { username: `not-${target.user}` }), { level: 'client-authentication' });
  });
});

void test('shell and pty are refused, and at most 10 sessions per connection', { timeout: 15_000 }, async () => {
  await withTarget(async (target) => {
    const client = await connect(target);
    try {
      await assert.rejects(within(new Promise((resolve, reject) => client.shell((err, ch) => (err ? reject(err) : resolve(ch)))), STEP_MS, 'shell'));
      await assert.rejects(
        within(new Promise((resolve, reject) => client.exec('true', { pty: true }, (err, ch) => (err ? reject(err) : resolve(ch)))), STEP_MS, 'pty'),
      );
      const open: ClientChannel[] = [];
      for (let i = 0; i < 10; i++) open.push(await exec(client, 'cat'));
      await assert.rejects(exec(client, 'true'), /open failure|prohibited|resource/i);
      const ends = open.map((ch) => outcome(ch));
      for (const ch of open) ch.end();
      for (const r of await Promise.all(ends)) assert.equal(r.code, 0);
      assert.equal((await outcome(await exec(client, 'echo again'))).stdout, 'again\n', 'a freed session slot is reusable');
    } finally {
      client.end();
    }
  });
});

void test('close() kills running commands, releases everything and stops listening', { timeout: 15_000 }, async () => {
  const ledger = new ResourceLedger();
  const target = await startDemoTarget({ ledger, owner: 'demo-close' });
  const client = await connect(target);
  const pid = Number(await firstLine(await exec(client, 'echo $$; exec sleep 30')));
  // A second, silent connection that never gets past TCP.
  const silent = net.connect(target.port, '127.0.0.1');
  silent.on('error', () => {});
  await within(new Promise((r) => silent.once('connect', r)), STEP_MS, 'tcp connect');
  assert.ok(ledger.ownedBy('demo-close').length >= 4, 'server, two sockets, a child');

  const started = Date.now();
  await within(target.close(), 3_000, 'close()');
  assert.ok(Date.now() - started < 2_500, 'close() is bounded');
  assert.deepEqual(ledger.ownedBy('demo-close'), []);
  await waitGone(pid, 1_000);
  await target.close(); // idempotent

  await assert.rejects(
    within(
      new Promise((resolve, reject) => {
        const s = net.connect(target.port, '127.0.0.1', () => {
          s.destroy();
          resolve(undefined);
        });
        s.once('error', reject);
      }),
      STEP_MS,
      'connect after close',
    ),
    { code: 'ECONNREFUSED' },
  );
  client.end();
  silent.destroy();
});
