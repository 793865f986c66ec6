// The Go peer (bench/peers/go-ssh/main.go, golang.org/x/crypto/ssh): built offline from
// Debian's packages when they are installed, cached by source hash in bench/out/, and
// driven as a contender in parts 1 (fresh), 2 (pooled) and 4 (stuck connections).
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { onProcessExit, stopChildProcess, waitForExit, type Sshd } from '../../test/support/sshd.ts';
import type { Contender, RepResult } from './fresh.ts';
import { onPath, REPO } from './report.ts';
import { cpuMs, procMemory, withTimeout } from './util.ts';

const SOURCE = path.join(REPO, 'bench/peers/go-ssh/main.go');
const GOPATH = '/usr/share/gocode';
const CRYPTO_SSH = path.join(GOPATH, 'src/golang.org/x/crypto/ssh');
export const GO_INSTALL_HINT = 'apt-get install golang-go golang-golang-x-crypto-dev';

export interface GoPeer {
  readonly binary: string;
  /** `go version` and the x/crypto package version. */
  readonly version: string;
}

/** The built peer, or why there is none (a line for the report). */
export function buildGoPeer(): GoPeer | { readonly missing: string } {
  const go = onPath('go');
  if (!go || !existsSync(CRYPTO_SSH)) return { missing: `Go peer: not installed (${GO_INSTALL_HINT})` };
  const goVersion = execFileSync(go, ['version'], { encoding: 'utf8', timeout: 10_000 }).trim();
  let crypto = '?';
  try {
    crypto = execFileSync('dpkg-query', ['-W', '-f', '${Version}', 'golang-golang-x-crypto-dev'], { encoding: 'utf8', timeout: 10_000 }).trim();
  } catch {
    // not from Debian: fine
  }
  const hash = createHash('sha256').update(readFileSync(SOURCE)).update(goVersion).update(crypto).digest('hex').slice(0, 16);
  const out = path.join(REPO, 'bench/out');
  const binary = path.join(out, `go-ssh-${hash}`);
  if (!existsSync(binary)) {
    mkdirSync(out, { recursive: true });
    const tmp = `${binary}.tmp`;
    // Offline, from the Debian GOPATH only: never fetches a module.
    execFileSync(go, ['build', '-o', tmp, SOURCE], {
      cwd: REPO,
      timeout: 180_000,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: {
        PATH: process.env.PATH ?? '/usr/bin:/bin',
        HOME: out,
        GOPATH,
        GO111MODULE: 'off',
        GOPROXY: 'off',
        GOFLAGS: '',
        GOTOOLCHAIN: 'local',
        GOCACHE: path.join(out, 'go-build-cache'),
      },
    });
    renameSync(tmp, binary);
  }
  return { binary, version: `${goVersion}, golang.org/x/crypto ${crypto} (Debian golang-golang-x-crypto-dev)` };
}

interface GoRun {
  readonly latenciesMs: number[];
  readonly wallMs: number;
  readonly cpuMs: number;
  readonly maxRssKiB: number;
  readonly failures: number;
  readonly firstError?: string;
}

function runGo(binary: string, args: readonly string[], timeoutMs: number): Promise<GoRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(binary, args, { stdio: ['ignore', 'pipe', 'pipe'], timeout: timeoutMs, killSignal: 'SIGKILL' });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => {
      if (stderr.length < 4000) stderr += c;
    });
    child.once('error', reject);
    child.once('close', (code, signal) => {
      let parsed: GoRun | undefined;
      try {
        parsed = JSON.parse(stdout.trim().split('\n').pop() ?? '') as GoRun;
      } catch {
        parsed = undefined;
      }
      if (code === 0 && parsed && parsed.failures === 0) resolve(parsed);
      else reject(new Error(`go-ssh ${args[0]} exited with ${code ?? signal}: ${parsed?.failures ?? '?'} failures (${parsed?.firstError ?? stderr.trim().slice(-500)})`));
    });
  });
}

/** The Go peer as a contender: `mode` fresh (a connection per session) or pooled (one connection). */
export function goContender(peer: GoPeer, sshd: Sshd, mode: 'fresh' | 'pooled', name: string): Contender {
  const base = ['-addr', `${sshd.host}:${sshd.port}`, '-user', sshd.user, '-key', sshd.clientKey.path, '-known-hosts', sshd.knownHostsPath];
  const rep = async (tasks: number, concurrency: number): Promise<RepResult> => {
    const r = await runGo(peer.binary, [mode, '-n', String(tasks), '-c', String(concurrency), ...base], 120_000);
    if (r.latenciesMs.length !== tasks) throw new Error(`go-ssh: ${r.latenciesMs.length} latencies for ${tasks} tasks`);
    return {
      latencies: r.latenciesMs,
      wallMs: r.wallMs,
      clientCpuMsPerTask: r.cpuMs / tasks,
      serverCpuMsPerTask: Number.NaN,
      peakRssKiB: r.maxRssKiB,
      rssGrowthKiB: null,
      reports: [],
    };
  };
  return {
    name,
    cpuNote: "the Go process's own CPU (getrusage) from its first session's start to its last one's end",
    rssNote: `the Go process's maxrss (getrusage: its whole life, start-up and ${mode === 'pooled' ? 'the connection dial ' : ''}included)`,
    sequential: (tasks) => rep(tasks, 1),
    concurrent: (tasks, concurrency) => rep(tasks, concurrency),
  };
}

export interface GoStuckResult {
  readonly count: number;
  readonly baselineRssKiB: number;
  readonly loadedRssKiB: number;
  /** VmRSS read by the bench from /proc while loaded (a cross-check of the peer's own figure). */
  readonly loadedRssKiBFromProc: number | null;
  readonly goroutines: number;
  readonly reachMs: number;
  readonly cpuMs: number;
}

/**
 * `count` Go handshakes stuck on a never-speaking server at `port` (after a warm-up flood of
 * `warmup`); `openNow()` must then report at least `count` open connections on the server.
 */
export async function goStuck(peer: GoPeer, port: number, count: number, warmup: number, openNow: () => Promise<number>): Promise<GoStuckResult> {
  const cpu0 = cpuMs('self').children;
  const child = spawn(peer.binary, ['stuck', '-n', String(count), '-warmup', String(warmup), '-addr', `127.0.0.1:${port}`], { stdio: ['pipe', 'pipe', 'pipe'] });
  const removeExitHook = onProcessExit(() => child.kill('SIGKILL'));
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (c: string) => {
    if (stderr.length < 4000) stderr += c;
  });
  try {
    const lines = createInterface({ input: child.stdout });
    const first = await withTimeout(
      new Promise<string>((resolve, reject) => {
        lines.once('line', resolve);
        child.once('exit', (code) => reject(new Error(`go-ssh stuck exited with ${code}: ${stderr.trim().slice(-500)}`)));
      }),
      120_000,
      'go-ssh stuck: all connections in handshake',
    );
    const r = JSON.parse(first) as { count: number; baselineRssKiB: number; loadedRssKiB: number; goroutines: number; reachMs: number };
    const fromProc = child.pid === undefined ? null : (procMemory(child.pid)?.rssKiB ?? null);
    const open = await openNow();
    if (open < count) throw new Error(`go-ssh stuck: the silent server sees ${open} open connections, expected ${count}`);
    child.stdin.end('done\n');
    if (!(await waitForExit(child, 15_000))) throw new Error('go-ssh stuck: did not exit after being told to');
    if (child.exitCode !== 0) throw new Error(`go-ssh stuck exited with ${child.exitCode}: ${stderr.trim().slice(-500)}`);
    return { ...r, loadedRssKiBFromProc: fromProc, cpuMs: cpuMs('self').children - cpu0 };
  } finally {
    if (child.exitCode === null && child.signalCode === null) await stopChildProcess(child).catch(() => undefined);
    removeExitHook();
  }
}
