import { ledger } from '../../src/lifecycle/ledger.ts';
import { taskTable } from '../../src/lifecycle/task-table.ts';
import type { TaskReport } from '../../src/lifecycle/task-report.ts';
import { runTask } from '../../src/service/task-runner.ts';
import { DEFAULT_KEEPALIVE, DEFAULT_MAX_OUTPUT_BYTES, DEFAULT_TIMEOUTS, type TaskSpec, type TaskTimeouts } from '../../src/service/task-spec.ts';
import type { KeepaliveOptions } from '../../src/ssh/connect.ts';
import { readPrivateKey, type Credentials } from '../../src/ssh/credentials.ts';
import { HostKeyVerifier } from '../../src/ssh/host-key-verifier.ts';
import { SshRemoteExec } from '../../src/ssh/remote-exec.ts';

/** Where a test task goes, and the known_hosts line that trusts it. */
export interface TestTarget {
  readonly host: string;
  readonly port: number;
  readonly user: string;
  readonly knownHostsLine: string;
}

/** Overrides for {@link testSpec}. */
export interface TestSpecOptions {
  timeouts?: Partial<TaskTimeouts>;
  keepalive?: Partial<KeepaliveOptions>;
  credentials?: Credentials;
  hostKeys?: HostKeyVerifier;
  env?: Record<string, string>;
  stdin?: string | Buffer;
  maxOutputBytes?: number;
}

/** Credentials holding one unencrypted key file. */
export async function keyCredentials(keyPath: string, passphrase?: string): Promise<Credentials> {
  return { keys: [await readPrivateKey(keyPath, passphrase)], agentSocket: null, password: null };
}

/** A task spec for `command` on `target`, trusting exactly its host key. */
export function testSpec(target: TestTarget, command: string, credentials: Credentials, options: TestSpecOptions = {}): TaskSpec {
  return {
    target: { host: target.host, port: target.port, user: target.user },
    command,
    timeouts: { ...DEFAULT_TIMEOUTS, ...options.timeouts },
    keepalive: { ...DEFAULT_KEEPALIVE, ...options.keepalive },
    maxOutputBytes: options.maxOutputBytes ?? DEFAULT_MAX_OUTPUT_BYTES,
    credentials: options.credentials ?? credentials,
    hostKeys: options.hostKeys ?? HostKeyVerifier.fromLines([target.knownHostsLine], 'strict'),
    ...(options.env ? { env: options.env } : {}),
    ...(options.stdin !== undefined ? { stdin: options.stdin } : {}),
  };
}

/** Runs one task through the real runner and the real SSH client. */
export function runOne(spec: TaskSpec, signal: AbortSignal = new AbortController().signal): Promise<TaskReport> {
  return runTask(spec, { remote: new SshRemoteExec(), ledger, tasks: taskTable }, { signal });
}

/** Milliseconds `fn` took, with its result. */
export async function timed<T>(fn: () => Promise<T>): Promise<{ value: T; ms: number }> {
  const start = performance.now();
  const value = await fn();
  return { value, ms: performance.now() - start };
}
