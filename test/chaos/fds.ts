// Descriptors this process holds, from /proc/self/fd: a test must not leave a socket behind.
import assert from 'node:assert/strict';
import { readdirSync, readlinkSync } from 'node:fs';

/** `fd -> target` for every descriptor of this process (the listing's own one drops out). */
export function openFdTargets(): string[] {
  const out: string[] = [];
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      out.push(`${fd} -> ${readlinkSync(`/proc/self/fd/${fd}`)}`);
    } catch {
      // closed meanwhile: the directory listing's own descriptor
    }
  }
  return out;
}

/** "fd -> socket:[inode]" for every socket descriptor of this process. */
export function openSockets(): Set<string> {
  return new Set(openFdTargets().filter((f) => f.includes(' -> socket:')));
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
