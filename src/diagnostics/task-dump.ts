import type { LiveTask } from '../lifecycle/task-table.ts';
import { clock, frameLines, humanAge, shortAge } from './dump-format.ts';
import type { Redactor } from './redaction.ts';

/**
 * `/debug/tasks`, modelled on Go's `/debug/pprof/goroutine`: `debug=1` groups live tasks by
 * (stage, what they wait on, creation site) with a count and the oldest age — the thousand
 * stuck handshakes of DESIGN.md's incident read as one line with a count of 1000;
 * `debug=2` lists every task with its stage history and creation stack, capped.
 */

/** One group of `debug=1`. */
export interface TaskGroup {
  readonly count: number;
  readonly stage: string;
  readonly waiting: string | null;
  /** Age of the oldest task of the group, since its creation, in ms. */
  readonly oldestMs: number;
  /** Age of the oldest current wait, in ms. */
  readonly longestWaitMs: number;
  readonly site: readonly string[];
  /** A few task ids of the group, oldest first, to look up with debug=2 or the API. */
  readonly sampleIds: readonly string[];
}

/** One task of `debug=2`. */
export interface TaskEntry {
  readonly id: string;
  readonly stage: string;
  readonly ageMs: number;
  readonly host: string;
  readonly port: number;
  readonly user: string;
  readonly waiting: string | null;
  readonly waitingMs: number;
  readonly command: string;
  readonly hardDeadline: string | null;
  readonly stages: ReadonlyArray<{ readonly stage: string; readonly at: string }>;
  readonly site: readonly string[];
}

/** Options of the task dumps. */
export interface TaskDumpOptions {
  readonly now: number;
  readonly redact: Redactor;
  /** Most tasks listed by debug=2 (the rest are counted). */
  readonly limit: number;
}

const SAMPLE_IDS = 3;

/** Groups live tasks by (stage, waiting, creation site), largest group first. */
export function groupTasks(tasks: readonly LiveTask[], now: number): TaskGroup[] {
  const groups = new Map<string, { tasks: LiveTask[]; stage: string; waiting: string | null; site: readonly string[] }>();
  for (const task of tasks) {
    const site = task.site.frames();
    const key = `${task.stage}\u0000${task.waiting ?? ''}\u0000${task.site.key()}`;
    let group = groups.get(key);
    if (!group) {
      group = { tasks: [], stage: task.stage, waiting: task.waiting, site };
      groups.set(key, group);
    }
    group.tasks.push(task);
  }
  return [...groups.values()]
    .map((g) => {
      const oldest = g.tasks.reduce((a, b) => (b.createdAt < a.createdAt ? b : a));
      const longestWait = g.tasks.reduce((max, t) => Math.max(max, now - t.waitingSince), 0);
      const sampleIds = [...g.tasks]
        .sort((a, b) => a.createdAt - b.createdAt)
        .slice(0, SAMPLE_IDS)
        .map((t) => t.id);
      return { count: g.tasks.length, stage: g.stage, waiting: g.waiting, oldestMs: now - oldest.createdAt, longestWaitMs: longestWait, site: g.site, sampleIds };
    })
    .sort((a, b) => b.count - a.count || b.oldestMs - a.oldestMs);
}

/** Every task, oldest first, at most `limit`; also how many were left out. */
export function listTasks(tasks: readonly LiveTask[], options: TaskDumpOptions): { entries: TaskEntry[]; omitted: number } {
  const sorted = [...tasks].sort((a, b) => a.createdAt - b.createdAt);
  const entries = sorted.slice(0, options.limit).map((t) => ({
    id: t.id,
    stage: t.stage,
    ageMs: options.now - t.createdAt,
    host: t.target.host,
    port: t.target.port,
    user: t.target.user,
    waiting: t.waiting,
    waitingMs: options.now - t.waitingSince,
    command: options.redact(t.attrs.command ?? ''),
    hardDeadline: t.hardDeadline === null ? null : new Date(t.hardDeadline).toISOString(),
    stages: t.history.map((m) => ({ stage: m.stage, at: new Date(m.at).toISOString() })),
    site: t.site.frames(),
  }));
  return { entries, omitted: Math.max(0, sorted.length - entries.length) };
}

/** The text dump, `debug` 1 (groups) or 2 (every task). */
export function renderTasks(tasks: readonly LiveTask[], debug: 1 | 2, options: TaskDumpOptions): string {
  const lines = [`tasks: total ${tasks.length}`];
  if (debug === 1) {
    for (const g of groupTasks(tasks, options.now)) {
      const waiting = g.waiting === null ? '' : ` waiting=${g.waiting} for up to ${shortAge(g.longestWaitMs)}`;
      lines.push('', `${g.count} @ stage=${g.stage}${waiting} oldest=${shortAge(g.oldestMs)} e.g. ${g.sampleIds.join(' ')}`, ...frameLines(g.site, '#\t'));
    }
    return `${lines.join('\n')}\n`;
  }
  const { entries, omitted } = listTasks(tasks, options);
  for (const t of entries) {
    const waiting = t.waiting === null ? '' : ` waiting=${t.waiting} for ${shortAge(t.waitingMs)}`;
    const deadline = t.hardDeadline === null ? 'no hard deadline' : `hard deadline ${t.hardDeadline}`;
    lines.push(
      '',
      `task ${t.id} [${t.stage}, ${humanAge(t.ageMs)}] host=${t.host}:${t.port} user=${t.user}${waiting}`,
      `\tcommand: ${t.command}`,
      `\tstages: ${t.stages.map((s) => `${s.stage} ${clock(Date.parse(s.at))}`).join(' → ')}; ${deadline}`,
      '\tcreated at:',
      ...frameLines(t.site, '\t\t'),
    );
  }
  if (omitted > 0) lines.push('', `... ${omitted} more task${omitted === 1 ? '' : 's'} not shown (limit ${options.limit}; see debug=1 for all of them grouped)`);
  return `${lines.join('\n')}\n`;
}

/** The JSON dump (`format=json`). */
export function tasksJson(tasks: readonly LiveTask[], debug: 1 | 2, options: TaskDumpOptions): Record<string, unknown> {
  if (debug === 1) return { total: tasks.length, groups: groupTasks(tasks, options.now) };
  const { entries, omitted } = listTasks(tasks, options);
  return { total: tasks.length, tasks: entries, omitted };
}
