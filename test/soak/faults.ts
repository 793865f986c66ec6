// The soak's network faults: one chaos peer (a namespace with a real sshd, test/chaos/)
// suffers one fault at a time, in rotation, while tasks keep going to it. Every fault is
// lifted completely before the next (and before each quiet period): filter rules flushed,
// shaping removed, a rebooted sshd started again with its old host key.
import type { Peer } from '../chaos/lab.ts';
import type { NsSshd } from '../chaos/ns-sshd.ts';

export const FAULTS = ['vanish', 'syn-blackhole', 'vanish-after-connect', 'reboot', 'loss-10pct', 'rate-1mbit'] as const;
export type FaultName = (typeof FAULTS)[number];

export class FaultInjector {
  #next = 0;
  #active: FaultName | null = null;
  readonly #injected = new Map<FaultName, number>(FAULTS.map((f) => [f, 0]));

  constructor(
    readonly peer: Peer,
    readonly sshd: NsSshd,
  ) {}

  /** The fault in effect now, or null. */
  get active(): FaultName | null {
    return this.#active;
  }

  /** How often each fault was injected so far. */
  injected(): ReadonlyMap<FaultName, number> {
    return this.#injected;
  }

  /** Injects the next fault of the rotation; returns its name. */
  async injectNext(): Promise<FaultName> {
    if (this.#active) throw new Error(`fault ${this.#active} is still in effect`);
    const fault = FAULTS[this.#next++ % FAULTS.length]!;
    // Marked before the commands run: a failure half-way still gets lifted.
    this.#active = fault;
    this.#injected.set(fault, (this.#injected.get(fault) ?? 0) + 1);
    const { peer, sshd } = this;
    switch (fault) {
      case 'vanish':
        await peer.vanish();
        break;
      case 'syn-blackhole':
        await peer.blackholeSyn(sshd.port);
        break;
      case 'vanish-after-connect':
        await peer.vanishAfterTcpConnect(sshd.port);
        break;
      case 'reboot':
        await peer.reboot();
        break;
      case 'loss-10pct':
        await peer.randomLoss(0.1);
        break;
      case 'rate-1mbit':
        await peer.limitRate('1mbit');
        break;
    }
    return fault;
  }

  /** Lifts the fault in effect (no-op when none). */
  async lift(): Promise<void> {
    const fault = this.#active;
    if (!fault) return;
    if (fault === 'rate-1mbit') await this.peer.unlimitRate();
    else await this.peer.restore();
    // A rebooted peer comes back with its sshd (and its old host key).
    if (fault === 'reboot') await this.sshd.restart();
    this.#active = null;
  }
}
