// In-process SSH servers on 127.0.0.1, each misbehaving in exactly one way (DESIGN.md
// "Testing against real things"), plus one well-behaved `cooperative` server. Client tests
// point leash at them and prove every task ends with the right error code within its
// deadline. Every server-side socket, channel and timer is tracked and torn down by close().
//
// How each behaviour is built:
// - silent-tcp, banner-then-silent, stall-mid-kex: raw TCP, no ssh2 server at all. The
//   server writes nothing / only `SSH-2.0-hostile\r\n` / that ident plus a hand-built
//   KEXINIT packet, then never writes again. It reads and discards input, but sniffs the
//   client's plaintext ident and first packets (bounded) so tests can see how far the
//   client got ('client-ident', 'client-kexinit', 'client-kex-init').
// - everything else: an ssh2 Server (never listening itself; we accept the TCP socket and
//   inject it) with an ephemeral ed25519 host key. Hostile servers accept any user with any
//   password or any public key (signatures are verified); `cooperative` accepts only
//   TEST_USER with TEST_PASSWORD or an authorized key. No server sends SSH keepalives.
import { randomBytes, timingSafeEqual } from 'node:crypto';
import net from 'node:net';
import type { Writable } from 'node:stream';
import ssh2 from 'ssh2';
import { generateKeyPair, parseSingleKey, type EphemeralKeyPair } from '../../src/ssh/ephemeral-keys.ts';
import type { AuthContext, AuthenticationType, ClientInfo, Connection, ParsedKey, ServerChannel, Session } from 'ssh2';

export const TEST_USER = 'leash';
export const TEST_PASSWORD = 'hostile-test-password';

export type HostileBehaviour =
  | 'silent-tcp'
  | 'banner-then-silent'
  | 'stall-mid-kex'
  | 'never-answers-auth'
  | 'exec-never-ends'
  | 'endless-output'
  | 'drip-feed'
  | 'close-mid-stream'
  | 'refuse-channel'
  | 'silent-after-auth'
  | 'cooperative';

export const HOSTILE_BEHAVIOURS: readonly HostileBehaviour[] = [
  'silent-tcp',
  'banner-then-silent',
  'stall-mid-kex',
  'never-answers-auth',
  'exec-never-ends',
  'endless-output',
  'drip-feed',
  'close-mid-stream',
  'refuse-channel',
  'silent-after-auth',
  'cooperative',
];

/** What a server saw or did, in order. */
export type HostileEventName =
  | 'tcp-accept'
  | 'tcp-close'
  /** Raw servers: the client's ident line (detail: the line). */
  | 'client-ident'
  /** Raw servers: the client's plaintext KEXINIT (message 20). */
  | 'client-kexinit'
  /** Raw servers: the client's KEX_ECDH_INIT / KEXDH_INIT (message 30). */
  | 'client-kex-init'
  /** Raw servers: any other plaintext client packet (detail: `type N`). */
  | 'client-packet'
  | 'server-ident-sent'
  | 'server-kexinit-sent'
  | 'handshake'
  /** detail: the method ('none', 'password', 'publickey', ...). */
  | 'auth-attempt'
  | 'auth-rejected'
  /** never-answers-auth: an attempt left unanswered on purpose. */
  | 'auth-ignored'
  | 'auth-accepted'
  /** silent-after-auth: the server stopped processing input and writing output. */
  | 'silent'
  | 'session-open'
  | 'session-refused'
  | 'pty'
  /** detail: the variable name. */
  | 'env'
  /** detail: the command. */
  | 'exec'
  /** detail: the signal name as sent. */
  | 'signal'
  /** endless-output: a write returned false; the pump waits for 'drain' (once per channel). */
  | 'output-blocked'
  /** close-mid-stream: detail `N bytes`; all of it was flushed to the kernel. */
  | 'output-written'
  /** close-mid-stream: the server destroyed the TCP socket (detail: 'fin' or 'rst'). */
  | 'socket-destroyed'
  /** cooperative: detail `status N` or `signal NAME`. */
  | 'exit-sent'
  | 'channel-close';

export interface HostileEvent {
  readonly name: HostileEventName;
  /** 1-based number of the TCP connection (in accept order). */
  readonly connection: number;
  readonly detail?: string;
  /** Milliseconds since the server started. */
  readonly atMs: number;
}

export interface HostileServer {
  readonly behaviour: HostileBehaviour;
  readonly host: '127.0.0.1';
  readonly port: number;
  /** Public host key blob in SSH wire format (what ssh2's hostVerifier receives). */
  readonly hostKey: Buffer;
  /** `ssh-ed25519 AAAA...` */
  readonly hostKeyLine: string;
  /** `[127.0.0.1]:PORT ssh-ed25519 AAAA...` */
  readonly knownHostsLine: string;
  /** Number of TCP connections currently open on the server side. */
  openConnections(): number;
  /** Number of TCP connections accepted since start. */
  acceptedConnections(): number;
  /** Bytes of command output (stdout and stderr, all connections) handed to ssh2 so far. */
  outputBytes(): number;
  /** Events so far, oldest first (at most 2000 are kept). */
  events(): readonly HostileEvent[];
  /** Whether an event of this name happened (optionally with this detail). */
  saw(name: HostileEventName, detail?: string): boolean;
  /**
   * Resolves with the first event of this name (already happened or future); rejects after
   * `timeoutMs` or when the server closes. The timer is always cleared.
   */
  waitFor(name: HostileEventName, timeoutMs: number): Promise<HostileEvent>;
  /**
   * Stops listening, destroys every server-side socket, clears every timer, rejects pending
   * waitFor calls, and waits (at most 2 s) for the sockets and the listener to close.
   * Idempotent: later calls return the same promise.
   */
  close(): Promise<void>;
}

export interface HostileServerOptions {
  /** cooperative: public keys accepted for TEST_USER (OpenSSH public key line, wire blob or parsed key). */
  readonly authorizedKeys?: ReadonlyArray<string | Buffer | ParsedKey>;
  /** drip-feed: milliseconds between bytes. Default 1000 (the first byte goes out at once). */
  readonly dripIntervalMs?: number;
  /** close-mid-stream: stdout bytes written (and flushed) before the socket is destroyed. Default 64 KiB. */
  readonly closeAfterBytes?: number;
  /** close-mid-stream: `fin` = socket.destroy() (default), `rst` = socket.resetAndDestroy(). */
  readonly closeWith?: 'fin' | 'rst';
  /** ssh2 server debug lines (ssh2-based behaviours only). */
  readonly debug?: (line: string) => void;
}

const IDENT = 'SSH-2.0-hostile';
const MAX_EVENTS = 2000;
const CLOSE_WAIT_MS = 2000;
/** setInterval's maximum: in effect "never" for ssh2's server-side keepalive timer. */
const NEVER_MS = 2_147_483_647;
const OUTPUT_CHUNK = Buffer.alloc(32 * 1024, 'y\n');
const STDERR_LINE = Buffer.from('endless-output: stderr\n');
const EMPTY = Buffer.alloc(0);
const MAX_ENV_VARS = 64;
const MAX_ENV_BYTES = 64 * 1024;

const RAW_BEHAVIOURS: ReadonlySet<HostileBehaviour> = new Set(['silent-tcp', 'banner-then-silent', 'stall-mid-kex']);

/** Starts a server with the given behaviour on 127.0.0.1, a free port. */
export async function startHostileServer(behaviour: HostileBehaviour, options: HostileServerOptions = {}): Promise<HostileServer> {
  const hostKeys = generateKeyPair('ed25519');
  const listener = net.createServer();
  listener.on('error', noop);
  await new Promise<void>((resolve, reject) => {
    const fail = (err: Error): void => reject(err);
    listener.once('error', fail);
    listener.listen({ host: '127.0.0.1', port: 0, exclusive: true }, () => {
      listener.off('error', fail);
      resolve();
    });
  });
  const address = listener.address();
  if (address === null || typeof address === 'string') {
    listener.close();
    throw new Error('hostile server: listener has no TCP address');
  }
  return new Hostile(behaviour, options, listener, address.port, hostKeys);
}

// ---------------------------------------------------------------------------------------

/** One accepted TCP connection. */
interface Peer {
  readonly id: number;
  readonly socket: net.Socket;
  readonly closed: Promise<void>;
  /** Cancels this peer's timers and immediates; all run when the socket closes. */
  readonly disposers: Set<() => void>;
  gone: boolean;
}

interface Waiter {
  readonly name: HostileEventName;
  readonly resolve: (event: HostileEvent) => void;
  readonly reject: (err: Error) => void;
  readonly timer: NodeJS.Timeout;
}

class Hostile implements HostileServer {
  readonly host = '127.0.0.1' as const;
  readonly behaviour: HostileBehaviour;
  readonly port: number;
  readonly hostKey: Buffer;
  readonly hostKeyLine: string;
  readonly knownHostsLine: string;

  readonly #options: HostileServerOptions;
  readonly #listener: net.Server;
  readonly #listenerClosed: Promise<void>;
  readonly #ssh: ssh2.Server | undefined;
  readonly #authorized: readonly Buffer[];
  readonly #started = Date.now();
  readonly #peers = new Set<Peer>();
  /** Peers waiting for ssh2's `connection` event, by remote port (all peers are on loopback). */
  readonly #byPort = new Map<number, Peer>();
  readonly #events: HostileEvent[] = [];
  readonly #waiters = new Set<Waiter>();
  #accepted = 0;
  #outputBytes = 0;
  #closing: Promise<void> | undefined;

  constructor(behaviour: HostileBehaviour, options: HostileServerOptions, listener: net.Server, port: number, keys: EphemeralKeyPair) {
    this.behaviour = behaviour;
    this.#options = options;
    this.#listener = listener;
    this.port = port;
    this.hostKey = keys.publicKey.getPublicSSH();
    this.hostKeyLine = `${keys.publicKey.type} ${this.hostKey.toString('base64')}`;
    this.knownHostsLine = `[127.0.0.1]:${port} ${this.hostKeyLine}`;
    this.#authorized = (options.authorizedKeys ?? []).map(publicBlob);
    this.#listenerClosed = new Promise((resolve) => listener.once('close', () => resolve()));
    listener.on('connection', (socket) => this.#accept(socket));

    if (!RAW_BEHAVIOURS.has(behaviour)) {
      const ssh = new ssh2.Server({
        hostKeys: [keys.privateKey],
        ident: 'hostile',
        keepaliveInterval: NEVER_MS,
        keepaliveCountMax: 0,
        ...(options.debug ? { debug: options.debug } : {}),
      });
      ssh.on('error', noop);
      ssh.on('connection', (client, info) => this.#onSsh(client, info));
      this.#ssh = ssh;
    }
  }

  openConnections(): number {
    return this.#peers.size;
  }

  acceptedConnections(): number {
    return this.#accepted;
  }

  outputBytes(): number {
    return this.#outputBytes;
  }

  events(): readonly HostileEvent[] {
    return [...this.#events];
  }

  saw(name: HostileEventName, detail?: string): boolean {
    return this.#events.some((e) => e.name === name && (detail === undefined || e.detail === detail));
  }

  waitFor(name: HostileEventName, timeoutMs: number): Promise<HostileEvent> {
    const seen = this.#events.find((e) => e.name === name);
    if (seen) return Promise.resolve(seen);
    if (this.#closing) return Promise.reject(new Error(`hostile ${this.behaviour}: closed while waiting for '${name}'`));
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        name,
        resolve,
        reject,
        timer: setTimeout(() => {
          this.#waiters.delete(waiter);
          reject(new Error(`hostile ${this.behaviour}: no '${name}' within ${timeoutMs} ms; saw ${this.#summary()}`));
        }, timeoutMs),
      };
      this.#waiters.add(waiter);
    });
  }

  close(): Promise<void> {
    this.#closing ??= this.#shutdown();
    return this.#closing;
  }

  async #shutdown(): Promise<void> {
    this.#listener.close();
    for (const waiter of this.#waiters) {
      clearTimeout(waiter.timer);
      waiter.reject(new Error(`hostile ${this.behaviour}: closed while waiting for '${waiter.name}'`));
    }
    this.#waiters.clear();
    const peers = [...this.#peers];
    for (const peer of peers) {
      disposeAll(peer);
      peer.socket.destroy();
    }
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, CLOSE_WAIT_MS);
    });
    await Promise.race([Promise.all([this.#listenerClosed, ...peers.map((p) => p.closed)]), deadline]);
    clearTimeout(timer);
    this.#byPort.clear();
  }

  #summary(): string {
    return this.#events.map((e) => (e.detail === undefined ? e.name : `${e.name}(${e.detail})`)).join(', ') || 'nothing';
  }

  #record(peer: Peer, name: HostileEventName, detail?: string): void {
    const event: HostileEvent = { name, connection: peer.id, atMs: Date.now() - this.#started, ...(detail === undefined ? {} : { detail }) };
    if (this.#events.length < MAX_EVENTS) this.#events.push(event);
    for (const waiter of this.#waiters) {
      if (waiter.name !== name) continue;
      clearTimeout(waiter.timer);
      this.#waiters.delete(waiter);
      waiter.resolve(event);
    }
  }

  #accept(socket: net.Socket): void {
    socket.on('error', noop);
    if (this.#closing) {
      socket.destroy();
      return;
    }
    const peer: Peer = {
      id: ++this.#accepted,
      socket,
      closed: new Promise((resolve) => socket.once('close', () => resolve())),
      disposers: new Set(),
      gone: false,
    };
    this.#peers.add(peer);
    const remotePort = socket.remotePort;
    socket.once('close', () => {
      peer.gone = true;
      disposeAll(peer);
      this.#peers.delete(peer);
      if (remotePort !== undefined && this.#byPort.get(remotePort) === peer) this.#byPort.delete(remotePort);
      this.#record(peer, 'tcp-close');
    });
    this.#record(peer, 'tcp-accept');

    if (this.#ssh) {
      if (remotePort === undefined) {
        socket.destroy();
        return;
      }
      this.#byPort.set(remotePort, peer);
      this.#ssh.injectSocket(socket);
      return;
    }

    // Raw behaviours: read and discard everything, noting how far the client got.
    const sniffer = new ClientSniffer((name, detail) => this.#record(peer, name, detail));
    socket.on('data', (chunk: Buffer) => sniffer.push(chunk));
    if (this.behaviour === 'banner-then-silent' || this.behaviour === 'stall-mid-kex') {
      socket.write(`${IDENT}\r\n`);
      this.#record(peer, 'server-ident-sent');
    }
    if (this.behaviour === 'stall-mid-kex') {
      socket.write(kexinitPacket());
      this.#record(peer, 'server-kexinit-sent');
    }
  }

  #onSsh(client: Connection, info: ClientInfo): void {
    client.on('error', noop);
    const peer = this.#byPort.get(info.port);
    if (!peer || peer.gone || this.#closing) {
      client.end();
      return;
    }
    this.#byPort.delete(info.port);
    client.on('handshake', () => this.#record(peer, 'handshake'));
    client.on('authentication', (ctx) => this.#authenticate(peer, ctx));
    client.once('ready', () => {
      this.#record(peer, 'auth-accepted');
      if (this.behaviour === 'silent-after-auth') {
        // Stop feeding ssh2 (the same move ssh2 makes on a fatal parse error) but keep
        // reading, so the kernel keeps ACKing and we still notice the client leaving. ssh2
        // sends nothing on its own (its server keepalive is set to "never"), so nothing is
        // ever answered again.
        peer.socket.removeAllListeners('data');
        peer.socket.on('data', noop);
        this.#record(peer, 'silent');
        return;
      }
      client.on('session', (accept, reject) => {
        if (this.behaviour === 'refuse-channel' || this.#closing) {
          // ssh2 answers CHANNEL_OPEN_FAILURE with reason 2 (connect failed), like sshd at MaxSessions.
          reject();
          this.#record(peer, 'session-refused');
          return;
        }
        this.#onSession(peer, accept());
      });
    });
  }

  #authenticate(peer: Peer, ctx: AuthContext): void {
    this.#record(peer, 'auth-attempt', ctx.method);
    if (this.behaviour === 'never-answers-auth') {
      this.#record(peer, 'auth-ignored', ctx.method);
      return;
    }
    const cooperative = this.behaviour === 'cooperative';
    const methods: AuthenticationType[] = ['publickey', 'password'];
    const refuse = (): void => {
      this.#record(peer, 'auth-rejected', ctx.method);
      ctx.reject(methods);
    };
    const userOk = !cooperative || sameBytes(Buffer.from(ctx.username), Buffer.from(TEST_USER));
    if (ctx.method === 'password') {
      if (!userOk || (cooperative && !sameBytes(Buffer.from(ctx.password), Buffer.from(TEST_PASSWORD)))) return refuse();
      return ctx.accept();
    }
    if (ctx.method === 'publickey') {
      const key = parsePublicKey(ctx.key.data);
      // ctx.key.algo names the signature algorithm (e.g. rsa-sha2-256), not the key type.
      if (!userOk || key === undefined) return refuse();
      if (cooperative && !this.#authorized.some((blob) => sameBytes(ctx.key.data, blob))) return refuse();
      // Without a signature the client only asks whether the key would do (ssh2 sends PK_OK).
      if (ctx.signature === undefined) return ctx.accept();
      if (ctx.blob === undefined || key.verify(ctx.blob, ctx.signature, ctx.hashAlgo) !== true) return refuse();
      return ctx.accept();
    }
    return refuse();
  }

  #onSession(peer: Peer, session: Session): void {
    this.#record(peer, 'session-open');
    session.on('error', noop);
    const env = new Map<string, string>();
    let envBytes = 0;
    let started = false;
    let onSignal: ((name: string) => void) | undefined;

    // `accept`/`reject` are undefined when the client asked for no reply.
    type Reply = (() => void) | undefined;
    session.on('pty', (accept: Reply) => {
      this.#record(peer, 'pty');
      accept?.();
    });
    session.on('window-change', (accept: Reply) => accept?.());
    session.on('env', (accept: Reply, reject: Reply, info: { key: string; val: string }) => {
      const bytes = Buffer.byteLength(info.key) + Buffer.byteLength(info.val);
      if (started || (env.size >= MAX_ENV_VARS && !env.has(info.key)) || envBytes + bytes > MAX_ENV_BYTES) {
        reject?.();
        return;
      }
      this.#record(peer, 'env', info.key);
      envBytes += bytes;
      env.set(info.key, info.val);
      accept?.();
    });
    session.on('signal', (accept: Reply, _reject: Reply, info: { name: string }) => {
      this.#record(peer, 'signal', info.name);
      accept?.();
      onSignal?.(info.name);
    });
    const refuse = (_accept: unknown, reject: Reply): void => reject?.();
    for (const request of ['shell', 'subsystem', 'sftp', 'x11', 'auth-agent']) session.on(request, refuse);

    session.on('exec', (accept: () => ServerChannel | undefined, reject: Reply, info: { command: string }) => {
      if (started || this.#closing || peer.gone) {
        reject?.();
        return;
      }
      started = true;
      this.#record(peer, 'exec', info.command);
      const channel = accept();
      if (channel === undefined) return;
      channel.on('error', noop);
      channel.stderr.on('error', noop);
      channel.once('close', () => this.#record(peer, 'channel-close'));
      switch (this.behaviour) {
        case 'exec-never-ends':
          channel.resume(); // discard stdin; never write, never exit, ignore signals
          return;
        case 'endless-output':
          channel.resume();
          this.#endlessOutput(peer, channel);
          return;
        case 'drip-feed':
          channel.resume();
          this.#dripFeed(peer, channel);
          return;
        case 'close-mid-stream':
          channel.resume();
          this.#closeMidStream(peer, channel);
          return;
        case 'cooperative': {
          const script = new Script(
            channel,
            env,
            (delay, fn) => later(peer, delay, fn),
            (name, detail) => this.#record(peer, name, detail),
            (bytes) => {
              this.#outputBytes += bytes;
            },
          );
          onSignal = (name) => script.signal(name);
          void script.run(info.command);
          return;
        }
        default:
          channel.resume();
      }
    });
  }

  /** Writes stdout (and a stderr line every 16 chunks) forever, waiting for 'drain' when told to. */
  #endlessOutput(peer: Peer, channel: ServerChannel): void {
    let stopped = false;
    let count = 0;
    let stderrBlocked = false;
    let blockedSeen = false;
    let cancel: () => void = noop;
    const pump = (): void => {
      cancel = noop;
      for (let i = 0; i < 8 && !stopped; i++) {
        if (++count % 16 === 0 && !stderrBlocked) {
          this.#outputBytes += STDERR_LINE.length;
          if (!channel.stderr.write(STDERR_LINE)) {
            stderrBlocked = true;
            channel.stderr.once('drain', () => {
              stderrBlocked = false;
            });
          }
        }
        this.#outputBytes += OUTPUT_CHUNK.length;
        if (!channel.write(OUTPUT_CHUNK)) {
          if (!blockedSeen) {
            blockedSeen = true;
            this.#record(peer, 'output-blocked');
          }
          channel.once('drain', pump);
          return;
        }
      }
      // Yield to the event loop between bursts: client and server may share this process.
      if (!stopped) cancel = soon(peer, pump);
    };
    const stop = (): void => {
      stopped = true;
      cancel();
      channel.off('drain', pump);
    };
    channel.once('close', stop);
    peer.socket.once('close', stop);
    pump();
  }

  #dripFeed(peer: Peer, channel: ServerChannel): void {
    const drip = (): void => {
      if (!channel.writable) return;
      this.#outputBytes += 1;
      channel.write('.');
    };
    drip();
    const stop = every(peer, this.#options.dripIntervalMs ?? 1000, drip);
    channel.once('close', stop);
  }

  #closeMidStream(peer: Peer, channel: ServerChannel): void {
    const bytes = this.#options.closeAfterBytes ?? 64 * 1024;
    const mode = this.#options.closeWith ?? 'fin';
    const payload = Buffer.alloc(bytes, 'close-mid-stream\n');
    this.#outputBytes += bytes;
    channel.write(payload, () => {
      if (peer.gone) return;
      this.#record(peer, 'output-written', `${bytes} bytes`);
      // An empty write completes after everything before it reached the kernel.
      peer.socket.write(EMPTY, () => {
        if (peer.gone) return;
        this.#record(peer, 'socket-destroyed', mode);
        if (mode === 'rst') peer.socket.resetAndDestroy();
        else peer.socket.destroy();
      });
    });
  }
}

// ---------------------------------------------------------------------------------------
// cooperative: a tiny scripted interpreter (not a shell).

/**
 * Runs `STATEMENT; STATEMENT; ...` on a channel. Statements: `echo TEXT` (TEXT\n on stdout),
 * `stderr TEXT` (TEXT\n on stderr), `exit N` (stop with status N), `cat` (copy stdin to
 * stdout until EOF), `env NAME` (the value set by an `env` request, status 1 when unset),
 * `sleep SECONDS`. Anything else: a message on stderr and status 127. The exit status is the
 * last statement's. A `signal` request stops the script and reports that signal as its exit.
 */
class Script {
  readonly #channel: ServerChannel;
  readonly #env: ReadonlyMap<string, string>;
  readonly #later: (ms: number, fn: () => void) => () => void;
  readonly #record: (name: HostileEventName, detail?: string) => void;
  readonly #count: (bytes: number) => void;
  /** 'closed', or the name of the signal that stopped the script. */
  #interruption: string | undefined;
  /** Ends the current wait early (set while waiting). */
  #wake: () => void = noop;

  constructor(
    channel: ServerChannel,
    env: ReadonlyMap<string, string>,
    laterFn: (ms: number, fn: () => void) => () => void,
    record: (name: HostileEventName, detail?: string) => void,
    count: (bytes: number) => void,
  ) {
    this.#channel = channel;
    this.#env = env;
    this.#later = laterFn;
    this.#record = record;
    this.#count = count;
    channel.once('close', () => this.#interrupt('closed'));
  }

  signal(name: string): void {
    this.#interrupt(name.toUpperCase().replace(/^SIG/, ''));
  }

  async run(command: string): Promise<void> {
    const channel = this.#channel;
    let status = 0;
    for (const raw of command.split(';')) {
      if (this.#interruption !== undefined) break;
      const statement = raw.trim();
      const space = statement.indexOf(' ');
      const verb = space === -1 ? statement : statement.slice(0, space);
      const arg = space === -1 ? '' : statement.slice(space + 1);
      if (verb === '') continue;
      if (verb === 'exit') {
        const n = Number.parseInt(arg, 10);
        status = Number.isInteger(n) ? n & 0xff : 2;
        break;
      }
      status = 0;
      switch (verb) {
        case 'echo':
          await this.#write(channel, `${arg}\n`);
          break;
        case 'stderr':
          await this.#write(channel.stderr, `${arg}\n`);
          break;
        case 'env': {
          const value = this.#env.get(arg);
          if (value === undefined) status = 1;
          else await this.#write(channel, `${value}\n`);
          break;
        }
        case 'sleep': {
          const seconds = Number(arg);
          if (!Number.isFinite(seconds) || seconds < 0) {
            await this.#write(channel.stderr, `sleep: invalid time '${arg}'\n`);
            status = 1;
          } else {
            await this.#wait((done) => this.#later(Math.min(seconds * 1000, NEVER_MS), done));
          }
          break;
        }
        case 'cat':
          await this.#cat();
          break;
        default:
          await this.#write(channel.stderr, `hostile: ${verb}: command not found\n`);
          status = 127;
      }
    }
    const why = this.#interruption;
    if (why === 'closed') return;
    // Drain whatever stdin is left, so the channel can finish closing.
    channel.resume();
    if (why !== undefined && isSignalName(why)) {
      channel.exit(why, false, '');
      this.#record('exit-sent', `signal ${why}`);
    } else {
      channel.exit(status);
      this.#record('exit-sent', `status ${status}`);
    }
    channel.end();
  }

  #interrupt(why: string): void {
    this.#interruption ??= why;
    this.#wake();
  }

  /** Waits until `start`'s callback runs or the script is interrupted; `start` returns a canceller. */
  async #wait(start: (done: () => void) => () => void): Promise<void> {
    if (this.#interruption !== undefined) return;
    await new Promise<void>((resolve) => {
      let cancel: () => void = noop;
      const done = (): void => {
        this.#wake = noop;
        cancel();
        resolve();
      };
      this.#wake = done;
      cancel = start(done);
    });
  }

  async #write(stream: Writable, text: string): Promise<void> {
    this.#count(Buffer.byteLength(text));
    if (!stream.write(text)) {
      await this.#wait((done) => {
        stream.once('drain', done);
        return () => stream.off('drain', done);
      });
    }
  }

  async #cat(): Promise<void> {
    const channel = this.#channel;
    await this.#wait((done) => {
      const onData = (chunk: Buffer): void => {
        this.#count(chunk.length);
        if (!channel.write(chunk)) {
          channel.pause();
          channel.once('drain', () => channel.resume());
        }
      };
      channel.on('data', onData);
      channel.once('end', done);
      channel.resume();
      return () => {
        channel.off('data', onData);
        channel.off('end', done);
      };
    });
  }
}

const SIGNALS = new Set(['ABRT', 'ALRM', 'FPE', 'HUP', 'ILL', 'INT', 'KILL', 'PIPE', 'QUIT', 'SEGV', 'TERM', 'USR1', 'USR2']);

function isSignalName(name: string): boolean {
  return SIGNALS.has(name);
}

// ---------------------------------------------------------------------------------------
// Raw protocol pieces: a hand-built KEXINIT and a bounded sniffer of the client's plaintext.

const KEXINIT = 20;
const KEX_INIT = 30;

/** The server's KEXINIT as an unencrypted binary packet (RFC 4253 §6, §7.1), offering common algorithms. */
function kexinitPacket(): Buffer {
  const lists = [
    'curve25519-sha256,curve25519-sha256@libssh.org,ecdh-sha2-nistp256,ecdh-sha2-nistp384,ecdh-sha2-nistp521,diffie-hellman-group14-sha256',
    'ssh-ed25519',
    'aes128-gcm@openssh.com,aes256-gcm@openssh.com,aes128-ctr,aes192-ctr,aes256-ctr,chacha20-poly1305@openssh.com',
    'aes128-gcm@openssh.com,aes256-gcm@openssh.com,aes128-ctr,aes192-ctr,aes256-ctr,chacha20-poly1305@openssh.com',
    'hmac-sha2-256-etm@openssh.com,hmac-sha2-512-etm@openssh.com,hmac-sha2-256,hmac-sha2-512',
    'hmac-sha2-256-etm@openssh.com,hmac-sha2-512-etm@openssh.com,hmac-sha2-256,hmac-sha2-512',
    'none',
    'none',
    '',
    '',
  ];
  const parts: Buffer[] = [Buffer.from([KEXINIT]), randomBytes(16)];
  for (const list of lists) {
    const text = Buffer.from(list, 'ascii');
    const len = Buffer.alloc(4);
    len.writeUInt32BE(text.length);
    parts.push(len, text);
  }
  parts.push(Buffer.from([0, 0, 0, 0, 0])); // first_kex_packet_follows = false, reserved uint32 0
  const payload = Buffer.concat(parts);
  let padding = 8 - ((4 + 1 + payload.length) % 8);
  if (padding < 4) padding += 8;
  const header = Buffer.alloc(5);
  header.writeUInt32BE(1 + payload.length + padding);
  header[4] = padding;
  return Buffer.concat([header, payload, randomBytes(padding)]);
}

/**
 * Follows the client's side before any key is agreed: the ident line, then plaintext binary
 * packets. Holds at most one packet (≤ 35000 bytes); stops parsing at anything odd.
 */
class ClientSniffer {
  readonly #report: (name: HostileEventName, detail?: string) => void;
  #buffer: Buffer = EMPTY;
  #state: 'ident' | 'packets' | 'done' = 'ident';
  #packets = 0;

  constructor(report: (name: HostileEventName, detail?: string) => void) {
    this.#report = report;
  }

  push(chunk: Buffer): void {
    if (this.#state === 'done') return;
    this.#buffer = this.#buffer.length === 0 ? chunk : Buffer.concat([this.#buffer, chunk]);
    for (;;) {
      if (this.#state === 'ident') {
        const eol = this.#buffer.indexOf(0x0a);
        if (eol === -1) {
          if (this.#buffer.length > 255) this.#stop();
          return;
        }
        const line = this.#buffer.subarray(0, eol).toString('latin1').replace(/\r$/, '');
        this.#buffer = this.#buffer.subarray(eol + 1);
        if (!line.startsWith('SSH-')) continue; // not an ident: skip the line
        this.#report('client-ident', line);
        this.#state = 'packets';
        continue;
      }
      if (this.#state !== 'packets' || this.#buffer.length < 6) return;
      const length = this.#buffer.readUInt32BE(0);
      if (length < 5 || length > 35000) return this.#stop();
      if (this.#buffer.length < 4 + length) return;
      const type = this.#buffer[5] ?? -1;
      this.#buffer = this.#buffer.subarray(4 + length);
      if (type === KEXINIT) this.#report('client-kexinit');
      else if (type === KEX_INIT) this.#report('client-kex-init');
      else this.#report('client-packet', `type ${type}`);
      if (++this.#packets >= 16) return this.#stop();
    }
  }

  #stop(): void {
    this.#state = 'done';
    this.#buffer = EMPTY;
  }
}

// ---------------------------------------------------------------------------------------
// Timers tied to a peer: cancelled when its socket closes (or by the returned function).

function disposeAll(peer: Peer): void {
  for (const dispose of [...peer.disposers]) dispose();
}

function every(peer: Peer, ms: number, fn: () => void): () => void {
  if (peer.gone) return noop;
  const timer = setInterval(fn, ms);
  const dispose = (): void => {
    clearInterval(timer);
    peer.disposers.delete(dispose);
  };
  peer.disposers.add(dispose);
  return dispose;
}

function later(peer: Peer, ms: number, fn: () => void): () => void {
  if (peer.gone) return noop;
  const timer = setTimeout(() => {
    peer.disposers.delete(dispose);
    fn();
  }, ms);
  const dispose = (): void => {
    clearTimeout(timer);
    peer.disposers.delete(dispose);
  };
  peer.disposers.add(dispose);
  return dispose;
}

function soon(peer: Peer, fn: () => void): () => void {
  if (peer.gone) return noop;
  const immediate = setImmediate(() => {
    peer.disposers.delete(dispose);
    fn();
  });
  const dispose = (): void => {
    clearImmediate(immediate);
    peer.disposers.delete(dispose);
  };
  peer.disposers.add(dispose);
  return dispose;
}

// ---------------------------------------------------------------------------------------
// Keys.

/** A public key from its SSH wire blob (ssh2's parseKey falls back to the binary format). */
function parsePublicKey(blob: Buffer): ParsedKey | undefined {
  return parseSingleKey(blob);
}

/** The SSH wire blob of an authorized key given as text, blob or parsed key. */
function publicBlob(key: string | Buffer | ParsedKey): Buffer {
  if (Buffer.isBuffer(key)) return key;
  const parsed = typeof key === 'string' ? parseSingleKey(key) : key;
  if (parsed === undefined) throw new Error('hostile server: cannot parse an authorized key');
  return parsed.getPublicSSH();
}

/** Constant-time comparison that does not leak the expected length (ssh2 README). */
function sameBytes(input: Buffer, expected: Buffer): boolean {
  const lengthDiffers = input.length !== expected.length;
  const equal = timingSafeEqual(input, lengthDiffers ? input : expected);
  return !lengthDiffers && equal;
}

function noop(): void {}
