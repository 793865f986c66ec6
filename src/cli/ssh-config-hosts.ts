/**
 * `leash run`'s hosts as OpenSSH's client config describes them: each host entry is looked
 * up in ssh_config (src/ssh/ssh-config.ts) and turned into where to connect, as whom,
 * through which jump hosts, with which keys, host key files and deadlines. Precedence is
 * ssh's: what the entry itself says (`user@`, `:port`), then the config, then leash's
 * flags (`-u`, `-p`), then the defaults; a flag that the config also has
 * (`--connect-timeout`, `--keepalive-*`, `--host-key-policy`) wins over the config.
 *
 * The core runs a task's whole jump chain with one set of credentials and one host key
 * verifier, so a chain's IdentityFiles, UserKnownHostsFiles and StrictHostKeyChecking are
 * merged here: every hop's keys are offered, every hop's known_hosts files are read, and the
 * strictest policy of the chain applies.
 */
import path from 'node:path';
import type { TaskTimeouts } from '../service/task-spec.ts';
import type { KeepaliveOptions } from '../ssh/connect.ts';
import type { SshTarget } from '../ssh/connection.ts';
import type { HostKeyPolicy } from '../ssh/host-key-verifier.ts';
import { SshConfig, SshConfigError, type JumpHop, type SshHostConfig } from '../ssh/ssh-config.ts';
import type { HostEntry, RunOptions } from './run-options.ts';
import { UsageError } from './usage-error.ts';

/** One host of a run, with everything the ssh config (and the flags) say about it. */
export interface ConfiguredHost {
  /** The host as the entry names it (the config's alias). */
  readonly alias: string;
  readonly target: SshTarget;
  /** Jump hosts, first hop first; empty for a direct connection. */
  readonly jump: readonly SshTarget[];
  /** IdentityFiles of the host, then of its jump hosts, each once: offered after any `-i` keys. */
  readonly identityFiles: readonly string[];
  readonly hostKeyPolicy: HostKeyPolicy;
  /** True when the policy came from StrictHostKeyChecking rather than a flag or the default. */
  readonly policyFromConfig: boolean;
  /** known_hosts files to read besides leash's own: UserKnownHostsFile, else ~/.ssh/known_hosts. */
  readonly knownHostsFiles: readonly string[];
  readonly timeouts: TaskTimeouts;
  readonly keepalive: KeepaliveOptions;
}

/** ProxyJump chains longer than this are refused (a hop's own ProxyJump can loop back). */
const MAX_JUMP_HOPS = 16;

const STRICTNESS: Readonly<Record<HostKeyPolicy, number>> = { off: 0, 'accept-new': 1, strict: 2 };

/**
 * Reads the ssh config `options` name: none with `--no-ssh-config`, an empty one when the
 * default file does not exist. A bad file is a {@link UsageError} saying `FILE:LINE: problem`.
 */
export async function loadSshConfig(options: Pick<RunOptions, 'sshConfig' | 'home' | 'localUser'>): Promise<SshConfig> {
  const settings = { home: options.home, localUser: options.localUser };
  if (options.sshConfig === null) return SshConfig.parse('', '(no ssh config)', settings);
  try {
    return await SshConfig.load(options.sshConfig.file, { ...settings, required: options.sshConfig.required });
  } catch (err) {
    if (err instanceof SshConfigError) throw new UsageError(err.message, { cause: err });
    throw err;
  }
}

/**
 * Every host entry of `options`, resolved through `config`; entries that end up at the same
 * user, address, port and jump chain are kept once. Throws a {@link UsageError} for a host
 * that needs ProxyCommand (leash never runs local commands from a config) or whose jump
 * chain loops.
 */
export function configureHosts(options: RunOptions, config: SshConfig): ConfiguredHost[] {
  const seen = new Set<string>();
  const out: ConfiguredHost[] = [];
  for (const entry of options.hosts) {
    const host = configureHost(options, config, entry);
    const key = [host.target, ...host.jump].map((t) => `${t.user}@${t.host.toLowerCase()}:${t.port}`).join(' via ');
    if (seen.has(key)) continue;
    seen.add(key);
    out.push(host);
  }
  return out;
}

function configureHost(options: RunOptions, config: SshConfig, entry: HostEntry): ConfiguredHost {
  const found = config.resolve(entry.host);
  const target: SshTarget = {
    host: found.hostName,
    user: entry.user ?? found.user ?? options.user ?? options.localUser,
    port: entry.port ?? found.port ?? options.port ?? 22,
  };
  // -J (even `-J none`) replaces the config's ProxyJump and ProxyCommand, as with ssh.
  const hopList: readonly JumpHop[] = options.jump ?? found.proxyJump ?? [];
  if (options.jump === null && found.proxyCommand !== null) {
    throw new UsageError(
      `host ${entry.host}: the ssh config gives ProxyCommand "${found.proxyCommand}", which leash does not run; use ProxyJump (or -J) instead`,
    );
  }
  if (hopList.length > MAX_JUMP_HOPS) tooLong(entry.host);
  const hops = resolveHops(options, config, entry.host, hopList);
  const chain = [found, ...hops.map((h) => h.config)];

  // Unset means strict (leash's default); a relaxed hop must not relax the host behind it, nor the reverse.
  const configured = chain.map((c) => c.strictHostKeyChecking);
  const hostKeyPolicy = options.flagged.hostKeyPolicy
    ? options.hostKeyPolicy
    : configured.map((p) => p ?? 'strict').reduce((a, b) => (STRICTNESS[b] > STRICTNESS[a] ? b : a));
  const defaultKnownHosts = [path.join(options.home, '.ssh', 'known_hosts')];
  const interval = found.serverAliveIntervalMs;
  const countMax = found.serverAliveCountMax;
  return {
    alias: entry.host,
    target,
    jump: hops.map((h) => h.target),
    identityFiles: unique(chain.flatMap((c) => c.identityFiles)),
    hostKeyPolicy,
    policyFromConfig: !options.flagged.hostKeyPolicy && configured.some((p) => p !== null),
    knownHostsFiles: unique(chain.flatMap((c) => c.userKnownHostsFiles ?? defaultKnownHosts)).sort(),
    timeouts:
      options.flagged.connectTimeout || found.connectTimeoutMs === null ? options.timeouts : { ...options.timeouts, connectMs: found.connectTimeoutMs },
    keepalive: {
      intervalMs: options.flagged.keepaliveInterval || interval === null ? options.keepalive.intervalMs : interval,
      // ssh gives up before sending anything with 0; leash sends at least one.
      countMax: options.flagged.keepaliveCount || countMax === null ? options.keepalive.countMax : Math.max(1, countMax),
    },
  };
}

interface ResolvedHop {
  readonly target: SshTarget;
  readonly config: SshHostConfig;
}

/**
 * The hops of a ProxyJump list as ssh reaches them: each hop's alias is looked up for
 * HostName, User (else the local user, not `-u`) and Port (else 22, not `-p`). ssh reaches
 * hop N with `ssh -J hop1..hopN-1 hopN`, so only the first hop's own ProxyJump counts (it is
 * prepended) and it must not need ProxyCommand either.
 */
function resolveHops(options: RunOptions, config: SshConfig, host: string, hops: readonly JumpHop[], depth = 0): ResolvedHop[] {
  const out: ResolvedHop[] = [];
  for (const [i, hop] of hops.entries()) {
    const found = config.resolve(hop.host);
    if (i === 0) {
      if (found.proxyCommand !== null) {
        throw new UsageError(
          `host ${host}: jump host ${hop.host} has ProxyCommand "${found.proxyCommand}" in the ssh config, which leash does not run; use ProxyJump instead`,
        );
      }
      if (found.proxyJump !== null && found.proxyJump.length > 0) {
        if (depth + found.proxyJump.length + hops.length > MAX_JUMP_HOPS) tooLong(host);
        out.push(...resolveHops(options, config, host, found.proxyJump, depth + hops.length));
      }
    }
    out.push({ target: { host: found.hostName, user: hop.user ?? found.user ?? options.localUser, port: hop.port ?? found.port ?? 22 }, config: found });
  }
  return out;
}

function tooLong(host: string): never {
  throw new UsageError(`host ${host}: its ProxyJump chain is longer than ${MAX_JUMP_HOPS} hops (does a jump host's ProxyJump lead back to itself?)`);
}

function unique(items: readonly string[]): string[] {
  return [...new Set(items)];
}
