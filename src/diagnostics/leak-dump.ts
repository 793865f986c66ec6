import type { LeakFinding } from '../lifecycle/leak-watchdog.ts';
import { frameLines, shortAge } from './dump-format.ts';

/**
 * `/debug/leaks`: what the leak watchdog flags now, grouped like the task dump — a thousand
 * stuck tasks from one creation site read as one block with a count and a few examples.
 */

/** Findings of one kind from one creation site. */
export interface LeakGroup {
  readonly count: number;
  readonly kind: string;
  /** How long ago the earliest finding of the group was flagged, ms. */
  readonly flaggedMs: number;
  /** The first findings' messages (at most three). */
  readonly examples: readonly string[];
  readonly site: readonly string[];
}

const EXAMPLES = 3;

export function groupLeaks(findings: readonly LeakFinding[], now: number): LeakGroup[] {
  const groups = new Map<string, { findings: LeakFinding[] }>();
  for (const f of findings) {
    const key = `${f.kind}\u0000${f.site.join('\n')}`;
    const group = groups.get(key);
    if (group) group.findings.push(f);
    else groups.set(key, { findings: [f] });
  }
  return [...groups.values()]
    .map(({ findings: fs }) => {
      const first = fs[0]!;
      const earliest = fs.reduce((min, f) => Math.min(min, f.firstSeen), first.firstSeen);
      return { count: fs.length, kind: first.kind, flaggedMs: now - earliest, examples: fs.slice(0, EXAMPLES).map((f) => f.message), site: first.site };
    })
    .sort((a, b) => b.count - a.count || b.flaggedMs - a.flaggedMs);
}

/** The text dump; `enabled` false when the watchdog is turned off. */
export function renderLeaks(findings: readonly LeakFinding[], counts: ReadonlyMap<string, number>, enabled: boolean, now: number): string {
  if (!enabled) return 'leaks: the leak watchdog is off (diagnostics.watchdogIntervalMs: 0)\n';
  const found = [...counts].filter(([, n]) => n > 0);
  const lines = [`leaks: ${findings.length} flagged now; flagged since start: ${found.map(([k, n]) => `${k} ${n}`).join(', ') || 'none'}`];
  for (const g of groupLeaks(findings, now)) {
    lines.push('', `${g.count} @ ${g.kind} flagged ${shortAge(g.flaggedMs)} ago`, ...g.examples.map((m) => `\t${m}`), ...frameLines(g.site, '#\t'));
  }
  return `${lines.join('\n')}\n`;
}
