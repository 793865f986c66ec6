// `leash serve` as a real child process (issue "leash serve": Persistence and lifecycle,
// Security, Tests; DESIGN.md invariant 4 "Nothing lost"): history survives a restart, a
// `kill -9` leaves its task `interrupted` (never a phantom `running`), SIGTERM drains while
// the API still answers, no secret reaches the data directory or the logs, and a newcomer's
// `npm start` plus the curl it prints works.
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { createPrivateKey, createPublicKey, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { after, afterEach, before, describe, test } from 'node:test';
import ssh2 from 'ssh2';
import { assertNothingAlive } from './support/assert-clean.ts';
import { childEnv, groupAlive, killStartedProcesses, REPO_ROOT, startedAlive, startProcess, startServe, type ServeProcess } from './support/serve-process.ts';
import { ADMIN_TOKEN, apiRequest, testConfigYaml } from './support/service.ts';
import { isAlive, startSshd, type Sshd } from './support/sshd.ts';

const execFileAsync = promisify(execFile);

let sshd: Sshd;
/** Temp dirs of the current test, removed after it. */
const dirs: string[] = [];
/** Remote `sleep MARKER` processes a test may leave orphaned: killed in its cleanup (if still that sleep). */
const orphans: Array<{ pid: number; mark: string }> = [];

before(async () => {
  sshd = await startSshd();
});
afterEach(async () => {
  await killStartedProcesses();
  for (const { pid, mark } of orphans.splice(0)) if (remoteSleeps(mark).includes(pid)) killQuietly(pid);
  for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
});
after(async () => {
  await killStartedProcesses();
  await sshd?.stop();
  assert.equal(startedAlive(), 0, 'every child process has exited');
  await assertNothingAlive();
});

// ---------------------------------------------------------------------------------------
// Helpers

let markerSeq = 0;
/** A unique `sleep` argument whose process pgrep can find on the sshd's side. */
function marker(): string {
  markerSeq++;
  return `600.${process.pid}${String(markerSeq).padStart(3, '0')}`;
}

/** PIDs of `sleep MARKER` processes (the remote command, run by the sshd as our user). */
function remoteSleeps(mark: string): number[] {
  try {
    return execFileSync('pgrep', ['-f', `^sleep ${mark.replaceAll('.', '\\.')}$`], { encoding: 'utf8' })
      .split('\n')
      .filter((l) => l.trim() !== '')
      .map(Number);
  } catch {
    return [];
  }
}

function killQuietly(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // gone
  }
}

async function waitUntil(what: string, check: () => boolean | Promise<boolean>, ms = 20_000): Promise<void> {
  const until = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function tempDir(prefix: string): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
  dirs.push(dir);
  return dir;
}

/** A test's layout: the config file and HOME outside the data directory, so a scan of the data dir sees only what leash wrote. */
interface Layout {
  readonly root: string;
  readonly dataDir: string;
  readonly home: string;
  readonly configPath: string;
}

async function layout(extra: Record<string, unknown> = {}): Promise<Layout> {
  const root = await tempDir('leash-serve-proc-');
  const dataDir = path.join(root, 'data');
  const home = path.join(root, 'home');
  await mkdir(home);
  const configPath = path.join(root, 'leash.yaml');
  await writeFile(configPath, testConfigYaml(sshd, dataDir, extra));
  return { root, dataDir, home, configPath };
}

function serve(l: Layout, env: Record<string, string> = {}): Promise<ServeProcess> {
  return startServe(['--config', l.configPath], childEnv(l.home, env));
}

const task = (command: string, extra: Record<string, unknown> = {}) => ({ host: '127.0.0.1', port: sshd.port, command, ...extra });

async function getTask(base: string, id: string, token = ADMIN_TOKEN): Promise<any> {
  const r = await apiRequest(base, 'GET', `/v1/tasks/${id}`, undefined, { token });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body;
}

async function waitForStatus(base: string, id: string, status: string, token = ADMIN_TOKEN): Promise<any> {
  let last: any = null;
  await waitUntil(`task ${id} to be ${status}`, async () => {
    last = await getTask(base, id, token);
    return last.status === status;
  });
  return last;
}

/** Status `running` covers every stage past `queued`; this waits for the command itself to run. */
async function waitForRunningStage(base: string, id: string): Promise<any> {
  let last: any = null;
  await waitUntil(`task ${id} to reach stage running`, async () => {
    last = await getTask(base, id);
    if (last.status !== 'queued' && last.status !== 'running') throw new Error(`task ended early: ${JSON.stringify(last)}`);
    return last.status === 'running' && last.stage === 'running';
  });
  return last;
}

// ---------------------------------------------------------------------------------------

describe('restart', () => {
  test('restart keeps history: a finished task reads the same from the next process', async () => {
    const l = await layout();
    const first = await serve(l);
    const r = await apiRequest(first.url, 'POST', '/v1/tasks', task('echo kept; echo err >&2', { wait: 30 }));
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.status, 'ok');
    assert.equal(r.body.result.stdout, 'kept\n');
    const before = await getTask(first.url, r.body.id);

    const exit = await first.stop('SIGTERM');
    assert.deepEqual(exit, { code: 0, signal: null }, first.stderr());
    assert.match(first.stderr(), /SIGTERM: draining/);

    const second = await serve(l);
    try {
      const afterRestart = await getTask(second.url, r.body.id);
      assert.deepEqual(afterRestart, before);
      const list = await apiRequest(second.url, 'GET', '/v1/tasks');
      assert.deepEqual(
        list.body.tasks.map((t: { id: string }) => t.id),
        [r.body.id],
      );
    } finally {
      assert.deepEqual(await second.stop('SIGTERM'), { code: 0, signal: null }, second.stderr());
    }
  });

  test('kill -9 during a running task: the next process shows it interrupted, with a reason, and stops its orphaned remote process', async () => {
    const l = await layout();
    const first = await serve(l);
    const mark = marker();
    const r = await apiRequest(first.url, 'POST', '/v1/tasks', task(`sleep ${mark}`));
    assert.equal(r.status, 202, JSON.stringify(r.body));
    const running = await waitForRunningStage(first.url, r.body.id);
    assert.equal(running.status, 'running');
    await waitUntil('the remote sleep', () => remoteSleeps(mark).length > 0);
    const [sleepPid] = remoteSleeps(mark);
    assert.ok(sleepPid !== undefined);
    orphans.push({ pid: sleepPid, mark });

    const exit = await first.stop('SIGKILL');
    assert.deepEqual(exit, { code: null, signal: 'SIGKILL' });

    const second = await serve(l);
    try {
      // Without a pty sshd leaves the command running when its client dies; the restarted
      // service finds it by the task's stored LEASH_EXEC_ID and kills its session.
      await waitUntil('the orphaned remote sleep to be stopped', () => !(isAlive(sleepPid) && remoteSleeps(mark).includes(sleepPid)));
      await waitUntil('the reaping to be logged', () => second.stdout().includes('stopped the remote process an interrupted task left running'));
      const t = await getTask(second.url, r.body.id);
      assert.equal(t.status, 'interrupted', JSON.stringify(t));
      assert.equal(t.stage, null);
      assert.equal(typeof t.interruptedReason, 'string');
      assert.ok(t.interruptedReason.length > 0);
      assert.ok(t.finishedAt !== null);
      assert.equal(t.command, `sleep ${mark}`);
      // Its history up to the crash was persisted as it happened.
      assert.deepEqual(
        t.stages.map((s: { stage: string }) => s.stage),
        ['queued', 'connecting', 'handshake', 'auth', 'channel', 'running'],
      );
      // Not a phantom `running` anywhere.
      const live = await apiRequest(second.url, 'GET', '/v1/tasks?status=running');
      assert.deepEqual(live.body.tasks, []);
      const interrupted = await apiRequest(second.url, 'GET', '/v1/tasks?status=interrupted');
      assert.deepEqual(
        interrupted.body.tasks.map((x: { id: string }) => x.id),
        [r.body.id],
      );
    } finally {
      assert.deepEqual(await second.stop('SIGTERM'), { code: 0, signal: null }, second.stderr());
    }
  });

  test('kill -9 during a task behind a jump host: the next process reaches its orphan through the same jump host', async () => {
    const l = await layout();
    const first = await serve(l);
    const mark = marker();
    // The harness sshd is its own bastion: it forwards to itself.
    const r = await apiRequest(first.url, 'POST', '/v1/tasks', task(`sleep ${mark}`, { jump: [`127.0.0.1:${sshd.port}`] }));
    assert.equal(r.status, 202, JSON.stringify(r.body));
    await waitForRunningStage(first.url, r.body.id);
    await waitUntil('the remote sleep', () => remoteSleeps(mark).length > 0);
    const [sleepPid] = remoteSleeps(mark);
    assert.ok(sleepPid !== undefined);
    orphans.push({ pid: sleepPid, mark });
    assert.deepEqual(await first.stop('SIGKILL'), { code: null, signal: 'SIGKILL' });

    const logins = async (): Promise<number> => ((await readFile(sshd.logPath, 'utf8')).match(/Accepted publickey for /g) ?? []).length;
    const before = await logins();
    const second = await serve(l);
    try {
      await waitUntil('the orphaned remote sleep to be stopped', () => !(isAlive(sleepPid) && remoteSleeps(mark).includes(sleepPid)));
      await waitUntil('the reaping to be logged', () => second.stdout().includes('stopped the remote process an interrupted task left running'));
      // Two logins: the bastion, then the target through it (a direct connection would be one).
      await waitUntil('two logins by the reaper', async () => (await logins()) - before >= 2);
      assert.equal((await logins()) - before, 2);
      assert.equal((await getTask(second.url, r.body.id)).status, 'interrupted');
    } finally {
      assert.deepEqual(await second.stop('SIGTERM'), { code: 0, signal: null }, second.stderr());
    }
  });
});

describe('SIGTERM drain', () => {
  test('readyz fails and new tasks are refused while the API still answers; a short task finishes, a long one is cancelled and its remote process killed; exit 0', async () => {
    const l = await layout({ shutdownGraceMs: 1500 });
    const first = await serve(l);
    const mark = marker();
    const long = await apiRequest(first.url, 'POST', '/v1/tasks', task(`sleep ${mark}`));
    assert.equal(long.status, 202, JSON.stringify(long.body));
    await waitForRunningStage(first.url, long.body.id);
    await waitUntil('the remote sleep', () => remoteSleeps(mark).length > 0);
    const short = await apiRequest(first.url, 'POST', '/v1/tasks', task('sleep 1; echo drained'));
    assert.equal(short.status, 202, JSON.stringify(short.body));
    await waitForRunningStage(first.url, short.body.id);
    assert.equal((await apiRequest(first.url, 'GET', '/readyz', undefined, { token: null })).status, 200);

    first.signal('SIGTERM');
    await first.waitForStderr(/SIGTERM: draining/, 10_000);
    // The listener still answers during the drain: not ready, and no new work.
    const ready = await apiRequest(first.url, 'GET', '/readyz', undefined, { token: null, timeoutMs: 5000 });
    assert.equal(ready.status, 503, JSON.stringify(ready.body));
    const refused = await apiRequest(first.url, 'POST', '/v1/tasks', task('echo too late'), { timeoutMs: 5000 });
    assert.equal(refused.status, 503, JSON.stringify(refused.body));
    assert.equal(refused.body.error.code, 'draining');
    assert.equal((await apiRequest(first.url, 'GET', '/healthz', undefined, { token: null, timeoutMs: 5000 })).status, 200);

    const exit = await first.waitExit(); // a second SIGTERM would mean "exit without waiting"
    assert.deepEqual(exit, { code: 0, signal: null }, first.stderr());
    assert.deepEqual(remoteSleeps(mark), [], 'the long task’s remote process is gone');
    assert.match(first.stdout(), /"msg":"leash serve stopped"/, 'the drain ran to its end');

    const second = await serve(l);
    try {
      const s = await getTask(second.url, short.body.id);
      assert.equal(s.status, 'ok', JSON.stringify(s));
      assert.equal(s.result.stdout, 'drained\n');
      const g = await getTask(second.url, long.body.id);
      assert.equal(g.status, 'cancelled', JSON.stringify(g));
      assert.equal(g.error.code, 'cancelled');
      assert.match(g.error.message, /shutting down/);
      assert.equal(g.result.killConfirmed, true);
      assert.equal(g.interruptedReason, null);
      // Only the two accepted tasks exist: the refused one was never recorded.
      const all = await apiRequest(second.url, 'GET', '/v1/tasks');
      assert.deepEqual(new Set(all.body.tasks.map((t: { id: string }) => t.id)), new Set([short.body.id, long.body.id]));
    } finally {
      assert.deepEqual(await second.stop('SIGTERM'), { code: 0, signal: null }, second.stderr());
    }
  });
});

// ---------------------------------------------------------------------------------------

/** Every file under `dir`, recursively. */
async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await filesUnder(full)));
    else if (entry.isFile()) out.push(full);
  }
  return out;
}

/** The base64 lines of an OpenSSH private key file (its body, no armour). */
async function keyBodyLines(file: string): Promise<string[]> {
  const text = await readFile(file, 'utf8');
  return text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('-----'));
}

/** The raw ed25519 seed of a key, for a search in binary too. */
function ed25519Seed(file: string, text: string, passphrase?: string): Buffer {
  const parsed = ssh2.utils.parseKey(text, passphrase);
  if (parsed instanceof Error) throw new Error(`${file}: ${parsed.message}`);
  const key = Array.isArray(parsed) ? parsed[0] : parsed;
  const pem = key.getPrivatePEM();
  const der = Buffer.from(pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
  const seed = der.subarray(der.length - 32);
  // The seed really is this key's: its public half is the one in the SSH public key blob.
  const publicDer = createPublicKey(createPrivateKey(pem)).export({ format: 'der', type: 'spki' });
  assert.deepEqual(publicDer.subarray(-32), key.getPublicSSH().subarray(-32), `${file}: the seed matches the public key`);
  return seed;
}

/** Finds each needle in each haystack; returns "needle-name in place" for every hit. */
function hits(haystacks: ReadonlyMap<string, Buffer>, needles: ReadonlyMap<string, Buffer>): string[] {
  const found: string[] = [];
  for (const [where, bytes] of haystacks) {
    for (const [what, needle] of needles) {
      if (needle.length > 0 && bytes.includes(needle)) found.push(`${what} in ${where}`);
    }
  }
  return found;
}

async function readAll(dir: string): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  for (const file of await filesUnder(dir)) {
    try {
      out.set(path.relative(dir, file), await readFile(file));
    } catch (err) {
      // -wal/-shm may disappear between the listing and the read.
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }
  return out;
}

describe('secrets', () => {
  test('no key material, passphrase, password, token, env value or stdin reaches the data dir or the logs', async () => {
    const sentinel = (what: string): string => `${what}-sentinel-${randomBytes(9).toString('hex')}`;
    const passphrase = sentinel('passphrase');
    const password = sentinel('password');
    const adminToken = sentinel('admin-token');
    const runToken = sentinel('run-token');
    const wrongToken = sentinel('wrong-bearer');
    const envValue = sentinel('env-value');
    const stdinValue = sentinel('stdin-value');
    const encKey = await sshd.addClientKey('ed25519', passphrase);

    const l = await layout({
      logLevel: 'debug',
      identities: {
        sshd: { user: sshd.user, keyPath: sshd.clientKey.path },
        enc: { user: sshd.user, keyPath: encKey.path, passphraseEnv: 'LEASH_TEST_PASSPHRASE' },
        pw: { user: sshd.user, passwordEnv: 'LEASH_TEST_PASSWORD' },
      },
      tokens: [
        { name: 'admin', token: adminToken, scopes: ['admin'] },
        { name: 'runner', tokenEnv: 'LEASH_TEST_RUN_TOKEN', scopes: ['run'] },
      ],
    });
    const env = { LEASH_TEST_PASSPHRASE: passphrase, LEASH_TEST_PASSWORD: password, LEASH_TEST_RUN_TOKEN: runToken };
    const server = await serve(l, env);
    const post = (body: unknown, token: string) => apiRequest(server.url, 'POST', '/v1/tasks', body, { token });

    // The passphrase-protected key works, and the env value and stdin arrive (their lengths
    // are printed, never the values).
    const command = 'printf "%s " "${#LEASH_SECRET_VALUE}"; wc -c';
    const enc = await post(task(command, { identity: 'enc', env: { LEASH_SECRET_VALUE: envValue }, stdin: stdinValue, wait: 30 }), runToken);
    assert.equal(enc.status, 200, JSON.stringify(enc.body));
    assert.equal(enc.body.status, 'ok', JSON.stringify(enc.body));
    assert.equal(enc.body.result.stdout.trim().split(/\s+/).join(' '), `${envValue.length} ${stdinValue.length}`);
    const plain = await post(task(command, { env: { LEASH_SECRET_VALUE: envValue }, stdin: stdinValue, wait: 30 }), adminToken);
    assert.equal(plain.body.status, 'ok', JSON.stringify(plain.body));
    // The password identity: the test sshd's account has no usable password, so it may fail
    // auth; either way it was sent and must not be kept.
    const pw = await post(task('true', { identity: 'pw', wait: 30 }), adminToken);
    assert.equal(pw.status, 200, JSON.stringify(pw.body));
    assert.ok(['ok', 'error'].includes(pw.body.status), JSON.stringify(pw.body));
    if (pw.body.status === 'error') assert.equal(pw.body.error.code, 'auth-failed');
    // An async task with the same secrets, read back through the API and its event stream.
    const bg = await post(task(command, { identity: 'enc', env: { LEASH_SECRET_VALUE: envValue }, stdin: stdinValue }), runToken);
    assert.equal(bg.status, 202, JSON.stringify(bg.body));
    await waitForStatus(server.url, bg.body.id, 'ok', adminToken);
    // A wrong bearer token: refused, and not echoed or logged.
    const wrong = await apiRequest(server.url, 'GET', '/v1/tasks', undefined, { token: wrongToken });
    assert.equal(wrong.status, 401);
    const wrongPost = await post(task('true'), wrongToken);
    assert.equal(wrongPost.status, 401);

    const needles = new Map<string, Buffer>();
    const addText = (name: string, value: string): void => {
      needles.set(name, Buffer.from(value));
    };
    for (const key of [
      { name: 'passphrase-key', file: encKey.path, passphrase },
      { name: 'plain-key', file: sshd.clientKey.path, passphrase: undefined },
    ]) {
      const lines = await keyBodyLines(key.file);
      assert.ok(lines.length >= 3, `${key.file} has a body`);
      lines.forEach((line, i) => addText(`${key.name} body line ${i + 1}`, line));
      const seed = ed25519Seed(key.file, await readFile(key.file, 'utf8'), key.passphrase);
      needles.set(`${key.name} seed (raw)`, seed);
      addText(`${key.name} seed (hex)`, seed.toString('hex'));
      addText(`${key.name} seed (base64)`, seed.toString('base64'));
    }
    const secrets: Array<[string, string]> = [
      ['passphrase', passphrase],
      ['password', password],
      ['admin token', adminToken],
      ['run token', runToken],
      ['wrong bearer token', wrongToken],
      ['env value', envValue],
      ['stdin value', stdinValue],
    ];
    for (const [name, value] of secrets) {
      addText(name, value);
      addText(`${name} (base64)`, Buffer.from(value).toString('base64').replace(/=+$/, ''));
    }

    // API responses carry none of it either.
    const responses = new Map<string, Buffer>();
    for (const [name, r] of [
      ['enc response', enc],
      ['plain response', plain],
      ['pw response', pw],
      ['wrong-token response', wrong],
      ['wrong-token POST response', wrongPost],
    ] as const) {
      responses.set(name, Buffer.from(JSON.stringify(r.body)));
    }
    const list = await apiRequest(server.url, 'GET', '/v1/tasks', undefined, { token: adminToken });
    responses.set('task list', Buffer.from(JSON.stringify(list.body)));
    assert.deepEqual(hits(responses, needles), []);

    // While it runs (the WAL may hold what a checkpoint later folds in) and after a clean stop.
    const whileRunning = await readAll(l.dataDir);
    assert.ok([...whileRunning.keys()].some((f) => f.endsWith('.db')), `a database under ${l.dataDir}: ${[...whileRunning.keys()].join(', ')}`);
    assert.deepEqual(hits(whileRunning, needles), [], 'data dir while running');

    const exit = await server.stop('SIGTERM');
    assert.deepEqual(exit, { code: 0, signal: null }, server.stderr());
    const stopped = await readAll(l.dataDir);
    const logs = new Map<string, Buffer>([
      ['stdout (pino logs)', Buffer.from(server.stdout())],
      ['stderr', Buffer.from(server.stderr())],
    ]);
    assert.deepEqual(hits(stopped, needles), [], 'data dir after stop');
    assert.deepEqual(hits(logs, needles), [], 'logs');

    // The search is not vacuous: the logs are at debug level and do mention the work.
    const logText = server.stdout();
    assert.match(logText, /"level":20/, 'debug lines are logged');
    assert.ok(logText.includes(enc.body.id), 'the task is in the logs');
    assert.ok(stopped.size > 0);
    assert.ok([...stopped.values()].some((b) => b.includes(Buffer.from(enc.body.id))), 'the task is in the database');
  });
});

// ---------------------------------------------------------------------------------------

describe('newcomer', () => {
  test('`npm start` on a fresh data dir prints a URL and a curl that runs a demo command', async () => {
    const root = await tempDir('leash-npm-start-');
    const home = path.join(root, 'home');
    await mkdir(home);
    const dataDir = path.join(root, 'data'); // does not exist yet, like ./data on a fresh clone
    const npm = await startProcess({
      command: 'npm',
      args: ['start'],
      cwd: REPO_ROOT,
      env: childEnv(home, { LEASH_DATA_DIR: dataDir, LEASH_LISTEN: '127.0.0.1:0', LEASH_ADMIN_LISTEN: '127.0.0.1:0', npm_config_update_notifier: 'false' }),
      group: true,
    });
    try {
      const curlLine = (await npm.waitForStderr(/^\s*(curl .*)$/m, 10_000))[1]!;
      assert.ok(curlLine.includes(`${npm.url}/v1/tasks`), curlLine);
      const port = new URL(npm.url).port;
      assert.notEqual(port, '7070');
      // Exactly what the README tells a newcomer to paste into a shell.
      const { stdout } = await execFileAsync('/bin/sh', ['-c', curlLine], { cwd: root, env: childEnv(home), timeout: 60_000 });
      const t = JSON.parse(stdout);
      assert.equal(t.status, 'ok', stdout);
      assert.equal(t.stage, null);
      assert.equal(t.identity, 'demo');
      assert.equal(t.command, 'uname -a; uptime');
      assert.equal(t.result.exitCode, 0);
      assert.ok(t.result.stdout.startsWith(`${os.type()} `), t.result.stdout);
      assert.match(t.result.stdout, /load average/);
      // It used the fresh data dir, not ./data.
      const files = await readdir(dataDir);
      assert.ok(files.includes('leash.db'), files.join(', '));
    } finally {
      const exit = await npm.stop('SIGTERM');
      // Every process of the group is gone (npm and the node it started).
      await waitUntil('npm start’s process group to be gone', () => !groupAlive(npm.pid), 10_000);
      // npm itself dies of the SIGTERM (it forwards it and does not wait); the leash it
      // started drains and stops (its log line reaches the pipe npm shared with it).
      assert.match(npm.stderr(), /SIGTERM: draining/);
      assert.match(npm.stdout(), /"msg":"leash serve stopped"/, npm.stdout().slice(-2000));
      assert.ok(exit.code === 0 || exit.signal === 'SIGTERM' || exit.code === 143, `npm start exit: ${JSON.stringify(exit)}\n${npm.stderr()}`);
    }
  });
});
