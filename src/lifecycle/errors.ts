import type { Stage } from './stages.ts';

/**
 * Why a task did not complete: the stable error codes of DESIGN.md, used verbatim by the
 * CLI, the API, metric labels and the database. Never rename one.
 */
export const ERROR_CODES = [
  'dns-error',
  'connect-refused',
  'connect-timeout',
  'handshake-timeout',
  'hostkey-unknown',
  'hostkey-mismatch',
  'auth-failed',
  'auth-timeout',
  'channel-open-failed',
  'command-timeout',
  'idle-timeout',
  'connection-lost',
  'cancelled',
  'protocol-error',
  'internal',
] as const;

/** One of {@link ERROR_CODES}. */
export type ErrorCode = (typeof ERROR_CODES)[number];

/** What each code means, for help texts, API docs and the test that every code is documented. */
export const ERROR_CATALOG: Readonly<Record<ErrorCode, string>> = {
  'dns-error': 'the host name could not be resolved',
  'connect-refused': 'the TCP connection was refused or the host is unreachable',
  'connect-timeout': 'the TCP connection was not established within the connect deadline',
  'handshake-timeout': 'the SSH banner, key exchange or host key check did not finish within the handshake deadline',
  'hostkey-unknown': 'the host key is not in known_hosts and the policy does not accept new keys',
  'hostkey-mismatch': 'the host key differs from the one in known_hosts, or is revoked; the command was not run',
  'auth-failed': 'the server rejected every authentication method offered',
  'auth-timeout': 'authentication did not finish within the auth deadline',
  'channel-open-failed': 'the server refused to open a session channel or to start the command',
  'command-timeout': 'the command did not finish within the command deadline and was stopped',
  'idle-timeout': 'the command printed nothing for longer than the idle deadline and was stopped',
  'connection-lost': 'the connection closed or stopped answering (SSH keepalive) before the command finished',
  cancelled: 'the task was cancelled',
  'protocol-error': 'the server broke the SSH protocol or sent something leash cannot use',
  internal: 'a bug in leash; the message says where',
};

/** True when `value` is one of the stable error codes. */
export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && (ERROR_CODES as readonly string[]).includes(value);
}

/**
 * A task failure: a stable `code`, the `stage` it happened in, a message that names the
 * problem (never a secret), and the underlying `cause`.
 */
export class LeashError<C extends ErrorCode = ErrorCode> extends Error {
  override readonly name = 'LeashError';
  readonly code: C;
  readonly stage: Stage;

  constructor(code: C, stage: Stage, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.stage = stage;
  }

  /** The wire shape used by `--json` output and the API: `{code, stage, message}`. */
  toJSON(): { code: C; stage: Stage; message: string } {
    return { code: this.code, stage: this.stage, message: this.message };
  }
}

/** True for a {@link LeashError}, optionally of one code. */
export function isLeashError(err: unknown, code?: ErrorCode): err is LeashError {
  return err instanceof LeashError && (code === undefined || err.code === code);
}

/**
 * Any thrown value or abort reason as a LeashError. Cancellers abort with a LeashError
 * (see {@link cancelledError}); a bare `abort()` (an AbortError) counts as a cancel; anything
 * else is a bug in leash and becomes `internal`, keeping the original as `cause`.
 */
export function asTaskError(err: unknown, stage: Stage): LeashError {
  // A canceller cannot know the stage; the task records where the cancel caught it.
  if (err instanceof LeashError && err.code === 'cancelled' && err.stage !== stage) return cancelledError(stage, err.message, err.cause);
  if (err instanceof LeashError) return err as LeashError;
  if (err instanceof Error && err.name === 'AbortError') return cancelledError(stage, 'cancelled', err);
  return new LeashError('internal', stage, `unexpected failure: ${describe(err)}`, { cause: err });
}

/** A thrown value as text, for any value at all (String() throws for some objects). */
function describe(value: unknown): string {
  if (value instanceof Error) return value.message;
  try {
    return String(value);
  } catch {
    return Object.prototype.toString.call(value);
  }
}

/** The abort reason for cancelling a task that is in `stage`. */
export function cancelledError(stage: Stage, why: string, cause?: unknown): LeashError<'cancelled'> {
  return new LeashError('cancelled', stage, why, cause === undefined ? undefined : { cause });
}
