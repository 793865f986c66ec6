// Small helpers for the benchmarks: bounded waits, statistics, and /proc readers for
// memory and CPU. Nothing here waits without a deadline.
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** `promise`, or a rejection naming `what` once `ms` pass (then `onTimeout` runs first). */
export async function withTimeout<T>(promise: Promise<T>, ms: number, what: string, onTimeout?: () => void): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      onTimeout?.();
      reject(new Error(`${what}: not done within ${ms} ms`));
    }, ms);
  });
  try {
    return await Promise.race([promise, expired]);
  } finally {
    clearTimeout(timer);
  }
}

/** Polls `done` every `everyMs` until it holds; throws `describe()` once `ms` pass. */
export async function pollUntil(done: () => boolean, ms: number, what: string, describe?: () => string, everyMs = 20): Promise<number> {
  const start = performance.now();
  const until = start + ms;
  while (!done()) {
    if (performance.now() >= until) throw new Error(`${what}: not reached within ${ms} ms${describe ? ` (${describe()})` : ''}`);
    await sleep(everyMs);
  }
  return performance.now() - start;
}

// ---------------------------------------------------------------------------------------
// Statistics.

/** Nearest-rank percentile of unsorted `values` (p in 0..100). */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length)));
  return sorted[rank - 1]!;
}

export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

export function fmt(value: number, digits = 1): string {
  return Number.isFinite(value) ? value.toFixed(digits) : 'n/a';
}

export const KiB = 1024;
export const MiB = 1024 * 1024;

// ---------------------------------------------------------------------------------------
// /proc.

let clockTicks: number | undefined;

/** Kernel clock ticks per second (the unit of the CPU times in /proc/PID/stat). */
export function clkTck(): number {
  if (clockTicks === undefined) {
    try {
      clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8', timeout: 5000 }).trim()) || 100;
    } catch {
      clockTicks = 100;
    }
  }
  return clockTicks;
}

/** Fields of /proc/PID/stat after the command name; field N of proc(5) is index N - 3. */
function statFields(pid: number | 'self'): string[] | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return text.slice(text.lastIndexOf(')') + 2).split(' ');
  } catch {
    return undefined;
  }
}

/** CPU ms of a process: its own (utime + stime) and that of its reaped children (cutime + cstime). */
export function cpuMs(pid: number | 'self'): { own: number; children: number } {
  const f = statFields(pid);
  if (!f) return { own: Number.NaN, children: Number.NaN };
  const tick = 1000 / clkTck();
  return {
    own: (Number(f[11]) + Number(f[12])) * tick,
    children: (Number(f[13]) + Number(f[14])) * tick,
  };
}

/** Name, VmRSS and VmHWM (KiB) of a process from /proc/PID/status; undefined when gone. */
export function procMemory(pid: number): { name: string; rssKiB: number; hwmKiB: number } | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return undefined;
  }
  const field = (key: string): string | undefined => new RegExp(`^${key}:\\s*(.*)$`, 'm').exec(text)?.[1];
  const kib = (key: string): number => Number.parseInt(field(key) ?? '0', 10) || 0;
  return { name: field('Name') ?? '', rssKiB: kib('VmRSS'), hwmKiB: kib('VmHWM') };
}

/** Open file descriptors of this process. */
export function openFds(): number {
  try {
    return readdirSync('/proc/self/fd').length;
  } catch {
    return Number.NaN;
  }
}

/**
 * Samples a memory figure every `everyMs` (10 ms by default) and keeps its maximum. The
 * timer is unref'd and always cleared by stop().
 */
export class PeakSampler {
  readonly #probe: () => number;
  readonly #everyMs: number;
  #timer: NodeJS.Timeout | undefined;
  #peak = 0;
  #samples = 0;

  constructor(probe: () => number, everyMs = 10) {
    this.#probe = probe;
    this.#everyMs = everyMs;
  }

  start(): this {
    this.#sample();
    this.#timer = setInterval(() => this.#sample(), this.#everyMs);
    this.#timer.unref();
    return this;
  }

  /** Stops sampling (after one last sample) and returns the peak. */
  stop(): { peak: number; samples: number } {
    clearInterval(this.#timer);
    this.#timer = undefined;
    this.#sample();
    return { peak: this.#peak, samples: this.#samples };
  }

  #sample(): void {
    this.#samples++;
    const value = this.#probe();
    if (value > this.#peak) this.#peak = value;
  }
}
