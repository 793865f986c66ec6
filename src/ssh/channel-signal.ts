import type { ClientChannel } from 'ssh2';

/** The parts of ssh2's channel internals a signal request needs. */
interface ChannelInternals {
  outgoing?: { id?: number; state?: string };
  _client?: { _protocol?: { signal?: (id: number, name: string) => void } };
}

/**
 * Sends a `signal` channel request (RFC 4254 §6.9). ssh2's own `Channel.signal()` refuses
 * once our side has sent EOF (it checks `writable`), yet leash always closes stdin at once
 * so that commands reading it do not hang — and the request is still valid after EOF. So
 * this talks to ssh2's protocol object directly. Returns false when the channel is already
 * closing or ssh2's internals are not what this expects (the caller then closes the channel).
 */
export function sendSignal(channel: ClientChannel, name: string): boolean {
  const internals = channel as unknown as ChannelInternals;
  const id = internals.outgoing?.id;
  const state = internals.outgoing?.state;
  const protocol = internals._client?._protocol;
  if (typeof id !== 'number' || (state !== 'open' && state !== 'eof') || typeof protocol?.signal !== 'function') return false;
  try {
    protocol.signal(id, name);
    return true;
  } catch {
    return false;
  }
}
