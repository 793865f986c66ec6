import { CreationSite } from './creation-site.ts';

/** Kinds of resource leash creates. Used as the `kind` label of `leash_resources_*`. */
export type ResourceKind =
  | 'socket'
  | 'ssh-connection'
  | 'channel'
  | 'timer'
  | 'agent-socket'
  | 'child-process'
  | 'server'
  | 'database';

/** Small attribute values only: the ledger is cheap because its entries are. */
export type ResourceAttrs = Readonly<Record<string, string | number | boolean>>;

/** One live resource: what it is, who owns it, since when, and where it was created. */
export interface ResourceEntry {
  readonly id: number;
  readonly kind: ResourceKind;
  /** A task id, or a component name such as `pool` or `demo-target`. */
  readonly owner: string;
  readonly attrs: ResourceAttrs;
  /** Wall-clock creation time, ms since the epoch. */
  readonly createdAt: number;
  readonly site: CreationSite;
}

/** Per-kind counters; `opened - closed` is what is alive. */
export interface KindStats {
  opened: number;
  closed: number;
}

/**
 * The claim on one ledger entry. `release()` removes the entry; it is idempotent so that
 * an event handler and a `finally` may both call it, but the entry is removed exactly once.
 */
export class ResourceHandle {
  readonly #ledger: ResourceLedger;
  readonly #entry: MutableEntry;
  readonly #onRelease: (() => void) | undefined;
  #released = false;

  /** @internal created by {@link ResourceLedger.open} */
  constructor(ledger: ResourceLedger, entry: MutableEntry, onRelease?: () => void) {
    this.#ledger = ledger;
    this.#entry = entry;
    this.#onRelease = onRelease;
  }

  get id(): number {
    return this.#entry.id;
  }

  get owner(): string {
    return this.#entry.owner;
  }

  get released(): boolean {
    return this.#released;
  }

  /** Removes the entry. Returns false when it was already released. */
  release(): boolean {
    if (this.#released) return false;
    this.#released = true;
    try {
      this.#onRelease?.();
    } finally {
      this.#ledger._remove(this.#entry);
    }
    return true;
  }

  /**
   * Links the object this entry stands for (a socket, say) so that {@link ResourceLedger.owns}
   * recognises it: the leak watchdog looks up sockets Node reports by the object itself.
   */
  attach(object: object): void {
    this.#ledger._attach(object, this.#entry);
  }

  /** Hands the resource to another owner (e.g. a task gives its connection to the pool). */
  transfer(owner: string): void {
    if (this.#released) throw new Error(`ledger: cannot transfer released ${this.#entry.kind} #${this.#entry.id}`);
    this.#entry.owner = owner;
    // An unformatted stack holds its frames' closures (and all they reach: a batch's task
    // list, say) for as long as the entry lives; a handed-over resource may live for hours.
    this.#entry.site.frames();
  }
}

interface MutableEntry extends ResourceEntry {
  owner: string;
}

/**
 * The resource ledger (DESIGN.md invariant 2): every socket, connection, channel and timer
 * leash creates is registered here with its owner and creation site, and released exactly
 * once. Debug dumps, metrics and the leak watchdog read it; tests end by asserting it is
 * empty. It replaces async_hooks, which costs 3–220× on hot paths (../shared/DIAGNOSTICS.md).
 */
export class ResourceLedger {
  readonly #live = new Map<number, MutableEntry>();
  readonly #stats = new Map<ResourceKind, KindStats>();
  /** Objects linked to their entries; weak, so the ledger never keeps one alive. */
  readonly #objects = new WeakMap<object, MutableEntry>();
  #nextId = 1;

  /**
   * Registers a resource. Call at the creation point; the creation site is captured here.
   * `onRelease` runs once, when the handle is released (e.g. clearing a timer).
   */
  open(kind: ResourceKind, owner: string, attrs: ResourceAttrs = {}, onRelease?: () => void): ResourceHandle {
    // eslint-disable-next-line @typescript-eslint/unbound-method -- only a stack-trace boundary, never called
    return this.#register(kind, owner, attrs, onRelease, ResourceLedger.prototype.open);
  }

  // eslint-disable-next-line @typescript-eslint/no-unsafe-function-type -- the creation-site boundary
  #register(kind: ResourceKind, owner: string, attrs: ResourceAttrs, onRelease: (() => void) | undefined, skip: Function): ResourceHandle {
    const entry: MutableEntry = {
      id: this.#nextId++,
      kind,
      owner,
      attrs,
      createdAt: Date.now(),
      site: new CreationSite(skip),
    };
    this.#live.set(entry.id, entry);
    this.#statsFor(kind).opened++;
    return new ResourceHandle(this, entry, onRelease);
  }

  /**
   * A timer in the ledger: `fn` runs once after `ms` unless the handle is released first.
   * Timers are unref'd: a deadline must never be what keeps the process alive.
   */
  timeout(owner: string, ms: number, fn: () => void, attrs: ResourceAttrs = {}): ResourceHandle {
    // eslint-disable-next-line @typescript-eslint/unbound-method -- only a stack-trace boundary, never called
    const handle = this.#register('timer', owner, { ms, ...attrs }, () => clearTimeout(timer), ResourceLedger.prototype.timeout);
    const timer = setTimeout(() => {
      if (handle.release()) fn();
    }, ms);
    timer.unref();
    return handle;
  }

  /** Live entries, oldest first. */
  live(): ResourceEntry[] {
    return [...this.#live.values()];
  }

  /** Live entries owned by `owner`. */
  ownedBy(owner: string): ResourceEntry[] {
    return this.live().filter((e) => e.owner === owner);
  }

  /** Number of live entries, optionally of one kind. */
  liveCount(kind?: ResourceKind): number {
    if (kind === undefined) return this.#live.size;
    const s = this.#stats.get(kind);
    return s ? s.opened - s.closed : 0;
  }

  /** Opened/closed counters per kind since the process started. */
  stats(): ReadonlyMap<ResourceKind, Readonly<KindStats>> {
    return this.#stats;
  }

  /** True when `object` was attached to an entry that is still live. */
  owns(object: object): boolean {
    const entry = this.#objects.get(object);
    return entry !== undefined && this.#live.get(entry.id) === entry;
  }

  /** @internal called by {@link ResourceHandle.attach} */
  _attach(object: object, entry: MutableEntry): void {
    this.#objects.set(object, entry);
  }

  /** @internal called by {@link ResourceHandle.release} */
  _remove(entry: MutableEntry): void {
    if (this.#live.delete(entry.id)) this.#statsFor(entry.kind).closed++;
  }

  #statsFor(kind: ResourceKind): KindStats {
    let s = this.#stats.get(kind);
    if (!s) {
      s = { opened: 0, closed: 0 };
      this.#stats.set(kind, s);
    }
    return s;
  }
}

/** The process-wide ledger that leash's code registers in and diagnostics reads. */
export const ledger = new ResourceLedger();
