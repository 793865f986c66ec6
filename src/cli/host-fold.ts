/**
 * Folds host names into ClusterShell-style ranges for grouped output (the inverse of the
 * `--hosts` range syntax): `web01,web02,web03,web07` → `web[01-03,07]`.
 */
export function foldHosts(names: readonly string[]): string {
  interface Numbered {
    prefix: string;
    suffix: string;
    digits: string;
  }
  const numbered: Numbered[] = [];
  const plain: string[] = [];
  for (const name of new Set(names)) {
    const m = /^(.*?)(\d+)(\D*)$/.exec(name);
    if (m) numbered.push({ prefix: m[1] ?? '', suffix: m[3] ?? '', digits: m[2] ?? '' });
    else plain.push(name);
  }
  // Zero-padded numbers fix a width for their prefix/suffix; an unpadded number of that
  // same width belongs to the padded range too (web[01-20] holds web10), as in ClusterShell.
  const padded = new Set<string>();
  for (const n of numbered) if (isPadded(n.digits)) padded.add(`${n.prefix}\u0000${n.suffix}\u0000${n.digits.length}`);
  const groups = new Map<string, { prefix: string; suffix: string; width: number; numbers: number[] }>();
  for (const n of numbered) {
    const widthKey = `${n.prefix}\u0000${n.suffix}\u0000${n.digits.length}`;
    const width = isPadded(n.digits) || padded.has(widthKey) ? n.digits.length : 0;
    const key = `${n.prefix}\u0000${n.suffix}\u0000${width}`;
    let group = groups.get(key);
    if (!group) {
      group = { prefix: n.prefix, suffix: n.suffix, width, numbers: [] };
      groups.set(key, group);
    }
    group.numbers.push(Number(n.digits));
  }
  const folded = [...groups.values()].map(({ prefix, suffix, width, numbers }) => {
    const pad = (n: number): string => String(n).padStart(width, '0');
    if (new Set(numbers).size === 1) return `${prefix}${pad(numbers[0]!)}${suffix}`;
    return `${prefix}[${ranges(numbers).map(([a, b]) => (a === b ? pad(a) : `${pad(a)}-${pad(b)}`)).join(',')}]${suffix}`;
  });
  return [...folded, ...plain].join(',');
}

function isPadded(digits: string): boolean {
  return digits.length > 1 && digits.startsWith('0');
}

function ranges(numbers: number[]): Array<[number, number]> {
  const sorted = [...new Set(numbers)].sort((a, b) => a - b);
  const out: Array<[number, number]> = [];
  for (const n of sorted) {
    const last = out[out.length - 1];
    if (last && n === last[1] + 1) last[1] = n;
    else out.push([n, n]);
  }
  return out;
}
