import type { ConnectTimeouts, KeepaliveOptions } from '../ssh/connect.ts';
import type { SshTarget } from '../ssh/connection.ts';
import type { Credentials } from '../ssh/credentials.ts';
import type { ExecTimeouts } from '../ssh/exec.ts';
import type { HostKeyVerifier } from '../ssh/host-key-verifier.ts';

/** Every stage deadline of a task, in ms (names as in the API's `timeouts`); 0 disables one. */
export type TaskTimeouts = ConnectTimeouts & ExecTimeouts;

/** Defaults for {@link TaskTimeouts}: each stage bounded, idle output unbounded. */
export const DEFAULT_TIMEOUTS: TaskTimeouts = {
  connectMs: 10_000,
  handshakeMs: 15_000,
  authMs: 15_000,
  channelMs: 10_000,
  commandMs: 600_000,
  idleMs: 0,
};

/** SSH keepalive every 15 s; the peer is dead after 3 unanswered (about 60 s). */
export const DEFAULT_KEEPALIVE: KeepaliveOptions = { intervalMs: 15_000, countMax: 3 };

/** Bytes of stdout and of stderr kept per task (head and tail halves). */
export const DEFAULT_MAX_OUTPUT_BYTES = 1024 * 1024;

/** Time beyond the stage deadlines for killing the remote process and disconnecting. */
export const TEARDOWN_GRACE_MS = 10_000;

/** One command on one host, as the service and the CLI describe it. */
export interface TaskSpec {
  readonly target: SshTarget;
  readonly command: string;
  readonly env?: Readonly<Record<string, string>>;
  readonly stdin?: string | Buffer | null;
  /** The LEASH_EXEC_ID marking the remote processes; stored by the service to find orphans. */
  readonly execId?: string;
  readonly timeouts: TaskTimeouts;
  readonly keepalive: KeepaliveOptions;
  readonly maxOutputBytes: number;
  readonly credentials: Credentials;
  readonly hostKeys: HostKeyVerifier;
  /** Borrow a pooled connection when the runner has a pool (default true). */
  readonly reuse?: boolean;
  /** Further attempts on a fresh connection for a failure before the command started (default 0). */
  readonly retries?: number;
  /** Jump hosts (ProxyJump), first hop first. */
  readonly jump?: readonly SshTarget[];
}

/**
 * The latest a task may still be alive (DESIGN.md invariant 1): the sum of its stage
 * deadlines plus teardown grace, or null when a deadline is disabled and nothing bounds it.
 * Each jump host adds its own connect, handshake and auth deadlines.
 */
export function hardDeadlineMs(timeouts: TaskTimeouts, jumpHosts = 0): number | null {
  const { connectMs, handshakeMs, authMs, channelMs, commandMs } = timeouts;
  const stages = [connectMs, handshakeMs, authMs, channelMs, commandMs];
  if (stages.some((ms) => ms <= 0)) return null;
  return stages.reduce((a, b) => a + b, 0) + jumpHosts * (connectMs + handshakeMs + authMs) + TEARDOWN_GRACE_MS;
}
