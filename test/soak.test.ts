// The short soak (issue 6): 60 seconds of the long one (`npm run soak`, test/soak/), same
// mix and checks — two load cycles with the six network faults, every hostile server, the
// healthy targets, and the service idle again after each quiet period. Needs root, like
// the chaos suite: without it the soak fails saying what is missing.
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { Lab } from './chaos/lab.ts';
import { FAULTS } from './soak/faults.ts';
import { runSoak, SOAK_DEFAULTS } from './soak/soak.ts';
import { TASK_KINDS } from './soak/workload.ts';
import { assertNothingAlive } from './support/assert-clean.ts';

test('soak, 60 s: every task gets its verdict within its deadline; after each quiet period no task, no ledger entry, fds at baseline, heap within 10 MB', async (t) => {
  const outDir = await mkdtemp(path.join(os.tmpdir(), 'leash-soak-test-'));
  const lines: string[] = [];
  try {
    const report = await runSoak({ ...SOAK_DEFAULTS, durationMs: 60_000, outDir, log: (line) => lines.push(line) });
    const failures = `${report.failureCount} failures:\n${report.failures.join('\n')}\n\nsoak log:\n${lines.join('\n')}\n\nservice log tail:\n${tail(report.files.serviceLog)}`;
    assert.equal(report.failureCount, 0, failures);

    assert.equal(report.cycles, 2);
    assert.equal(report.checks.length, report.cycles, 'a check after every quiet period');
    for (const c of report.checks) {
      assert.equal(c.inFlight, 0);
      assert.equal(c.ledgerWork, 0);
      assert.ok(c.fds <= report.baseline.fds, `fds ${c.fds}, baseline ${report.baseline.fds}`);
      assert.equal(c.metrics.inFlight, 0);
    }
    for (const fault of FAULTS) assert.equal(report.faults[fault], 1, `fault ${fault} injected once`);
    for (const kind of TASK_KINDS) assert.ok((report.byKind[kind.name]?.count ?? 0) >= 1, `at least one ${kind.name} task (the warm-up runs each kind)`);
    assert.ok(report.tasks >= 150, `${report.tasks} tasks at 5 a second over 40 s of load`);
    assert.ok(report.maxDeadlineShare > 0 && report.maxDeadlineShare <= 1);

    const csv = readFileSync(report.files.csv, 'utf8').trim().split('\n');
    assert.equal(csv[0], 't_s,heap_used_mib,rss_mib,fds,ledger_live,ledger_work,in_flight,tasks_done,phase,fault');
    assert.ok(csv.length > 60, `${csv.length - 1} samples, one a second`);
    assert.match(readFileSync(report.files.svg, 'utf8'), /^<svg[\s\S]*<\/svg>\s*$/);
    t.diagnostic(`${report.tasks} tasks, outcomes ${JSON.stringify(report.outcomes)}`);
    t.diagnostic(`heap after GC: baseline ${report.baseline.heapAfterGcMiB} MiB, quiet ${report.checks.map((c) => c.heapAfterGcMiB).join(', ')}; peak RSS ${report.peak.rssMiB} MiB`);
  } finally {
    await rm(outDir, { recursive: true, force: true });
  }
  assert.deepEqual(Lab.leftovers(), [], 'namespaces and veths of the soak must be gone');
  await assertNothingAlive();
});

function tail(file: string, lines = 30): string {
  if (!existsSync(file)) return '(none)';
  return readFileSync(file, 'utf8').trim().split('\n').slice(-lines).join('\n');
}
