import type { ClientChannel } from 'ssh2';
import { waitUntil } from '../lifecycle/abort.ts';
import { LeashError } from '../lifecycle/errors.ts';
import type { ResourceLedger } from '../lifecycle/ledger.ts';
import type { SshConnection } from './connection.ts';
import { TrackedSocket, type TcpTarget } from './tcp-socket.ts';

/** Options for {@link openJumpStream}. */
export interface JumpStreamOptions {
  readonly ledger: ResourceLedger;
  /** Ledger owner of the forwarded channel (the task, then whoever owns the connection over it). */
  readonly owner: string;
  /** Aborted by the connect deadline or a cancel. */
  readonly signal: AbortSignal;
}

/**
 * Opens a TCP connection to `target` from the jump host at the other end of `via`
 * (ProxyJump: an SSH `direct-tcpip` channel), as the byte stream of the next SSH connection.
 * The jump host's refusal names both the hop and the target.
 */
export async function openJumpStream(via: SshConnection, target: TcpTarget, options: JumpStreamOptions): Promise<TrackedSocket> {
  options.signal.throwIfAborted();
  const hop = `${via.target.host}:${via.target.port}`;
  const where = `${target.host}:${target.port}`;
  const handle = options.ledger.open('channel', options.owner, { purpose: 'jump', via: hop, host: target.host, port: target.port });
  let settled = false;
  try {
    const channel = await waitUntil<ClientChannel>(options.signal, ({ resolve, reject }) => {
      const onClose = (): void => reject(via.failure('connecting'));
      const client = via.client as unknown as NodeJS.EventEmitter;
      client.once('close', onClose);
      try {
        via.client.forwardOut('127.0.0.1', 0, target.host, target.port, (err, stream) => {
          // A channel that arrives after the deadline or a cancel: nobody will use it.
          if (settled) {
            if (!err) stream.close();
            return;
          }
          if (err) {
            reject(new LeashError('connect-refused', 'connecting', `jump host ${hop} could not connect to ${where}: ${err.message}`, { cause: err }));
            return;
          }
          resolve(stream);
        });
      } catch (err) {
        reject(new LeashError('connection-lost', 'connecting', `connection to jump host ${hop} lost before it could reach ${where}`, { cause: err }));
      }
      return () => {
        settled = true;
        client.off('close', onClose);
      };
    });
    channel.on('error', () => {});
    return new TrackedSocket(channel, handle);
  } catch (err) {
    handle.release();
    throw err;
  }
}
