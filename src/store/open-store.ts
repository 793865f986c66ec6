import path from 'node:path';
import type { ResourceLedger } from '../lifecycle/ledger.ts';
import { SqliteTaskStore } from './sqlite-task-store.ts';
import type { TaskStore } from './task-store.ts';

const ACCEPTED = 'sqlite:PATH (e.g. sqlite:data/leash.db, sqlite:/var/lib/leash/leash.db, or sqlite::memory: for tests)';

/** A store URL leash cannot use; the message names the URL (credentials masked) and what is accepted. */
export class StoreUrlError extends Error {
  override readonly name = 'StoreUrlError';
}

/**
 * Opens the task store a URL names: `sqlite:PATH` (relative paths from the current
 * directory; `sqlite::memory:` for a throwaway database). PostgreSQL (`postgres://…`) is the
 * planned multi-instance store and is refused for now.
 */
export async function openStore(url: string, options: { ledger?: ResourceLedger } = {}): Promise<TaskStore> {
  const file = parseStoreUrl(url); // throws inside the async function: a rejection, never a sync throw
  return await SqliteTaskStore.open(file, options);
}

/** The SQLite file (absolute) or `:memory:` a store URL names; throws {@link StoreUrlError} otherwise. */
export function parseStoreUrl(url: string): string {
  if (/^postgres(ql)?:/i.test(url)) throw new StoreUrlError('postgres stores are not supported yet; use sqlite:PATH');
  const m = /^sqlite:(.*)$/i.exec(url);
  if (!m) throw new StoreUrlError(`unsupported store URL "${maskCredentials(url)}": expected ${ACCEPTED}`);
  const file = m[1] ?? '';
  if (file === ':memory:') return file;
  if (file.trim() === '') throw new StoreUrlError(`store URL "${url}" names no file: expected ${ACCEPTED}`);
  // `sqlite://host/x` reads like a URL with an authority; it would silently become a path
  // starting with `//`. Ask for the plain form instead of guessing.
  if (file.startsWith('//')) throw new StoreUrlError(`store URL "${maskCredentials(url)}" has a "//" authority part: expected ${ACCEPTED}`);
  return path.resolve(file);
}

/** `scheme://user:secret@host` → `scheme://user:***@host`: error messages end up in logs. */
function maskCredentials(url: string): string {
  return url.replace(/^([a-z][a-z0-9+.-]*:\/\/[^/@:]*):[^/@]*@/i, '$1:***@');
}
