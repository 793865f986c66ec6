// The incident of DESIGN.md in miniature: a thousand tasks against a server that accepts
// TCP and never speaks. With a handshake deadline every one of them must end
// `handshake-timeout`, and nothing — task, socket, timer, heap — may be left behind.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { ledger } from '../src/lifecycle/ledger.ts';
import { taskTable } from '../src/lifecycle/task-table.ts';
import { fanOut } from '../src/service/fan-out.ts';
import type { TaskReport } from '../src/lifecycle/task-report.ts';
import { SshRemoteExec } from '../src/ssh/remote-exec.ts';
import { assertNothingAlive } from './support/assert-clean.ts';
import { collector } from './support/gc.ts';
import { startHostileServer, TEST_USER, type HostileServer } from './support/hostile-servers.ts';
import { testSpec } from './support/run-task.ts';

let server: HostileServer;
before(async () => {
  server = await startHostileServer('silent-tcp');
});
after(() => server?.close());

async function flood(count: number): Promise<TaskReport[]> {
  const target = { host: server.host, port: server.port, user: TEST_USER, knownHostsLine: server.knownHostsLine };
  const spec = testSpec(target, 'true', { keys: [], agentSocket: null, password: 'unused' }, { timeouts: { handshakeMs: 1000 } });
  const reports: TaskReport[] = [];
  await fanOut(Array.from({ length: count }, () => spec), { remote: new SshRemoteExec(), ledger, tasks: taskTable }, {
    concurrency: count,
    signal: new AbortController().signal,
    onReport: (r) => reports.push(r),
  });
  return reports;
}

test('1000 tasks against a never-speaking server all end handshake-timeout, leaving nothing behind', async () => {
  const gc = collector();
  await flood(1000); // a first round warms code paths and caches; the second is measured
  gc();
  const heapBefore = process.memoryUsage().heapUsed;
  const started = performance.now();

  const reports = await flood(1000);

  const elapsed = performance.now() - started;
  gc();
  const heapGrowth = process.memoryUsage().heapUsed - heapBefore;
  const codes = new Map<string, number>();
  for (const r of reports) codes.set(r.error?.code ?? r.status, (codes.get(r.error?.code ?? r.status) ?? 0) + 1);
  assert.deepEqual([...codes], [['handshake-timeout', 1000]]);
  assert.ok(reports.every((r) => r.error?.stage === 'handshake'));
  await assertNothingAlive();
  assert.ok(heapGrowth < 5 * 1024 * 1024, `heap grew ${heapGrowth} bytes`);
  // Figures for the closing note; not assertions (shared machines are noisy).
  console.log(`# 1000 tasks: ${Math.round(elapsed)} ms wall, heap growth after GC ${(heapGrowth / 1024).toFixed(0)} KiB`);
});
