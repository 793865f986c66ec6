/**
 * leash's built-in demo SSH target (DESIGN.md `leash serve --demo`, identity `demo`): an
 * in-process ssh2 server on 127.0.0.1 that runs exec requests as local commands, so a
 * newcomer's first `npm start` works on a machine without sshd.
 *
 * It behaves like a small, strict sshd: an ephemeral ed25519 host key, public key auth only
 * (one ephemeral client key, the current OS user), exec only (no shell, pty or subsystem),
 * `env` and `signal` requests (RFC 4254 §6.4, §6.9), MaxSessions 10 per connection, a login
 * grace time, and every command in its own process group, killed (like OpenSSH's killpg)
 * when its channel or connection goes away. Every server, socket, child process and timer it
 * creates is in the ledger and released exactly once. Key material is never logged.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { timingSafeEqual } from 'node:crypto';
import net from 'node:net';
import os from 'node:os';
import type { Readable, Writable } from 'node:stream';
import ssh2 from 'ssh2';
import type { AcceptConnection, AuthContext, ClientInfo, Connection, ParsedKey, RejectConnection, ServerChannel, Session } from 'ssh2';
import type { ResourceHandle, ResourceLedger } from '../lifecycle/ledger.ts';
import { generateKeyPair } from './ephemeral-keys.ts';

/** What the demo target offers to its callers (the `demo` identity). */
export interface DemoTarget {
  readonly host: '127.0.0.1';
  readonly port: number;
  /** The only user name accepted: the current OS user. */
  readonly user: string;
  /** The client private key, OpenSSH PEM text, for ssh2's parseKey. Never log it. */
  readonly clientPrivateKey: string;
  /** The server's public host key in SSH wire format. */
  readonly hostKeyBlob: Buffer;
  /** The host key as a known_hosts line: `[127.0.0.1]:PORT ssh-ed25519 AAAA...`. */
  readonly knownHostsLine: string;
  /**
   * Stops listening, ends every session, kills (SIGKILL to the process group) every command
   * still running, waits for all of it at most 2 s, and releases every ledger entry of the
   * target. Idempotent: later calls return the same promise.
   */
  close(): Promise<void>;
}

/** Options of {@link startDemoTarget}. */
export interface DemoTargetOptions {
  readonly ledger: ResourceLedger;
  /** TCP port on 127.0.0.1. Default 0 (any free port). */
  readonly port?: number;
  /** Ledger owner of everything the target creates. Default `demo-target`. */
  readonly owner?: string;
}

/** Sessions one connection may have open at once, like sshd's MaxSessions default. */
const MAX_SESSIONS_PER_CONNECTION = 10;
/** Time from TCP accept to successful auth, like sshd's LoginGraceTime (there 120 s). */
const LOGIN_GRACE_MS = 30_000;
/** Failed auth attempts before disconnecting, like sshd's MaxAuthTries. */
const MAX_AUTH_FAILURES = 6;
/** Bound on `close()`: half to let peers go gracefully, half after forcing them. */
const CLOSE_GRACE_MS = 2_000;
/** Bounds on `env` requests per session (bounded memory, DESIGN.md invariant 3). */
const MAX_ENV_VARS = 64;
const MAX_ENV_BYTES = 64 * 1024;
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const EMPTY = Buffer.alloc(0);

/**
 * Starts the demo target: generates its keys, listens on 127.0.0.1 and registers the
 * listening server in the ledger. Rejects when it cannot listen (e.g. the port is taken).
 */
export async function startDemoTarget(options: DemoTargetOptions): Promise<DemoTarget> {
  const owner = options.owner ?? 'demo-target';
  const hostKeys = generateKeyPair('ed25519');
  const clientKeys = generateKeyPair('ed25519');

  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: '127.0.0.1', port: options.port ?? 0, exclusive: true }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address();
  if (address === null || typeof address === 'string') {
    server.close();
    throw new Error('demo target: listening socket has no TCP address');
  }
  return new DemoTargetServer({
    ledger: options.ledger,
    owner,
    server,
    port: address.port,
    hostPrivateKey: hostKeys.privateKey,
    hostPublic: hostKeys.publicKey,
    clientPrivateKey: clientKeys.privateKey,
    clientPublic: clientKeys.publicKey,
  });
}

interface ServerParts {
  readonly ledger: ResourceLedger;
  readonly owner: string;
  readonly server: net.Server;
  readonly port: number;
  readonly hostPrivateKey: string;
  readonly hostPublic: ParsedKey;
  readonly clientPrivateKey: string;
  readonly clientPublic: ParsedKey;
}

/** One accepted TCP connection and the SSH connection on it. */
interface Peer {
  readonly socket: net.Socket;
  readonly handle: ResourceHandle;
  readonly loginGrace: ResourceHandle;
  /** Resolves on the socket's `close`. */
  readonly closed: Promise<void>;
  readonly runs: Set<CommandRun>;
  client: Connection | undefined;
  sessions: number;
  authFailures: number;
}

class DemoTargetServer implements DemoTarget {
  readonly host = '127.0.0.1' as const;
  readonly port: number;
  readonly user: string;
  readonly hostKeyBlob: Buffer;
  readonly knownHostsLine: string;

  readonly #ledger: ResourceLedger;
  readonly #owner: string;
  readonly #server: net.Server;
  readonly #serverHandle: ResourceHandle;
  readonly #serverClosed: Promise<void>;
  readonly #ssh: ssh2.Server;
  // Private fields: util.inspect and JSON.stringify of the target never show the keys.
  readonly #clientPrivateKey: string;
  readonly #clientPublic: ParsedKey;
  readonly #allowedUser: Buffer;
  readonly #home: string;
  /** Peers by `remoteAddress:remotePort`, how ssh2's `connection` event names them. */
  readonly #peers = new Map<string, Peer>();
  /** Every command whose child has not closed yet, whichever peer it belonged to. */
  readonly #runs = new Set<CommandRun>();
  #closing: Promise<void> | undefined;

  constructor(parts: ServerParts) {
    this.#ledger = parts.ledger;
    this.#owner = parts.owner;
    this.#server = parts.server;
    this.port = parts.port;
    this.user = currentUser();
    this.#home = homeDirectory();
    this.#allowedUser = Buffer.from(this.user);
    this.#clientPrivateKey = parts.clientPrivateKey;
    this.#clientPublic = parts.clientPublic;
    this.hostKeyBlob = parts.hostPublic.getPublicSSH();
    this.knownHostsLine = `[127.0.0.1]:${this.port} ${parts.hostPublic.type} ${this.hostKeyBlob.toString('base64')}`;

    this.#serverHandle = this.#ledger.open('server', this.#owner, { role: 'demo-target', host: this.host, port: this.port });
    this.#serverClosed = new Promise((resolve) => {
      this.#server.once('close', () => {
        this.#serverHandle.release();
        resolve();
      });
    });
    this.#server.on('error', noop);
    this.#server.on('connection', (socket) => this.#accept(socket));

    // Never listens itself: we own the TCP server and inject each socket, so every socket
    // is registered in the ledger from the moment it is accepted.
    this.#ssh = new ssh2.Server({ hostKeys: [parts.hostPrivateKey] });
    this.#ssh.on('error', noop);
    this.#ssh.on('connection', (client, info) => this.#onConnection(client, info));
  }

  get clientPrivateKey(): string {
    return this.#clientPrivateKey;
  }

  close(): Promise<void> {
    this.#closing ??= this.#shutdown();
    return this.#closing;
  }

  #accept(socket: net.Socket): void {
    socket.on('error', noop);
    // Reading the peer address now caches it for ssh2's `connection` event.
    const { remoteAddress, remotePort } = socket;
    if (this.#closing || remoteAddress === undefined || remotePort === undefined) {
      socket.destroy();
      return;
    }
    const key = `${remoteAddress}:${remotePort}`;
    const handle = this.#ledger.open('socket', this.#owner, { role: 'demo-target', remotePort });
    const loginGrace = this.#ledger.timeout(this.#owner, LOGIN_GRACE_MS, () => socket.destroy(), { purpose: 'login-grace', remotePort });
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    const peer: Peer = { socket, handle, loginGrace, closed, runs: new Set(), client: undefined, sessions: 0, authFailures: 0 };
    socket.once('close', () => {
      if (this.#peers.get(key) === peer) this.#peers.delete(key);
      loginGrace.release();
      for (const run of peer.runs) run.kill();
      handle.release();
    });
    this.#peers.set(key, peer);
    socket.setKeepAlive(true, 15_000);
    this.#ssh.injectSocket(socket);
  }

  #onConnection(client: Connection, info: ClientInfo): void {
    client.on('error', noop);
    const peer = this.#peers.get(`${info.ip}:${info.port}`);
    if (!peer || this.#closing) {
      client.end();
      return;
    }
    peer.client = client;
    client.on('authentication', (ctx) => this.#authenticate(peer, ctx));
    client.once('ready', () => {
      peer.loginGrace.release();
      client.on('session', (accept, reject) => this.#onSession(peer, accept, reject));
    });
    // The socket's `close` covers this too; whichever comes first kills the commands.
    client.once('close', () => {
      for (const run of peer.runs) run.kill();
    });
  }

  /** Public key auth with the one client key, as in ssh2's README server example. */
  #authenticate(peer: Peer, ctx: AuthContext): void {
    const refuse = (): void => {
      ctx.reject(['publickey']);
      if (ctx.method !== 'none' && ++peer.authFailures >= MAX_AUTH_FAILURES) peer.client?.end();
    };
    const userAllowed = sameBytes(Buffer.from(ctx.username), this.#allowedUser);
    if (ctx.method !== 'publickey') return refuse();
    const allowed = this.#clientPublic;
    if (!userAllowed || ctx.key.algo !== allowed.type || !sameBytes(ctx.key.data, allowed.getPublicSSH())) return refuse();
    // Without a signature the client only asks whether the key would do (ssh2 answers PK_OK).
    if (ctx.signature === undefined) return ctx.accept();
    if (ctx.blob === undefined || allowed.verify(ctx.blob, ctx.signature, ctx.hashAlgo) !== true) return refuse();
    ctx.accept();
  }

  #onSession(peer: Peer, accept: AcceptConnection<Session>, reject: RejectConnection): void {
    if (this.#closing || peer.sessions >= MAX_SESSIONS_PER_CONNECTION) {
      reject();
      return;
    }
    const session = accept();
    peer.sessions++;
    let counted = true;
    const uncount = (): void => {
      if (counted) {
        counted = false;
        peer.sessions--;
      }
    };
    session.on('error', noop);
    session.once('close', uncount);

    const env = new Map<string, string>();
    let envBytes = 0;
    let run: CommandRun | undefined;
    let started = false;

    // `accept`/`reject` are undefined when the client asked for no reply.
    session.on('env', (acceptEnv: (() => void) | undefined, rejectEnv: (() => void) | undefined, info) => {
      const bytes = Buffer.byteLength(info.key) + Buffer.byteLength(info.val);
      if (started || !ENV_NAME.test(info.key) || info.val.includes('\0') || (env.size >= MAX_ENV_VARS && !env.has(info.key)) || envBytes + bytes > MAX_ENV_BYTES) {
        rejectEnv?.();
        return;
      }
      envBytes += bytes;
      env.set(info.key, info.val);
      acceptEnv?.();
    });
    session.on('signal', (acceptSignal: (() => void) | undefined, rejectSignal: (() => void) | undefined, info) => {
      if (run?.signal(info.name)) acceptSignal?.();
      else rejectSignal?.();
    });
    // Exec only: the demo offers no terminal, shell or subsystem.
    const refuse = (_accept: unknown, rejectIt: (() => void) | undefined): void => rejectIt?.();
    session.on('pty', refuse);
    session.on('shell', refuse);
    session.on('subsystem', refuse);
    session.on('sftp', refuse);

    session.on('exec', (acceptExec: AcceptConnection<ServerChannel>, rejectExec: (() => void) | undefined, info) => {
      if (started || this.#closing) {
        rejectExec?.();
        return;
      }
      started = true;
      const channel = acceptExec() as ServerChannel | undefined;
      if (channel === undefined) return; // the session ended before the reply
      channel.once('close', uncount);
      const attrs = { remotePort: peer.socket.remotePort ?? 0 };
      run = new CommandRun(channel, info.command, this.#childEnv(peer, env), this.#home, this.#ledger, this.#owner, attrs);
      const current = run;
      peer.runs.add(current);
      this.#runs.add(current);
      void current.closed.then(() => {
        peer.runs.delete(current);
        this.#runs.delete(current);
      });
    });
  }

  /** A login-like environment (not leash's own, which may hold secrets) plus `env` requests. */
  #childEnv(peer: Peer, requested: ReadonlyMap<string, string>): NodeJS.ProcessEnv {
    const base: NodeJS.ProcessEnv = {
      HOME: this.#home,
      USER: this.user,
      LOGNAME: this.user,
      SHELL: '/bin/sh',
      PATH: process.env['PATH'] ?? '/usr/local/bin:/usr/bin:/bin',
      SSH_CONNECTION: `${peer.socket.remoteAddress ?? '127.0.0.1'} ${peer.socket.remotePort ?? 0} 127.0.0.1 ${this.port}`,
    };
    for (const name of ['LANG', 'TZ']) {
      const value = process.env[name];
      if (value !== undefined) base[name] = value;
    }
    return { ...base, ...Object.fromEntries(requested) };
  }

  /** Two-phase: stop intake and end everything, then force what is left after the grace. */
  async #shutdown(): Promise<void> {
    this.#server.close();
    const peers = [...this.#peers.values()];
    const runs = [...this.#runs];
    for (const run of runs) run.kill();
    for (const peer of peers) {
      peer.loginGrace.release();
      // A peer that spoke SSH gets a DISCONNECT; one that never did is just dropped.
      if (peer.client) peer.client.end();
      else peer.socket.destroy();
    }
    const allClosed = Promise.all([this.#serverClosed, ...peers.map((p) => p.closed), ...runs.map((r) => r.closed)]);
    if (!(await this.#within(CLOSE_GRACE_MS / 2, allClosed))) {
      for (const peer of peers) peer.socket.destroy();
      await this.#within(CLOSE_GRACE_MS / 2, allClosed);
    }
    // Whatever has still not reported its end is gone from our side: release it anyway.
    for (const run of runs) run.release();
    for (const peer of peers) {
      peer.loginGrace.release();
      peer.handle.release();
    }
    this.#serverHandle.release();
  }

  /** Resolves true when `done` settles within `ms`, false on the deadline. */
  #within(ms: number, done: Promise<unknown>): Promise<boolean> {
    return new Promise((resolve) => {
      const timer = this.#ledger.timeout(this.#owner, ms, () => resolve(false), { purpose: 'close-grace' });
      void done.then(() => {
        timer.release();
        resolve(true);
      });
    });
  }
}

/**
 * One exec request: `/bin/sh -c COMMAND` in its own process group, wired to the channel
 * with backpressure both ways, reporting its exit status or signal (RFC 4254 §6.10).
 */
class CommandRun {
  /** Resolves on the child's `close` (exited and all its pipes closed). */
  readonly closed: Promise<void>;
  readonly #channel: ServerChannel;
  readonly #child: ChildProcess | undefined;
  readonly #handle: ResourceHandle | undefined;
  #childClosed = false;
  /** The channel is gone or we gave up on it: nothing more is reported to the client. */
  #abandoned = false;

  constructor(
    channel: ServerChannel,
    command: string,
    env: NodeJS.ProcessEnv,
    cwd: string,
    ledger: ResourceLedger,
    owner: string,
    attrs: Record<string, number>,
  ) {
    this.#channel = channel;
    channel.on('error', noop);
    channel.stderr.on('error', noop);
    channel.once('close', () => {
      if (!this.#childClosed) this.kill();
      this.#abandoned = true;
    });

    let child: ChildProcess;
    try {
      child = spawn('/bin/sh', ['-c', command], { cwd, env, detached: true, stdio: ['pipe', 'pipe', 'pipe'] });
    } catch (err) {
      // Thrown synchronously for arguments spawn refuses (e.g. a NUL byte in the command).
      this.#childClosed = true;
      this.closed = Promise.resolve();
      void this.#report(null, null, err);
      return;
    }
    this.#child = child;
    this.#handle = ledger.open('child-process', owner, { ...attrs, pid: child.pid ?? -1 });

    let spawnError: unknown;
    child.on('error', (err) => {
      spawnError ??= err;
    });
    const { stdin, stdout, stderr } = child;
    for (const stream of [stdin, stdout, stderr]) stream?.on('error', noop);
    if (stdout) forward(stdout, channel);
    if (stderr) forward(stderr, channel.stderr);
    if (stdin) this.#forwardStdin(stdin);

    this.closed = new Promise((resolve) => {
      child.once('close', (code, signal) => {
        this.#childClosed = true;
        this.#handle?.release();
        resolve();
        void this.#report(code, signal, spawnError);
      });
    });
  }

  /** Delivers a `signal` request (name with or without `SIG`) to the process group. */
  signal(name: string): boolean {
    const signal = signalNamed(name);
    if (signal === undefined || this.#childClosed) return false;
    return killGroup(this.#child?.pid, signal);
  }

  /** Kills the process group and drops its pipes; nothing more is sent on the channel. */
  kill(): void {
    this.#abandoned = true;
    if (!this.#childClosed) killGroup(this.#child?.pid, 'SIGKILL');
    // Also ends the wait when a process outside the group still holds a pipe open.
    this.#child?.stdin?.destroy();
    this.#child?.stdout?.destroy();
    this.#child?.stderr?.destroy();
  }

  /** Releases the ledger entry by force (close() after its grace); idempotent. */
  release(): void {
    this.#handle?.release();
  }

  #forwardStdin(stdin: Writable): void {
    const channel = this.#channel;
    let open = true;
    let waiting = false;
    // Keep the channel flowing to its end: ssh2 emits a server channel's `close` only after
    // its readable side has ended.
    stdin.once('close', () => {
      open = false;
      channel.resume();
    });
    channel.on('data', (chunk: Buffer) => {
      if (!open) return;
      if (!stdin.write(chunk) && !waiting) {
        waiting = true;
        channel.pause();
        stdin.once('drain', () => {
          waiting = false;
          channel.resume();
        });
      }
    });
    channel.once('end', () => {
      if (open) stdin.end();
    });
  }

  /** After the child's output is flushed: exit status or signal, then EOF and close. */
  async #report(code: number | null, signal: NodeJS.Signals | null, spawnError: unknown): Promise<void> {
    const channel = this.#channel;
    if (this.#abandoned) return;
    if (code === null && signal === null) {
      const why = spawnError instanceof Error ? spawnError.message : 'unknown error';
      channel.stderr.write(`leash demo target: cannot run the command: ${why}\n`);
    }
    await flushed(channel);
    if (this.#abandoned) return;
    if (signal !== null) channel.exit(signal.replace(/^SIG/, ''), false, '');
    else channel.exit(code ?? 127);
    channel.end();
  }
}

/** Child output to a channel stream, pausing the child while the channel is full. */
function forward(from: Readable, to: Writable): void {
  let waiting = false;
  from.on('data', (chunk: Buffer) => {
    if (!to.write(chunk) && !waiting) {
      waiting = true;
      from.pause();
      to.once('drain', () => {
        waiting = false;
        from.resume();
      });
    }
  });
}

/** Resolves when everything written to stdout and stderr has gone out, or the channel closed. */
function flushed(channel: ServerChannel): Promise<void> {
  return new Promise((resolve) => {
    let pending = 2;
    const finish = (): void => {
      channel.off('close', finish);
      resolve();
    };
    const one = (): void => {
      if (--pending === 0) finish();
    };
    channel.once('close', finish);
    // Writes complete in order, so an empty write completes after everything before it.
    channel.write(EMPTY, one);
    channel.stderr.end(one);
  });
}

/** `kill(-pid)`: the whole process group, as OpenSSH's killpg. False when nothing was there. */
function killGroup(pid: number | undefined, signal: NodeJS.Signals): boolean {
  if (pid === undefined || pid <= 0) return false;
  try {
    process.kill(-pid, signal);
    return true;
  } catch {
    return false;
  }
}

/** RFC 4254 §6.9 names signals without `SIG`; ssh2's docs show it with. Accept both. */
function signalNamed(name: string): NodeJS.Signals | undefined {
  const full = `SIG${name.toUpperCase().replace(/^SIG/, '')}`;
  return Object.hasOwn(os.constants.signals, full) ? (full as NodeJS.Signals) : undefined;
}

/** Constant-time comparison that does not leak the expected length (ssh2 README). */
function sameBytes(input: Buffer, expected: Buffer): boolean {
  const lengthDiffers = input.length !== expected.length;
  const equal = timingSafeEqual(input, lengthDiffers ? input : expected);
  return !lengthDiffers && equal;
}

/** The OS user name; containers may run as a uid without a passwd entry. */
function currentUser(): string {
  try {
    return os.userInfo().username;
  } catch {
    return process.env['USER'] ?? process.env['LOGNAME'] ?? String(process.getuid?.() ?? 'user');
  }
}

function homeDirectory(): string {
  try {
    return os.homedir();
  } catch {
    return '/';
  }
}

function noop(): void {}
