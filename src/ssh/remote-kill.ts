import type { ClientChannel } from 'ssh2';
import type { ResourceHandle, ResourceLedger } from '../lifecycle/ledger.ts';
import type { TaskProgress } from '../lifecycle/task-table.ts';
import { sendSignal } from './channel-signal.ts';
import type { SshConnection } from './connection.ts';
import { killSessionCommand } from './remote-command.ts';

/** What {@link killRemote} needs to know about the command it stops. */
export interface KillTarget {
  readonly connection: SshConnection;
  readonly channel: ClientChannel;
  /** The LEASH_EXEC_ID marking the command's processes. */
  readonly execId: string;
  /** Resolves when the command's channel has closed. */
  readonly channelClosed: Promise<void>;
  /** How long the remote session may take to die. */
  readonly graceMs: number;
  readonly ledger: ResourceLedger;
  readonly task: TaskProgress;
  /** Whether the server has reported the command's exit (status or signal). */
  readonly exited: () => boolean;
  /** The command channel's ledger entry. */
  readonly entry: ResourceHandle;
  /**
   * Gives up on a channel that does not close when asked: adopted by the pool when other
   * tasks share the connection, else the connection is destroyed (exec.ts abandonChannel).
   */
  readonly abandon: (channel: ResourceHandle) => Promise<void>;
}

/** After our own channel close, how long the server may take before the connection is destroyed. */
const CHANNEL_CLOSE_GRACE_MS = 250;

/**
 * Stops a remote command after a deadline or cancel, and says whether its death was seen.
 * Two ways at once, because each fails somewhere: a `signal` request (RFC 4254 §6.9;
 * OpenSSH ≥ 7.9 sends it to the session's process group — but not for root logins), and a
 * second channel that SIGKILLs every session marked with the command's LEASH_EXEC_ID
 * (needs Linux /proc and procps). Then our channel close, and for a server that answers
 * nothing, the connection. Confirmed means the server reported the command's exit.
 */
export async function killRemote(target: KillTarget): Promise<boolean> {
  const { connection, channel, ledger, task } = target;
  task.enter('closing');
  task.wait('remote-kill');
  const within = (ms: number): Promise<boolean> => {
    let timer: ResourceHandle | undefined;
    const expired = new Promise<boolean>((resolve) => {
      timer = ledger.timeout(task.id, ms, () => resolve(false), { purpose: 'kill-grace' });
    });
    const gone = connection.watchClosed();
    return Promise.race([target.channelClosed.then(() => true), gone.closed.then(() => true), expired]).finally(() => {
      timer?.release();
      gone.dispose();
    });
  };
  sendSignal(channel, 'KILL');
  const killer = runKillChannel(target);
  const died = await within(target.graceMs);
  await killer;
  if (!died) {
    channel.close();
    if (!(await within(CHANNEL_CLOSE_GRACE_MS))) await target.abandon(target.entry);
  }
  return target.exited();
}

/**
 * Runs the kill-by-LEASH_EXEC_ID command on a second channel of the same connection. Waits
 * at most the kill grace; a channel that opens later is closed at once. Given up on, its
 * ledger entry is abandoned like a stuck command channel: adopted by the pool, or gone with
 * the destroyed connection — never left to the finished task.
 */
function runKillChannel(target: KillTarget): Promise<void> {
  const { connection, ledger, task } = target;
  return new Promise<void>((resolve) => {
    const handle = ledger.open('channel', task.id, { purpose: 'remote-kill' });
    let stream: ClientChannel | null = null;
    let gaveUp = false;
    const timer = ledger.timeout(task.id, target.graceMs, () => {
      // The kill command hangs or the server never answered: stop waiting for it.
      gaveUp = true;
      stream?.close();
      void target.abandon(handle).then(resolve, resolve);
    }, { purpose: 'kill-channel' });
    const done = (): void => {
      timer.release();
      resolve();
    };
    try {
      connection.client.exec(killSessionCommand(target.execId), (err, channel) => {
        if (err) {
          handle.release();
          return done();
        }
        stream = channel;
        channel.on('error', () => {});
        channel.stderr.on('error', () => {});
        channel.once('close', () => {
          handle.release();
          done();
        });
        channel.resume();
        channel.stderr.resume();
        if (gaveUp) return channel.close();
        channel.end();
      });
    } catch {
      // 'Not connected': the connection is already gone, and so is the command.
      handle.release();
      done();
    }
  });
}
