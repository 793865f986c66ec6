// The chaos lab (issue 6): Linux network namespaces the tests create, one per simulated
// peer, each joined to the root namespace by a veth pair inside a private /24 this module
// picks (10.213.S.0/24, S unused on this machine). Faults are injected inside a peer's
// namespace only (iptables rules, tc qdiscs, killing its processes), so no traffic ever
// goes anywhere but to these namespaces.
//
// Everything is named with the test process's pid (namespaces `leashchaos-<pid>-<n>`,
// veths `lc<pid>h<n>` / `lc<pid>p<n>`, temp dirs `/tmp/leash-chaos-<pid>-*`) so that a run
// can remove what a crashed earlier run left behind, and everything is removed again on
// destroy(), on process exit and on SIGINT/SIGTERM (synchronously, by pid and by name).
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { promisify } from 'node:util';
import { isAlive, onProcessExit } from '../support/sshd.ts';

const execFileAsync = promisify(execFile);

export const NS_PREFIX = 'leashchaos';
export const TMP_PREFIX = 'leash-chaos';
const NS_RE = new RegExp(`^${NS_PREFIX}-(\\d+)-(\\d+)$`);
const LINK_RE = /^lc(\d+)[hp]\d+$/;
const TMP_RE = new RegExp(`^${TMP_PREFIX}-(\\d+)-`);
const CMD_TIMEOUT_MS = 10_000;
/** The second octet of our range: 10.213.S.0/24. */
const RANGE = '10.213';
/** /30 blocks per /24: peer n uses .4n+1 (root side) and .4n+2 (its namespace). */
const MAX_PEERS = 63;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Runs a tool; on failure the error names the command and carries its stderr. */
export async function run(cmd: string, args: string[]): Promise<string> {
  try {
    const { stdout } = await execFileAsync(cmd, args, { timeout: CMD_TIMEOUT_MS, env: { PATH: toolPath(), LANG: 'C' } });
    return stdout;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')} failed: ${(e.stderr ?? '').trim() || e.message}`, { cause: err });
  }
}

function runSync(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { timeout: CMD_TIMEOUT_MS, env: { PATH: toolPath(), LANG: 'C' }, stdio: ['ignore', 'pipe', 'pipe'] }).toString();
}

function trySync(cmd: string, args: string[]): string {
  try {
    return runSync(cmd, args);
  } catch {
    return '';
  }
}

function toolPath(): string {
  return `/usr/sbin:/usr/bin:/sbin:/bin:${process.env.PATH ?? ''}`;
}

function onPath(tool: string): boolean {
  return toolPath()
    .split(':')
    .some((dir) => dir !== '' && existsSync(`${dir}/${tool}`));
}

/** Whether the test process that named something still runs (a zombie does not). */
function pidAlive(pid: number): boolean {
  return isAlive(pid);
}

/** PIDs of the processes inside namespace `ns` (none when it does not exist). */
function nsPidsSync(ns: string): number[] {
  return trySync('ip', ['netns', 'pids', ns])
    .split('\n')
    .map((s) => Number(s.trim()))
    .filter((n) => Number.isInteger(n) && n > 0 && n !== process.pid);
}

function killPids(pids: number[]): void {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

/** Kills every process of `ns`, then deletes it (its veth pair goes with it). Synchronous. */
function removeNamespaceSync(ns: string): void {
  killPids(nsPidsSync(ns));
  trySync('ip', ['netns', 'del', ns]);
}

// ---------------------------------------------------------------------------------------
// Preflight: the suite needs root, namespaces and the tools; it fails (never skips) without.

/** Throws a message that says exactly what is missing and how CI provides it. */
export async function preflight(): Promise<void> {
  const missing: string[] = [];
  if (process.platform !== 'linux') missing.push(`Linux (this is ${process.platform})`);
  if (typeof process.getuid === 'function' && process.getuid() !== 0) missing.push(`root (running as uid ${process.getuid()})`);
  for (const [tool, pkg] of [
    ['ip', 'iproute2'],
    ['tc', 'iproute2'],
    ['ss', 'iproute2'],
    ['iptables', 'iptables'],
  ] as const) {
    if (!onPath(tool)) missing.push(`${tool} (apt-get install ${pkg})`);
  }
  if (!existsSync('/usr/sbin/sshd')) missing.push('/usr/sbin/sshd (apt-get install openssh-server)');
  if (missing.length > 0) {
    throw new Error(`the chaos suite (network namespaces) cannot run here; missing: ${missing.join('; ')}. .ci/run installs the tools; CI runs as root.`);
  }
  const probe = `${NS_PREFIX}-${process.pid}-probe`;
  try {
    await run('ip', ['netns', 'add', probe]);
    await run('ip', ['netns', 'exec', probe, 'iptables', '-S']);
  } catch (err) {
    throw new Error(`the chaos suite needs Linux network namespaces with iptables inside them: ${(err as Error).message}`, { cause: err });
  } finally {
    trySync('ip', ['netns', 'del', probe]);
  }
}

// ---------------------------------------------------------------------------------------
// Leftovers of crashed runs.

/** Removes namespaces, veths and temp dirs named after a test process that no longer runs. */
export function removeStale(): string[] {
  const removed: string[] = [];
  for (const line of trySync('ip', ['netns', 'list']).split('\n')) {
    const name = line.trim().split(/\s+/)[0] ?? '';
    const m = NS_RE.exec(name) ?? new RegExp(`^${NS_PREFIX}-(\\d+)-probe$`).exec(name);
    if (m && !pidAlive(Number(m[1]))) {
      removeNamespaceSync(name);
      removed.push(`netns ${name}`);
    }
  }
  // A crash between `ip link add` and moving the peer end leaves the pair in the root namespace.
  for (const line of trySync('ip', ['-o', 'link', 'show']).split('\n')) {
    const name = (line.split(':')[1] ?? '').trim().split('@')[0] ?? '';
    const m = LINK_RE.exec(name);
    if (m && !pidAlive(Number(m[1]))) {
      trySync('ip', ['link', 'del', name]);
      removed.push(`link ${name}`);
    }
  }
  for (const entry of readdirSync(os.tmpdir())) {
    const m = TMP_RE.exec(entry);
    if (m && !pidAlive(Number(m[1]))) {
      rmSync(`${os.tmpdir()}/${entry}`, { recursive: true, force: true });
      removed.push(`dir ${entry}`);
    }
  }
  return removed;
}

// ---------------------------------------------------------------------------------------
// The lab and its peers.

/** One simulated host: a namespace, the veth pair to it and the faults it can suffer. */
export class Peer {
  /** The namespace's address (where its sshd listens). */
  readonly addr: string;
  /** The root namespace's end of the pair (where a relay may listen). */
  readonly hostAddr: string;
  readonly #removeHook: () => void;
  #destroyed = false;

  constructor(
    readonly ns: string,
    /** The veth end in the root namespace. */
    readonly hostIf: string,
    /** The veth end inside the namespace. */
    readonly nsIf: string,
    subnet: string,
    index: number,
  ) {
    this.hostAddr = `${subnet}.${4 * index + 1}`;
    this.addr = `${subnet}.${4 * index + 2}`;
    this.#removeHook = onProcessExit(() => this.#removeSync());
  }

  /** Runs a command inside the namespace. */
  exec(cmd: string, args: string[]): Promise<string> {
    return run('ip', ['netns', 'exec', this.ns, cmd, ...args]);
  }

  iptables(...args: string[]): Promise<string> {
    return this.exec('iptables', ['-w', ...args]);
  }

  /** The peer disappears without a word: every packet in and out of its namespace is dropped. */
  async vanish(): Promise<void> {
    await this.iptables('-I', 'INPUT', '-j', 'DROP');
    await this.iptables('-I', 'OUTPUT', '-j', 'DROP');
  }

  /** Removes every filter rule: the peer answers again (what answers depends on its state). */
  async restore(): Promise<void> {
    await this.iptables('-F', 'INPUT');
    await this.iptables('-F', 'OUTPUT');
  }

  /** SYNs to `port` vanish: the TCP connect never completes. */
  async blackholeSyn(port: number): Promise<void> {
    await this.iptables('-I', 'INPUT', '-p', 'tcp', '--dport', String(port), '--syn', '-j', 'DROP');
  }

  /**
   * The TCP handshake to `port` completes (the client's SYN and our SYN-ACK pass) and then
   * the peer is gone: every later packet, both ways, is dropped.
   */
  async vanishAfterTcpConnect(port: number): Promise<void> {
    await this.iptables('-A', 'INPUT', '-p', 'tcp', '--dport', String(port), '--tcp-flags', 'SYN,ACK,FIN,RST', 'SYN', '-j', 'ACCEPT');
    await this.iptables('-A', 'INPUT', '-j', 'DROP');
    await this.iptables('-A', 'OUTPUT', '-p', 'tcp', '--sport', String(port), '--tcp-flags', 'SYN,ACK,FIN,RST', 'SYN,ACK', '-j', 'ACCEPT');
    await this.iptables('-A', 'OUTPUT', '-j', 'DROP');
  }

  /** Drops each packet crossing the veth (either way) with probability `p`. */
  async randomLoss(p: number): Promise<void> {
    await this.iptables('-A', 'INPUT', '-i', this.nsIf, '-m', 'statistic', '--mode', 'random', '--probability', String(p), '-j', 'DROP');
    await this.iptables('-A', 'OUTPUT', '-o', this.nsIf, '-m', 'statistic', '--mode', 'random', '--probability', String(p), '-j', 'DROP');
  }

  /** Packets the filter rules dropped so far (iptables counters). */
  async droppedPackets(): Promise<number> {
    const text = await this.iptables('-L', '-n', '-v', '-x');
    let total = 0;
    for (const line of text.split('\n')) {
      const f = line.trim().split(/\s+/);
      if (f[2] === 'DROP') total += Number(f[0]) || 0;
    }
    return total;
  }

  /** Both veth ends shaped to `rate` (tc tbf), e.g. '1mbit'. */
  async limitRate(rate: string): Promise<void> {
    const tbf = ['root', 'tbf', 'rate', rate, 'burst', '32kbit', 'latency', '400ms'];
    await this.exec('tc', ['qdisc', 'add', 'dev', this.nsIf, ...tbf]);
    await run('tc', ['qdisc', 'add', 'dev', this.hostIf, ...tbf]);
  }

  /** Removes the shaping of {@link limitRate} from both veth ends. */
  async unlimitRate(): Promise<void> {
    await this.exec('tc', ['qdisc', 'del', 'dev', this.nsIf, 'root']);
    await run('tc', ['qdisc', 'del', 'dev', this.hostIf, 'root']);
  }

  /** Bytes the namespace's end of the veth has sent through its root qdisc. */
  async bytesSent(): Promise<number> {
    const text = await this.exec('tc', ['-s', 'qdisc', 'show', 'dev', this.nsIf]);
    const m = /Sent (\d+) bytes/.exec(text);
    return m ? Number(m[1]) : 0;
  }

  /** PIDs of every process in the namespace. */
  pids(): number[] {
    return nsPidsSync(this.ns);
  }

  /** Command names (comm) of the processes in the namespace. */
  commands(): string[] {
    return this.pids().map((pid) => {
      try {
        return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
      } catch {
        return '';
      }
    });
  }

  /** SIGKILLs every process of the namespace and waits (up to 5 s) until none is left. */
  async killAll(): Promise<void> {
    const until = Date.now() + 5000;
    for (;;) {
      const pids = this.pids().filter(isAlive);
      if (pids.length === 0) return;
      if (Date.now() > until) throw new Error(`processes still alive in ${this.ns}: ${pids.join(', ')}`);
      killPids(pids);
      await sleep(20);
    }
  }

  /** TCP sockets of the namespace (`ss -tan`, header excluded). */
  async tcpSockets(): Promise<string[]> {
    const text = await this.exec('ss', ['-tanH']);
    return text.split('\n').filter((l) => l.trim() !== '');
  }

  /**
   * The peer reboots: silence first (nothing it does now reaches the client), then every
   * process and every TCP socket of its namespace is gone (`ss -K`), then the network
   * answers again from a stack with no connection state, so the client's next packet
   * draws a RST. No sshd listens afterwards.
   */
  async reboot(): Promise<void> {
    await this.vanish();
    await this.killAll();
    await this.exec('ss', ['-K', '-t', 'state', 'all']);
    const left = await this.tcpSockets();
    if (left.length > 0) throw new Error(`TCP state survived the reboot of ${this.ns}:\n${left.join('\n')}`);
    await this.restore();
  }

  /** Kills every process in the namespace and deletes it (the veth pair, qdiscs and rules go with it). Idempotent. */
  async destroy(): Promise<void> {
    if (this.#destroyed) return;
    await this.killAll();
    this.#removeSync();
  }

  #removeSync(): void {
    if (this.#destroyed) return;
    this.#destroyed = true;
    this.#removeHook();
    removeNamespaceSync(this.ns);
    trySync('ip', ['link', 'del', this.hostIf]);
  }
}

/** The lab: a private /24 and the peers made in it. */
export class Lab {
  readonly #peers = new Set<Peer>();
  #next = 0;

  readonly #releaseSubnet: () => void;

  private constructor(
    readonly subnet: string,
    releaseSubnet: () => void,
  ) {
    this.#releaseSubnet = releaseSubnet;
  }

  /** Checks the prerequisites, removes leftovers of dead runs and picks an unused /24. */
  static async create(): Promise<Lab> {
    await preflight();
    removeStale();
    const { subnet, release } = await pickSubnet();
    return new Lab(subnet, release);
  }

  /** A new namespace `leashchaos-<pid>-<n>` joined by a veth pair with a /30 of the lab's range. */
  async peer(): Promise<Peer> {
    const index = this.#next++;
    if (index >= MAX_PEERS) throw new Error(`the lab holds at most ${MAX_PEERS} peers`);
    const ns = `${NS_PREFIX}-${process.pid}-${index}`;
    const hostIf = `lc${process.pid}h${index}`;
    const nsIf = `lc${process.pid}p${index}`;
    // The hook is registered (by the constructor) before anything exists, so a crash
    // anywhere below still removes what was made.
    const peer = new Peer(ns, hostIf, nsIf, this.subnet, index);
    this.#peers.add(peer);
    await run('ip', ['netns', 'add', ns]);
    await run('ip', ['link', 'add', hostIf, 'type', 'veth', 'peer', 'name', nsIf]);
    await run('ip', ['link', 'set', nsIf, 'netns', ns]);
    await run('ip', ['addr', 'add', `${peer.hostAddr}/30`, 'dev', hostIf]);
    await run('ip', ['link', 'set', hostIf, 'up']);
    await peer.exec('ip', ['addr', 'add', `${peer.addr}/30`, 'dev', nsIf]);
    await peer.exec('ip', ['link', 'set', nsIf, 'up']);
    await peer.exec('ip', ['link', 'set', 'lo', 'up']);
    return peer;
  }

  /** Destroys every peer (see {@link Peer.destroy}). */
  async destroy(): Promise<void> {
    const peers = [...this.#peers];
    this.#peers.clear();
    const results = await Promise.allSettled(peers.map((p) => p.destroy()));
    this.#releaseSubnet();
    const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed.length > 0) throw new Error(`lab cleanup: ${failed.map((f) => String(f.reason)).join('; ')}`);
  }

  /** What of this process's making still exists (namespaces and veths), for assertions. */
  static leftovers(): string[] {
    const mine = (name: string): boolean => name.startsWith(`${NS_PREFIX}-${process.pid}-`) || name.startsWith(`lc${process.pid}`);
    const namespaces = trySync('ip', ['netns', 'list'])
      .split('\n')
      .map((l) => l.trim().split(/\s+/)[0] ?? '')
      .filter((n) => n !== '' && mine(n));
    const links = trySync('ip', ['-o', 'link', 'show'])
      .split('\n')
      .map((l) => (l.split(':')[1] ?? '').trim().split('@')[0] ?? '')
      .filter((n) => n !== '' && mine(n));
    return [...namespaces, ...links];
  }
}

/**
 * The first 10.213.S.0/24 (S from a pid-derived start) that no address or route here
 * mentions and no other live test process has claimed: two labs may be made at once (the
 * chaos suite and the soak run in parallel), and neither has addresses up at that point.
 */
async function pickSubnet(): Promise<{ subnet: string; release: () => void }> {
  const used = `${await run('ip', ['-4', '-o', 'addr', 'show'])}\n${await run('ip', ['-4', 'route', 'show', 'table', 'all'])}`;
  const start = process.pid % 200;
  for (let i = 0; i < 200; i++) {
    const s = 20 + ((start + i) % 200);
    const subnet = `${RANGE}.${s}`;
    if (used.includes(`${subnet}.`)) continue;
    const release = claim(`${os.tmpdir()}/${TMP_PREFIX}-subnet-${s}`);
    if (release) return { subnet, release };
  }
  throw new Error(`no unused /24 in ${RANGE}.20.0-${RANGE}.219.0 on this machine`);
}

/** Creates `file` holding our pid unless a live process holds it; returns its remover, or null. */
function claim(file: string): (() => void) | null {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      writeFileSync(file, String(process.pid), { flag: 'wx' });
      const removeHook = onProcessExit(() => rmSync(file, { force: true }));
      return () => {
        removeHook();
        rmSync(file, { force: true });
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const holder = Number(readFileSync(file, 'utf8').trim());
      if (Number.isInteger(holder) && holder > 0 && pidAlive(holder)) return null;
      rmSync(file, { force: true }); // a dead run's claim
    }
  }
  return null;
}
