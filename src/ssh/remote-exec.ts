import { asTaskError, type LeashError } from '../lifecycle/errors.ts';
import type { ResourceLedger } from '../lifecycle/ledger.ts';
import type { TaskProgress } from '../lifecycle/task-table.ts';
import { connectSsh, type ConnectTimeouts, type KeepaliveOptions } from './connect.ts';
import type { SshTarget } from './connection.ts';
import type { Credentials } from './credentials.ts';
import { execCommand, type ExecRequest, type ExecResult } from './exec.ts';
import type { HostKeyVerifier } from './host-key-verifier.ts';
import { OutputCapture } from './output-capture.ts';

/** One command for one host, with everything needed to reach it. */
export interface RemoteCommand {
  readonly target: SshTarget;
  readonly timeouts: ConnectTimeouts;
  readonly keepalive: KeepaliveOptions;
  readonly credentials: Credentials;
  readonly hostKeys: HostKeyVerifier;
  readonly exec: ExecRequest;
}

/** The ledger, the live task that owns the work, and its cancel signal. */
export interface RemoteScope {
  readonly ledger: ResourceLedger;
  readonly task: TaskProgress;
  readonly signal: AbortSignal;
}

/**
 * The seam between orchestration and SSH (STYLE.md: orchestration depends on an interface,
 * never on ssh2): runs one command on one host and always resolves — failures are in
 * `result.error`. When it resolves, every resource it created for the task is released.
 */
export interface RemoteExec {
  run(command: RemoteCommand, scope: RemoteScope): Promise<ExecResult>;
}

/** How long a polite SSH disconnect may take before the socket is destroyed. */
const CLOSE_GRACE_MS = 1000;

/** {@link RemoteExec} over a fresh SSH connection per command. */
export class SshRemoteExec implements RemoteExec {
  async run(command: RemoteCommand, scope: RemoteScope): Promise<ExecResult> {
    const { ledger, task, signal } = scope;
    let connection;
    try {
      connection = await connectSsh({ ...command, ledger, task, signal });
    } catch (err) {
      return failedBeforeExec(asTaskError(err, task.stage), command.exec.maxOutputBytes);
    }
    let result: ExecResult | null = null;
    try {
      result = await execCommand(connection, command.exec, { ledger, task, signal });
      return result;
    } catch (err) {
      return failedBeforeExec(asTaskError(err, task.stage), command.exec.maxOutputBytes);
    } finally {
      if (task.stage !== 'closing') task.enter('closing');
      task.wait('disconnect');
      // After a failure the peer is suspect: no polite goodbye it may never answer.
      if (result && !result.error) await connection.close(CLOSE_GRACE_MS);
      else await connection.destroy();
    }
  }
}

function failedBeforeExec(error: LeashError, cap: number): ExecResult {
  const none = new OutputCapture(cap);
  return { exitCode: null, signal: null, exitStatusMissing: false, stdout: none, stderr: none, killConfirmed: null, error };
}
