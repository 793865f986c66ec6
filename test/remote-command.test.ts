import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { EXEC_ID_VARIABLE, isEnvName, killSessionCommand, remoteCommandLine, shellQuote } from '../src/ssh/remote-command.ts';

/** Strings a caller may pass as a command, an env value or an argument. */
const HOSTILE = [
  '',
  ' ',
  'plain',
  "it's",
  "''",
  "'\\''",
  '"double" quotes',
  '$HOME ${PATH} $(id) $((1+1))',
  '`id` `',
  'back\\slash \\\\ \\n',
  'line one\nline two\n',
  '\r\n\t tabs and CRLF',
  '; rm -rf / #',
  '&& || | > < * ? [a-z] ~ !',
  'unicode: é ü 中文 🙂 \u202e rtl',
  '-n',
  '%s %d %%',
];

/** Runs `script` with the local /bin/sh, with a minimal environment plus `env`. */
function sh(script: string, env: Record<string, string> = {}): string {
  return execFileSync('/bin/sh', ['-c', script], {
    encoding: 'utf8',
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env },
    timeout: 10_000,
  });
}

void describe('shellQuote', () => {
  void test('round-trips hostile strings through a real /bin/sh', () => {
    // One shell for all values (each spawn costs tens of ms); NUL cannot occur in a word.
    const out = sh(HOSTILE.map((v) => `printf '%s\\0' ${shellQuote(v)}`).join('; '));
    assert.deepEqual(out.split('\0').slice(0, -1), HOSTILE);
  });

  void test('quotes as exactly one shell word', () => {
    const out = sh(HOSTILE.map((v) => `set -- ${shellQuote(v)}; printf '%s ' "$#"`).join('; '));
    assert.equal(out, '1 '.repeat(HOSTILE.length));
  });
});

void describe('remoteCommandLine', () => {
  const execId = '3f1a2b4c-0000-4000-8000-00000000beef';

  void test('the line runs the command under $SHELL with every env value exact', () => {
    const env: Record<string, string> = {};
    HOSTILE.forEach((v, i) => (env[`V_${i}`] = v));
    const command = HOSTILE.map((_, i) => `printf '%s\\0' "$V_${i}"`).join('; ');
    const { line, execId: id } = remoteCommandLine(command, env, execId);
    assert.equal(id, execId);
    const out = sh(line, { SHELL: '/bin/sh' });
    assert.deepEqual(out.split('\0').slice(0, -1), HOSTILE);
  });

  void test('the command text itself survives quoting', () => {
    const command = `printf '%s|' "it's" '$HOME' '\`x\`' 'a\nb'`;
    const { line } = remoteCommandLine(command, undefined, execId);
    assert.equal(sh(line, { SHELL: '/bin/sh', HOME: '/nowhere' }), "it's|$HOME|`x`|a\nb|");
  });

  void test('LEASH_EXEC_ID is exported to the command and to its children', () => {
    const { line } = remoteCommandLine(`printf '%s\\n' "$${EXEC_ID_VARIABLE}"; /bin/sh -c 'printf "%s\\n" "$${EXEC_ID_VARIABLE}"'; env | grep '^${EXEC_ID_VARIABLE}='`, { A: '1' }, execId);
    assert.equal(sh(line, { SHELL: '/bin/sh' }), `${execId}\n${execId}\n${EXEC_ID_VARIABLE}=${execId}\n`);
  });

  void test('env values are exported to children too', () => {
    const { line } = remoteCommandLine(`/bin/sh -c 'printf %s "$GREETING"'`, { GREETING: "hello 'world' $x" }, execId);
    assert.equal(sh(line, { SHELL: '/bin/sh' }), "hello 'world' $x");
  });

  void test('falls back to /bin/sh when SHELL is unset', () => {
    const { line } = remoteCommandLine('printf ok', undefined, execId);
    assert.equal(sh(line), 'ok');
  });

  void test('the command replaces the login shell (exec), keeping its exit status', () => {
    const { line } = remoteCommandLine('exit 7', undefined, execId);
    assert.throws(
      () => sh(line, { SHELL: '/bin/sh' }),
      (err: unknown) => (err as { status?: number }).status === 7,
    );
  });

  void test('a fresh exec id is generated when none is given', () => {
    const a = remoteCommandLine('true', undefined);
    const b = remoteCommandLine('true', undefined);
    assert.match(a.execId, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.notEqual(a.execId, b.execId);
    assert.ok(a.line.includes(a.execId));
  });

  void test('an env entry cannot replace the exec id marker', () => {
    let line: string;
    try {
      ({ line } = remoteCommandLine(`printf %s "$${EXEC_ID_VARIABLE}"`, { [EXEC_ID_VARIABLE]: 'spoofed' }, execId));
    } catch (err) {
      assert.ok(err instanceof TypeError, 'refusing it is fine');
      return;
    }
    assert.equal(sh(line, { SHELL: '/bin/sh' }), execId, 'the processes must stay findable by the kill command');
  });

  void test('invalid env names throw a TypeError naming the variable', () => {
    for (const name of ['', '1ABC', 'A-B', 'A B', 'A=B', 'A;B', '$(id)', 'É', 'A\nB']) {
      assert.throws(
        () => remoteCommandLine('true', { [name]: 'x' }, execId),
        (err: unknown) => err instanceof TypeError && err.message.includes(JSON.stringify(name)),
        JSON.stringify(name),
      );
    }
  });

  void test('isEnvName accepts POSIX shell identifiers', () => {
    for (const name of ['A', '_', 'a1', 'LC_ALL', '_x_9']) assert.equal(isEnvName(name), true, name);
    for (const name of ['', '9', 'a-b', 'a.b', 'ä']) assert.equal(isEnvName(name), false, name);
  });
});

/** Waits until `pid` no longer exists (kill(pid, 0) fails with ESRCH), or `ms` pass. */
async function gone(pid: number, ms: number): Promise<boolean> {
  const until = Date.now() + ms;
  for (;;) {
    try {
      process.kill(pid, 0);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ESRCH') return true;
      throw err;
    }
    if (Date.now() > until) return false;
    await sleep(20);
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Children of `pid`, read from /proc (no procps needed). */
function childrenOf(pid: number): number[] {
  try {
    const text = execFileSync('/bin/sh', ['-c', `cat /proc/${pid}/task/*/children 2>/dev/null`], { encoding: 'utf8' });
    return text.split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/**
 * Starts `setsid sh -c 'sleep 300; sleep 300'` in its own session, like a remote command
 * under sshd, with `marker` (if any) in its environment. Resolves once its sleep runs.
 */
async function startSleeper(marker: string | null): Promise<{ child: ChildProcess; shPid: number; sleepPid: number }> {
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH ?? '/usr/bin:/bin' };
  if (marker !== null) env[EXEC_ID_VARIABLE] = marker;
  // Not detached by node: setsid then is not a group leader and execs sh without forking,
  // so the pid we hold is the session leader's.
  const child = spawn('setsid', ['sh', '-c', 'sleep 300; sleep 300'], { env, stdio: 'ignore' });
  child.unref();
  const shPid = child.pid;
  assert.ok(shPid !== undefined, 'setsid started');
  const until = Date.now() + 5_000;
  for (;;) {
    const [sleepPid] = childrenOf(shPid);
    if (sleepPid !== undefined) return { child, shPid, sleepPid };
    if (Date.now() > until) throw new Error('sleeper did not start');
    await sleep(10);
  }
}

/** Kills a sleeper's whole session (our own cleanup, by process group id). */
function cleanup(pid: number): void {
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

void describe('killSessionCommand (run locally)', () => {
  void test('kills every process of the session marked with the exec id, and only that session', async () => {
    const execId = randomUUID();
    const marked = await startSleeper(execId);
    const unmarked = await startSleeper(null);
    const otherId = await startSleeper(randomUUID());
    try {
      const sid = execFileSync('ps', ['-o', 'sid=', '-p', String(marked.shPid)], { encoding: 'utf8' }).trim();
      assert.equal(sid, String(marked.shPid), 'the sleeper leads its own session');
      sh(killSessionCommand(execId));
      assert.equal(await gone(marked.shPid, 5_000), true, 'marked session leader is gone');
      assert.equal(await gone(marked.sleepPid, 5_000), true, 'its child is gone');
      await sleep(100);
      assert.equal(alive(unmarked.shPid), true, 'an unmarked sleeper is not killed');
      assert.equal(alive(unmarked.sleepPid), true);
      assert.equal(alive(otherId.shPid), true, 'a sleeper marked with another id is not killed');
      assert.equal(alive(otherId.sleepPid), true);
    } finally {
      for (const s of [marked, unmarked, otherId]) cleanup(s.shPid);
    }
    assert.equal(await gone(unmarked.shPid, 5_000), true);
    assert.equal(await gone(otherId.shPid, 5_000), true);
  });

  void test('exits 0 and kills nothing when no process carries the mark', () => {
    const unmarked = randomUUID();
    assert.equal(sh(`${killSessionCommand(unmarked)}; printf 'exit=%s' "$?"`), 'exit=0');
  });

  void test('the exec id in the command is quoted (a hostile id cannot run code)', () => {
    const out = sh(`${killSessionCommand("x'; printf pwned; '")}; printf done`);
    assert.equal(out, 'done');
  });
});
