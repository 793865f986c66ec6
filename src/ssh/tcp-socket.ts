import net from 'node:net';
import type { Duplex } from 'node:stream';
import { waitUntil } from '../lifecycle/abort.ts';
import { LeashError } from '../lifecycle/errors.ts';
import type { ResourceHandle, ResourceLedger } from '../lifecycle/ledger.ts';

/** Where to connect. */
export interface TcpTarget {
  readonly host: string;
  readonly port: number;
}

/** Options for {@link openTcpSocket}. */
export interface TcpSocketOptions {
  readonly ledger: ResourceLedger;
  /** Ledger owner of the socket (the task id). */
  readonly owner: string;
  /** Aborted by the connect deadline or a cancel; the socket is destroyed at once. */
  readonly signal: AbortSignal;
  /**
   * Idle time before the kernel's first TCP keepalive probe. Node passes whole seconds to
   * the kernel and a value under 1000 ms leaves the 2 h default (../shared/SSH-PITFALLS.md 8),
   * so it is raised to at least 1000 ms.
   */
  readonly keepAliveInitialDelayMs: number;
}

/**
 * The byte stream an SSH connection runs over — a TCP socket leash created, or a channel
 * forwarded through a jump host — registered in the ledger from creation until its `close`
 * event (when the file descriptor or the channel is really gone). `closed` resolves then.
 */
export class TrackedSocket {
  readonly socket: Duplex;
  readonly closed: Promise<void>;
  readonly #handle: ResourceHandle;

  constructor(socket: Duplex, handle: ResourceHandle) {
    this.socket = socket;
    this.#handle = handle;
    this.closed = new Promise((resolve) => {
      socket.once('close', () => {
        handle.release();
        resolve();
      });
    });
    // A permanent listener: an 'error' with none crashes the process (SSH-PITFALLS 12).
    socket.on('error', () => {});
  }

  get ledgerId(): number {
    return this.#handle.id;
  }

  /** Moves the socket's ledger entry to a new owner (a pool taking over a connection). */
  transfer(owner: string): void {
    this.#handle.transfer(owner);
  }

  /** Destroys the socket now; `closed` resolves on the following tick. Idempotent. */
  destroy(): void {
    this.socket.destroy();
  }
}

/**
 * Opens a TCP connection (stage `connecting`: DNS lookup and TCP connect) that leash owns:
 * TCP keepalive and TCP_NODELAY on (Nagle costs 20× on sequential sessions,
 * ../shared/SSH-PITFALLS.md 15), and destroyed the moment `signal` aborts. It is handed to
 * ssh2 as `sock` so that leash, not ssh2, decides when it dies.
 */
export async function openTcpSocket(target: TcpTarget, options: TcpSocketOptions): Promise<TrackedSocket> {
  options.signal.throwIfAborted();
  // TCP_NODELAY and keepalive must be given to the constructor: Node 20 reads them there
  // and silently ignores them in connect() on an existing socket (which leash did, and so ran
  // with Nagle on: 60 ms per pooled session instead of a few).
  // (@types/node 20 does not list these constructor options yet.)
  const settings: net.SocketConstructorOpts & { noDelay: boolean; keepAlive: boolean; keepAliveInitialDelay: number } = {
    noDelay: true,
    keepAlive: true,
    keepAliveInitialDelay: Math.max(1000, options.keepAliveInitialDelayMs),
  };
  const socket = new net.Socket(settings);
  const handle = options.ledger.open('socket', options.owner, { host: target.host, port: target.port });
  handle.attach(socket);
  const tracked = new TrackedSocket(socket, handle);
  try {
    await waitUntil<void>(options.signal, ({ resolve, reject }) => {
      const onConnect = (): void => resolve();
      const onError = (err: NodeJS.ErrnoException): void => reject(connectError(err, target));
      socket.once('connect', onConnect);
      socket.once('error', onError);
      socket.connect({ host: target.host, port: target.port });
      return () => {
        socket.off('connect', onConnect);
        socket.off('error', onError);
      };
    });
  } catch (err) {
    tracked.destroy();
    await tracked.closed;
    throw err;
  }
  return tracked;
}

const DNS_ERRORS = new Set(['ENOTFOUND', 'EAI_AGAIN', 'EAI_NONAME', 'EAI_FAIL', 'EAI_NODATA', 'EAI_ADDRFAMILY']);

/** Maps a socket error during connect to a stable code, naming host, port and errno. */
function connectError(err: NodeJS.ErrnoException, target: TcpTarget): LeashError {
  const where = `${target.host}:${target.port}`;
  const errno = err.code ?? 'unknown error';
  if (DNS_ERRORS.has(errno)) {
    return new LeashError('dns-error', 'connecting', `cannot resolve ${target.host} (${errno})`, { cause: err });
  }
  if (errno === 'ETIMEDOUT') {
    return new LeashError('connect-timeout', 'connecting', `TCP connect to ${where} timed out in the kernel (ETIMEDOUT)`, { cause: err });
  }
  if (errno === 'ECONNREFUSED') {
    return new LeashError('connect-refused', 'connecting', `connection to ${where} refused (ECONNREFUSED)`, { cause: err });
  }
  return new LeashError('connect-refused', 'connecting', `cannot connect to ${where} (${errno})`, { cause: err });
}
