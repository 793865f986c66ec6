import { LeashError } from '../lifecycle/errors.ts';
import type { Stage } from '../lifecycle/stages.ts';

/** The extra fields ssh2 puts on the errors it emits. */
interface Ssh2ErrorFields {
  level?: string;
  code?: string | number;
  description?: string;
}

/** SSH_DISCONNECT_NO_MORE_AUTH_METHODS_AVAILABLE (RFC 4253 §11.1): "Too many authentication failures". */
const DISCONNECT_NO_MORE_AUTH_METHODS = 14;

/**
 * Translates an error ssh2 emitted on the client into a stable code for the stage it
 * happened in. ssh2 tags its errors with `level`: `client-socket`, `client-timeout`
 * (readyTimeout or keepalive), `client-authentication`, `protocol`, `handshake`.
 */
export function fromSsh2Error(err: Error, stage: Stage): LeashError {
  const { level, code } = err as Error & Ssh2ErrorFields;
  const detail = err.message;
  if (level === 'client-authentication') {
    return new LeashError('auth-failed', stage, `authentication failed: ${detail}`, { cause: err });
  }
  if (level === 'client-timeout' && /keepalive/i.test(detail)) {
    return new LeashError('connection-lost', stage, 'the server stopped answering SSH keepalives', { cause: err });
  }
  if (level === 'client-timeout') {
    const timeoutCode = stage === 'auth' ? 'auth-timeout' : 'handshake-timeout';
    return new LeashError(timeoutCode, stage, `ssh2 ready timeout: ${detail}`, { cause: err });
  }
  if (level === 'client-socket') {
    return new LeashError('connection-lost', stage, `connection lost during ${stage}: ${detail}`, { cause: err });
  }
  if (typeof code === 'number') {
    // A DISCONNECT message from the server.
    if (code === DISCONNECT_NO_MORE_AUTH_METHODS) {
      return new LeashError('auth-failed', stage, `server disconnected: ${detail}`, { cause: err });
    }
    return new LeashError('connection-lost', stage, `server disconnected during ${stage}: ${detail}`, { cause: err });
  }
  if (/connection lost before handshake/i.test(detail)) {
    return new LeashError('connection-lost', stage, 'the server closed the connection before the SSH handshake', { cause: err });
  }
  if (level === 'protocol' || level === 'handshake') {
    return new LeashError('protocol-error', stage, `SSH protocol error during ${stage}: ${detail}`, { cause: err });
  }
  return new LeashError('protocol-error', stage, `SSH error during ${stage}: ${detail}`, { cause: err });
}

/** The connection closed without ssh2 reporting an error. */
export function closedDuring(stage: Stage): LeashError {
  return new LeashError('connection-lost', stage, `the server closed the connection during ${stage}`);
}
