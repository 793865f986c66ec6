import { UsageError, quoteInput } from './usage-error.ts';

const UNIT_MS: Readonly<Record<string, number>> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 };

/** The longest duration a flag accepts: anything longer is a typo, not a deadline. */
export const MAX_DURATION_MS = 7 * 24 * 3_600_000;

const EXPECTED = 'expected a number with a unit: ms, s, m or h (e.g. 500ms, 10s, 2m)';

/**
 * Parses a duration flag value into milliseconds: `500ms`, `10s`, `2m`, `1h`, decimals
 * such as `1.5s`, and `0` (with or without a unit), which means "disabled". Rejects empty
 * text, negative and unitless non-zero numbers, unknown units, NaN/Infinity, values below
 * one millisecond and values above {@link MAX_DURATION_MS}, with a {@link UsageError}
 * naming the value and the flag.
 */
export function parseDuration(text: string, flag: string): number {
  const bad = (why: string): UsageError => new UsageError(`bad duration ${quoteInput(text)} for ${flag}: ${why}`);
  const trimmed = text.trim();
  if (trimmed === '') throw bad(EXPECTED);
  const m = /^([+-]?)(\d+(?:\.\d+)?|\.\d+)([a-zA-Z]*)$/.exec(trimmed);
  if (!m) throw bad(EXPECTED);
  const [, sign = '', digits = '', unit = ''] = m;
  const value = Number(digits);
  if (sign === '-' && value !== 0) throw bad(`must not be negative; ${EXPECTED}, or 0 to disable`);
  if (unit === '') {
    if (value === 0) return 0;
    throw bad(`missing unit; ${EXPECTED}`);
  }
  const factor = UNIT_MS[unit];
  if (factor === undefined) throw bad(`unknown unit "${unit}"; ${EXPECTED}`);
  const ms = Math.round(value * factor);
  if (ms === 0 && value !== 0) throw bad('shorter than 1ms; use 0 to disable');
  if (!(ms <= MAX_DURATION_MS)) throw bad('longer than 7 days; use 0 to disable');
  return ms;
}

/**
 * A duration for people: `850ms`, `1.2s`, `2m03s`, `17m03s`, `1h02m` (days are shown as
 * hours: `49h00m`). Negative values show as `0ms`; non-finite ones as `?`.
 */
export function formatDuration(ms: number): string {
  if (Number.isNaN(ms)) return '?';
  if (ms === Infinity) return '∞';
  const whole = Math.max(0, Math.round(ms));
  if (whole < 1_000) return `${whole}ms`;
  const tenths = Math.round(whole / 100);
  if (tenths < 600) return `${(tenths / 10).toFixed(1)}s`;
  const seconds = Math.round(whole / 1_000);
  if (seconds < 3_600) return `${Math.floor(seconds / 60)}m${pad2(seconds % 60)}s`;
  const minutes = Math.round(whole / 60_000);
  return `${Math.floor(minutes / 60)}h${pad2(minutes % 60)}m`;
}

function pad2(n: number): string {
  return String(n).padStart(2, '0');
}
