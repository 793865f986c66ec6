// The soak's time series: each per-second reading of the service, with the driver's own
// state at that moment (tasks finished, phase, fault in effect), appended to a CSV as it
// arrives (a crash keeps the rows so far) and kept for the chart.
import { createWriteStream, type WriteStream } from 'node:fs';
import { once } from 'node:events';
import type { SoakSample } from './chart.ts';
import type { ProbeReading } from './probe.ts';

const COLUMNS = ['t_s', 'heap_used_mib', 'rss_mib', 'fds', 'ledger_live', 'ledger_work', 'in_flight', 'tasks_done', 'phase', 'fault'] as const;

export interface DriverState {
  readonly tasksDone: number;
  readonly phase: 'active' | 'quiet';
  readonly fault: string;
}

export class SampleLog {
  readonly samples: SoakSample[] = [];
  readonly #out: WriteStream;
  readonly #start = performance.now();

  constructor(csvPath: string) {
    this.#out = createWriteStream(csvPath);
    this.#out.write(`${COLUMNS.join(',')}\n`);
  }

  /** Seconds since the log was made. */
  now(): number {
    return (performance.now() - this.#start) / 1000;
  }

  add(reading: ProbeReading, state: DriverState): void {
    const sample: SoakSample = { tSec: Math.round(this.now() * 10) / 10, ...reading, ...state };
    this.samples.push(sample);
    const row = [sample.tSec, sample.heapUsedMiB, sample.rssMiB, sample.fds, sample.ledgerLive, reading.ledgerWork, sample.inFlight, sample.tasksDone, sample.phase, sample.fault];
    this.#out.write(`${row.join(',')}\n`);
  }

  /** Flushes and closes the CSV. */
  async close(): Promise<void> {
    this.#out.end();
    if (!this.#out.closed) await once(this.#out, 'close');
  }
}
