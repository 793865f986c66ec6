// A real OpenSSH sshd on loopback for tests and benchmarks (DESIGN.md "Testing against
// real things"). Each harness owns a temp dir with a throwaway host key, client keys,
// its own sshd_config, authorized_keys, known_hosts and a clean HOME for the remote
// shell. The sshd runs in the foreground as our child; stop() kills it, every process of
// its connections, and removes the dir.
import { execFile, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

export const SSHD_PATH = '/usr/sbin/sshd';
const PRIVSEP_DIR = '/run/sshd';
const READY_TIMEOUT_MS = 10_000;
const BIND_ATTEMPTS = 5;
const TERM_GRACE_MS = 2_000;
const KILL_DEADLINE_MS = 2_000;

export type TestKeyType = 'ed25519' | 'ecdsa' | 'rsa';

export interface TestKey {
  /** Private key file (OpenSSH format, mode 0600); the public key is at `${path}.pub`. */
  path: string;
  /** The public key line, "ssh-ed25519 AAAA... comment". */
  publicKey: string;
  type: TestKeyType;
  passphrase?: string;
}

export interface Sshd {
  host: '127.0.0.1';
  port: number;
  /** The current user (os.userInfo()); sshd logs in as this user. */
  user: string;
  /** PID of the listening sshd (our child). */
  pid: number;
  /** The harness temp dir (removed by stop()). */
  dir: string;
  /** Clean, empty HOME the remote shell sees (via `SetEnv HOME=`). Its cwd stays the passwd home. */
  home: string;
  /** Unencrypted ed25519 key listed in authorized_keys. */
  clientKey: TestKey;
  /** Host key blob in SSH wire format (what ssh2's hostVerifier receives). */
  hostPublicKey: Buffer;
  /** "ssh-ed25519 AAAA..." */
  hostKeyLine: string;
  /** "[127.0.0.1]:PORT ssh-ed25519 AAAA..." */
  knownHostsLine: string;
  /** A known_hosts file holding exactly knownHostsLine. */
  knownHostsPath: string;
  configPath: string;
  authorizedKeysPath: string;
  /** sshd's stderr (-e, LogLevel VERBOSE), including its connection processes. */
  logPath: string;
  /** Generates a key with ssh-keygen and appends it to authorized_keys. */
  addClientKey(type: TestKeyType, passphrase?: string): Promise<TestKey>;
  /** Last `lines` lines of the log (for assertion messages). */
  logTail(lines?: number): Promise<string>;
  /** Kills sshd and every process of its connections, then removes `dir`. Idempotent. */
  stop(): Promise<void>;
}

export interface StartSshdOptions {
  /** Extra sshd_config lines, appended after ours (sshd uses the first value of most keywords). */
  extraConfig?: string[];
}

// ---------------------------------------------------------------------------------------
// Processes: /proc helpers, stopping a child with a deadline, exit-time cleanup.

interface ProcStat {
  pid: number;
  ppid: number;
  state: string;
  startTime: string;
}

function readStat(pid: number): ProcStat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // "pid (comm) state ppid ..."; comm may hold spaces and parentheses.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const state = fields[0];
  const ppid = Number(fields[1]);
  const startTime = fields[19]; // field 22 of stat(5)
  if (state === undefined || startTime === undefined || !Number.isInteger(ppid)) return undefined;
  return { pid, ppid, state, startTime };
}

function allPids(): number[] {
  return readdirSync('/proc')
    .filter((name) => /^\d+$/.test(name))
    .map(Number);
}

/** Live (non-zombie) descendants of `root`, from /proc. */
export function descendantPids(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const pid of allPids()) {
    const st = readStat(pid);
    if (st === undefined) continue;
    const list = children.get(st.ppid) ?? [];
    list.push(pid);
    children.set(st.ppid, list);
  }
  const out: number[] = [];
  const queue = [root];
  for (let next = queue.shift(); next !== undefined; next = queue.shift()) {
    for (const child of children.get(next) ?? []) {
      out.push(child);
      queue.push(child);
    }
  }
  return out.filter((pid) => isAlive(pid));
}

/** True when the process exists and is not a zombie. */
export function isAlive(pid: number): boolean {
  const st = readStat(pid);
  return st !== undefined && st.state !== 'Z';
}

/** Our own ancestors (never to be signalled). */
function selfAndAncestors(): Set<number> {
  const out = new Set<number>();
  for (let pid = process.pid; pid > 1 && !out.has(pid); ) {
    out.add(pid);
    const st = readStat(pid);
    if (st === undefined) break;
    pid = st.ppid;
  }
  return out;
}

/**
 * Processes that belong to our sshd's connections even after leaving its process tree
 * (double-forked daemons): their environment holds both our unique clean HOME and an
 * SSH_CONNECTION that ends at our listening port.
 */
function markedPids(home: string, port: number): number[] {
  const homeEntry = `HOME=${home}`;
  const connSuffix = ` 127.0.0.1 ${port}`;
  const out: number[] = [];
  for (const pid of allPids()) {
    let environ: string;
    try {
      environ = readFileSync(`/proc/${pid}/environ`, 'utf8');
    } catch {
      continue;
    }
    const vars = environ.split('\0');
    if (!vars.includes(homeEntry)) continue;
    if (vars.some((v) => v.startsWith('SSH_CONNECTION=') && v.endsWith(connSuffix))) out.push(pid);
  }
  return out;
}

export interface Victim {
  pid: number;
  startTime: string;
}

function victimsOf(pids: Iterable<number>): Victim[] {
  const spared = selfAndAncestors();
  const out: Victim[] = [];
  const seen = new Set<number>();
  for (const pid of pids) {
    if (spared.has(pid) || seen.has(pid)) continue;
    seen.add(pid);
    const st = readStat(pid);
    if (st !== undefined && st.state !== 'Z') out.push({ pid, startTime: st.startTime });
  }
  return out;
}

/** Signals the victim only if its PID still names the same process (no PID reuse). */
function signalVictim(v: Victim, signal: NodeJS.Signals): void {
  const st = readStat(v.pid);
  if (st === undefined || st.startTime !== v.startTime || st.state === 'Z') return;
  try {
    process.kill(v.pid, signal);
  } catch {
    // already gone
  }
}

function victimAlive(v: Victim): boolean {
  const st = readStat(v.pid);
  return st !== undefined && st.startTime === v.startTime && st.state !== 'Z';
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Resolves true once `child` has exited, false if `ms` passes first. */
export function waitForExit(child: ChildProcess, ms: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      child.off('exit', onExit);
      resolve(false);
    }, ms);
    const onExit = (): void => {
      clearTimeout(timer);
      resolve(true);
    };
    child.once('exit', onExit);
  });
}

/**
 * Stops a child we spawned (and `extra` processes we own): SIGTERM, then SIGKILL after
 * `graceMs`, then waits up to `deadlineMs` more. Throws if the child is still running.
 */
export async function stopChildProcess(
  child: ChildProcess,
  opts: { graceMs?: number; deadlineMs?: number; extra?: () => Victim[] } = {},
): Promise<void> {
  const graceMs = opts.graceMs ?? TERM_GRACE_MS;
  const deadlineMs = opts.deadlineMs ?? KILL_DEADLINE_MS;
  const extra = opts.extra?.() ?? [];
  const childGone = (): boolean => child.exitCode !== null || child.signalCode !== null;
  const allGone = (): boolean => childGone() && extra.every((v) => !victimAlive(v));

  if (!childGone()) child.kill('SIGTERM');
  for (const v of extra) signalVictim(v, 'SIGTERM');
  await waitUntil(allGone, graceMs);
  if (!childGone()) child.kill('SIGKILL');
  for (const v of extra) signalVictim(v, 'SIGKILL');
  await waitUntil(allGone, deadlineMs);
  if (!childGone()) throw new Error(`process ${child.pid ?? '?'} did not exit after SIGKILL`);
  const left = extra.filter(victimAlive).map((v) => v.pid);
  if (left.length > 0) throw new Error(`processes still alive after SIGKILL: ${left.join(', ')}`);
}

async function waitUntil(done: () => boolean, ms: number): Promise<void> {
  const until = Date.now() + ms;
  while (!done() && Date.now() < until) await sleep(Math.min(20, Math.max(1, until - Date.now())));
}

/**
 * Synchronous last-resort cleanups, run when the test process exits without stop() — also
 * when it is killed by SIGTERM (the test runner's per-file timeout), SIGINT or SIGHUP, which
 * would otherwise end it without an 'exit' event and leave sshd processes and namespaces behind.
 */
const exitCleanups = new Set<() => void>();
let exitHooksInstalled = false;

function runExitCleanups(): void {
  for (const fn of [...exitCleanups]) {
    try {
      fn();
    } catch {
      // best effort
    }
  }
  exitCleanups.clear();
}

/** Registers a synchronous cleanup for process exit (or a terminating signal); returns its remover. */
export function onProcessExit(cleanup: () => void): () => void {
  if (!exitHooksInstalled) {
    exitHooksInstalled = true;
    process.on('exit', runExitCleanups);
    for (const [signal, code] of [
      ['SIGINT', 130],
      ['SIGTERM', 143],
      ['SIGHUP', 129],
    ] as const) {
      process.once(signal, () => {
        runExitCleanups();
        process.exit(code);
      });
    }
  }
  exitCleanups.add(cleanup);
  return () => exitCleanups.delete(cleanup);
}

// ---------------------------------------------------------------------------------------
// Keys.

async function generateKey(file: string, type: TestKeyType, passphrase: string, comment: string): Promise<void> {
  const bits = type === 'rsa' ? ['-b', '2048'] : type === 'ecdsa' ? ['-b', '256'] : [];
  await execFileAsync('ssh-keygen', ['-q', '-t', type, ...bits, '-N', passphrase, '-C', comment, '-f', file], {
    timeout: 30_000,
  });
}

async function readKey(file: string, type: TestKeyType, passphrase?: string): Promise<TestKey> {
  const publicKey = (await fs.readFile(`${file}.pub`, 'utf8')).trim();
  return passphrase === undefined ? { path: file, publicKey, type } : { path: file, publicKey, type, passphrase };
}

// ---------------------------------------------------------------------------------------
// sshd.

function quote(value: string): string {
  if (/["\n]/.test(value)) throw new Error(`unsupported character in sshd_config value: ${value}`);
  return `"${value}"`;
}

/** A port nothing listens on right now (on `host`, loopback by default). */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, host, () => {
      const addr = srv.address();
      srv.close(() => {
        if (addr !== null && typeof addr === 'object') resolve(addr.port);
        else reject(new Error('could not read the free port'));
      });
    });
  });
}

/** Connects and reads the server's identification line; undefined if none within `ms`. */
export function readBanner(host: string, port: number, ms: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const sock = net.connect({ host, port });
    let buf = '';
    const finish = (value: string | undefined): void => {
      clearTimeout(timer);
      sock.destroy();
      resolve(value);
    };
    const timer = setTimeout(() => finish(undefined), ms);
    sock.setEncoding('latin1');
    sock.on('data', (chunk: string) => {
      buf += chunk;
      const nl = buf.indexOf('\n');
      if (nl >= 0) finish(buf.slice(0, nl).trim());
    });
    sock.on('error', () => finish(undefined));
    sock.on('close', () => finish(undefined));
  });
}

/** The last `lines` lines of a log file, or `(no log)`. */
export async function tail(file: string, lines = 40): Promise<string> {
  try {
    const text = await fs.readFile(file, 'utf8');
    return text.split('\n').slice(-lines - 1).join('\n').trimEnd();
  } catch {
    return '(no log)';
  }
}

let penaltiesKeywordKnown: boolean | undefined;

async function validate(configPath: string): Promise<{ ok: boolean; stderr: string }> {
  try {
    await execFileAsync(SSHD_PATH, ['-t', '-f', configPath], { timeout: 10_000 });
    return { ok: true, stderr: '' };
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    return { ok: false, stderr: (e.stderr ?? '').trim() || e.message };
  }
}

function configLines(p: {
  port: number;
  hostKey: string;
  pidFile: string;
  authorizedKeys: string;
  home: string;
  penalties: boolean;
  extra: string[];
}): string[] {
  return [
    '# leash test sshd (test/support/sshd.ts)',
    `Port ${p.port}`,
    'ListenAddress 127.0.0.1',
    `HostKey ${quote(p.hostKey)}`,
    `PidFile ${quote(p.pidFile)}`,
    `AuthorizedKeysFile ${quote(p.authorizedKeys)}`,
    'StrictModes no',
    'UsePAM no',
    'UseDNS no',
    'PermitRootLogin yes',
    'PasswordAuthentication yes',
    'KbdInteractiveAuthentication no',
    'PubkeyAuthentication yes',
    'MaxStartups 200:30:400',
    'MaxSessions 10',
    'LogLevel VERBOSE',
    // sshd sets HOME from passwd first and applies SetEnv afterwards, so this wins.
    `SetEnv ${quote(`HOME=${p.home}`)}`,
    // ~/.ssh/rc is looked up in the passwd home (not $HOME); keep the real home out.
    'PermitUserRC no',
    'PrintMotd no',
    'PrintLastLog no',
    'Subsystem sftp internal-sftp',
    ...(p.penalties ? ['PerSourcePenalties no'] : []),
    ...p.extra,
    '',
  ];
}

/**
 * With UsePAM no, sshd refuses every method, keys included, to an account whose shadow
 * password starts with "!" ("User X not allowed because account is locked").
 */
function assertAccountNotLocked(user: string): void {
  let shadow: string;
  try {
    shadow = readFileSync('/etc/shadow', 'utf8');
  } catch {
    return; // not readable: let sshd decide
  }
  const entry = shadow.split('\n').find((line) => line.startsWith(`${user}:`));
  if (entry?.split(':')[1]?.startsWith('!') === true) {
    throw new Error(
      `account ${user} is locked ("!" in /etc/shadow), so the test sshd (UsePAM no) refuses even key logins; ` +
        `set its password field to "*" (usermod -p '*' ${user}), as .ci/run does`,
    );
  }
}

export async function startSshd(options: StartSshdOptions = {}): Promise<Sshd> {
  if (!existsSync(SSHD_PATH)) {
    throw new Error(
      `${SSHD_PATH} not found: install OpenSSH's server (apt-get install openssh-server) to run the sshd tests; .ci/run does this`,
    );
  }
  if (!existsSync(PRIVSEP_DIR)) mkdirSync(PRIVSEP_DIR, { recursive: true, mode: 0o755 });
  assertAccountNotLocked(os.userInfo().username);

  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'leash-sshd-'));
  try {
    return await startIn(dir, options);
  } catch (err) {
    await fs.rm(dir, { recursive: true, force: true });
    throw err;
  }
}

async function startIn(dir: string, options: StartSshdOptions): Promise<Sshd> {
  const user = os.userInfo().username;
  const home = path.join(dir, 'home');
  const keysDir = path.join(dir, 'keys');
  const hostKey = path.join(dir, 'ssh_host_ed25519_key');
  const configPath = path.join(dir, 'sshd_config');
  const pidFile = path.join(dir, 'sshd.pid');
  const authorizedKeysPath = path.join(dir, 'authorized_keys');
  const knownHostsPath = path.join(dir, 'known_hosts');
  const logPath = path.join(dir, 'sshd.log');
  await fs.mkdir(home, { mode: 0o700 });
  await fs.mkdir(keysDir, { mode: 0o700 });

  let keySeq = 0;
  const addClientKey = async (type: TestKeyType, passphrase?: string): Promise<TestKey> => {
    keySeq += 1;
    const file = path.join(keysDir, `id_${type}_${keySeq}`);
    await generateKey(file, type, passphrase ?? '', `leash-test-${type}-${keySeq}`);
    const key = await readKey(file, type, passphrase);
    await fs.appendFile(authorizedKeysPath, `${key.publicKey}\n`, { mode: 0o600 });
    return key;
  };

  await Promise.all([generateKey(hostKey, 'ed25519', '', 'leash-test-host'), fs.writeFile(authorizedKeysPath, '', { mode: 0o600 })]);
  const clientKey = await addClientKey('ed25519');
  const hostKeyLine = (await fs.readFile(`${hostKey}.pub`, 'utf8')).trim().split(/\s+/).slice(0, 2).join(' ');
  const hostPublicKey = Buffer.from(hostKeyLine.split(' ')[1] ?? '', 'base64');

  const extra = options.extraConfig ?? [];
  const writeConfig = async (port: number): Promise<void> => {
    const base = { port, hostKey, pidFile, authorizedKeys: authorizedKeysPath, home, extra };
    if (penaltiesKeywordKnown === undefined) {
      // OpenSSH 9.8+ penalises sources with failed auths; older sshd rejects the keyword.
      await fs.writeFile(configPath, configLines({ ...base, penalties: true }).join('\n'));
      const probe = await validate(configPath);
      penaltiesKeywordKnown = probe.ok || !/PerSourcePenalties/i.test(probe.stderr);
    }
    await fs.writeFile(configPath, configLines({ ...base, penalties: penaltiesKeywordKnown }).join('\n'));
    const check = await validate(configPath);
    if (!check.ok) throw new Error(`sshd -t -f ${configPath} rejected the config:\n${check.stderr}`);
  };

  let lastFailure = '';
  for (let attempt = 1; attempt <= BIND_ATTEMPTS; attempt++) {
    const port = await freePort();
    await writeConfig(port);
    const knownHostsLine = `[127.0.0.1]:${port} ${hostKeyLine}`;
    await fs.writeFile(knownHostsPath, `${knownHostsLine}\n`);

    const log = await fs.open(logPath, 'w'); // fresh per attempt: old bind errors must not count
    let child: ChildProcess;
    try {
      child = spawn(SSHD_PATH, ['-D', '-e', '-f', configPath], {
        stdio: ['ignore', log.fd, log.fd],
        env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C' },
      });
    } finally {
      await log.close();
    }
    let spawnFailed: Error | undefined;
    child.once('error', (e) => (spawnFailed = e));
    // Don't let a forgotten stop() hold the test process open; the exit hook kills it.
    child.unref();
    const pid = child.pid;

    const ready = await waitReady(child, port, logPath, () => spawnFailed);
    if (ready === 'ready' && pid !== undefined) {
      return makeHandle({
        child,
        pid,
        port,
        user,
        dir,
        home,
        clientKey,
        hostPublicKey,
        hostKeyLine,
        knownHostsLine,
        knownHostsPath,
        configPath,
        authorizedKeysPath,
        logPath,
        addClientKey,
      });
    }
    await stopChildProcess(child).catch(() => undefined);
    const logText = await tail(logPath);
    if (ready === 'bind-failed') {
      lastFailure = logText;
      continue;
    }
    const why = spawnFailed?.message ?? (ready === 'timeout' ? `port ${port} not ready within ${READY_TIMEOUT_MS} ms` : 'sshd exited');
    throw new Error(`could not start sshd (${why}); log tail:\n${logText}`);
  }
  throw new Error(`sshd could not bind a free port after ${BIND_ATTEMPTS} attempts; log tail:\n${lastFailure}`);
}

async function waitReady(
  child: ChildProcess,
  port: number,
  logPath: string,
  spawnFailed: () => Error | undefined,
): Promise<'ready' | 'bind-failed' | 'exited' | 'timeout'> {
  const until = Date.now() + READY_TIMEOUT_MS;
  while (Date.now() < until) {
    if (spawnFailed() !== undefined) return 'exited';
    if (child.exitCode !== null || child.signalCode !== null) {
      const text = await tail(logPath, 20);
      return /Address already in use|Cannot bind any address/.test(text) ? 'bind-failed' : 'exited';
    }
    const banner = await readBanner('127.0.0.1', port, Math.min(1000, Math.max(1, until - Date.now())));
    // Someone else's server on the port would not speak OpenSSH; ours exits on bind failure.
    if (banner?.startsWith('SSH-2.0-OpenSSH') === true && child.exitCode === null && child.signalCode === null) return 'ready';
    await sleep(25);
  }
  return 'timeout';
}

function makeHandle(h: {
  child: ChildProcess;
  pid: number;
  port: number;
  user: string;
  dir: string;
  home: string;
  clientKey: TestKey;
  hostPublicKey: Buffer;
  hostKeyLine: string;
  knownHostsLine: string;
  knownHostsPath: string;
  configPath: string;
  authorizedKeysPath: string;
  logPath: string;
  addClientKey: (type: TestKeyType, passphrase?: string) => Promise<TestKey>;
}): Sshd {
  const { child, pid, port, home, dir } = h;
  const victims = (): Victim[] => victimsOf([...descendantPids(pid), ...markedPids(home, port)]);

  const removeExitHook = onProcessExit(() => {
    const vs = victimsOf([pid, ...descendantPids(pid), ...markedPids(home, port)]);
    for (const v of vs) signalVictim(v, 'SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      try {
        await stopChildProcess(child, { extra: victims });
        // Connection processes reparented while we waited: one more sweep.
        const stragglers = victimsOf(markedPids(home, port));
        for (const v of stragglers) signalVictim(v, 'SIGKILL');
      } finally {
        removeExitHook();
        await fs.rm(dir, { recursive: true, force: true });
      }
    })();
    return stopping;
  };

  return {
    host: '127.0.0.1',
    port,
    user: h.user,
    pid,
    dir,
    home,
    clientKey: h.clientKey,
    hostPublicKey: h.hostPublicKey,
    hostKeyLine: h.hostKeyLine,
    knownHostsLine: h.knownHostsLine,
    knownHostsPath: h.knownHostsPath,
    configPath: h.configPath,
    authorizedKeysPath: h.authorizedKeysPath,
    logPath: h.logPath,
    addClientKey: h.addClientKey,
    logTail: (lines?: number) => tail(h.logPath, lines),
    stop,
  };
}

/**
 * argv for OpenSSH's client against `sshd` (append the remote command). Reads no
 * ssh_config (`-F none`), trusts only `sshd.knownHostsPath`, never prompts.
 */
export function sshCommand(sshd: Sshd, key: TestKey = sshd.clientKey): string[] {
  return [
    'ssh',
    '-F',
    'none',
    '-p',
    String(sshd.port),
    '-i',
    key.path,
    '-o',
    `UserKnownHostsFile=${sshd.knownHostsPath}`,
    '-o',
    'GlobalKnownHostsFile=/dev/null',
    '-o',
    'StrictHostKeyChecking=yes',
    '-o',
    'BatchMode=yes',
    '-o',
    'IdentitiesOnly=yes',
    `${sshd.user}@${sshd.host}`,
  ];
}
