import type { ResourceEntry } from '../lifecycle/ledger.ts';
import type { TaskTable } from '../lifecycle/task-table.ts';
import { frameLines, humanAge, shortAge } from './dump-format.ts';

/**
 * `/debug/resources`: the ledger as a dump. `debug=1` groups live entries by (kind, owner
 * kind, creation site) with counts and the oldest age; `debug=2` lists every entry with its
 * owner (and the owner task's stage), attributes and creation stack, capped.
 */

/** One group of `debug=1`. */
export interface ResourceGroup {
  readonly count: number;
  readonly kind: string;
  /** `task` when owned by tasks, else the owning component (`pool`, `store`, ...). */
  readonly owner: string;
  readonly oldestMs: number;
  readonly site: readonly string[];
}

/** One entry of `debug=2`. */
export interface ResourceItem {
  readonly id: number;
  readonly kind: string;
  readonly owner: string;
  /** The owner task's stage, `finished` when the owner was a task that is gone, or null for a component. */
  readonly ownerStage: string | null;
  readonly ageMs: number;
  readonly attrs: Readonly<Record<string, string | number | boolean>>;
  readonly site: readonly string[];
}

/** Long-lived component owners by name; anything else is a task id, grouped as `task`. */
function ownerClass(owner: string, components: ReadonlySet<string>): string {
  return components.has(owner) ? owner : 'task';
}

export function groupResources(entries: readonly ResourceEntry[], components: ReadonlySet<string>, now: number): ResourceGroup[] {
  const groups = new Map<string, { count: number; kind: string; owner: string; oldest: number; site: readonly string[] }>();
  for (const e of entries) {
    const owner = ownerClass(e.owner, components);
    const key = `${e.kind}\u0000${owner}\u0000${e.site.key()}`;
    const g = groups.get(key);
    if (g) {
      g.count++;
      g.oldest = Math.min(g.oldest, e.createdAt);
    } else {
      groups.set(key, { count: 1, kind: e.kind, owner, oldest: e.createdAt, site: e.site.frames() });
    }
  }
  return [...groups.values()]
    .map((g) => ({ count: g.count, kind: g.kind, owner: g.owner, oldestMs: now - g.oldest, site: g.site }))
    .sort((a, b) => b.count - a.count || b.oldestMs - a.oldestMs);
}

export function listResources(
  entries: readonly ResourceEntry[],
  tasks: TaskTable,
  components: ReadonlySet<string>,
  now: number,
  limit: number,
): { items: ResourceItem[]; omitted: number } {
  const items = entries.slice(0, limit).map((e) => {
    const task = tasks.get(e.owner);
    const ownerStage = task ? task.stage : components.has(e.owner) ? null : 'finished';
    return { id: e.id, kind: e.kind, owner: e.owner, ownerStage, ageMs: now - e.createdAt, attrs: e.attrs, site: e.site.frames() };
  });
  return { items, omitted: Math.max(0, entries.length - items.length) };
}

export function renderResources(
  entries: readonly ResourceEntry[],
  debug: 1 | 2,
  options: { tasks: TaskTable; components: ReadonlySet<string>; now: number; limit: number },
): string {
  const lines = [`resources: total ${entries.length}`];
  if (debug === 1) {
    for (const g of groupResources(entries, options.components, options.now)) {
      lines.push('', `${g.count} @ kind=${g.kind} owner=${g.owner} oldest=${shortAge(g.oldestMs)}`, ...frameLines(g.site, '#\t'));
    }
    return `${lines.join('\n')}\n`;
  }
  const { items, omitted } = listResources(entries, options.tasks, options.components, options.now, options.limit);
  for (const r of items) {
    const owner = r.ownerStage === null ? r.owner : `task ${r.owner} (${r.ownerStage})`;
    const attrs = Object.entries(r.attrs)
      .map(([k, v]) => `${k}=${String(v)}`)
      .join(' ');
    lines.push('', `resource ${r.id} ${r.kind} [${humanAge(r.ageMs)}] owner=${owner}${attrs ? ` ${attrs}` : ''}`, '\tcreated at:', ...frameLines(r.site, '\t\t'));
  }
  if (omitted > 0) lines.push('', `... ${omitted} more resource${omitted === 1 ? '' : 's'} not shown (limit ${options.limit})`);
  return `${lines.join('\n')}\n`;
}
