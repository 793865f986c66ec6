// Sockets this process holds, from /proc/self/fd: a test must not leave one behind.
import assert from 'node:assert/strict';
import { readdirSync, readlinkSync } from 'node:fs';

/** "fd -> socket:[inode]" for every socket descriptor of this process. */
export function openSockets(): Set<string> {
  const out = new Set<string>();
  for (const fd of readdirSync('/proc/self/fd')) {
    let target: string;
    try {
      target = readlinkSync(`/proc/self/fd/${fd}`);
    } catch {
      continue; // closed meanwhile (e.g. the readdir's own descriptor)
    }
    if (target.startsWith('socket:')) out.add(`${fd} -> ${target}`);
  }
  return out;
}

/** Asserts that no socket exists now that did not exist in `before`, allowing `settleMs` for closes under way. */
export async function assertNoNewSockets(before: Set<string>, settleMs = 2000): Promise<void> {
  const until = Date.now() + settleMs;
  let fresh: string[];
  for (;;) {
    fresh = [...openSockets()].filter((s) => !before.has(s));
    if (fresh.length === 0 || Date.now() > until) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.deepEqual(fresh, [], 'sockets left open in /proc/self/fd');
}
