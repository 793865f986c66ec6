import net from 'node:net';
import ssh2 from 'ssh2';
import type { GetStreamCallback } from 'ssh2';
import { onAbort } from '../lifecycle/abort.ts';
import type { ResourceLedger } from '../lifecycle/ledger.ts';

/** Who owns the agent's sockets, and the signal that ends them. */
export interface TrackedAgentScope {
  readonly ledger: ResourceLedger;
  readonly owner: string;
  /** Aborts when the connection using the agent is torn down. */
  readonly signal: AbortSignal;
}

/**
 * ssh2's OpenSSH agent client, with its per-request unix sockets registered in the ledger
 * and destroyed when the connection's signal aborts: ssh2's agent client has no timeouts
 * of its own (../shared/SSH-PITFALLS.md 4), so a hung agent would otherwise hold a socket
 * forever.
 */
export class TrackedAgent extends ssh2.OpenSSHAgent {
  readonly #scope: TrackedAgentScope;
  readonly #socketPath: string;

  constructor(socketPath: string, scope: TrackedAgentScope) {
    super(socketPath);
    this.#socketPath = socketPath;
    this.#scope = scope;
  }

  override getStream(cb: GetStreamCallback): void {
    let called = false;
    const once = (err: Error | null, stream?: net.Socket): void => {
      if (called) return;
      called = true;
      cb(err, stream);
    };
    const sock = new net.Socket();
    const handle = this.#scope.ledger.open('agent-socket', this.#scope.owner, { path: this.#socketPath });
    const unlink = onAbort(this.#scope.signal, () => sock.destroy());
    sock.once('close', () => {
      unlink();
      handle.release();
      once(new Error('ssh-agent connection closed'));
    });
    sock.on('error', (err) => once(new Error(`ssh-agent: ${err.message}`)));
    sock.once('connect', () => once(null, sock));
    if (!sock.destroyed) sock.connect(this.#socketPath);
  }
}
