import net from 'node:net';
import { quoteInput } from './quote-input.ts';

/** One SSH target of `leash run`. */
/** A malformed host list, entry or range: one line naming the input and where it came from. */
export class HostListError extends Error {
  override readonly name = 'HostListError';
}

export interface HostSpec {
  host: string;
  port: number;
  user: string;
}

/** What an entry without `user@` or `:port` gets (`-u` / `-p`, or their defaults). */
export interface HostDefaults {
  user: string;
  port: number;
}

/** The most hosts one host list (or one inventory file) may expand to. */
export const MAX_HOSTS = 100_000;

/**
 * A cap on expanded hosts shared by several {@link parseHostList} calls (an inventory
 * file's lines). `used` counts entries before duplicates are removed, so that the work
 * done, not only the result, is bounded.
 */
export interface HostBudget {
  readonly limit: number;
  used: number;
}

/** A problem with one entry or pattern, turned into a {@link HostListError} with context. */
class EntryProblem extends Error {}

const RANGE_EXAMPLE = 'expected N or N-M, e.g. web[01-20], 10.0.0.[1-5], node[1-3,7]';

/**
 * Parses a host LIST (DESIGN.md "Contracts"): comma-separated entries `[user@]host[:port]`;
 * `host` may hold ClusterShell-style ranges (`web[01-20].example.com`, `node[1-3,7]`,
 * `r[1-2]n[1-4]`) and commas inside brackets belong to the range. IPv6 addresses are
 * written in brackets: `[::1]`, `root@[2001:db8::1]:2222`. Duplicates (same user, host
 * ignoring case, port) are dropped, keeping the first. Every problem is a
 * {@link HostListError} naming the entry and `source` (e.g. `--hosts`, `hosts.txt:3`).
 */
export function parseHostList(
  list: string,
  defaults: HostDefaults,
  source?: string,
  budget: HostBudget = { limit: MAX_HOSTS, used: 0 },
): HostSpec[] {
  const where = source === undefined ? '' : ` in ${source}`;
  if (list.trim() === '') throw new HostListError(`empty host list${where}: expected [user@]host[:port], comma-separated`);
  const out: HostSpec[] = [];
  const seen = new Set<string>();
  for (const raw of splitTopLevel(list)) {
    const entry = raw.trim();
    if (entry === '') {
      throw new HostListError(
        `bad host list ${quoteInput(list)}${where}: empty entry (two commas in a row, or a comma at the start or end)`,
      );
    }
    try {
      for (const spec of parseEntry(entry, defaults, budget)) {
        const key = `${spec.user}\u0000${spec.host.toLowerCase()}\u0000${spec.port}`;
        if (seen.has(key)) continue;
        seen.add(key);
        out.push(spec);
      }
    } catch (err) {
      if (err instanceof EntryProblem) throw new HostListError(`bad host entry ${quoteInput(entry)}${where}: ${err.message}`);
      throw err;
    }
  }
  return out;
}

/**
 * Expands the ranges of one host name pattern, in order (the first bracket varies
 * slowest): `web[01-03]` → web01, web02, web03; `node[1-2,7]` → node1, node2, node7;
 * `r[1-2]n[1-2]` → r1n1, r1n2, r2n1, r2n2. Zero padding follows the width of each start
 * bound. A name without brackets is returned as is; names are not otherwise validated.
 * Throws a {@link HostListError} on a malformed range or past {@link MAX_HOSTS} names.
 */
export function expandHostPattern(pattern: string): string[] {
  try {
    if (pattern === '') throw new EntryProblem('empty host name');
    return expand(pattern, { limit: MAX_HOSTS, used: 0 });
  } catch (err) {
    if (err instanceof EntryProblem) throw new HostListError(`bad host pattern ${quoteInput(pattern)}: ${err.message}`);
    throw err;
  }
}

/** Splits at commas outside brackets; bracket errors are left for the entry parser. */
function splitTopLevel(list: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < list.length; i++) {
    const c = list[i];
    if (c === '[') depth++;
    else if (c === ']') depth = Math.max(0, depth - 1);
    else if (c === ',' && depth === 0) {
      parts.push(list.slice(start, i));
      start = i + 1;
    }
  }
  parts.push(list.slice(start));
  return parts;
}

function parseEntry(entry: string, defaults: HostDefaults, budget: HostBudget): HostSpec[] {
  let user = defaults.user;
  let rest = entry;
  const at = entry.indexOf('@');
  if (at >= 0) {
    user = entry.slice(0, at);
    rest = entry.slice(at + 1);
    if (user === '') throw new EntryProblem('empty user before "@"');
    if (/[\s@:[\],\p{Cc}]/u.test(user)) {
      throw new EntryProblem(`bad user ${quoteInput(user)}: a user name may not contain spaces, "@", ":", "[" or "]"`);
    }
    if (rest.includes('@')) throw new EntryProblem('more than one "@"');
  }
  if (rest === '') throw new EntryProblem('missing host name');

  // IPv6 literal: a leading bracket whose content holds ':'.
  if (rest.startsWith('[')) {
    const close = rest.indexOf(']');
    const inside = close > 0 ? rest.slice(1, close) : '';
    if (inside.includes(':')) {
      if (net.isIP(inside) !== 6) throw new EntryProblem(`${quoteInput(inside)} is not a valid IPv6 address`);
      const after = rest.slice(close + 1);
      if (after !== '' && !after.startsWith(':')) {
        throw new EntryProblem(`unexpected ${quoteInput(after)} after the IPv6 address; expected [address] or [address]:port`);
      }
      const port = after === '' ? defaults.port : parsePort(after.slice(1));
      take(budget, 1);
      return [{ host: inside, port, user }];
    }
  }

  const colons = colonsOutsideBrackets(rest);
  if (colons.length > 1) {
    if (net.isIP(rest) === 6) throw new EntryProblem(`write an IPv6 address in brackets: [${rest}] or [${rest}]:22`);
    throw new EntryProblem('more than one ":"; expected [user@]host[:port]');
  }
  const colon = colons[0];
  const pattern = colon === undefined ? rest : rest.slice(0, colon);
  const port = colon === undefined ? defaults.port : parsePort(rest.slice(colon + 1));
  if (pattern === '') throw new EntryProblem('missing host name');
  const names = expand(pattern, budget);
  for (const name of names) {
    const problem = hostNameProblem(name);
    if (problem !== null) throw new EntryProblem(problem);
  }
  return names.map((host) => ({ host, port, user }));
}

function colonsOutsideBrackets(text: string): number[] {
  const found: number[] = [];
  let depth = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '[') depth++;
    else if (c === ']') depth = Math.max(0, depth - 1);
    else if (c === ':' && depth === 0) found.push(i);
  }
  return found;
}

function parsePort(text: string): number {
  if (text === '') throw new EntryProblem('missing port after ":"');
  const n = /^\d{1,5}$/.test(text) ? Number(text) : NaN;
  if (!(n >= 1 && n <= 65535)) throw new EntryProblem(`bad port ${quoteInput(text)}: expected a whole number from 1 to 65535`);
  return n;
}

/** One `N` or `N-M` item of a bracket. */
interface RangeItem {
  readonly start: number;
  readonly end: number;
  /** Digits of the start bound: numbers are zero-padded to it. */
  readonly width: number;
}

/** Expands `pattern` after checking, before allocating anything, that it fits `budget`. */
function expand(pattern: string, budget: HostBudget): string[] {
  const literals: string[] = [];
  const brackets: RangeItem[][] = [];
  let literal = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === ']') throw new EntryProblem('"]" without a matching "["');
    if (c !== '[') {
      literal += c;
      continue;
    }
    const close = pattern.indexOf(']', i + 1);
    if (close < 0) throw new EntryProblem('"[" without a matching "]"');
    const inside = pattern.slice(i + 1, close);
    if (inside.includes('[')) throw new EntryProblem('nested brackets');
    if (inside.includes(':')) {
      throw new EntryProblem(`a bracket holding ":" is an IPv6 address and must be the whole host, as in [::1]:22`);
    }
    literals.push(literal);
    literal = '';
    brackets.push(parseBracket(inside));
    i = close;
  }
  literals.push(literal);

  let count = 1;
  for (const items of brackets) {
    let n = 0;
    for (const item of items) n += item.end - item.start + 1;
    count *= n;
    if (count > budget.limit - budget.used) break;
  }
  take(budget, count);

  let names = [literals[0] ?? ''];
  brackets.forEach((items, k) => {
    const tail = literals[k + 1] ?? '';
    const next: string[] = [];
    for (const head of names) {
      for (const { start, end, width } of items) {
        for (let n = start; n <= end; n++) next.push(`${head}${String(n).padStart(width, '0')}${tail}`);
      }
    }
    names = next;
  });
  return names;
}

function parseBracket(inside: string): RangeItem[] {
  if (inside === '') throw new EntryProblem(`empty range "[]"; ${RANGE_EXAMPLE}`);
  return inside.split(',').map((item) => {
    const m = /^(\d+)(?:-(\d+))?$/.exec(item);
    if (!m) {
      const what = item === '' ? `empty item in ${quoteInput(`[${inside}]`)}` : `bad range ${quoteInput(item)} in ${quoteInput(`[${inside}]`)}`;
      throw new EntryProblem(`${what}; ${RANGE_EXAMPLE}`);
    }
    const [, from = '', to] = m;
    const start = Number(from);
    const end = to === undefined ? start : Number(to);
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end)) throw new EntryProblem(`range bound too large in ${quoteInput(item)}`);
    if (start > end) throw new EntryProblem(`range ${quoteInput(item)} runs backwards: the start must not exceed the end`);
    return { start, end, width: from.length };
  });
}

function take(budget: HostBudget, count: number): void {
  if (count > budget.limit - budget.used) {
    const why =
      budget.used === 0 || count > budget.limit
        ? `expands to more than ${budget.limit} hosts (the limit)`
        : `takes the total past ${budget.limit} hosts (the limit)`;
    throw new EntryProblem(why);
  }
  budget.used += count;
}

/** Why `name` is not a host name or IPv4 address, or null when it is fine. */
function hostNameProblem(name: string): string | null {
  const shown = quoteInput(name);
  if (/^[\d.]+$/.test(name)) return net.isIP(name) === 4 ? null : `${shown} is not a valid IPv4 address`;
  const bad = /[^A-Za-z0-9._-]/.exec(name);
  if (bad) return `host name ${shown} contains ${JSON.stringify(bad[0])}; allowed are letters, digits, "-", "." and "_"`;
  if (name.length > 253) return `host name ${shown} is longer than 253 characters`;
  const labels = (name.endsWith('.') ? name.slice(0, -1) : name).split('.');
  for (const label of labels) {
    if (label === '') return `host name ${shown} has an empty label (a leading dot or two dots in a row)`;
    if (label.length > 63) return `host name ${shown} has a label longer than 63 characters`;
    if (label.startsWith('-') || label.endsWith('-')) return `host name ${shown} has a label that starts or ends with "-"`;
  }
  return null;
}
