import { open } from 'node:fs/promises';
import { MAX_HOSTS, parseHostList, type HostBudget, type HostDefaults, type HostSpec } from '../service/host-list.ts';
import { UsageError, quoteInput } from './usage-error.ts';

/** The largest inventory file read; anything bigger is a mistake (or not an inventory). */
export const MAX_INVENTORY_BYTES = 16 * 1024 * 1024;

/**
 * Reads an inventory file: host entries in the `--hosts` LIST syntax, one or more per line
 * (comma-separated), `#` starting a comment (full line or trailing), blank lines ignored.
 * Duplicates across the file are dropped, keeping the first. The file may be a pipe
 * (`--inventory <(cmd)`). An unreadable file is a {@link UsageError} naming the path and
 * the reason; a bad entry a HostListError naming `path:line`; the file is capped at
 * {@link MAX_INVENTORY_BYTES} and its expansion at {@link MAX_HOSTS} hosts.
 */
export async function readInventory(path: string, defaults: HostDefaults): Promise<HostSpec[]> {
  const text = await readCapped(path);
  const budget: HostBudget = { limit: MAX_HOSTS, used: 0 };
  const out: HostSpec[] = [];
  const seen = new Set<string>();
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = (lines[i] ?? '').replace(/#.*$/, '').trim();
    if (line === '') continue;
    for (const spec of parseHostList(line, defaults, `${path}:${i + 1}`, budget)) {
      const key = `${spec.user}\u0000${spec.host.toLowerCase()}\u0000${spec.port}`;
      if (seen.has(key)) continue;
      seen.add(key);
      out.push(spec);
    }
  }
  return out;
}

async function readCapped(path: string): Promise<string> {
  const fail = (why: string): UsageError => new UsageError(`cannot read inventory ${quoteInput(path, 200)}: ${why}`);
  let bytes: Buffer;
  try {
    const handle = await open(path, 'r');
    try {
      const stat = await handle.stat();
      if (stat.isDirectory()) throw fail('is a directory');
      if (stat.size > MAX_INVENTORY_BYTES) throw fail(`larger than ${MAX_INVENTORY_BYTES / 1024 / 1024} MiB`);
      // Read by chunks rather than trusting stat.size: a pipe reports 0 and a file can grow.
      const chunks: Buffer[] = [];
      let total = 0;
      for (;;) {
        const chunk = Buffer.allocUnsafe(Math.min(1024 * 1024, MAX_INVENTORY_BYTES + 1 - total));
        const { bytesRead } = await handle.read(chunk, 0, chunk.length, null);
        if (bytesRead === 0) break;
        chunks.push(chunk.subarray(0, bytesRead));
        total += bytesRead;
        if (total > MAX_INVENTORY_BYTES) throw fail(`larger than ${MAX_INVENTORY_BYTES / 1024 / 1024} MiB`);
      }
      bytes = Buffer.concat(chunks, total);
    } finally {
      await handle.close();
    }
  } catch (err) {
    if (err instanceof UsageError) throw err;
    throw fail(describeFsError(err));
  }
  try {
    return new TextDecoder('utf-8', { fatal: true, ignoreBOM: false }).decode(bytes);
  } catch {
    throw fail('not UTF-8 text');
  }
}

const FS_REASONS: Readonly<Record<string, string>> = {
  ENOENT: 'no such file',
  EACCES: 'permission denied',
  EPERM: 'permission denied',
  EISDIR: 'is a directory',
  ENOTDIR: 'a component of the path is not a directory',
  ELOOP: 'too many levels of symbolic links',
  ENAMETOOLONG: 'file name too long',
  EMFILE: 'too many open files',
  ENFILE: 'too many open files',
  EIO: 'input/output error',
};

function describeFsError(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string') return FS_REASONS[code] ?? code;
  return err instanceof Error ? (err.message.split('\n')[0] ?? err.message) : String(err);
}
