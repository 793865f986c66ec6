import type { ClientChannel } from 'ssh2';
import { LinkedAbort, waitUntil } from '../lifecycle/abort.ts';
import { withDeadline } from '../lifecycle/deadline.ts';
import { asTaskError, LeashError } from '../lifecycle/errors.ts';
import type { ResourceHandle, ResourceLedger } from '../lifecycle/ledger.ts';
import type { TaskProgress } from '../lifecycle/task-table.ts';
import type { SshConnection } from './connection.ts';
import { OutputCapture } from './output-capture.ts';
import { remoteCommandLine } from './remote-command.ts';
import { killRemote } from './remote-kill.ts';

/** Deadlines after the connection is ready, in ms; 0 disables one. */
export interface ExecTimeouts {
  /** Opening the session channel and starting the command. Default 10 000. */
  readonly channelMs: number;
  /** The command as a whole, from start to exit. Default 600 000 (10 minutes). */
  readonly commandMs: number;
  /** Longest silence (no stdout or stderr) allowed while the command runs. Default 0 (off). */
  readonly idleMs: number;
}

/** Which output stream a chunk came from. */
export type OutputStream = 'stdout' | 'stderr';

/** One command to run on an open connection. */
export interface ExecRequest {
  readonly command: string;
  /** Exported to the command through the remote shell (names must be shell identifiers). */
  readonly env?: Readonly<Record<string, string>>;
  /** The LEASH_EXEC_ID marking the command's processes; a fresh one by default. */
  readonly execId?: string;
  /** Written to the command's stdin, which is then closed. Without it stdin is closed at once. */
  readonly stdin?: string | Buffer | null;
  readonly timeouts: ExecTimeouts;
  /** Bytes kept per stream (head and tail halves). Default 1 MiB. */
  readonly maxOutputBytes: number;
  /**
   * After a timeout or cancel, how long to wait for the remote process to die once it was
   * sent SIGKILL, before closing the channel regardless. Default 700.
   */
  readonly killGraceMs?: number;
  /** Every output chunk, as it arrives (for live output and server-sent events). */
  readonly onOutput?: (stream: OutputStream, chunk: Buffer) => void;
}

/**
 * What became of a command. A non-zero exit or a death by signal is a result, not an error
 * (x/crypto's ExitError); `error` is set only when the command did not complete normally.
 */
export interface ExecResult {
  readonly exitCode: number | null;
  readonly signal: string | null;
  /** The channel closed without an exit status or exit signal. */
  readonly exitStatusMissing: boolean;
  readonly stdout: OutputCapture;
  readonly stderr: OutputCapture;
  /** After a timeout or cancel: whether the remote process was seen to die. Null otherwise. */
  readonly killConfirmed: boolean | null;
  readonly error: LeashError | null;
}

/** The ledger, the task that owns the work, and its cancel signal. */
export interface ExecScope {
  readonly ledger: ResourceLedger;
  readonly task: TaskProgress;
  readonly signal: AbortSignal;
  /**
   * For a connection other tasks share (a pooled one): takes over a channel this task gives
   * up on (see Lease.adopt), so that the others keep their connection. Without it, or when
   * it declines, giving up on a channel destroys the connection.
   */
  readonly adopt?: (channel: ResourceHandle) => boolean;
}

/** After `exit` arrives, how long the channel may stay silent before it is closed by us (ssh2#980). */
const EXIT_CLOSE_GRACE_MS = 2000;
/** Real sshd confirms a kill in well under 100 ms; a server that does not, gets little more. */
const DEFAULT_KILL_GRACE_MS = 700;

/**
 * Runs one command on a ready connection: stage `channel` (open a session and exec) under
 * its deadline, then `running` under the command and idle deadlines. On a deadline or a
 * cancel the remote session is killed (see remote-kill.ts) and the channel closed; if the
 * server does not cooperate the connection is destroyed. Never rejects for a remote failure: see {@link ExecResult}.
 */
export async function execCommand(connection: SshConnection, request: ExecRequest, scope: ExecScope): Promise<ExecResult> {
  const stdout = new OutputCapture(request.maxOutputBytes);
  const stderr = new OutputCapture(request.maxOutputBytes);
  const empty = { exitCode: null, signal: null, exitStatusMissing: false, stdout, stderr, killConfirmed: null };
  const commandLine = remoteCommandLine(request.command, request.env, request.execId);
  const exit = new ExitWatch();
  let opened: OpenedChannel;
  try {
    opened = await openExecChannel(connection, commandLine.line, request.timeouts.channelMs, scope, (stream) => exit.watch(stream));
  } catch (err) {
    return { ...empty, error: asTaskError(err, 'channel') };
  }
  return runOnChannel(connection, opened, exit, commandLine.execId, request, scope, stdout, stderr);
}

/** A session channel and its ledger entry (released when ssh2 reports the channel closed). */
interface OpenedChannel {
  readonly channel: ClientChannel;
  readonly entry: ResourceHandle;
}

/**
 * Gives up on a channel the server may still answer or close late: a connection shared with
 * other tasks adopts it (and is retired once they are done); otherwise the connection is
 * destroyed, which ends the channel for sure. A cancel must never take other tasks down.
 */
async function abandonChannel(connection: SshConnection, entry: ResourceHandle | null, scope: ExecScope): Promise<void> {
  if (entry !== null && !entry.released && scope.adopt?.(entry) === true) return;
  await connection.destroy();
}

/**
 * The command's exit status or signal, as the server reports it. It must listen from the
 * moment the channel exists: ssh2 emits `exit` once, synchronously, and the report can
 * arrive in the same TCP read as the reply to `exec`.
 */
class ExitWatch {
  exited = false;
  code: number | null = null;
  /** Node-style name: ssh2 reports OpenSSH's `KILL` as `SIGKILL`. */
  signal: string | null = null;
  /** Called once when the exit arrives, if set by then. */
  onExit: (() => void) | null = null;

  watch(channel: ClientChannel): void {
    channel.once('exit', (code: number | null, signalName?: string) => {
      this.exited = true;
      this.code = typeof code === 'number' ? code : null;
      this.signal = typeof signalName === 'string' ? signalName : null;
      this.onExit?.();
    });
  }
}

/**
 * Opens a session channel and sends `exec`, bounded by the channel deadline. `onOpen` runs
 * synchronously when the channel exists, before anything else can be emitted on it.
 */
async function openExecChannel(
  connection: SshConnection,
  command: string,
  channelMs: number,
  scope: ExecScope,
  onOpen: (channel: ClientChannel) => void,
): Promise<OpenedChannel> {
  const { ledger, task } = scope;
  const { host, port } = connection.target;
  task.enter('channel');
  task.wait('channel-open');
  let refused = false;
  let pending: ResourceHandle | null = null;
  try {
    return await withDeadline(
      {
        ledger,
        owner: task.id,
        ms: channelMs,
        parent: scope.signal,
        label: 'channel',
        onTimeout: () => new LeashError('channel-open-failed', 'channel', `no answer to channel open or exec from ${host}:${port} within ${channelMs} ms`),
      },
      (signal) =>
        waitUntil<OpenedChannel>(signal, ({ resolve, reject }) => {
          let settled = false;
          const handle: ResourceHandle = ledger.open('channel', task.id, { host, port });
          pending = handle;
          const onClose = (): void => reject(connection.failure('channel'));
          const client = connection.client as unknown as NodeJS.EventEmitter;
          client.once('close', onClose);
          try {
            connection.client.exec(command, {}, (err, stream) => {
              if (err) {
                handle.release();
                refused = true;
                reject(new LeashError('channel-open-failed', 'channel', `${host}:${port} refused the session: ${err.message}`, { cause: err }));
                return;
              }
              stream.once('close', () => handle.release());
              // A channel may emit 'error' (e.g. a failed write); never let one go unheard.
              stream.on('error', () => {});
              stream.stderr.on('error', () => {});
              if (settled) {
                // It arrived after the deadline: nobody will use it. ssh2 emits `close` only
                // after `end`, and `end` only once the stream is read: drain it, or the
                // entry would outlive the connection.
                stream.resume();
                stream.stderr.resume();
                stream.close();
                return;
              }
              settled = true;
              onOpen(stream);
              resolve({ channel: stream, entry: handle });
            });
          } catch (err) {
            // ssh2 throws 'Not connected' synchronously when the socket is already gone.
            handle.release();
            reject(new LeashError('connection-lost', 'channel', `connection to ${host}:${port} lost before the channel opened`, { cause: err }));
          }
          return () => {
            settled = true;
            client.off('close', onClose);
          };
        }),
    );
  } catch (err) {
    // A deadline or cancel while the server had not answered: a channel may still arrive
    // later (it is closed at once then), so the connection cannot be lent again.
    if (!refused) await abandonChannel(connection, pending, scope);
    throw err;
  }
}

/** Stage `running`: drain output, watch the deadlines, kill on expiry, settle on `close`. */
async function runOnChannel(
  connection: SshConnection,
  { channel, entry }: OpenedChannel,
  exit: ExitWatch,
  execId: string,
  request: ExecRequest,
  scope: ExecScope,
  stdout: OutputCapture,
  stderr: OutputCapture,
): Promise<ExecResult> {
  const { ledger, task } = scope;
  const owner = task.id;
  const { commandMs, idleMs } = request.timeouts;
  task.enter('running');
  task.wait('command-output');

  let lastOutputAt = Date.now();
  let finished = false;
  const stop = new LinkedAbort(scope.signal);
  const timers: ResourceHandle[] = [];
  const closed = new Promise<void>((resolve) => channel.once('close', () => resolve()));
  const gone = connection.watchClosed();

  // `close` follows the exit once the server has sent the rest of the output; do not wait
  // on a server that never sends it (ssh2#980). The exit status is not flow-controlled and
  // can overtake megabytes of output still queued behind the channel window (a slow link):
  // the grace is silence after the exit, not time since it, or that output would be lost.
  let exitGraceOver: () => void = () => {};
  const exitGrace = new Promise<void>((resolve) => (exitGraceOver = resolve));
  const armExitGrace = (ms = EXIT_CLOSE_GRACE_MS): void => {
    if (finished) return;
    timers.push(
      ledger.timeout(
        owner,
        ms,
        () => {
          const silentFor = Date.now() - lastOutputAt;
          if (silentFor < EXIT_CLOSE_GRACE_MS) return armExitGrace(EXIT_CLOSE_GRACE_MS - silentFor);
          channel.close();
          exitGraceOver();
        },
        { purpose: 'exit-close-grace' },
      ),
    );
  };
  exit.onExit = () => armExitGrace();
  if (exit.exited) armExitGrace();
  const onChunk = (stream: OutputStream, capture: OutputCapture) => (chunk: Buffer) => {
    lastOutputAt = Date.now();
    capture.push(chunk);
    request.onOutput?.(stream, chunk);
  };
  channel.on('data', onChunk('stdout', stdout));
  channel.stderr.on('data', onChunk('stderr', stderr));

  if (commandMs > 0) {
    timers.push(
      ledger.timeout(owner, commandMs, () => stop.abort(new LeashError('command-timeout', 'running', `command still running after ${commandMs} ms; stopped`)), {
        deadline: 'command',
      }),
    );
  }
  if (idleMs > 0) {
    // One timer per idle period, re-armed for the remainder, not one per output chunk.
    const armIdle = (ms: number): void => {
      timers.push(
        ledger.timeout(
          owner,
          ms,
          () => {
            const silentFor = Date.now() - lastOutputAt;
            if (silentFor >= idleMs) stop.abort(new LeashError('idle-timeout', 'running', `no output for ${idleMs} ms; stopped`));
            else armIdle(idleMs - silentFor);
          },
          { deadline: 'idle' },
        ),
      );
    };
    armIdle(idleMs);
  }

  try {
    channel.end(request.stdin ?? undefined);
    const stopped = new Promise<void>((resolve) => stop.signal.addEventListener('abort', () => resolve(), { once: true }));
    await Promise.race([closed, gone.closed, stopped, exitGrace]);
    if (stop.signal.aborted && !exit.exited) {
      const killConfirmed = await killRemote({
        connection,
        channel,
        execId,
        channelClosed: closed,
        graceMs: request.killGraceMs ?? DEFAULT_KILL_GRACE_MS,
        ledger,
        task,
        exited: () => exit.exited,
        abandon: (channelEntry) => abandonChannel(connection, channelEntry, scope),
        entry,
      });
      const error = asTaskError(stop.signal.reason, 'running');
      return { exitCode: exit.code, signal: exit.signal, exitStatusMissing: false, stdout, stderr, killConfirmed, error };
    }
    if (!exit.exited) await Promise.race([closed, gone.closed, exitGrace]);
    if (exit.exited) {
      return { exitCode: exit.code, signal: exit.signal, exitStatusMissing: false, stdout, stderr, killConfirmed: null, error: null };
    }
    const error = connection.alive
      ? new LeashError('protocol-error', 'running', 'the channel closed without an exit status or exit signal')
      : connection.failure('running');
    return { exitCode: null, signal: null, exitStatusMissing: true, stdout, stderr, killConfirmed: null, error };
  } finally {
    finished = true;
    exit.onExit = null;
    for (const timer of timers) timer.release();
    stop.dispose();
    gone.dispose();
  }
}
