// A real OpenSSH sshd inside a chaos peer's namespace (`ip netns exec NS sshd -D -e -f
// CONFIG`), listening on the peer's address, with throwaway keys in a temp dir named after
// the test process (see lab.ts for how leftovers are found). Mirrors test/support/sshd.ts,
// whose key and config helpers are private to it.
import { spawn, execFile } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import type { Credentials } from '../../src/ssh/credentials.ts';
import { keyCredentials, type TestTarget } from '../support/run-task.ts';
import { onProcessExit, readBanner, SSHD_PATH, tail, waitForExit } from '../support/sshd.ts';
import { TMP_PREFIX, type Peer } from './lab.ts';

const execFileAsync = promisify(execFile);
const READY_TIMEOUT_MS = 10_000;

export interface NsSshd extends TestTarget {
  /** PID of the listening sshd (our child; `ip netns exec` execs it). */
  readonly pid: number;
  readonly dir: string;
  /** The client's private key (no passphrase), authorized for {@link user}. */
  readonly clientKeyPath: string;
  /** "ssh-ed25519 AAAA..." */
  readonly hostKeyLine: string;
  readonly credentials: Credentials;
  /** The known_hosts line for another address and port (a relay in front of this sshd). */
  knownHostsLineFor(host: string, port: number): string;
  logTail(lines?: number): Promise<string>;
  /**
   * Starts sshd again with the same keys and configuration (a peer back from a reboot keeps
   * its host key); only after it has exited, e.g. through {@link Peer.reboot}.
   */
  restart(): Promise<void>;
  /** Kills sshd and every process in the peer's namespace, removes the dir. Idempotent. */
  stop(): Promise<void>;
}

async function keygen(file: string, comment: string): Promise<void> {
  await execFileAsync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', comment, '-f', file], { timeout: 30_000 });
}

function knownHostsLine(host: string, port: number, keyLine: string): string {
  return `${port === 22 ? host : `[${host}]:${port}`} ${keyLine}`;
}

async function validate(configPath: string): Promise<{ ok: boolean; stderr: string }> {
  try {
    await execFileAsync(SSHD_PATH, ['-t', '-f', configPath], { timeout: 10_000 });
    return { ok: true, stderr: '' };
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    return { ok: false, stderr: (e.stderr ?? '').trim() || e.message };
  }
}

/** Starts sshd in `peer`'s namespace on `peer.addr:port`. */
export async function startNsSshd(peer: Peer, port = 22): Promise<NsSshd> {
  if (!existsSync('/run/sshd')) mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), `${TMP_PREFIX}-${process.pid}-`));
  const removeDirHook = onProcessExit(() => rmSync(dir, { recursive: true, force: true }));
  let child: ChildProcess | undefined;
  try {
    const user = os.userInfo().username;
    const home = path.join(dir, 'home');
    const hostKey = path.join(dir, 'ssh_host_ed25519_key');
    const clientKey = path.join(dir, 'id_ed25519');
    const configPath = path.join(dir, 'sshd_config');
    const authorizedKeys = path.join(dir, 'authorized_keys');
    const logPath = path.join(dir, 'sshd.log');
    await fs.mkdir(home, { mode: 0o700 });
    await Promise.all([keygen(hostKey, 'leash-chaos-host'), keygen(clientKey, 'leash-chaos-client')]);
    await fs.writeFile(authorizedKeys, await fs.readFile(`${clientKey}.pub`), { mode: 0o600 });
    const hostKeyLine = (await fs.readFile(`${hostKey}.pub`, 'utf8')).trim().split(/\s+/).slice(0, 2).join(' ');

    const lines = (penalties: boolean): string =>
      [
        '# leash chaos sshd (test/chaos/ns-sshd.ts)',
        `Port ${port}`,
        `ListenAddress ${peer.addr}`,
        `HostKey "${hostKey}"`,
        `PidFile "${path.join(dir, 'sshd.pid')}"`,
        `AuthorizedKeysFile "${authorizedKeys}"`,
        'StrictModes no',
        'UsePAM no',
        'UseDNS no',
        'PermitRootLogin yes',
        'PasswordAuthentication no',
        'KbdInteractiveAuthentication no',
        'PubkeyAuthentication yes',
        'MaxStartups 200:30:400',
        'LogLevel VERBOSE',
        // sshd's own keepalives would muddy "the peer stays silent"; leash's must do the work.
        'ClientAliveInterval 0',
        'TCPKeepAlive no',
        `SetEnv "HOME=${home}"`,
        'PermitUserRC no',
        'PrintMotd no',
        'PrintLastLog no',
        ...(penalties ? ['PerSourcePenalties no'] : []),
        '',
      ].join('\n');
    await fs.writeFile(configPath, lines(true));
    const probe = await validate(configPath);
    if (!probe.ok) {
      // OpenSSH before 9.8 has no PerSourcePenalties.
      await fs.writeFile(configPath, lines(false));
      const check = await validate(configPath);
      if (!check.ok) throw new Error(`sshd -t rejected ${configPath}:\n${check.stderr}`);
    }

    child = await spawnReady(peer, port, configPath, logPath, 'w');
    const credentials = await keyCredentials(clientKey);
    let stopping: Promise<void> | undefined;
    let current = child;
    return {
      host: peer.addr,
      port,
      user,
      knownHostsLine: knownHostsLine(peer.addr, port, hostKeyLine),
      get pid() {
        return current.pid ?? 0;
      },
      dir,
      clientKeyPath: clientKey,
      hostKeyLine,
      credentials,
      knownHostsLineFor: (host, p) => knownHostsLine(host, p, hostKeyLine),
      logTail: (n) => tail(logPath, n),
      restart: async () => {
        if (stopping) throw new Error(`sshd in ${peer.ns} was stopped`);
        if (current.exitCode === null && current.signalCode === null) throw new Error(`sshd ${current.pid} in ${peer.ns} still runs`);
        current = await spawnReady(peer, port, configPath, logPath, 'a');
      },
      stop: () =>
        (stopping ??= (async () => {
          try {
            await peer.killAll();
            if (!(await waitForExit(current, 5000))) throw new Error(`sshd ${current.pid} in ${peer.ns} did not exit`);
          } finally {
            removeDirHook();
            await fs.rm(dir, { recursive: true, force: true });
          }
        })()),
    };
  } catch (err) {
    if (child) {
      await peer.killAll().catch(() => undefined);
      await waitForExit(child, 2000);
    }
    removeDirHook();
    await fs.rm(dir, { recursive: true, force: true });
    throw err;
  }
}

/** Spawns sshd in the peer's namespace and resolves once it sends its banner on `peer.addr:port`. */
async function spawnReady(peer: Peer, port: number, configPath: string, logPath: string, logMode: 'w' | 'a'): Promise<ChildProcess> {
  const log = await fs.open(logPath, logMode);
  let child: ChildProcess;
  try {
    child = spawn('ip', ['netns', 'exec', peer.ns, SSHD_PATH, '-D', '-e', '-f', configPath], {
      stdio: ['ignore', log.fd, log.fd],
      env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C' },
    });
  } finally {
    await log.close();
  }
  let spawnError: Error | undefined;
  child.once('error', (e) => (spawnError = e));
  child.unref();
  if (child.pid === undefined) throw new Error(`could not spawn sshd in ${peer.ns}`);
  try {
    const until = Date.now() + READY_TIMEOUT_MS;
    for (;;) {
      if (spawnError) throw spawnError;
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`sshd in ${peer.ns} exited; log:\n${await tail(logPath)}`);
      const banner = await readBanner(peer.addr, port, 500);
      if (banner?.startsWith('SSH-2.0-OpenSSH') === true) return child;
      if (Date.now() > until) throw new Error(`sshd in ${peer.ns} not ready within ${READY_TIMEOUT_MS} ms; log:\n${await tail(logPath)}`);
      await new Promise((r) => setTimeout(r, 25));
    }
  } catch (err) {
    await peer.killAll().catch(() => undefined);
    await waitForExit(child, 2000);
    throw err;
  }
}
