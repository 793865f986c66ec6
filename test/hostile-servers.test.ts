// Checks that each hostile server (test/support/hostile-servers.ts) misbehaves exactly as
// advertised, using ssh2's own Client (not leash's client), and that close() leaves no
// socket, server or timer behind. Every wait has an explicit bound.
import assert from 'node:assert/strict';
import net from 'node:net';
import { test } from 'node:test';
import ssh2 from 'ssh2';
import { generateKeyPair } from '../src/ssh/ephemeral-keys.ts';
import type { ClientChannel, ConnectConfig, ExecOptions } from 'ssh2';
import { TEST_PASSWORD, TEST_USER, startHostileServer } from './support/hostile-servers.ts';
import type { HostileBehaviour, HostileServer, HostileServerOptions } from './support/hostile-servers.ts';

/** Generous bound on any single step that should happen "at once". */
const STEP_MS = 2_000;
/** How long we watch for something that must NOT happen. */
const QUIET_MS = 500;
const TEST_TIMEOUT = { timeout: 8_000 };
const TRACKED_RESOURCES = ['TCPSocketWrap', 'TCPServerWrap', 'Timeout', 'Immediate'];

// ---------------------------------------------------------------------------------------
// Helpers

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

async function eventually(check: () => boolean, ms: number, what: string): Promise<void> {
  const until = Date.now() + ms;
  while (!check()) {
    if (Date.now() > until) throw new Error(`${what}: not true within ${ms} ms`);
    await sleep(10);
  }
}

function resourceCounts(): Map<string, number> {
  const counts = new Map<string, number>();
  for (const kind of process.getActiveResourcesInfo()) counts.set(kind, (counts.get(kind) ?? 0) + 1);
  return counts;
}

function extraResources(before: Map<string, number>): string[] {
  const now = resourceCounts();
  return TRACKED_RESOURCES.filter((kind) => (now.get(kind) ?? 0) > (before.get(kind) ?? 0)).map(
    (kind) => `${kind}: ${before.get(kind) ?? 0} -> ${now.get(kind) ?? 0}`,
  );
}

/** ssh2 Client on our own TCP socket (so teardown can always destroy it), with everything observed. */
interface Probe {
  readonly client: ssh2.Client;
  readonly sock: net.Socket;
  readonly debug: string[];
  readonly errors: Error[];
  readonly handshake: Promise<void>;
  readonly ready: Promise<void>;
  readonly closed: Promise<void>;
  readonly firstError: Promise<Error>;
  sawHandshake: boolean;
  sawReady: boolean;
  sawClose: boolean;
  hostKeyOffered: Buffer | undefined;
}

interface Harness {
  readonly server: HostileServer;
  readonly open: (config?: Partial<ConnectConfig>, trace?: boolean) => Probe;
}

/**
 * Starts a server, runs `fn`, then: destroys every client socket, expects the server to notice
 * (openConnections() back to 0), closes the server, and expects no more sockets, servers,
 * timers or immediates than before it started.
 */
async function withServer(
  behaviour: HostileBehaviour,
  options: HostileServerOptions,
  fn: (h: Harness) => Promise<void>,
): Promise<void> {
  const before = resourceCounts();
  const server = await startHostileServer(behaviour, options);
  const probes: Probe[] = [];
  const open = (config: Partial<ConnectConfig> = {}, trace = false): Probe => {
    const probe = connectProbe(server, config, trace);
    probes.push(probe);
    return probe;
  };
  try {
    await fn({ server, open });
    for (const probe of probes) {
      probe.client.end();
      probe.sock.destroy();
    }
    await eventually(() => server.openConnections() === 0, STEP_MS, 'server notices every client leaving');
  } finally {
    for (const probe of probes) probe.sock.destroy();
    await within(server.close(), 3_000, 'server.close()');
  }
  assert.equal(server.openConnections(), 0);
  await within(Promise.all(probes.map((p) => p.closed)), STEP_MS, 'clients closed');
  const until = Date.now() + 1_000;
  while (extraResources(before).length > 0 && Date.now() < until) await sleep(20);
  assert.deepEqual(extraResources(before), [], 'no handle of the server or its clients remains');
}

function connectProbe(server: HostileServer, config: Partial<ConnectConfig>, trace: boolean): Probe {
  const sock = net.connect({ host: server.host, port: server.port });
  sock.on('error', () => {});
  const client = new ssh2.Client();
  const debug: string[] = [];
  const errors: Error[] = [];
  let onError: (err: Error) => void = () => {};
  const probe: Probe = {
    client,
    sock,
    debug,
    errors,
    handshake: new Promise((resolve) => client.once('handshake', () => resolve())),
    ready: new Promise((resolve) => client.once('ready', () => resolve())),
    closed: new Promise((resolve) => client.once('close', () => resolve())),
    firstError: new Promise((resolve) => {
      onError = resolve;
    }),
    sawHandshake: false,
    sawReady: false,
    sawClose: false,
    hostKeyOffered: undefined,
  };
  client.on('error', (err: Error) => {
    errors.push(err);
    onError(err);
  });
  client.on('handshake', () => {
    probe.sawHandshake = true;
  });
  client.on('ready', () => {
    probe.sawReady = true;
  });
  client.on('close', () => {
    probe.sawClose = true;
  });
  client.connect({
    sock,
    username: TEST_USER,
    password: TEST_PASSWORD,
    readyTimeout: 5_000,
    hostVerifier: (key: Buffer) => {
      probe.hostKeyOffered = key;
      return key.equals(server.hostKey);
    },
    ...(trace ? { debug: (line: string) => void (debug.length < 500 && debug.push(line)) } : {}),
    ...config,
  });
  return probe;
}

async function readyProbe(h: Harness, config: Partial<ConnectConfig> = {}): Promise<Probe> {
  const probe = h.open(config);
  await within(Promise.race([probe.ready, probe.firstError.then((e) => Promise.reject(e))]), STEP_MS, 'ready');
  return probe;
}

interface Run {
  readonly stream: ClientChannel;
  stdout: Buffer[];
  stderr: Buffer[];
  stdoutBytes: number;
  stderrBytes: number;
  exit: { code: number | null; signal?: string } | undefined;
  closed: boolean;
  readonly close: Promise<void>;
}

function exec(probe: Probe, command: string, options: ExecOptions = {}): Promise<Run> {
  return within(
    new Promise<Run>((resolve, reject) => {
      probe.client.exec(command, options, (err, stream) => {
        if (err) return reject(err);
        stream.on('error', () => {});
        stream.stderr.on('error', () => {});
        const run: Run = {
          stream,
          stdout: [],
          stderr: [],
          stdoutBytes: 0,
          stderrBytes: 0,
          exit: undefined,
          closed: false,
          close: new Promise((done) => stream.once('close', () => done())),
        };
        stream.on('data', (chunk: Buffer) => {
          run.stdoutBytes += chunk.length;
          if (run.stdout.length < 64) run.stdout.push(chunk);
        });
        stream.stderr.on('data', (chunk: Buffer) => {
          run.stderrBytes += chunk.length;
          if (run.stderr.length < 64) run.stderr.push(chunk);
        });
        stream.on('exit', (code: number | null, signal?: string) => {
          run.exit = signal === undefined ? { code } : { code, signal };
        });
        stream.once('close', () => {
          run.closed = true;
        });
        resolve(run);
      });
    }),
    STEP_MS,
    `exec ${command}`,
  );
}

function text(chunks: Buffer[]): string {
  return Buffer.concat(chunks).toString('utf8');
}

// ---------------------------------------------------------------------------------------
// Before the handshake

void test('silent-tcp: accepts TCP, never sends a byte', TEST_TIMEOUT, async () => {
  await withServer('silent-tcp', {}, async ({ server, open }) => {
    const probe = open({ readyTimeout: 900 }, true);
    const ident = await server.waitFor('client-ident', STEP_MS);
    assert.match(ident.detail ?? '', /^SSH-2\.0-/);
    await sleep(QUIET_MS);
    assert.equal(probe.sawHandshake, false);
    assert.equal(probe.debug.some((l) => l.startsWith('Remote ident')), false, 'the client never saw a server ident');
    assert.equal(server.saw('client-kexinit'), false, 'the client waits for our ident before its KEXINIT');
    assert.equal(server.openConnections(), 1);
    const err = await within(probe.firstError, STEP_MS, 'ssh2 readyTimeout');
    assert.match(err.message, /Timed out while waiting for handshake/);
  });
});

void test('banner-then-silent: sends its ident, then nothing', TEST_TIMEOUT, async () => {
  await withServer('banner-then-silent', {}, async ({ server, open }) => {
    const probe = open({ readyTimeout: 900 }, true);
    await server.waitFor('client-kexinit', STEP_MS);
    await sleep(QUIET_MS);
    assert.ok(probe.debug.includes("Remote ident: 'SSH-2.0-hostile'"), probe.debug.join('\n'));
    assert.equal(probe.debug.includes('Inbound: Handshake in progress'), false, 'no server KEXINIT');
    assert.equal(probe.sawHandshake, false);
    const err = await within(probe.firstError, STEP_MS, 'ssh2 readyTimeout');
    assert.match(err.message, /Timed out while waiting for handshake/);
  });
});

void test('stall-mid-kex: sends ident and KEXINIT, never answers the key exchange', TEST_TIMEOUT, async () => {
  await withServer('stall-mid-kex', {}, async ({ server, open }) => {
    const probe = open({ readyTimeout: 900 }, true);
    await server.waitFor('client-kex-init', STEP_MS);
    assert.ok(server.saw('client-kexinit'));
    assert.ok(server.saw('server-kexinit-sent'));
    await sleep(QUIET_MS);
    assert.ok(probe.debug.includes('Inbound: Handshake in progress'), 'the client accepted our KEXINIT');
    assert.ok(probe.debug.some((l) => /^Outbound: Sending KEX(ECDH|DH)_INIT/.test(l)), probe.debug.join('\n'));
    assert.equal(probe.sawHandshake, false);
    assert.equal(probe.hostKeyOffered, undefined, 'no host key is ever shown');
    const err = await within(probe.firstError, STEP_MS, 'ssh2 readyTimeout');
    assert.match(err.message, /Timed out while waiting for handshake/);
  });
});

void test('never-answers-auth: completes the handshake, never answers authentication', TEST_TIMEOUT, async () => {
  await withServer('never-answers-auth', {}, async ({ server, open }) => {
    const probe = open({ readyTimeout: 5_000 });
    await within(probe.handshake, STEP_MS, 'handshake');
    assert.ok(probe.hostKeyOffered?.equals(server.hostKey), 'the host key is the advertised one');
    await server.waitFor('auth-ignored', STEP_MS);
    await sleep(QUIET_MS);
    assert.equal(probe.sawReady, false);
    assert.deepEqual(probe.errors, []);
    assert.equal(server.saw('auth-rejected'), false);
    assert.equal(server.saw('auth-accepted'), false);
  });
});

// ---------------------------------------------------------------------------------------
// After authentication

void test('exec-never-ends: accepts exec, never writes, exits or closes, ignores signals', TEST_TIMEOUT, async () => {
  await withServer('exec-never-ends', {}, async ({ server, open }) => {
    const probe = await readyProbe({ server, open });
    const run = await exec(probe, 'anything at all');
    assert.equal((await server.waitFor('exec', STEP_MS)).detail, 'anything at all');
    run.stream.write('stdin is read and discarded\n');
    await sleep(QUIET_MS);
    assert.equal(run.stdoutBytes + run.stderrBytes, 0);
    assert.equal(run.exit, undefined);
    assert.equal(run.closed, false);
    run.stream.signal('TERM');
    await server.waitFor('signal', STEP_MS);
    await sleep(200);
    assert.equal(run.exit, undefined, 'a signal changes nothing');
    assert.equal(run.closed, false);
    // The client can still close the channel itself.
    run.stream.close();
    await within(run.close, STEP_MS, 'channel close');
    await server.waitFor('channel-close', STEP_MS);
  });
});

void test('endless-output: streams stdout and stderr forever, respecting backpressure', TEST_TIMEOUT, async () => {
  await withServer('endless-output', {}, async ({ server, open }) => {
    const probe = await readyProbe({ server, open });
    const run = await exec(probe, 'yes');
    await eventually(() => run.stdoutBytes > 4 * 1024 * 1024 && run.stderrBytes > 0, STEP_MS, 'MiBs of stdout and some stderr');
    assert.match(text(run.stderr), /^endless-output: stderr\n/);
    // Stop reading at the TCP level: no more window adjusts reach the server, its window runs
    // out, its writes back up and it waits for 'drain'. (Pausing the ssh2 channel streams is no
    // test: ssh2's client keeps adjusting the shared window whenever stderr is below its mark.)
    probe.sock.pause();
    await server.waitFor('output-blocked', STEP_MS);
    await sleep(100);
    const whilePaused = run.stdoutBytes;
    const producedBefore = server.outputBytes();
    await sleep(200);
    assert.equal(run.stdoutBytes, whilePaused, 'nothing is delivered while paused');
    assert.equal(server.outputBytes(), producedBefore, 'the server stopped producing: it waits for drain');
    probe.sock.resume();
    await eventually(() => run.stdoutBytes > whilePaused + 4 * 1024 * 1024, STEP_MS, 'output resumes');
    assert.equal(run.exit, undefined);
    assert.equal(run.closed, false);
  });
});

void test('drip-feed: one byte per second', TEST_TIMEOUT, async () => {
  await withServer('drip-feed', {}, async ({ server, open }) => {
    const probe = await readyProbe({ server, open });
    const run = await exec(probe, 'drip');
    const arrivals: number[] = [];
    run.stream.on('data', () => arrivals.push(Date.now()));
    await eventually(() => arrivals.length >= 1, STEP_MS, 'first byte');
    await sleep(1_600);
    assert.equal(text(run.stdout), '..', `two bytes in 1.6 s, got ${JSON.stringify(text(run.stdout))}`);
    const [first = 0, second = 0] = arrivals;
    assert.ok(second - first >= 900 && second - first <= 1_500, `gap ${second - first} ms`);
    assert.equal(run.exit, undefined);
    assert.equal(run.closed, false);
  });
});

void test('drip-feed: dripIntervalMs shortens the interval', TEST_TIMEOUT, async () => {
  await withServer('drip-feed', { dripIntervalMs: 50 }, async ({ server, open }) => {
    const probe = await readyProbe({ server, open });
    const run = await exec(probe, 'drip');
    await eventually(() => run.stdoutBytes >= 5, STEP_MS, 'five bytes');
    assert.match(text(run.stdout), /^\.+$/);
  });
});

void test('close-mid-stream: 64 KiB of output, then the socket dies without exit or channel close', TEST_TIMEOUT, async () => {
  await withServer('close-mid-stream', {}, async ({ server, open }) => {
    const probe = await readyProbe({ server, open });
    const run = await exec(probe, 'stream');
    await within(probe.closed, STEP_MS, 'client close');
    await within(run.close, STEP_MS, 'channel close (from the client library, on socket close)');
    assert.equal(run.stdoutBytes, 64 * 1024);
    assert.equal(server.outputBytes(), 64 * 1024);
    assert.equal(run.exit, undefined, 'no exit status');
    assert.equal((await server.waitFor('socket-destroyed', STEP_MS)).detail, 'fin');
    assert.equal(server.saw('exit-sent'), false);
  });
});

void test('close-mid-stream: closeWith rst resets the connection', TEST_TIMEOUT, async () => {
  await withServer('close-mid-stream', { closeAfterBytes: 1000, closeWith: 'rst' }, async ({ server, open }) => {
    const probe = await readyProbe({ server, open });
    const run = await exec(probe, 'stream');
    await within(probe.closed, STEP_MS, 'client close');
    assert.ok(run.stdoutBytes <= 1000);
    assert.equal(run.exit, undefined);
    assert.equal((await server.waitFor('socket-destroyed', STEP_MS)).detail, 'rst');
  });
});

void test('refuse-channel: auth succeeds, every session channel is refused (reason 2, like MaxSessions)', TEST_TIMEOUT, async () => {
  await withServer('refuse-channel', {}, async ({ server, open }) => {
    const probe = await readyProbe({ server, open });
    for (let i = 0; i < 2; i++) {
      const err = await exec(probe, 'true').then(
        () => assert.fail('exec must fail'),
        (e: unknown) => e as Error & { reason?: unknown },
      );
      assert.match(err.message, /Channel open failure/);
      assert.equal(err.reason, 2);
    }
    assert.equal(server.events().filter((e) => e.name === 'session-refused').length, 2);
    assert.equal(probe.sawClose, false, 'the connection itself stays up');
  });
});

void test('silent-after-auth: goes silent after auth, keepalives go unanswered', TEST_TIMEOUT, async () => {
  await withServer('silent-after-auth', {}, async ({ server, open }) => {
    const probe = await readyProbe({ server, open }, { keepaliveInterval: 200, keepaliveCountMax: 2 });
    await server.waitFor('silent', STEP_MS);
    const started = Date.now();
    const err = await within(probe.firstError, STEP_MS, 'keepalive timeout');
    assert.match(err.message, /Keepalive timeout/);
    assert.ok(Date.now() - started >= 400, 'not before two unanswered keepalives');
    await within(probe.closed, STEP_MS, 'client close');
  });
});

void test('close() destroys live connections and leaves nothing behind', TEST_TIMEOUT, async () => {
  const before = resourceCounts();
  const silent = await startHostileServer('silent-tcp');
  const busy = await startHostileServer('exec-never-ends');
  const a = connectProbe(silent, {}, false);
  const b = connectProbe(busy, {}, false);
  try {
    await silent.waitFor('client-ident', STEP_MS);
    await within(b.ready, STEP_MS, 'ready');
    const run = await exec(b, 'hang');
    await busy.waitFor('exec', STEP_MS);
    assert.equal(silent.openConnections(), 1);
    assert.equal(busy.openConnections(), 1);
    await within(Promise.all([silent.close(), busy.close()]), 3_000, 'close()');
    assert.equal(silent.openConnections(), 0);
    assert.equal(busy.openConnections(), 0);
    await within(Promise.all([a.closed, b.closed, run.close]), STEP_MS, 'clients see the close');
    assert.equal(run.exit, undefined);
    await assert.rejects(silent.waitFor('handshake', 100), /closed/);
    assert.equal(silent.close(), silent.close(), 'idempotent');
  } finally {
    a.sock.destroy();
    b.sock.destroy();
    await Promise.all([silent.close(), busy.close()]);
  }
  const until = Date.now() + 1_000;
  while (extraResources(before).length > 0 && Date.now() < until) await sleep(20);
  assert.deepEqual(extraResources(before), []);
});

// ---------------------------------------------------------------------------------------
// cooperative

void test('cooperative: password auth, echo/stderr/exit', TEST_TIMEOUT, async () => {
  await withServer('cooperative', {}, async (h) => {
    const probe = await readyProbe(h);
    const run = await exec(probe, 'echo hello world; stderr oops; exit 3');
    await within(run.close, STEP_MS, 'close');
    assert.equal(text(run.stdout), 'hello world\n');
    assert.equal(text(run.stderr), 'oops\n');
    assert.deepEqual(run.exit, { code: 3 });
    assert.ok(h.server.saw('exit-sent', 'status 3'));
  });
});

void test('cooperative: cat echoes stdin until EOF; env NAME; unknown command', TEST_TIMEOUT, async () => {
  await withServer('cooperative', {}, async (h) => {
    const probe = await readyProbe(h);
    const cat = await exec(probe, 'cat');
    cat.stream.write('line one\n');
    cat.stream.end('line two\n');
    await within(cat.close, STEP_MS, 'cat close');
    assert.equal(text(cat.stdout), 'line one\nline two\n');
    assert.deepEqual(cat.exit, { code: 0 });

    const env = await exec(probe, 'env GREETING; env MISSING', { env: { GREETING: 'hi there' } });
    await within(env.close, STEP_MS, 'env close');
    assert.equal(text(env.stdout), 'hi there\n');
    assert.deepEqual(env.exit, { code: 1 });

    const unknown = await exec(probe, 'frobnicate');
    await within(unknown.close, STEP_MS, 'unknown close');
    assert.match(text(unknown.stderr), /frobnicate: command not found/);
    assert.deepEqual(unknown.exit, { code: 127 });
  });
});

void test('cooperative: a signal stops sleep and is reported as exit-signal', TEST_TIMEOUT, async () => {
  await withServer('cooperative', {}, async (h) => {
    const probe = await readyProbe(h);
    const run = await exec(probe, 'echo start; sleep 30; echo never');
    await eventually(() => run.stdoutBytes > 0, STEP_MS, 'start');
    run.stream.signal('TERM');
    await within(run.close, STEP_MS, 'close after signal');
    assert.equal(text(run.stdout), 'start\n');
    assert.deepEqual(run.exit, { code: null, signal: 'SIGTERM' });
  });
});

void test('cooperative: wrong password and wrong user are rejected', TEST_TIMEOUT, async () => {
  await withServer('cooperative', {}, async ({ server, open }) => {
    for (const config of [{ password: 'wrong' }, { username: 'mallory' }]) {
      const probe = open(config);
      const err = await within(probe.firstError, STEP_MS, 'auth failure');
      assert.match(err.message, /All configured authentication methods failed/);
      assert.equal(probe.sawReady, false);
    }
    assert.ok(server.saw('auth-rejected', 'password'));
    assert.equal(server.saw('auth-accepted'), false);
  });
});

void test('cooperative: public key auth for authorized keys only', TEST_TIMEOUT, async () => {
  const good = generateKeyPair('ed25519');
  const other = generateKeyPair('ed25519');
  const authorized = `${good.publicKey.type} ${good.publicKey.getPublicSSH().toString('base64')}`;
  await withServer('cooperative', { authorizedKeys: [authorized] }, async (h) => {
    const ok = await readyProbe(h, { password: undefined, privateKey: good.privateKey });
    const run = await exec(ok, 'echo key');
    await within(run.close, STEP_MS, 'close');
    assert.equal(text(run.stdout), 'key\n');

    const refused = h.open({ password: undefined, privateKey: other.privateKey });
    const err = await within(refused.firstError, STEP_MS, 'auth failure');
    assert.match(err.message, /All configured authentication methods failed/);
    assert.ok(h.server.saw('auth-rejected', 'publickey'));
  });
});

void test('hostile servers accept any password or any (verified) public key', TEST_TIMEOUT, async () => {
  const key = generateKeyPair('ed25519');
  await withServer('exec-never-ends', {}, async (h) => {
    await readyProbe(h, { username: 'anyone', password: 'anything' });
    await readyProbe(h, { username: 'anyone', password: undefined, privateKey: key.privateKey });
    assert.equal(h.server.events().filter((e) => e.name === 'auth-accepted').length, 2);
    assert.equal(h.server.acceptedConnections(), 2);
    assert.match(h.server.knownHostsLine, new RegExp(`^\\[127\\.0\\.0\\.1\\]:${h.server.port} ssh-ed25519 [A-Za-z0-9+/=]+$`));
  });
});
