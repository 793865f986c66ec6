// What the soak reads inside the service process, and the messages that carry it over the
// IPC channel between the service (service-main.ts) and the driver (service-handle.ts).
import type { ResourceLedger } from '../../src/lifecycle/ledger.ts';
import type { TaskTable } from '../../src/lifecycle/task-table.ts';
import { openFdTargets } from '../chaos/fds.ts';

const MIB = 2 ** 20;
/**
 * Owners of the ledger entries a running service holds whatever it does: the database
 * handle and the retention sweep's timer. Everything else belongs to work (tasks, pooled
 * connections, event streams) and must be gone when the service is idle.
 */
const SERVICE_FIXTURE_OWNERS: ReadonlySet<string> = new Set(['store', 'retention']);

/** One per-second reading of the service process. */
export interface ProbeReading {
  readonly heapUsedMiB: number;
  readonly rssMiB: number;
  readonly fds: number;
  readonly ledgerLive: number;
  /** Live ledger entries not owned by the service's fixtures: zero when it is idle. */
  readonly ledgerWork: number;
  readonly inFlight: number;
}

/** A reading at the end of a quiet period: after a forced GC, with what is still alive, named. */
export interface CheckReading extends ProbeReading {
  readonly heapAfterGcMiB: number;
  /** `kind owner site` of each live ledger entry (at most 20), fixtures first. */
  readonly ledgerEntries: readonly string[];
  /** `id stage waiting` of each live task (at most 20). */
  readonly liveTasks: readonly string[];
  /** `fd -> target` of every open descriptor. */
  readonly fdTargets: readonly string[];
}

export type ToService = { readonly type: 'check'; readonly id: number } | { readonly type: 'stop' };

export type FromService =
  | { readonly type: 'ready'; readonly url: string; readonly adminUrl: string | null }
  | { readonly type: 'sample'; readonly reading: ProbeReading }
  | { readonly type: 'check'; readonly id: number; readonly reading: CheckReading }
  | { readonly type: 'stopped' }
  | { readonly type: 'failed'; readonly message: string };

export function readProbe(ledger: ResourceLedger, tasks: TaskTable): ProbeReading {
  const m = process.memoryUsage();
  return {
    heapUsedMiB: round2(m.heapUsed / MIB),
    rssMiB: round2(m.rss / MIB),
    fds: openFdTargets().length,
    ledgerLive: ledger.liveCount(),
    ledgerWork: ledger.live().filter((e) => !SERVICE_FIXTURE_OWNERS.has(e.owner)).length,
    inFlight: tasks.live().length,
  };
}

export function readCheck(ledger: ResourceLedger, tasks: TaskTable, gc: () => void): CheckReading {
  // Twice: the first pass may only queue finalizers whose objects the second one frees.
  gc();
  gc();
  const heapAfterGcMiB = round2(process.memoryUsage().heapUsed / MIB);
  return {
    ...readProbe(ledger, tasks),
    heapAfterGcMiB,
    ledgerEntries: ledger
      .live()
      .sort((a, b) => Number(!SERVICE_FIXTURE_OWNERS.has(a.owner)) - Number(!SERVICE_FIXTURE_OWNERS.has(b.owner)) || a.id - b.id)
      .slice(0, 20)
      .map((e) => `${e.kind} owner=${e.owner} ${e.site.top()}`),
    liveTasks: tasks
      .live()
      .slice(0, 20)
      .map((t) => `${t.id} stage=${t.stage} waiting=${t.waiting ?? '-'}`),
    fdTargets: openFdTargets(),
  };
}

function round2(x: number): number {
  return Math.round(x * 100) / 100;
}
