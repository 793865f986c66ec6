// `npm run soak`: the long soak (issue 6). Options (all optional):
//   --duration 10m   length of the load cycles (default 10m; set-up and warm-up come on top)
//   --rate 5         tasks per second while loaded
//   --seed 1         the workload's random seed (a failing run replays its mix)
//   --out DIR        where soak.csv, soak.svg, summary.json and leash.log go
//                    (default bench/out/soak-<timestamp>)
// Needs root (network namespaces). Exits 0 when every check passed, 1 otherwise.
import path from 'node:path';
import { parseArgs } from 'node:util';
import { parseDuration } from '../../src/cli/duration.ts';
import { runSoak, SOAK_DEFAULTS, type SoakReport } from './soak.ts';

const REPO_ROOT = path.resolve(import.meta.dirname, '..', '..');

function positive(text: string, flag: string): number {
  const n = Number(text);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${flag}: expected a positive number, got ${JSON.stringify(text)}`);
  return n;
}

function summary(r: SoakReport): string {
  const lines = [
    `soak: ${r.tasks} tasks (${r.batches} batches) in ${r.cycles} cycles, ${r.elapsedS} s; faults ${JSON.stringify(r.faults)}`,
    `outcomes: ${JSON.stringify(r.outcomes)}`,
    `baseline: heap after GC ${r.baseline.heapAfterGcMiB} MiB, ${r.baseline.fds} fds, RSS ${r.baseline.rssMiB} MiB`,
    `peak: RSS ${r.peak.rssMiB} MiB, heap ${r.peak.heapUsedMiB} MiB, ${r.peak.inFlight} in flight, ${r.peak.ledgerLive} ledger entries, ${r.peak.fds} fds`,
    `quiet checks: heap after GC ${r.checks.map((c) => c.heapAfterGcMiB).join(' ')} MiB; fds ${r.checks.map((c) => c.fds).join(' ')}; idle after ${r.checks.map((c) => c.idleAfterMs).join(' ')} ms`,
    `longest task: ${Math.round(r.maxDeadlineShare * 100)}% of its hard deadline`,
    `files: ${r.files.csv}, ${r.files.svg}, ${r.files.summary}`,
    `${r.failureCount === 0 ? 'PASS' : `FAIL: ${r.failureCount} failures`}`,
    ...r.failures.slice(0, 20).map((f) => `  - ${f}`),
  ];
  return lines.join('\n');
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: { duration: { type: 'string' }, rate: { type: 'string' }, seed: { type: 'string' }, out: { type: 'string' } },
    strict: true,
  });
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const report = await runSoak({
    ...SOAK_DEFAULTS,
    ...(values.duration === undefined ? {} : { durationMs: parseDuration(values.duration, '--duration') }),
    ...(values.rate === undefined ? {} : { ratePerSecond: positive(values.rate, '--rate') }),
    ...(values.seed === undefined ? {} : { seed: Math.trunc(positive(values.seed, '--seed')) }),
    outDir: path.resolve(values.out ?? path.join(REPO_ROOT, 'bench', 'out', `soak-${stamp}`)),
    log: (line) => console.log(`[${new Date().toISOString().slice(11, 19)}] ${line}`),
  });
  console.log(summary(report));
  return report.failureCount === 0 ? 0 : 1;
}

main().then(
  (code) => (process.exitCode = code),
  (err: unknown) => {
    console.error(err instanceof Error ? err.message : String(err));
    process.exitCode = 2;
  },
);
