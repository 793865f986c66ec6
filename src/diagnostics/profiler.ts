/**
 * On-demand profiles for the admin listener (DIAGNOSTICS.md): pprof CPU/wall and sampled heap
 * profiles through @datadog/pprof (so Go-trained operators can use `go tool pprof`), an
 * inspector `.cpuprofile` for Chrome DevTools, and full V8 heap snapshots.
 *
 * V8's CPU profiler, heap sampler and snapshotter are process-wide, so the "one at a time"
 * lock is module-level: two Profiler instances share it. Heap sampling is also process-wide:
 * it runs while any started Profiler is (the first one's sampling interval applies).
 */
import { Session } from 'node:inspector/promises';
import { finished, type Readable } from 'node:stream';
import { getHeapSnapshot } from 'node:v8';
import { encode, heap as pprofHeap, time as pprofTime } from '@datadog/pprof';
import { ledger as processLedger, type ResourceLedger } from '../lifecycle/ledger.ts';

export type ProfileFormat = 'pprof' | 'cpuprofile';

/** A finished profile ready to send as a download. */
export interface ProfileResult {
  readonly body: Buffer;
  readonly filename: string;
  readonly contentType: string;
}

/** Thrown when a profile or snapshot is already being taken (one at a time). */
export class ProfilerBusyError extends Error {
  constructor(message = 'a CPU profile or heap snapshot is already being taken') {
    super(message);
    this.name = 'ProfilerBusyError';
  }
}

export interface ProfilerOptions {
  /** Heap sampling interval in bytes; default 512 KiB (DIAGNOSTICS.md: ±3% overhead). */
  readonly heapSamplingBytes?: number;
  /** CPU sampling interval, microseconds; default 10_000 (100 Hz). */
  readonly cpuIntervalMicros?: number;
  /** Where the profile's deadline timer is registered (owner `profiler`); default the process ledger. */
  readonly ledger?: ResourceLedger;
}

/** Ledger owner of the profiler's timers. */
export const PROFILER_OWNER = 'profiler';

const DEFAULT_HEAP_SAMPLING_BYTES = 512 * 1024;
const DEFAULT_CPU_INTERVAL_MICROS = 10_000;
/** Deep enough for framework stacks (fastify hooks, ssh2 callbacks); V8's own default is 128. */
const HEAP_STACK_DEPTH = 64;

/** What holds the process-wide lock: a CPU profile or a heap snapshot stream. */
let holder: 'cpu' | 'snapshot' | undefined;

function acquire(what: 'cpu' | 'snapshot'): void {
  if (holder !== undefined) throw new ProfilerBusyError(`a ${holder === 'cpu' ? 'CPU profile' : 'heap snapshot'} is already being taken; one at a time`);
  // Someone else in the process (a tracer) may run the wall profiler: V8 allows only one.
  if (pprofTime.isStarted()) throw new ProfilerBusyError('the wall profiler is already running in this process');
  holder = what;
}

function release(): void {
  holder = undefined;
}

/** Started Profilers; heap sampling runs while there is at least one. */
let heapUsers = 0;

/** ISO time without ':' — Windows and some download tools reject it in filenames. */
function stamp(): string {
  return new Date().toISOString().replace(/:/g, '-');
}

/**
 * Resolves after `ms` or as soon as any signal aborts (never rejects: an early end is a
 * shorter profile, not a failure). The timer is a ledger timer (unref'd: a pending profile
 * never keeps the process alive); timer and listeners are released however the wait ends.
 */
async function profileFor(ms: number, signals: readonly AbortSignal[], ledger: ResourceLedger): Promise<void> {
  if (signals.some((s) => s.aborted)) return;
  let timer: ReturnType<ResourceLedger['timeout']> | undefined;
  let onAbort: (() => void) | undefined;
  try {
    await new Promise<void>((resolve) => {
      onAbort = resolve;
      timer = ledger.timeout(PROFILER_OWNER, ms, resolve, { purpose: 'cpu-profile' });
      for (const s of signals) s.addEventListener('abort', onAbort, { once: true });
    });
  } finally {
    timer?.release();
    if (onAbort !== undefined) for (const s of signals) s.removeEventListener('abort', onAbort);
  }
}

export class Profiler {
  readonly #heapSamplingBytes: number;
  readonly #cpuIntervalMicros: number;
  readonly #ledger: ResourceLedger;
  #heapStarted = false;
  /** Aborted by stop() to end a CPU profile in progress early. */
  #cpuStop: AbortController | undefined;

  constructor(options: ProfilerOptions = {}) {
    this.#heapSamplingBytes = positiveInteger(options.heapSamplingBytes ?? DEFAULT_HEAP_SAMPLING_BYTES, 'heapSamplingBytes');
    this.#cpuIntervalMicros = positiveInteger(options.cpuIntervalMicros ?? DEFAULT_CPU_INTERVAL_MICROS, 'cpuIntervalMicros');
    this.#ledger = options.ledger ?? processLedger;
  }

  /** Starts sampled heap profiling (cheap; left on for the life of the service so /debug/pprof/heap has data). Idempotent. */
  start(): void {
    if (this.#heapStarted) return;
    if (heapUsers === 0) pprofHeap.start(this.#heapSamplingBytes, HEAP_STACK_DEPTH);
    heapUsers++;
    this.#heapStarted = true;
  }

  /** True while a CPU profile or heap snapshot is being taken (by any Profiler in the process). */
  get busy(): boolean {
    return holder !== undefined;
  }

  /**
   * A CPU profile for `seconds` (the caller caps it).
   *
   * - `pprof`: @datadog/pprof wall + CPU time profile, gzipped pprof protobuf for `go tool pprof`.
   * - `cpuprofile`: node:inspector JSON for Chrome DevTools. On Node 20 it often charges a function
   *   that was already optimized before the profile started to its caller; pprof does not.
   *
   * If `signal` aborts (the client went away) or {@link stop} is called, the profile ends early
   * and resolves with what was collected so far — it does not reject; a caller that no longer
   * wants the result just drops it. Throws {@link ProfilerBusyError} when busy.
   *
   * The deadline timer is unref'd: a pending profile never keeps the process alive on its own
   * (the admin server's listener does). In a script with nothing else pending, hold the loop open.
   */
  async cpu(seconds: number, format: ProfileFormat, signal: AbortSignal): Promise<ProfileResult> {
    if (!Number.isFinite(seconds) || seconds <= 0) throw new RangeError(`seconds must be a positive number, got ${seconds}`);
    if (format !== 'pprof' && format !== 'cpuprofile') throw new RangeError(`unknown profile format: ${String(format)}`);
    acquire('cpu');
    const stop = new AbortController();
    this.#cpuStop = stop;
    try {
      const signals = [signal, stop.signal];
      return format === 'pprof' ? await this.#pprofCpu(seconds * 1000, signals) : await this.#inspectorCpu(seconds * 1000, signals);
    } finally {
      this.#cpuStop = undefined;
      release();
    }
  }

  async #pprofCpu(ms: number, signals: readonly AbortSignal[]): Promise<ProfileResult> {
    const filename = `leash-cpu-${stamp()}.pb.gz`;
    // collectCpuTime needs contexts; together they add a CPU-time column next to wall time,
    // so `go tool pprof -sample_index=cpu` shows on-CPU time and the default shows waits too.
    pprofTime.start({ intervalMicros: this.#cpuIntervalMicros, withContexts: true, collectCpuTime: true });
    let profile: ReturnType<typeof pprofTime.stop> | undefined;
    try {
      await profileFor(ms, signals, this.#ledger);
      profile = pprofTime.stop();
    } finally {
      // Only if the happy path did not stop it: never leave V8's sampler thread running.
      if (profile === undefined && pprofTime.isStarted()) pprofTime.stop();
    }
    return { body: await encode(profile), filename, contentType: 'application/octet-stream' };
  }

  async #inspectorCpu(ms: number, signals: readonly AbortSignal[]): Promise<ProfileResult> {
    const filename = `leash-cpu-${stamp()}.cpuprofile`;
    const session = new Session();
    session.connect();
    try {
      await session.post('Profiler.enable');
      await session.post('Profiler.setSamplingInterval', { interval: this.#cpuIntervalMicros });
      await session.post('Profiler.start');
      await profileFor(ms, signals, this.#ledger);
      const { profile } = await session.post('Profiler.stop');
      return { body: Buffer.from(JSON.stringify(profile)), filename, contentType: 'application/json' };
    } finally {
      // Disconnecting disables the Profiler domain, which also stops a profile still running.
      session.disconnect();
    }
  }

  /**
   * The sampled heap profile (live objects by allocation site) as gzipped pprof.
   * Not exclusive with {@link cpu}: it is a quick read of data V8 already keeps. If sampling was
   * not started, this starts it, and the profile covers only what was allocated since — nearly
   * empty; call {@link start} at service start so it has something to show.
   */
  async heap(): Promise<ProfileResult> {
    this.start();
    const filename = `leash-heap-${stamp()}.pb.gz`;
    return { body: await encode(pprofHeap.profile()), filename, contentType: 'application/octet-stream' };
  }

  /**
   * A full V8 heap snapshot as a stream (DIAGNOSTICS.md: pauses the process for seconds and
   * needs several times the heap in memory — only on request). Busy until the stream ends,
   * errors or is destroyed, so the caller must consume or destroy it. Throws
   * {@link ProfilerBusyError} when busy.
   */
  heapSnapshot(): { stream: Readable; filename: string } {
    acquire('snapshot');
    let stream: Readable;
    try {
      stream = getHeapSnapshot();
    } catch (err) {
      release();
      throw err;
    }
    finished(stream, () => release());
    return { stream, filename: `leash-${stamp()}.heapsnapshot` };
  }

  /** Stops heap sampling and any CPU profile in progress (which then resolves with what it has). Idempotent. */
  stop(): void {
    this.#cpuStop?.abort();
    if (this.#heapStarted) {
      this.#heapStarted = false;
      if (--heapUsers === 0) pprofHeap.stop();
    }
  }
}

function positiveInteger(value: number, name: string): number {
  if (!Number.isInteger(value) || value <= 0) throw new RangeError(`${name} must be a positive integer, got ${value}`);
  return value;
}
