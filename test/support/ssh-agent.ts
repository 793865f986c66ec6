// A throwaway OpenSSH ssh-agent for tests: runs in the foreground as our child with its
// socket in a temp dir, holding the given keys (passphrase-protected ones are unlocked
// through a one-line SSH_ASKPASS script).
import { execFile, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { onProcessExit, stopChildProcess } from './sshd.ts';
import type { TestKey } from './sshd.ts';

const execFileAsync = promisify(execFile);
const READY_TIMEOUT_MS = 5_000;
const PASSPHRASE_VAR = 'LEASH_TEST_ASKPASS_PASSPHRASE';

export interface TestAgent {
  /** The agent's socket: SSH_AUTH_SOCK for clients. */
  socketPath: string;
  pid: number;
  /** Adds a key (unlocking it with its passphrase, if any). */
  add(key: TestKey): Promise<void>;
  /** Kills the agent by PID (SIGTERM, SIGKILL after 2 s) and removes its dir. Idempotent. */
  stop(): Promise<void>;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function accepts(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect(socketPath);
    sock.once('connect', () => {
      sock.destroy();
      resolve(true);
    });
    sock.once('error', () => resolve(false));
  });
}

export async function startAgent(keys: TestKey[] = []): Promise<TestAgent> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'leash-agent-'));
  const socketPath = path.join(dir, 'agent.sock');
  const logPath = path.join(dir, 'agent.log');
  const askpass = path.join(dir, 'askpass.sh');
  await fs.writeFile(askpass, `#!/bin/sh\nprintf '%s\\n' "$${PASSPHRASE_VAR}"\n`, { mode: 0o700 });

  const log = await fs.open(logPath, 'w');
  let child: ChildProcess;
  try {
    // -D: foreground, no fork; stdout gets the "SSH_AUTH_SOCK=..." lines, which we ignore.
    child = spawn('ssh-agent', ['-D', '-a', socketPath], { stdio: ['ignore', 'ignore', log.fd] });
  } catch (err) {
    await log.close();
    await fs.rm(dir, { recursive: true, force: true });
    throw err;
  }
  await log.close();
  let spawnError: Error | undefined;
  child.once('error', (e) => (spawnError = e));
  child.unref();

  const removeExitHook = onProcessExit(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });
  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      try {
        await stopChildProcess(child);
      } finally {
        removeExitHook();
        await fs.rm(dir, { recursive: true, force: true });
      }
    })();
    return stopping;
  };

  const add = async (key: TestKey): Promise<void> => {
    const env: NodeJS.ProcessEnv = { ...process.env, SSH_AUTH_SOCK: socketPath };
    if (key.passphrase !== undefined) {
      Object.assign(env, { SSH_ASKPASS: askpass, SSH_ASKPASS_REQUIRE: 'force', [PASSPHRASE_VAR]: key.passphrase });
    } else {
      env.SSH_ASKPASS_REQUIRE = 'never';
    }
    try {
      await execFileAsync('ssh-add', [key.path], { env, timeout: 10_000 });
    } catch (err) {
      const e = err as { stderr?: string; message: string };
      throw new Error(`ssh-add ${key.path} failed: ${(e.stderr ?? '').trim() || e.message}`, { cause: err });
    }
  };

  try {
    const until = Date.now() + READY_TIMEOUT_MS;
    // The socket file appears at bind(); connect() proves the agent is listening.
    while (!existsSync(socketPath) || !(await accepts(socketPath))) {
      if (spawnError !== undefined) throw new Error(`could not run ssh-agent: ${spawnError.message}`);
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new Error(`ssh-agent exited early: ${(await fs.readFile(logPath, 'utf8').catch(() => '')).trim()}`);
      }
      if (Date.now() > until) throw new Error(`ssh-agent socket ${socketPath} did not appear within ${READY_TIMEOUT_MS} ms`);
      await sleep(10);
    }
    if (child.pid === undefined) throw new Error('ssh-agent has no pid');
    for (const key of keys) await add(key);
    return { socketPath, pid: child.pid, add, stop };
  } catch (err) {
    await stop().catch(() => undefined);
    throw err;
  }
}
