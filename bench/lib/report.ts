// The machine description, tool versions and table rendering (plain text for the
// terminal, Markdown for RESULTS.md).
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = fileURLToPath(new URL('../../', import.meta.url));

export interface Machine {
  readonly cpu: string;
  readonly cores: number;
  readonly ramGiB: number;
  readonly kernel: string;
  readonly loadAtStart: string;
}

export function describeMachine(): Machine {
  let cpu = os.cpus()[0]?.model ?? 'unknown';
  try {
    cpu = /^model name\s*:\s*(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.trim() ?? cpu;
  } catch {
    // keep os.cpus()
  }
  return {
    cpu,
    cores: os.availableParallelism(),
    ramGiB: os.totalmem() / 1024 ** 3,
    kernel: `${os.type()} ${os.release()} ${os.arch()}`,
    loadAtStart: os.loadavg().map((l) => l.toFixed(2)).join(' '),
  };
}

export interface Versions {
  readonly node: string;
  readonly ssh2: string;
  readonly openssh: string;
  readonly leash: string;
  readonly go: string;
}

function quiet(cmd: string, args: string[]): string | null {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', timeout: 10_000, stdio: ['ignore', 'pipe', 'pipe'] }).trim();
  } catch {
    return null;
  }
}

/** An executable on PATH, or null. */
export function onPath(name: string): string | null {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (dir !== '' && existsSync(path.join(dir, name))) return path.join(dir, name);
  }
  return null;
}

export function describeVersions(): Versions {
  const ssh2 = (JSON.parse(readFileSync(path.join(REPO, 'node_modules/ssh2/package.json'), 'utf8')) as { version: string }).version;
  const sshV = spawnSync('ssh', ['-V'], { encoding: 'utf8', timeout: 10_000 });
  const openssh = `${(sshV.stderr || sshV.stdout || 'unknown').trim()} (client); sshd from openssh-server ${quiet('dpkg-query', ['-W', '-f', '${Version}', 'openssh-server']) ?? '?'}`;
  const pkg = JSON.parse(readFileSync(path.join(REPO, 'package.json'), 'utf8')) as { version: string };
  const head = quiet('git', ['-C', REPO, 'rev-parse', '--short', 'HEAD']) ?? 'unknown';
  const dirty = quiet('git', ['-C', REPO, 'status', '--porcelain', '--', 'src']);
  const go = onPath('go');
  return {
    node: process.version,
    ssh2,
    openssh,
    leash: `${pkg.version} at git ${head}${dirty ? ' (src/ has uncommitted changes)' : ''}`,
    go: go ? `go found at ${go} (${quiet(go, ['version']) ?? 'version unknown'}); the Go peer program (bench/peers/) is not part of this first version` : 'Go peer: not installed (apt golang-go golang-golang-x-crypto-dev)',
  };
}

// ---------------------------------------------------------------------------------------
// Tables.

export interface Table {
  readonly headers: readonly string[];
  readonly rows: ReadonlyArray<readonly string[]>;
  /** Columns (by index) aligned left; the rest are right-aligned numbers. */
  readonly leftColumns?: readonly number[];
}

export function textTable(t: Table): string {
  const left = new Set(t.leftColumns ?? [0]);
  const widths = t.headers.map((h, i) => Math.max(h.length, ...t.rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    cells.map((c, i) => (left.has(i) ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ').trimEnd();
  return [line(t.headers), widths.map((w) => '-'.repeat(w)).join('  '), ...t.rows.map(line)].join('\n');
}

export function markdownTable(t: Table): string {
  const left = new Set(t.leftColumns ?? [0]);
  const esc = (c: string): string => c.replace(/\|/g, '\\|');
  return [
    `| ${t.headers.map(esc).join(' | ')} |`,
    `| ${t.headers.map((_, i) => (left.has(i) ? ':--' : '--:')).join(' | ')} |`,
    ...t.rows.map((r) => `| ${r.map(esc).join(' | ')} |`),
  ].join('\n');
}
