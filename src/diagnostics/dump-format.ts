/** Small formatting helpers shared by the debug dumps. */

/** Go's goroutine-dump style age: `850ms`, `12s`, `17 minutes`, `3 hours`. */
export function humanAge(ms: number): string {
  if (ms < 1000) return `${Math.max(0, Math.round(ms))}ms`;
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} minute${m === 1 ? '' : 's'}`;
  const h = Math.floor(m / 60);
  return `${h} hour${h === 1 ? '' : 's'}`;
}

/** Compact age for one-line summaries: `850ms`, `42s`, `17m03s`, `2h05m`. */
export function shortAge(ms: number): string {
  if (ms < 1000) return `${Math.max(0, Math.round(ms))}ms`;
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}

/** `12:00:01.123` (UTC) for stage histories. */
export function clock(epochMs: number): string {
  return new Date(epochMs).toISOString().slice(11, 23);
}

/** Creation frames as a dump shows them, one per line, tab-indented (like Go's). */
export function frameLines(frames: readonly string[], prefix = '\t'): string[] {
  return frames.length > 0 ? frames.map((f) => `${prefix}${f}`) : [`${prefix}<no creation site>`];
}
