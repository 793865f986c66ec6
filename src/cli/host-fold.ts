/**
 * Folds host names into ClusterShell-style ranges for grouped output (the inverse of the
 * `--hosts` range syntax): `web01,web02,web03,web07` → `web[01-03,07]`.
 */
export function foldHosts(names: readonly string[]): string {
  const groups = new Map<string, { prefix: string; suffix: string; width: number; numbers: number[] }>();
  const plain: string[] = [];
  for (const name of new Set(names)) {
    const m = /^(.*?)(\d+)(\D*)$/.exec(name);
    if (!m) {
      plain.push(name);
      continue;
    }
    const [, prefix = '', digits = '', suffix = ''] = m;
    // Zero-padded numbers keep their width; unpadded ones fold regardless of width.
    const width = digits.length > 1 && digits.startsWith('0') ? digits.length : 0;
    const key = `${prefix}\u0000${suffix}\u0000${width}`;
    let group = groups.get(key);
    if (!group) {
      group = { prefix, suffix, width, numbers: [] };
      groups.set(key, group);
    }
    group.numbers.push(Number(digits));
  }
  const folded = [...groups.values()].map(({ prefix, suffix, width, numbers }) => {
    const pad = (n: number): string => String(n).padStart(width, '0');
    if (numbers.length === 1) return `${prefix}${pad(numbers[0]!)}${suffix}`;
    return `${prefix}[${ranges(numbers).map(([a, b]) => (a === b ? pad(a) : `${pad(a)}-${pad(b)}`)).join(',')}]${suffix}`;
  });
  return [...folded, ...plain].join(',');
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
