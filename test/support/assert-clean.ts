import assert from 'node:assert/strict';
import { ledger } from '../../src/lifecycle/ledger.ts';
import { taskTable } from '../../src/lifecycle/task-table.ts';

/**
 * Every test ends here (DESIGN.md "Testing"): no live ledger entry and no live task. Waits
 * up to `graceMs` for releases that are already under way (a socket's `close` event).
 */
export async function assertNothingAlive(graceMs = 2000): Promise<void> {
  const until = Date.now() + graceMs;
  while ((ledger.liveCount() > 0 || taskTable.size > 0) && Date.now() < until) {
    await new Promise((r) => setTimeout(r, 10));
  }
  const resources = ledger.live().map((e) => `${e.kind}#${e.id} owner=${e.owner} ${e.site.top()}`);
  const tasks = taskTable.live().map((t) => `task ${t.id} [${t.stage}] ${t.target.host}`);
  assert.deepEqual(resources, [], 'ledger must be empty');
  assert.deepEqual(tasks, [], 'task table must be empty');
}
