// Decides which queued job runs next: a global limit, per-target limits (running jobs and
// jobs still in their handshake, for sshd's MaxStartups — SSH-PITFALLS.md item 2), per-flow
// concurrency and queue capacity, and fair queueing between flows (a batch of 10,000 hosts
// must not starve a single-host task submitted after it).
//
// Data layout, so that no dispatch scans the queue:
// - each flow keeps one FIFO sub-queue per target (intrusive doubly linked lists, O(1)
//   append and removal) and a min-heap of those sub-queues ordered by their oldest job, so
//   "the flow's oldest job whose target is not blocked" is the heap's top;
// - a sub-queue found blocked at the top is parked on its target (lazily, when popped) and
//   pushed back into its flow's heap when the target frees a slot;
// - flows that may dispatch sit in two round-robin lists, as in FQ-CoDel (RFC 8290 §4.2):
//   a flow that was idle (nothing queued or running) enters `fresh` and is served before the
//   `settled` flows, then joins the tail of `settled`. Each turn gives a flow one dispatch.
// Dispatch costs O(log targets-of-the-flow) amortised; no timers are used.

/** The scheduler's limits. Each is a positive integer, or Infinity for no limit. */
export interface SchedulerLimits {
  /** Most jobs running at once, over all flows. */
  readonly globalConcurrency: number;
  /** Most jobs running at once against one target (host:port). */
  readonly perTarget: number;
  /**
   * Most jobs of one target still in their handshake (connecting..auth) at once — sshd's
   * MaxStartups (default 10:30:100) drops excess unauthenticated connections.
   */
  readonly perTargetHandshakes: number;
}

/** Options of one flow (a batch, or a caller's stream of single tasks). */
export interface FlowOptions {
  /** Most running jobs of this flow (a batch's concurrency): a positive integer; default unlimited. */
  readonly concurrency?: number;
  /** Most queued (not yet running) jobs this flow holds; submit beyond it is refused. */
  readonly capacity: number;
}

/**
 * One unit of work. `run` is called once when the job is dispatched; it must call
 * `handshakeDone()` when the job leaves its handshake (or never, if it fails before), and
 * its promise must settle when the job is terminal. It must not reject (a rejection, or a
 * synchronous throw, is treated as settled).
 */
export interface Job {
  readonly id: string;
  readonly target: string;
  run(handshakeDone: () => void): Promise<void>;
}

/** `queued` (accepted; maybe already running), `full` (flow at capacity), `closed` (flow closed or unknown, or scheduler draining). */
export type SubmitResult = 'queued' | 'full' | 'closed';

/** A snapshot of the scheduler, for metrics and debug dumps. */
export interface SchedulerStats {
  readonly running: number;
  readonly queued: number;
  /** Running jobs that have not called `handshakeDone()` yet. */
  readonly handshaking: number;
  readonly flows: Array<{ flow: string; running: number; queued: number }>;
}

/** A submitted job while the scheduler holds it. */
interface Entry {
  readonly job: Job;
  readonly flow: Flow;
  /** Submission order over the whole scheduler. */
  readonly seq: number;
  state: 'queued' | 'running' | 'done';
  /** While queued: the sub-queue and the neighbours in it. */
  sub: SubQueue | null;
  prev: Entry | null;
  next: Entry | null;
  /** While running: the target's counters, and whether the job is still in its handshake. */
  target: TargetState | null;
  handshaking: boolean;
}

/** One flow's queued jobs for one target, oldest first. */
interface SubQueue {
  readonly flow: Flow;
  readonly target: string;
  head: Entry | null;
  tail: Entry | null;
  /** Position in `flow.heap`, or -1. */
  heapIndex: number;
  /** The target it is parked on while that target is blocked, or null. */
  parkedOn: TargetState | null;
}

/** Live counters of one target, over all flows; forgotten when nothing runs on it. */
interface TargetState {
  readonly key: string;
  running: number;
  handshaking: number;
  /** Sub-queues (of any flow) waiting for this target to free a slot. */
  readonly parked: Set<SubQueue>;
}

interface Flow {
  readonly name: string;
  readonly concurrency: number;
  readonly capacity: number;
  running: number;
  queued: number;
  closed: boolean;
  /** Set when the flow goes from idle (nothing queued or running) to queued; cleared by its next dispatch. */
  fresh: boolean;
  readonly subs: Map<string, SubQueue>;
  /** Sub-queues not parked, as a binary min-heap by their oldest job's `seq`. */
  readonly heap: SubQueue[];
  /** Membership in a round-robin list. */
  list: FlowList | null;
  prev: Flow | null;
  next: Flow | null;
}

/** An intrusive doubly linked list of flows (O(1) push, shift and remove). */
class FlowList {
  head: Flow | null = null;
  tail: Flow | null = null;

  push(flow: Flow): void {
    flow.list = this;
    flow.prev = this.tail;
    flow.next = null;
    if (this.tail) this.tail.next = flow;
    else this.head = flow;
    this.tail = flow;
  }

  shift(): Flow | null {
    const flow = this.head;
    if (flow) this.remove(flow);
    return flow;
  }

  remove(flow: Flow): void {
    if (flow.prev) flow.prev.next = flow.next;
    else this.head = flow.next;
    if (flow.next) flow.next.prev = flow.prev;
    else this.tail = flow.prev;
    flow.list = null;
    flow.prev = null;
    flow.next = null;
  }

  *[Symbol.iterator](): Generator<Flow> {
    for (let f = this.head; f; f = f.next) yield f;
  }
}

function checkLimit(name: string, value: number | undefined, min: number, allowInfinity: boolean): void {
  if (typeof value === 'number' && ((allowInfinity && value === Infinity) || (Number.isInteger(value) && value >= min))) return;
  throw new RangeError(`scheduler: ${name} must be an integer ≥ ${min}${allowInfinity ? ' or Infinity' : ''}, got ${String(value)}`);
}

function headSeq(sub: SubQueue): number {
  // Only non-empty sub-queues are ever in a heap.
  return sub.head!.seq;
}

/**
 * Decides which queued job runs next, under the limits of {@link SchedulerLimits} and each
 * flow's {@link FlowOptions}, with fair queueing between flows.
 *
 * Dispatch happens synchronously whenever a slot may have freed (a job settled,
 * `handshakeDone()` called, `submit`, `openFlow`). Every submitted job is either run
 * exactly once, returned by `cancelQueued`/`closeFlow`/`drain`, or still queued.
 */
export class Scheduler {
  readonly #limits: SchedulerLimits;
  readonly #flows = new Map<string, Flow>();
  readonly #targets = new Map<string, TargetState>();
  /** Every queued or running job, by id. */
  readonly #jobs = new Map<string, Entry>();
  /** Flows that may dispatch: newly active ones first, then the round-robin of the others. */
  readonly #fresh = new FlowList();
  readonly #settled = new FlowList();
  #seq = 0;
  #running = 0;
  #queued = 0;
  #handshaking = 0;
  #draining = false;
  #pumping = false;
  #idleWaiters: Array<() => void> = [];

  constructor(limits: SchedulerLimits) {
    checkLimit('globalConcurrency', limits.globalConcurrency, 1, true);
    checkLimit('perTarget', limits.perTarget, 1, true);
    checkLimit('perTargetHandshakes', limits.perTargetHandshakes, 1, true);
    this.#limits = { ...limits };
  }

  /**
   * Opens a flow. Idempotent for an open flow (its options are not updated). Throws for a
   * flow that was closed and still has running jobs; once a closed flow is forgotten (its
   * last job settled) the name may be opened again as a new flow.
   */
  openFlow(flow: string, options: FlowOptions): void {
    const existing = this.#flows.get(flow);
    if (existing) {
      if (existing.closed) throw new Error(`scheduler: flow ${JSON.stringify(flow)} is closed`);
      return;
    }
    checkLimit('capacity', options.capacity, 0, false);
    checkLimit('concurrency', options.concurrency ?? Infinity, 1, true);
    this.#flows.set(flow, {
      name: flow,
      concurrency: options.concurrency ?? Infinity,
      capacity: options.capacity,
      running: 0,
      queued: 0,
      closed: false,
      fresh: false,
      subs: new Map(),
      heap: [],
      list: null,
      prev: null,
      next: null,
    });
    this.#pump();
  }

  /**
   * Queues a job in an open flow and dispatches at once when the limits allow. `full` when
   * the flow already holds `capacity` queued jobs; `closed` when the flow is closed or
   * unknown, or the scheduler is draining. Throws if a job with the same id is queued or
   * running (it would be ambiguous to cancel and could run twice).
   */
  submit(flow: string, job: Job): SubmitResult {
    const f = this.#flows.get(flow);
    if (!f || f.closed || this.#draining) return 'closed';
    if (this.#jobs.has(job.id)) throw new Error(`scheduler: job ${JSON.stringify(job.id)} is already queued or running`);
    if (f.queued >= f.capacity) return 'full';
    const entry: Entry = {
      job,
      flow: f,
      seq: this.#seq++,
      state: 'queued',
      sub: null,
      prev: null,
      next: null,
      target: null,
      handshaking: false,
    };
    this.#jobs.set(job.id, entry);
    let sub = f.subs.get(job.target);
    if (!sub) {
      sub = { flow: f, target: job.target, head: null, tail: null, heapIndex: -1, parkedOn: null };
      f.subs.set(job.target, sub);
    }
    const wasEmpty = sub.head === null;
    entry.sub = sub;
    entry.prev = sub.tail;
    if (sub.tail) sub.tail.next = entry;
    else sub.head = entry;
    sub.tail = entry;
    if (wasEmpty) this.#heapPush(f, sub);
    // A flow that was idle (nothing queued, nothing running) is served ahead of the busy
    // ones: this is what lets a single-host task overtake a 10,000-host batch.
    if (f.queued === 0 && f.running === 0) f.fresh = true;
    f.queued++;
    this.#queued++;
    this.#enlist(f);
    this.#pump();
    return 'queued';
  }

  /** Removes a job that is still queued (true); false if it is running, finished or unknown. */
  cancelQueued(jobId: string): boolean {
    const entry = this.#jobs.get(jobId);
    if (!entry || entry.state !== 'queued') return false;
    this.#unqueue(entry);
    this.#jobs.delete(jobId);
    entry.state = 'done';
    const f = entry.flow;
    if (f.queued === 0) {
      f.fresh = false;
      if (f.list) f.list.remove(f);
    }
    // Removing a queued job frees no slot: nothing to dispatch.
    return true;
  }

  /**
   * Closes a flow: later submits get `closed`; its queued jobs are removed and returned
   * (oldest first); running ones continue. The flow is forgotten once nothing of it runs.
   * Returns [] for an unknown or already closed flow.
   */
  closeFlow(flow: string): Job[] {
    const f = this.#flows.get(flow);
    if (!f || f.closed) return [];
    f.closed = true;
    const removed = this.#removeAllQueued(f);
    this.#maybeForgetFlow(f);
    return removed.map((e) => e.job);
  }

  /**
   * Stops dispatching anything new (shutdown): later submits get `closed`, and every queued
   * job is removed and returned (oldest first). Running jobs continue; see {@link idle}.
   */
  drain(): Job[] {
    this.#draining = true;
    const removed: Entry[] = [];
    for (const f of [...this.#flows.values()]) {
      removed.push(...this.#removeAllQueued(f));
      this.#maybeForgetFlow(f);
    }
    removed.sort((a, b) => a.seq - b.seq);
    return removed.map((e) => e.job);
  }

  /** Resolves when no job runs (at once if none does); bounded by the jobs' own lifetimes. */
  idle(): Promise<void> {
    if (this.#running === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  /** Counts over the whole scheduler and per flow (open flows, and closed ones still running). */
  stats(): SchedulerStats {
    return {
      running: this.#running,
      queued: this.#queued,
      handshaking: this.#handshaking,
      flows: [...this.#flows.values()].map((f) => ({ flow: f.name, running: f.running, queued: f.queued })),
    };
  }

  /**
   * An estimate of how many queued jobs will be dispatched before this one if only the
   * round-robin decided (target and concurrency limits ignored): the older jobs of its own
   * flow, plus for every other flow one job per round that comes before this job's turn.
   * Null when the job is not queued. Costs O(jobs ahead in its flow + flows).
   */
  queuedAhead(jobId: string): number | null {
    const entry = this.#jobs.get(jobId);
    if (!entry || entry.state !== 'queued') return null;
    const own = entry.flow;
    let ahead = 0;
    for (const sub of own.subs.values()) {
      for (let e = sub.head; e && e.seq < entry.seq; e = e.next) ahead++;
    }
    const rounds = ahead; // full rounds before this job's turn
    // Flows before this one in the service order get one more turn than flows after it (a
    // flow not listed waits for every listed one).
    let before = true;
    const counted = new Set<Flow>();
    for (const f of [...this.#fresh, ...this.#settled]) {
      if (f === own) {
        before = false;
        continue;
      }
      counted.add(f);
      ahead += Math.min(f.queued, rounds + (before ? 1 : 0));
    }
    for (const f of this.#flows.values()) {
      if (f !== own && !counted.has(f)) ahead += Math.min(f.queued, rounds);
    }
    return ahead;
  }

  // ---- dispatch ----

  /** Dispatches while the limits allow. Re-entrant calls (from `run`) fold into the running loop. */
  #pump(): void {
    if (this.#pumping) return;
    this.#pumping = true;
    try {
      while (!this.#draining && this.#running < this.#limits.globalConcurrency) {
        const f = this.#fresh.shift() ?? this.#settled.shift();
        if (!f) break;
        const entry = this.#take(f);
        // Not ready (at its concurrency, or every target blocked): the flow is listed again
        // when one of its jobs settles or one of its targets frees a slot.
        if (!entry) continue;
        f.fresh = false;
        this.#start(entry);
        if (this.#ready(f) && !f.list) this.#settled.push(f);
      }
    } finally {
      this.#pumping = false;
    }
    // Checked only here, after the outermost loop: a job whose run throws settles inside the
    // loop, which may still dispatch the next one.
    if (this.#running === 0 && this.#idleWaiters.length > 0) {
      const waiters = this.#idleWaiters;
      this.#idleWaiters = [];
      for (const resolve of waiters) resolve();
    }
  }

  /** Removes and returns the flow's oldest queued job whose target is not blocked, or null. */
  #take(f: Flow): Entry | null {
    if (f.running >= f.concurrency) return null;
    for (;;) {
      const sub = f.heap[0];
      if (!sub) return null;
      const target = this.#targets.get(sub.target);
      if (target && this.#blocked(target)) {
        this.#heapRemove(f, sub);
        sub.parkedOn = target;
        target.parked.add(sub);
        continue;
      }
      const entry = sub.head!;
      this.#unqueue(entry);
      return entry;
    }
  }

  #start(entry: Entry): void {
    const f = entry.flow;
    let target = this.#targets.get(entry.job.target);
    if (!target) {
      target = { key: entry.job.target, running: 0, handshaking: 0, parked: new Set() };
      this.#targets.set(target.key, target);
    }
    entry.state = 'running';
    entry.target = target;
    entry.handshaking = true;
    target.running++;
    target.handshaking++;
    f.running++;
    this.#running++;
    this.#handshaking++;
    const handshakeDone = (): void => this.#handshakeDone(entry);
    let settled: Promise<void>;
    try {
      settled = Promise.resolve(entry.job.run(handshakeDone));
    } catch {
      this.#finish(entry);
      return;
    }
    const finish = (): void => this.#finish(entry);
    settled.then(finish, finish);
  }

  #handshakeDone(entry: Entry): void {
    if (!entry.handshaking) return;
    entry.handshaking = false;
    const target = entry.target!;
    target.handshaking--;
    this.#handshaking--;
    this.#unparkIfFree(target);
    this.#pump();
  }

  #finish(entry: Entry): void {
    if (entry.state !== 'running') return;
    entry.state = 'done';
    this.#jobs.delete(entry.job.id);
    const target = entry.target!;
    entry.target = null;
    if (entry.handshaking) {
      entry.handshaking = false;
      target.handshaking--;
      this.#handshaking--;
    }
    target.running--;
    this.#running--;
    const f = entry.flow;
    f.running--;
    this.#unparkIfFree(target);
    if (target.running === 0 && target.parked.size === 0) this.#targets.delete(target.key);
    this.#enlist(f);
    this.#maybeForgetFlow(f);
    this.#pump();
  }

  #blocked(target: TargetState): boolean {
    return target.running >= this.#limits.perTarget || target.handshaking >= this.#limits.perTargetHandshakes;
  }

  /** When the target has a free slot, its parked sub-queues go back to their flows' heaps. */
  #unparkIfFree(target: TargetState): void {
    if (target.parked.size === 0 || this.#blocked(target)) return;
    const parked = [...target.parked];
    target.parked.clear();
    for (const sub of parked) {
      sub.parkedOn = null;
      this.#heapPush(sub.flow, sub);
      this.#enlist(sub.flow);
    }
  }

  #ready(f: Flow): boolean {
    return f.queued > 0 && f.running < f.concurrency && f.heap.length > 0;
  }

  /** Lists a flow that may dispatch, if it is not listed already. */
  #enlist(f: Flow): void {
    if (f.list || !this.#ready(f)) return;
    (f.fresh ? this.#fresh : this.#settled).push(f);
  }

  // ---- queue bookkeeping ----

  /** Takes a queued entry out of its sub-queue, keeping heap, parking and counters right. */
  #unqueue(entry: Entry): void {
    const sub = entry.sub!;
    const f = entry.flow;
    const wasHead = sub.head === entry;
    if (entry.prev) entry.prev.next = entry.next;
    else sub.head = entry.next;
    if (entry.next) entry.next.prev = entry.prev;
    else sub.tail = entry.prev;
    entry.sub = null;
    entry.prev = null;
    entry.next = null;
    f.queued--;
    this.#queued--;
    if (sub.head === null) {
      if (sub.heapIndex >= 0) this.#heapRemove(f, sub);
      if (sub.parkedOn) {
        const target = sub.parkedOn;
        target.parked.delete(sub);
        sub.parkedOn = null;
        if (target.running === 0 && target.parked.size === 0) this.#targets.delete(target.key);
      }
      f.subs.delete(sub.target);
    } else if (wasHead && sub.heapIndex >= 0) {
      this.#siftDown(f.heap, sub.heapIndex);
    }
  }

  /** Removes every queued job of a flow, oldest first. */
  #removeAllQueued(f: Flow): Entry[] {
    const removed: Entry[] = [];
    for (const sub of [...f.subs.values()]) {
      for (let e = sub.head; e; ) {
        const next = e.next;
        removed.push(e);
        e = next;
      }
    }
    for (const e of removed) {
      this.#unqueue(e);
      this.#jobs.delete(e.job.id);
      e.state = 'done';
    }
    f.fresh = false;
    if (f.list) f.list.remove(f);
    removed.sort((a, b) => a.seq - b.seq);
    return removed;
  }

  #maybeForgetFlow(f: Flow): void {
    if (f.closed && f.running === 0 && f.queued === 0 && this.#flows.get(f.name) === f) this.#flows.delete(f.name);
  }

  // ---- the per-flow heap of sub-queues, by oldest job ----

  #heapPush(f: Flow, sub: SubQueue): void {
    sub.heapIndex = f.heap.length;
    f.heap.push(sub);
    this.#siftUp(f.heap, sub.heapIndex);
  }

  #heapRemove(f: Flow, sub: SubQueue): void {
    const heap = f.heap;
    const i = sub.heapIndex;
    const last = heap.pop()!;
    sub.heapIndex = -1;
    if (last === sub) return;
    heap[i] = last;
    last.heapIndex = i;
    this.#siftUp(heap, i);
    this.#siftDown(heap, last.heapIndex);
  }

  #siftUp(heap: SubQueue[], i: number): void {
    const item = heap[i]!;
    const key = headSeq(item);
    while (i > 0) {
      const parentIndex = (i - 1) >> 1;
      const parent = heap[parentIndex]!;
      if (headSeq(parent) <= key) break;
      heap[i] = parent;
      parent.heapIndex = i;
      i = parentIndex;
    }
    heap[i] = item;
    item.heapIndex = i;
  }

  #siftDown(heap: SubQueue[], i: number): void {
    const item = heap[i]!;
    const key = headSeq(item);
    const n = heap.length;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      let child = l;
      if (r < n && headSeq(heap[r]!) < headSeq(heap[l]!)) child = r;
      const c = heap[child]!;
      if (headSeq(c) >= key) break;
      heap[i] = c;
      c.heapIndex = i;
      i = child;
    }
    heap[i] = item;
    item.heapIndex = i;
  }
}
