// Memory of child processes, sampled from a worker thread: the main thread blocks in
// fork() for every spawn (milliseconds each from a large Node process), so a sampler on its
// event loop would sample rarely and exactly when the children are youngest. The worker
// reads /proc/PID/status of the live children every 10 ms; the main thread publishes their
// PIDs in a SharedArrayBuffer.
import { readFileSync, writeFileSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { withTimeout } from './util.ts';

const WORKER_SOURCE = `
const { workerData, parentPort } = require('node:worker_threads');
const { readFileSync } = require('node:fs');
const { slots, name, everyMs } = workerData;
let peakSumKiB = 0, maxHwmKiB = 0, samples = 0, peakCount = 0;
function tick() {
  let sum = 0, count = 0;
  for (let i = 0; i < slots.length; i++) {
    const pid = Atomics.load(slots, i);
    if (pid <= 0) continue;
    let text;
    try { text = readFileSync('/proc/' + pid + '/status', 'utf8'); } catch { continue; }
    const n = /^Name:\\s*(.*)$/m.exec(text);
    if (!n || n[1] !== name) continue; // between fork and exec the child is still a copy of node
    const rss = /^VmRSS:\\s*(\\d+)/m.exec(text);
    const hwm = /^VmHWM:\\s*(\\d+)/m.exec(text);
    if (rss) sum += Number(rss[1]);
    if (hwm && Number(hwm[1]) > maxHwmKiB) maxHwmKiB = Number(hwm[1]);
    count++;
  }
  samples++;
  if (sum > peakSumKiB) peakSumKiB = sum;
  if (count > peakCount) peakCount = count;
}
const timer = setInterval(tick, everyMs);
parentPort.on('message', () => {
  clearInterval(timer);
  tick();
  parentPort.postMessage({ peakSumKiB, maxHwmKiB, samples, peakCount });
});
parentPort.postMessage('ready');
`;

export interface ChildRss {
  /** Highest sum of VmRSS over the children alive at one sample, KiB. */
  readonly peakSumKiB: number;
  /** Highest VmHWM (per-process peak) seen in any one child, KiB. */
  readonly maxHwmKiB: number;
  /** Most children (already exec'd into `name`) seen at one sample. */
  readonly peakCount: number;
  readonly samples: number;
}

/** PIDs of live children, shared with the sampling worker. */
export class ChildRssSampler {
  readonly #slots: Int32Array;
  readonly #worker: Worker;
  readonly #ready: Promise<void>;

  private constructor(capacity: number, name: string, everyMs: number) {
    this.#slots = new Int32Array(new SharedArrayBuffer(capacity * 4));
    this.#worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { slots: this.#slots, name, everyMs } });
    this.#worker.on('error', () => {});
    this.#ready = withTimeout(
      new Promise<void>((resolve) => this.#worker.once('message', () => resolve())),
      10_000,
      'RSS sampler worker start',
    );
  }

  /** Starts a sampler for children named `name` (as in /proc/PID/status), every `everyMs`. */
  static async start(name: string, capacity = 256, everyMs = 10): Promise<ChildRssSampler> {
    const sampler = new ChildRssSampler(capacity, name, everyMs);
    try {
      await sampler.#ready;
    } catch (err) {
      await sampler.#worker.terminate();
      throw err;
    }
    return sampler;
  }

  add(pid: number): void {
    for (let i = 0; i < this.#slots.length; i++) {
      if (Atomics.compareExchange(this.#slots, i, 0, pid) === 0) return;
    }
    throw new Error('RSS sampler: no free slot');
  }

  remove(pid: number): void {
    for (let i = 0; i < this.#slots.length; i++) {
      if (Atomics.compareExchange(this.#slots, i, pid, 0) === pid) return;
    }
  }

  /** Takes a last sample, stops the worker and returns the figures. */
  async stop(): Promise<ChildRss> {
    try {
      const result = withTimeout(
        new Promise<ChildRss>((resolve) => this.#worker.once('message', (m: ChildRss) => resolve(m))),
        10_000,
        'RSS sampler worker result',
      );
      this.#worker.postMessage('stop');
      return await result;
    } finally {
      await this.#worker.terminate();
    }
  }
}

/**
 * This process's RSS high-water mark since {@link resetPeakRss}: VmHWM of /proc/self/status,
 * which the kernel (Linux ≥ 4.0) resets when 5 is written to /proc/self/clear_refs. Exact,
 * unlike sampling. Returns false when the reset is not possible.
 */
export function resetPeakRss(): boolean {
  try {
    writeFileSync('/proc/self/clear_refs', '5');
    return true;
  } catch {
    return false;
  }
}

/** VmHWM of this process, KiB. */
export function peakRssKiB(): number {
  const m = /^VmHWM:\s*(\d+)/m.exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) : Number.NaN;
}
