// `leash serve` as a child process, the way operators run it: started from bin/leash.js (or
// `npm start`), its URL read off the `listening on http://...` line it prints on stderr,
// stopped with a real signal. Every process started here is tracked until it has exited, so
// a test's cleanup (`killStartedProcesses`) can guarantee nothing is left running.
import { spawn, type ChildProcess } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';

export const REPO_ROOT = path.resolve(import.meta.dirname, '..', '..');
const BIN = path.join(REPO_ROOT, 'bin', 'leash.js');

/** Hang detector for start-up (tsx compiles the sources on first load), not a speed assertion. */
const START_LIMIT_MS = 60_000;
/** Hang detector for an exit after a signal (a drain plus closing everything). */
const EXIT_LIMIT_MS = 60_000;

/** How a child process ended. */
export interface Exit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

/** A started process (a `leash serve`, or `npm start` and its process group). */
export interface ServeProcess {
  readonly child: ChildProcess;
  readonly pid: number;
  /** Base URL parsed from the `listening on` line. */
  readonly url: string;
  /** Everything printed so far. */
  stdout(): string;
  stderr(): string;
  /** Resolves when the process has exited and its pipes are closed. */
  readonly exited: Promise<Exit>;
  /** Sends `signal` (to the whole process group when started `group: true`). */
  signal(signal: NodeJS.Signals): void;
  /** Resolves once `text` appears on stderr; rejects after `ms` or if the process exits first. */
  waitForStderr(pattern: RegExp, ms?: number): Promise<RegExpMatchArray>;
  /** Sends `signal` and waits (bounded) for the exit; SIGKILLs and throws if it never comes. */
  stop(signal?: NodeJS.Signals, limitMs?: number): Promise<Exit>;
  /** Waits (bounded) for an exit already under way, sending nothing; SIGKILLs and throws if it never comes. */
  waitExit(limitMs?: number): Promise<Exit>;
}

interface Tracked {
  readonly child: ChildProcess;
  readonly group: boolean;
  readonly exited: Promise<Exit>;
}

const started = new Set<Tracked>();

/** Options of {@link startProcess}. */
export interface StartOptions {
  readonly command: string;
  readonly args: readonly string[];
  readonly env: Record<string, string>;
  readonly cwd?: string;
  /** Own process group (`detached`): signals go to the group (npm and the node it runs). */
  readonly group?: boolean;
  readonly startLimitMs?: number;
}

/** A minimal environment for a child: PATH, a HOME of the test's, USER; nothing of ours leaks in (no LEASH_*). */
export function childEnv(home: string, extra: Record<string, string> = {}): Record<string, string> {
  return { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: home, USER: os.userInfo().username, LANG: 'C', ...extra };
}

/** `node bin/leash.js serve ARGS`, resolved once it prints its URL. */
export function startServe(args: readonly string[], env: Record<string, string>): Promise<ServeProcess> {
  return startProcess({ command: process.execPath, args: [BIN, 'serve', ...args], env });
}

/**
 * Starts a process and waits (bounded) for `listening on http://...` on its stderr. If it
 * exits or the limit passes first, it is killed and the promise rejects with its output.
 */
export async function startProcess(options: StartOptions): Promise<ServeProcess> {
  const group = options.group ?? false;
  const child = spawn(options.command, [...options.args], {
    cwd: options.cwd ?? REPO_ROOT,
    env: options.env,
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: group,
  });
  let stdout = '';
  let stderr = '';
  const stderrListeners = new Set<() => void>();
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    stderr += d;
    for (const listener of stderrListeners) listener();
  });
  const exited = new Promise<Exit>((resolve) => {
    child.once('error', () => resolve({ code: null, signal: null }));
    child.once('close', (code, signal) => resolve({ code, signal }));
  });
  const tracked: Tracked = { child, group, exited };
  started.add(tracked);
  void exited.then(() => {
    // A group leader's exit does not mean its group is empty: keep tracking groups until then.
    if (!group || !groupAlive(child.pid)) started.delete(tracked);
    for (const listener of stderrListeners) listener();
  });

  const signal = (sig: NodeJS.Signals): void => sendSignal(child, group, sig);
  let done = false;
  void exited.then(() => (done = true));

  const waitForStderr = (pattern: RegExp, ms = START_LIMIT_MS): Promise<RegExpMatchArray> =>
    new Promise((resolve, reject) => {
      const finish = (err: Error | null, match?: RegExpMatchArray): void => {
        clearTimeout(timer);
        stderrListeners.delete(check);
        if (err) reject(err);
        else resolve(match!);
      };
      const check = (): void => {
        const match = pattern.exec(stderr);
        if (match) finish(null, match);
        else if (done) finish(new Error(`process exited before printing ${pattern}; stderr:\n${stderr}\nstdout (tail):\n${stdout.slice(-4000)}`));
      };
      const timer = setTimeout(() => finish(new Error(`no ${pattern} on stderr within ${ms} ms; stderr:\n${stderr}`)), ms);
      stderrListeners.add(check);
      check();
    });

  const stop = async (sig: NodeJS.Signals | null = 'SIGTERM', limitMs = EXIT_LIMIT_MS): Promise<Exit> => {
    if (!done && sig !== null) signal(sig);
    let timer: NodeJS.Timeout | undefined;
    const limit = new Promise<'hung'>((resolve) => (timer = setTimeout(() => resolve('hung'), limitMs)));
    const outcome = await Promise.race([exited, limit]);
    clearTimeout(timer);
    if (outcome === 'hung') {
      sendSignal(child, group, 'SIGKILL');
      await exited;
      throw new Error(`process ${child.pid} did not exit within ${limitMs} ms${sig === null ? '' : ` of ${sig}`}; stderr:\n${stderr}`);
    }
    return outcome;
  };

  let url: string;
  try {
    const match = await waitForStderr(/listening on (http:\/\/\S+)/, options.startLimitMs ?? START_LIMIT_MS);
    url = match[1]!;
  } catch (err) {
    sendSignal(child, group, 'SIGKILL');
    await exited;
    throw err;
  }
  return {
    child,
    pid: child.pid!,
    url,
    stdout: () => stdout,
    stderr: () => stderr,
    exited,
    signal,
    waitForStderr,
    stop: (sig = 'SIGTERM', limitMs) => stop(sig, limitMs),
    waitExit: (limitMs) => stop(null, limitMs),
  };
}

function sendSignal(child: ChildProcess, group: boolean, signal: NodeJS.Signals): void {
  const pid = child.pid;
  if (pid === undefined) return;
  try {
    if (group) process.kill(-pid, signal);
    else if (child.exitCode === null && child.signalCode === null) child.kill(signal);
  } catch {
    // Already gone.
  }
}

/** True while any process of the group led by `pid` exists. */
export function groupAlive(pid: number | undefined): boolean {
  if (pid === undefined) return false;
  try {
    process.kill(-pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * SIGKILLs every process started here that is still running (whole groups for group
 * starts) and waits for each to be gone. For test cleanup: a test that passed has already
 * stopped its processes, so this only matters after a failure.
 */
export async function killStartedProcesses(limitMs = 10_000): Promise<void> {
  const until = Date.now() + limitMs;
  for (const t of [...started]) {
    sendSignal(t.child, t.group, 'SIGKILL');
    await Promise.race([t.exited, new Promise((r) => setTimeout(r, Math.max(0, until - Date.now())))]);
    while (t.group && groupAlive(t.child.pid) && Date.now() < until) {
      sendSignal(t.child, true, 'SIGKILL');
      await new Promise((r) => setTimeout(r, 20));
    }
    started.delete(t);
  }
}

/** Number of processes started here that may still be running (a group counts while any member lives). */
export function startedAlive(): number {
  let n = 0;
  for (const t of started) {
    const leaderUp = t.child.exitCode === null && t.child.signalCode === null;
    if (leaderUp || (t.group && groupAlive(t.child.pid))) n++;
  }
  return n;
}
