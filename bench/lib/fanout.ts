// Benchmark 3: fan-out to many loopback addresses (127.0.1.1–127.0.1.N), one sshd listening
// on all of them: the real `leash run` CLI against pssh (`parallel-ssh`) and ClusterShell's
// `clush`, each a child process given the same hosts, user, key, known_hosts and
// concurrency; remote command `true`. The bench checks every contender's exit status and
// output, and in sshd's log that every address got a connection and a login.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { promises as fs, readFileSync, statSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { descendantPids, freePort, onProcessExit, startSshd, stopChildProcess, type Sshd } from '../../test/support/sshd.ts';
import { treeCpuMs, waitSshdIdle } from './fresh.ts';
import { onPath, REPO } from './report.ts';
import { cpuMs, PeakSampler, pollUntil, procMemory, sleep } from './util.ts';

/** The sshd of part 3: the harness's, re-started from its own config on 0.0.0.0. */
export interface FanoutSshd {
  readonly pid: number;
  readonly port: number;
  readonly user: string;
  readonly hosts: readonly string[];
  readonly keyPath: string;
  readonly knownHostsPath: string;
  readonly hostsFile: string;
  readonly logPath: string;
  /** A clean HOME for the contenders (no ~/.ssh, no ~/.config). */
  readonly clientHome: string;
  readonly dir: string;
  stop(): Promise<void>;
}

function bannerAt(host: string, port: number, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect({ host, port });
    const done = (ok: boolean): void => {
      clearTimeout(timer);
      sock.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), ms);
    sock.once('data', (b: Buffer) => done(b.toString('latin1').startsWith('SSH-2.0-OpenSSH')));
    sock.once('error', () => done(false));
  });
}

/**
 * OpenSSH's sshd binds at most 16 listen sockets (MAX_LISTEN_SOCKS), so one sshd can serve
 * 200 loopback addresses only by listening on 0.0.0.0. The harness's sshd listens on
 * 127.0.0.1 alone; we start it (keys, clean HOME, authorized_keys, its whole config) and
 * run a second sshd from a copy of its config with `ListenAddress 0.0.0.0`, a port free on
 * every address, and `AllowUsers USER@127.0.0.0/8` so nobody logs in from off the machine.
 */
export async function startFanoutSshd(hostCount: number): Promise<FanoutSshd> {
  const base: Sshd = await startSshd();
  let child: ChildProcess | undefined;
  let removeExitHook: () => unknown = () => undefined;
  const stop = async (): Promise<void> => {
    try {
      if (child?.pid !== undefined) {
        const left = descendantPids(child.pid);
        await stopChildProcess(child);
        for (const pid of left) {
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            // gone
          }
        }
      }
    } finally {
      removeExitHook();
      await base.stop();
    }
  };
  try {
    const dir = path.join(base.dir, 'fanout');
    await fs.mkdir(dir);
    const port = await freePort('0.0.0.0');
    const hosts = Array.from({ length: hostCount }, (_, i) => `127.0.1.${i + 1}`);
    const configPath = path.join(dir, 'sshd_config');
    const logPath = path.join(dir, 'sshd.log');
    const original = readFileSync(base.configPath, 'utf8');
    const replace = (text: string, re: RegExp, line: string): string => {
      if (!re.test(text)) throw new Error(`fan-out sshd: ${re} not in the harness's config`);
      return text.replace(re, line);
    };
    let config = replace(original, /^Port \d+$/m, `Port ${port}`);
    config = replace(config, /^ListenAddress 127\.0\.0\.1$/m, 'ListenAddress 0.0.0.0');
    config = replace(config, /^PidFile .*$/m, `PidFile "${path.join(dir, 'sshd.pid')}"`);
    // Before any Match block the harness may add (none today): a global keyword.
    config = `AllowUsers ${base.user}@127.0.0.0/8\n${config}`;
    await fs.writeFile(configPath, config);
    const hostKeyLine = base.hostKeyLine;
    const knownHostsPath = path.join(dir, 'known_hosts');
    await fs.writeFile(knownHostsPath, hosts.map((h) => `[${h}]:${port} ${hostKeyLine}\n`).join(''));
    const hostsFile = path.join(dir, 'hosts');
    await fs.writeFile(hostsFile, hosts.map((h) => `${h}\n`).join(''));
    const clientHome = path.join(dir, 'client-home');
    await fs.mkdir(clientHome, { mode: 0o700 });
    await fs.mkdir(path.join(clientHome, 'clush-cfg'));

    const log = await fs.open(logPath, 'w');
    try {
      child = spawn('/usr/sbin/sshd', ['-D', '-e', '-f', configPath], { stdio: ['ignore', log.fd, log.fd], env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C' } });
    } finally {
      await log.close();
    }
    const c = child;
    c.unref();
    removeExitHook = onProcessExit(() => {
      for (const pid of [c.pid!, ...descendantPids(c.pid!)]) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone
        }
      }
    });
    const until = Date.now() + 10_000;
    while (!(await bannerAt(hosts[0]!, port, 1000)) || !(await bannerAt(hosts.at(-1)!, port, 1000))) {
      if (c.exitCode !== null || Date.now() > until) throw new Error(`fan-out sshd did not start: ${readFileSync(logPath, 'utf8').slice(-1000)}`);
      await sleep(50);
    }
    return { pid: c.pid!, port, user: base.user, hosts, keyPath: base.clientKey.path, knownHostsPath, hostsFile, logPath, clientHome, dir, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

/** One fan-out tool: its argv and environment, and what its output must show. */
export interface FanoutContender {
  readonly name: string;
  readonly argv: readonly string[];
  readonly env: NodeJS.ProcessEnv;
  /** Throws unless the output shows every host succeeded. */
  verify(stdout: string, stderr: string, hostCount: number): void;
}

export interface FanoutRep {
  readonly wallMs: number;
  /** CPU of the tool and all its descendants (reaped-children CPU), ms. */
  readonly clientCpuMs: number;
  /** CPU of sshd and its connection processes, ms. */
  readonly serverCpuMs: number;
  /** Peak of the summed VmRSS over the tool's process tree (sampled every 20 ms), KiB. */
  readonly peakRssKiB: number;
  /** Most processes in the tool's tree at one sample. */
  readonly peakProcs: number;
}

/** The OpenSSH client options every OpenSSH-based peer gets (the harness's, plus the fair kex). */
export function opensshOptions(s: FanoutSshd): string[] {
  return [
    '-F', 'none',
    '-p', String(s.port),
    '-i', s.keyPath,
    '-o', `UserKnownHostsFile=${s.knownHostsPath}`,
    '-o', 'GlobalKnownHostsFile=/dev/null',
    '-o', 'StrictHostKeyChecking=yes',
    '-o', 'BatchMode=yes',
    '-o', 'IdentitiesOnly=yes',
    '-o', 'KexAlgorithms=curve25519-sha256',
    '-o', 'ControlMaster=no',
  ];
}

const cleanEnv = (s: FanoutSshd, extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv => ({
  PATH: process.env.PATH ?? '/usr/bin:/bin',
  HOME: s.clientHome,
  LANG: 'C.UTF-8',
  ...extra,
});

/** A hosts range as `leash run` and clush both spell it. */
const range = (s: FanoutSshd): string => `127.0.1.[1-${s.hosts.length}]`;

export function leashFanout(s: FanoutSshd, concurrency: number): FanoutContender {
  return {
    name: 'leash run',
    argv: [process.execPath, path.join(REPO, 'bin/leash.js'), 'run', '--hosts', range(s), '-p', String(s.port), '-u', s.user, '-i', s.keyPath, '--no-agent', '--known-hosts', s.knownHostsPath, '--concurrency', String(concurrency), '--json', '--', 'true'],
    env: cleanEnv(s),
    verify: (stdout, _stderr, n) => {
      const lines = stdout.split('\n').filter((l) => l.trim() !== '');
      const ok = new Set<string>();
      for (const line of lines) {
        const r = JSON.parse(line) as { host?: string; target?: { host?: string }; status?: string; exitCode?: number };
        const host = r.host ?? r.target?.host;
        if (r.status === 'ok' && host) ok.add(host);
      }
      if (ok.size !== n) throw new Error(`leash run: ${ok.size} of ${n} hosts ok; first lines: ${lines.slice(0, 2).join(' | ')}`);
    },
  };
}

export function psshFanout(s: FanoutSshd, concurrency: number): FanoutContender | null {
  const bin = onPath('parallel-ssh') ?? onPath('pssh');
  if (!bin) return null;
  return {
    name: 'pssh',
    argv: [bin, '-h', s.hostsFile, '-l', s.user, '-p', String(concurrency), '-t', '120', '-x', opensshOptions(s).join(' '), 'true'],
    env: cleanEnv(s),
    verify: (stdout, _stderr, n) => {
      const ok = stdout.split('\n').filter((l) => /\[SUCCESS\]/.test(l)).length;
      if (ok !== n) throw new Error(`pssh: ${ok} of ${n} hosts [SUCCESS]; ${stdout.split('\n').find((l) => /\[FAILURE\]/.test(l)) ?? ''}`);
    },
  };
}

export function clushFanout(s: FanoutSshd, concurrency: number): FanoutContender | null {
  const bin = onPath('clush');
  if (!bin) return null;
  return {
    name: 'clush',
    // -S: exit with the largest exit status of the hosts (ssh's 255 for a failed connection).
    argv: [bin, '-w', range(s), '-f', String(concurrency), '-S', '-l', s.user, '-o', opensshOptions(s).join(' '), 'true'],
    // An empty configuration directory: the package's defaults, nothing from /etc/clustershell.
    env: cleanEnv(s, { CLUSTERSHELL_CFGDIR: path.join(s.clientHome, 'clush-cfg') }),
    verify: (_stdout, stderr, _n) => {
      if (/exited with exit code|ssh_exchange|Permission denied|Host key/i.test(stderr)) throw new Error(`clush: ${stderr.trim().slice(0, 500)}`);
    },
  };
}

/** Log lines sshd wrote since `offset`, and the new offset. */
function logSince(file: string, offset: number): { text: string; offset: number } {
  const size = statSync(file).size;
  const buf = readFileSync(file);
  return { text: buf.subarray(offset).toString('utf8'), offset: size };
}

/** One run of `c` against every host; fails unless every host succeeded. */
export async function runFanout(s: FanoutSshd, c: FanoutContender, timeoutMs: number): Promise<FanoutRep> {
  await waitSshdIdle(s);
  const { offset } = logSince(s.logPath, 0);
  const server0 = treeCpuMs(s.pid);
  const client0 = cpuMs('self').children;
  const t0 = performance.now();
  const child = spawn(c.argv[0]!, c.argv.slice(1), { env: c.env, cwd: s.clientHome, stdio: ['ignore', 'pipe', 'pipe'], timeout: timeoutMs, killSignal: 'SIGKILL' });
  let procs = 0;
  const sampler = new PeakSampler(() => {
    if (child.pid === undefined) return 0;
    const pids = [child.pid, ...descendantPids(child.pid)];
    procs = Math.max(procs, pids.length);
    return pids.reduce((sum, pid) => sum + (procMemory(pid)?.rssKiB ?? 0), 0);
  }, 20).start();
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    if (stderr.length < 100_000) stderr += d;
  });
  const code = await new Promise<number | string>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (status, signal) => resolve(status ?? signal ?? '?'));
  });
  const wallMs = performance.now() - t0;
  const peak = sampler.stop().peak;
  const clientCpuMs = cpuMs('self').children - client0;
  if (code !== 0) throw new Error(`${c.name} exited with ${code}: ${stderr.trim().slice(-800)}`);
  c.verify(stdout, stderr, s.hosts.length);
  await waitSshdIdle(s);
  const serverCpuMs = treeCpuMs(s.pid) - server0;
  // sshd's own record: a connection on every address and a login for each.
  let log = '';
  await pollUntil(
    () => {
      log = logSince(s.logPath, offset).text;
      return (log.match(/Accepted publickey/g) ?? []).length >= s.hosts.length;
    },
    5000,
    `${c.name}: sshd's log to show ${s.hosts.length} logins`,
    () => `${(log.match(/Accepted publickey/g) ?? []).length} seen`,
  );
  const reached = new Set([...log.matchAll(/Connection from \S+ port \d+ on (\S+) port/g)].map((m) => m[1]));
  const logins = (log.match(/Accepted publickey/g) ?? []).length;
  if (reached.size !== s.hosts.length || logins !== s.hosts.length) {
    throw new Error(`${c.name}: sshd saw connections on ${reached.size} addresses and ${logins} logins, expected ${s.hosts.length} of each`);
  }
  return { wallMs, clientCpuMs, serverCpuMs, peakRssKiB: peak, peakProcs: procs };
}

export function toolVersions(): string {
  const parts: string[] = [];
  const ver = (bin: string | null, args: string[]): string | null => {
    if (!bin) return null;
    try {
      const r = spawnSyncText(bin, args);
      return r.split('\n')[0]?.trim() ?? null;
    } catch {
      return null;
    }
  };
  const pssh = onPath('parallel-ssh') ?? onPath('pssh');
  parts.push(pssh ? `pssh ${ver(pssh, ['--version']) ?? '?'}` : 'pssh: not installed (apt-get install pssh)');
  const clush = onPath('clush');
  parts.push(clush ? `${ver(clush, ['--version']) ?? 'clush ?'} (ClusterShell)` : 'clush: not installed (apt-get install clustershell)');
  return parts.join(', ');
}

function spawnSyncText(bin: string, args: string[]): string {
  // Both print their version on stdout or stderr depending on the Python version.
  const r = spawnSync(bin, args, { encoding: 'utf8', timeout: 10_000 });
  return `${r.stdout ?? ''}${r.stderr ?? ''}`;
}
