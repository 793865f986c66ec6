import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

const BIN = path.resolve(import.meta.dirname, '..', '..', 'bin', 'leash.js');

/** What a finished `leash` child process left behind. */
export interface CliResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly ms: number;
}

/** A running `leash` child process. */
export interface CliProcess {
  readonly child: ChildProcess;
  /** Everything printed so far. */
  readonly output: () => { stdout: string; stderr: string };
  readonly done: Promise<CliResult>;
}

/**
 * Starts `node bin/leash.js ARGS` with a clean HOME (no ~/.ssh keys or known_hosts of the
 * machine leak in), no agent and no terminal. `limitMs` is a hang detector, not a timing
 * assertion: a CLI that never exits is killed and the test fails on its exit code.
 */
export function startCli(args: readonly string[], options: { home: string; env?: Record<string, string>; limitMs?: number; cwd?: string }): CliProcess {
  const started = performance.now();
  const env: Record<string, string> = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: options.home, USER: os.userInfo().username, ...options.env };
  const child = spawn(process.execPath, [BIN, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'], ...(options.cwd === undefined ? {} : { cwd: options.cwd }) });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const limit = setTimeout(() => child.kill('SIGKILL'), options.limitMs ?? 60_000);
  const done = new Promise<CliResult>((resolve) => {
    child.once('close', (code, signal) => {
      clearTimeout(limit);
      resolve({ code, signal, stdout, stderr, ms: performance.now() - started });
    });
  });
  return { child, output: () => ({ stdout, stderr }), done };
}

/** Runs `leash ARGS` to completion. */
export function runCli(args: readonly string[], options: { home: string; env?: Record<string, string>; limitMs?: number; cwd?: string }): Promise<CliResult> {
  return startCli(args, options).done;
}

/** A temporary HOME for CLI runs; remove it with the returned function. */
export async function tempHome(): Promise<{ home: string; remove: () => Promise<void> }> {
  const home = await mkdtemp(path.join(os.tmpdir(), 'leash-home-'));
  return { home, remove: () => rm(home, { recursive: true, force: true }) };
}

/** `leash run --json` output: one object per line. */
export function jsonLines(stdout: string): Array<Record<string, unknown>> {
  return stdout
    .trim()
    .split('\n')
    .filter((l) => l.length > 0)
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}
