import ssh2 from 'ssh2';
import type { AnyAuthMethod, AuthenticationType, NextAuthHandler } from 'ssh2';
import { waitUntil } from '../lifecycle/abort.ts';
import { withDeadline } from '../lifecycle/deadline.ts';
import { asTaskError, LeashError } from '../lifecycle/errors.ts';
import type { ResourceLedger } from '../lifecycle/ledger.ts';
import type { Stage } from '../lifecycle/stages.ts';
import type { TaskProgress } from '../lifecycle/task-table.ts';
import { describeMethods, type Credentials } from './credentials.ts';
import { SshConnection, type SshTarget } from './connection.ts';
import type { HostKeyVerdict, HostKeyVerifier } from './host-key-verifier.ts';
import { openJumpStream } from './jump-stream.ts';
import { openTcpSocket, type TrackedSocket } from './tcp-socket.ts';
import { TrackedAgent } from './tracked-agent.ts';

/** Deadlines of the stages before a connection is ready, in ms; 0 disables one. */
export interface ConnectTimeouts {
  /** DNS lookup and TCP connect. Default 10 000. */
  readonly connectMs: number;
  /** Server banner, key exchange and host key check. Default 15 000. */
  readonly handshakeMs: number;
  /** User authentication. Default 15 000. */
  readonly authMs: number;
}

/**
 * SSH-level keepalive (ssh2's global requests): the peer is declared dead after
 * `countMax` unanswered requests sent every `intervalMs`, about (countMax + 1) × intervalMs.
 * It catches a vanished peer and a frozen sshd that TCP keepalive cannot (SSH-PITFALLS 7).
 * `intervalMs` 0 disables it; some network devices never answer, hence per-host settings.
 */
export interface KeepaliveOptions {
  /** Default 15 000. */
  readonly intervalMs: number;
  /** Default 3. */
  readonly countMax: number;
}

/** Everything {@link connectSsh} needs. */
export interface ConnectOptions {
  readonly target: SshTarget;
  readonly timeouts: ConnectTimeouts;
  readonly keepalive: KeepaliveOptions;
  readonly credentials: Credentials;
  readonly hostKeys: HostKeyVerifier;
  readonly ledger: ResourceLedger;
  /** The task this connection is opened for; it owns every resource created here. */
  readonly task: TaskProgress;
  /** Task cancellation. */
  readonly signal: AbortSignal;
  /** Reach the target through this connection to a jump host (ProxyJump) instead of over TCP. */
  readonly via?: SshConnection;
}

/** Slack added to ssh2's own readyTimeout so that leash's stage deadlines fire first. */
const READY_TIMEOUT_SLACK_MS = 5000;

/**
 * Opens an authenticated SSH connection, stage by stage (`connecting`, `handshake`, `auth`),
 * each under its own deadline. leash creates the TCP socket and hands it to ssh2 as `sock`,
 * so every failure path ends with that socket destroyed and its ledger entries released
 * before this function settles (DESIGN.md invariants 1 and 2).
 */
export async function connectSsh(options: ConnectOptions): Promise<SshConnection> {
  const { target, timeouts, task, ledger } = options;
  const owner = task.id;

  task.enter('connecting');
  const via = options.via;
  task.wait(via ? 'jump-forward' : 'tcp-connect');
  const socket = await withDeadline(
    {
      ledger,
      owner,
      ms: timeouts.connectMs,
      parent: options.signal,
      label: 'connect',
      onTimeout: () =>
        new LeashError(
          'connect-timeout',
          'connecting',
          `no TCP connection to ${target.host}:${target.port}${via ? ` from jump host ${via.target.host}:${via.target.port}` : ''} within ${timeouts.connectMs} ms`,
        ),
    },
    (signal) =>
      via
        ? openJumpStream(via, target, { ledger, owner, signal })
        : openTcpSocket(target, { ledger, owner, signal, keepAliveInitialDelayMs: options.keepalive.intervalMs }),
  );

  task.enter('handshake');
  task.wait('server-banner');
  let stage: Stage = 'handshake';
  let verdict: HostKeyVerdict | null = null;
  // Filled in once the server has sent its first bytes; until then there is only the socket.
  const made: { connection: SshConnection | null } = { connection: null };
  try {
    const connection = await withDeadline(
      {
        ledger,
        owner,
        ms: timeouts.handshakeMs,
        parent: options.signal,
        label: 'handshake',
        onTimeout: () =>
          new LeashError('handshake-timeout', 'handshake', `SSH handshake with ${target.host}:${target.port} not done within ${timeouts.handshakeMs} ms (waiting for ${task.waiting ?? 'the server'})`),
      },
      async (signal): Promise<SshConnection> => {
        // ssh2's client, parser and key-exchange state are made only once the server has
        // spoken: a server that never does (the incident) costs a socket and a timer, not a
        // whole SSH client (bench: memory per stuck connection).
        await firstBytes(socket, target, signal);
        task.wait('key-exchange');
        const client = new ssh2.Client();
        const started = new SshConnection(client, socket, target, ledger, owner);
        made.connection = started;
        startClient(client, started, options, (v) => (verdict = v));
        await untilEvent(started, 'handshake', signal, () => hostKeyError(verdict) ?? started.failure('handshake'));
        return started;
      },
    );

    stage = 'auth';
    task.enter('auth');
    task.wait('auth-response');
    await withDeadline(
      {
        ledger,
        owner,
        ms: timeouts.authMs,
        parent: options.signal,
        label: 'auth',
        onTimeout: () =>
          new LeashError('auth-timeout', 'auth', `authentication as ${target.user} on ${target.host}:${target.port} not done within ${timeouts.authMs} ms`),
      },
      (signal) => untilEvent(connection, 'ready', signal, () => authError(connection, options.credentials, target)),
    );
    task.wait(null);
    return connection;
  } catch (err) {
    if (made.connection) await made.connection.destroy();
    else {
      socket.destroy();
      await socket.closed;
    }
    throw asTaskError(err, stage);
  }
}

/**
 * Waits for the server's first bytes (its banner) and puts them back: the stream is paused
 * in the same 'data' event, so nothing is emitted with no listener, and ssh2 reads them
 * first when it resumes the stream.
 */
function firstBytes(socket: TrackedSocket, target: SshTarget, signal: AbortSignal): Promise<void> {
  const stream = socket.socket;
  return waitUntil<void>(signal, ({ resolve, reject }) => {
    const onData = (chunk: Buffer): void => {
      stream.pause();
      stream.unshift(chunk);
      resolve();
    };
    const onGone = (): void => reject(new LeashError('connection-lost', 'handshake', `${target.host}:${target.port} closed the connection before sending its SSH banner`));
    stream.on('data', onData);
    stream.once('end', onGone);
    stream.once('close', onGone);
    return () => {
      stream.off('data', onData);
      stream.off('end', onGone);
      stream.off('close', onGone);
    };
  });
}

/** Starts ssh2's side of the handshake on an already connected stream. */
function startClient(client: ssh2.Client, connection: SshConnection, options: ConnectOptions, onVerdict: (verdict: HostKeyVerdict) => void): void {
  const { target, timeouts, task, ledger } = options;
  const agent = options.credentials.agentSocket ? new TrackedAgent(options.credentials.agentSocket, { ledger, owner: task.id, signal: connection.signal }) : null;
  const hostKeyAlgorithms = options.hostKeys.preferredAlgorithms(target.host, target.port);
  const bothBounded = timeouts.handshakeMs > 0 && timeouts.authMs > 0;
  client.connect({
    sock: connection.socket.socket,
    username: target.user,
    // ssh2's own timer is only a backstop behind leash's stage deadlines (SSH-PITFALLS 1).
    readyTimeout: bothBounded ? timeouts.handshakeMs + timeouts.authMs + READY_TIMEOUT_SLACK_MS : 0,
    keepaliveInterval: options.keepalive.intervalMs,
    keepaliveCountMax: options.keepalive.countMax,
    ...(hostKeyAlgorithms ? { algorithms: { serverHostKey: hostKeyAlgorithms } } : {}),
    // ssh2 calls this again on every re-key, possibly long after the handshake.
    hostVerifier: (key: Buffer, verify: (valid: boolean) => void): void => {
      if (task.stage === 'handshake') task.wait('host-key-check');
      options.hostKeys.verify(target.host, target.port, key).then(
        (v: HostKeyVerdict) => {
          onVerdict(v);
          verify(v.outcome === 'match' || v.outcome === 'accepted-new' || v.outcome === 'unchecked');
        },
        () => verify(false),
      );
    },
    authHandler: makeAuthHandler(target.user, options.credentials, agent),
  });
}

/**
 * Waits for a one-shot client event. An `error` or `close` first rejects with `failure()`:
 * before `ready` every ssh2 error is fatal, and ssh2 then only half-closes the socket, so
 * waiting for `close` would let a peer that never closes turn a clear `auth-failed` or
 * `hostkey-mismatch` into a timeout.
 */
function untilEvent(connection: SshConnection, event: 'handshake' | 'ready', signal: AbortSignal, failure: () => LeashError): Promise<void> {
  return waitUntil<void>(signal, ({ resolve, reject }) => {
    const onEvent = (): void => resolve();
    const onFailure = (): void => reject(failure());
    // ssh2's typings list the client's events by overload; these take no arguments we need.
    const client = connection.client as unknown as NodeJS.EventEmitter;
    client.once(event, onEvent);
    client.once('error', onFailure);
    client.once('close', onFailure);
    return () => {
      client.off(event, onEvent);
      client.off('error', onFailure);
      client.off('close', onFailure);
    };
  });
}

function hostKeyError(verdict: HostKeyVerdict | null): LeashError | null {
  if (!verdict) return null;
  switch (verdict.outcome) {
    case 'unknown':
      return new LeashError('hostkey-unknown', 'handshake', verdict.message);
    case 'mismatch':
    case 'revoked':
      return new LeashError('hostkey-mismatch', 'handshake', verdict.message);
    default:
      return null;
  }
}

function authError(connection: SshConnection, credentials: Credentials, target: SshTarget): LeashError {
  const failure = connection.failure('auth');
  if (failure.code !== 'auth-failed') return failure;
  const methods = describeMethods(credentials);
  const tried = methods.length > 0 ? methods.join(', ') : 'no credentials were available';
  return new LeashError('auth-failed', 'auth', `${target.user}@${target.host}:${target.port} rejected every method offered: ${tried}`, {
    cause: failure,
  });
}

/**
 * Offers the configured methods in order, skipping those the server no longer accepts
 * (`authsLeft`), and ends with `false` so ssh2 reports "All configured authentication
 * methods failed" instead of waiting.
 */
function makeAuthHandler(user: string, credentials: Credentials, agent: TrackedAgent | null) {
  const methods: AnyAuthMethod[] = credentials.keys.map((k) => ({ type: 'publickey', username: user, key: k.parsed }));
  if (agent) methods.push({ type: 'agent', username: user, agent });
  if (credentials.password !== null) methods.push({ type: 'password', username: user, password: credentials.password });
  let next = 0;
  return (authsLeft: AuthenticationType[] | null, _partial: boolean | null, callback: NextAuthHandler): void => {
    while (next < methods.length) {
      const method = methods[next++]!;
      const wire = method.type === 'agent' ? 'publickey' : method.type;
      if (!authsLeft || authsLeft.includes(wire)) return callback(method);
    }
    // `false` ends authentication; ssh2 supports it but its typings omit it.
    (callback as unknown as (nextAuth: false) => void)(false);
  };
}
