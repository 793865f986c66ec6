import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { createRedactor, DEFAULT_REDACT_PATTERNS } from '../src/diagnostics/redaction.ts';
import { renderResources, groupResources } from '../src/diagnostics/resource-dump.ts';
import { groupTasks, renderTasks, tasksJson } from '../src/diagnostics/task-dump.ts';
import { ResourceLedger } from '../src/lifecycle/ledger.ts';
import { TaskTable, type LiveTask } from '../src/lifecycle/task-table.ts';

const TARGET = { host: 'web01', port: 22, user: 'deploy' };
const redact = createRedactor();

// Two named creation sites, so the groups can be told apart by their frames.
function submitFromBatch(tasks: TaskTable, command: string): LiveTask {
  return tasks.create({ target: TARGET, attrs: { command }, hardDeadlineMs: 60_000 });
}

function submitAdHoc(tasks: TaskTable): LiveTask {
  return tasks.create({ target: { ...TARGET, host: 'db01' }, attrs: { command: 'uptime' } });
}

function stuckInHandshake(task: LiveTask): LiveTask {
  task.enter('connecting');
  task.enter('handshake');
  task.wait('server-banner');
  return task;
}

void describe('redaction', () => {
  void test('the default patterns hide the usual secrets in commands and keep the rest', () => {
    const cases: Array<[string, string]> = [
      ['mysql -uroot -pS3cr3t -e "select 1"', 'mysql -uroot -p[redacted] -e "select 1"'],
      ['TOKEN=abc123 ./deploy.sh', 'TOKEN=[redacted] ./deploy.sh'],
      ['export DB_PASSWORD="two words"; run', 'export DB_PASSWORD=[redacted]; run'],
      ["curl -H 'Authorization: Bearer eyJhbGciOi' https://x", "curl -H 'Authorization: Bearer [redacted]' https://x"],
      ['vault login --token hvs.123 && ls', 'vault login --token [redacted] && ls'],
      ['app --api-key=k-42 start', 'app --api-key=[redacted] start'],
      ['mkdir -p /srv/www', 'mkdir -p /srv/www'],
      ['uname -a; uptime', 'uname -a; uptime'],
    ];
    for (const [command, shown] of cases) assert.equal(redact(command), shown, command);
  });

  void test('configured patterns add to the defaults; long commands are shortened', () => {
    const custom = createRedactor([...DEFAULT_REDACT_PATTERNS, String.raw`db-pass=(\S+)`, 'internal-only']);
    assert.equal(custom('sync db-pass=xyz token=abc internal-only'), 'sync db-pass=[redacted] token=[redacted] [redacted]');
    const long = `echo ${'x'.repeat(500)}`;
    assert.match(redact(long), /^echo x+… \(505 chars\)$/);
    assert.ok(redact(long).length < 230);
  });
});

void describe('/debug/tasks dump', () => {
  void test('debug=1 groups by (stage, wait, creation site), largest first, with the oldest age and example ids', () => {
    const tasks = new TaskTable();
    const stuck = Array.from({ length: 1000 }, () => stuckInHandshake(submitFromBatch(tasks, 'systemctl restart app')));
    const adHoc = submitAdHoc(tasks);
    const now = (stuck[0]?.createdAt ?? 0) + 17 * 60_000 + 3000;
    const groups = groupTasks(tasks.live(), now);
    assert.equal(groups.length, 2);
    assert.equal(groups[0]?.count, 1000);
    assert.equal(groups[0]?.stage, 'handshake');
    assert.equal(groups[0]?.waiting, 'server-banner');
    assert.deepEqual(groups[0]?.sampleIds, stuck.slice(0, 3).map((t) => t.id));
    assert.equal(groups[1]?.count, 1);

    const text = renderTasks(tasks.live(), 1, { now, redact, limit: 100 });
    const lines = text.split('\n');
    assert.equal(lines[0], 'tasks: total 1001');
    assert.match(lines[2] ?? '', /^1000 @ stage=handshake waiting=server-banner for up to 17m0\ds oldest=17m03s e\.g\. 1 2 3$/);
    assert.match(lines[3] ?? '', /^#\tat submitFromBatch \(.*test\/debug-dumps\.test\.ts:\d+:\d+\)$/);
    assert.match(text, /\n1 @ stage=queued oldest=\S+ e\.g\. 1001\n#\tat submitAdHoc /);
    assert.ok(!text.includes('systemctl'), 'debug=1 shows no commands');

    for (const t of [...stuck, adHoc]) tasks.finish(t, 'cancelled');
    assert.equal(renderTasks(tasks.live(), 1, { now, redact, limit: 100 }), 'tasks: total 0\n');
  });

  void test('debug=2 lists every task with stage history, redacted command and creation stack, capped with a count of the rest', () => {
    const tasks = new TaskTable();
    const all = Array.from({ length: 5 }, (_, i) => submitFromBatch(tasks, `deploy --token tok-${i}`));
    stuckInHandshake(all[0]!);
    const now = (all[0]?.createdAt ?? 0) + 17 * 60_000;
    const text = renderTasks(tasks.live(), 2, { now, redact, limit: 3 });
    assert.match(text, /^tasks: total 5\n\ntask 1 \[handshake, 17 minutes\] host=web01:22 user=deploy waiting=server-banner for (16m59|17m00)s\n/);
    assert.match(text, /\tcommand: deploy --token \[redacted\]\n/);
    assert.match(text, /\tstages: queued \d\d:\d\d:\d\d\.\d{3} → connecting \S+ → handshake \S+; hard deadline \d{4}-/);
    assert.match(text, /\tcreated at:\n\t\tat submitFromBatch /);
    assert.equal(text.match(/^task \d+ /gm)?.length, 3, 'capped at the limit');
    assert.match(text, /\n\.\.\. 2 more tasks not shown \(limit 3; see debug=1 for all of them grouped\)\n$/);
    assert.ok(!text.includes('tok-'), 'no secret in the dump');

    const json = tasksJson(tasks.live(), 2, { now, redact, limit: 3 }) as { total: number; omitted: number; tasks: Array<{ command: string; stages: unknown[] }> };
    assert.equal(json.total, 5);
    assert.equal(json.omitted, 2);
    assert.equal(json.tasks[0]?.command, 'deploy --token [redacted]');
    assert.equal(json.tasks[0]?.stages.length, 3);
    for (const t of all) tasks.finish(t, 'cancelled');
  });
});

void describe('/debug/resources dump', () => {
  function openForTask(ledger: ResourceLedger, owner: string): ReturnType<ResourceLedger['open']> {
    return ledger.open('socket', owner, { host: 'web01', port: 22 });
  }

  void test('debug=1 groups by kind, owner class and site; debug=2 lists entries with the owner task stage', () => {
    const ledger = new ResourceLedger();
    const tasks = new TaskTable();
    const task = stuckInHandshake(submitFromBatch(tasks, 'true'));
    // One call site (a site is file:line:column) for both sockets.
    const handles = [task.id, 'gone-42'].map((owner) => openForTask(ledger, owner));
    handles.push(ledger.open('database', 'store', { path: '/x.db' }));
    const now = Date.now() + 5000;
    const components = new Set(['store']);
    const groups = groupResources(ledger.live(), components, now);
    assert.deepEqual(
      groups.map((g) => [g.count, g.kind, g.owner]),
      [
        [2, 'socket', 'task'],
        [1, 'database', 'store'],
      ],
    );
    const one = renderResources(ledger.live(), 1, { tasks, components, now, limit: 10 });
    assert.match(one, /^resources: total 3\n\n2 @ kind=socket owner=task oldest=5s\n#\tat openForTask /);

    const two = renderResources(ledger.live(), 2, { tasks, components, now, limit: 2 });
    assert.match(two, new RegExp(`resource ${handles[0]!.id} socket \\[5s\\] owner=task ${task.id} \\(handshake\\) host=web01 port=22\\n\\tcreated at:\\n\\t\\tat openForTask `));
    assert.match(two, new RegExp(`resource ${handles[1]!.id} socket \\[5s\\] owner=task gone-42 \\(finished\\)`));
    assert.match(two, /\n\.\.\. 1 more resource not shown \(limit 2\)\n$/);
    for (const h of handles) h.release();
    tasks.finish(task, 'cancelled');
  });
});
