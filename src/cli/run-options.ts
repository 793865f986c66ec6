import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import type { HostKeyPolicy } from '../ssh/host-key-verifier.ts';
import { DEFAULT_KEEPALIVE, DEFAULT_MAX_OUTPUT_BYTES, DEFAULT_TIMEOUTS, type TaskTimeouts } from '../service/task-spec.ts';
import type { KeepaliveOptions } from '../ssh/connect.ts';
import { parseDuration } from './duration.ts';
import { parseHostList, type HostSpec } from '../service/host-list.ts';
import type { JumpHop } from '../ssh/ssh-config.ts';
import { readInventory } from './inventory.ts';
import { UsageError } from './usage-error.ts';

/** `leash run --help`. */
export const RUN_USAGE = `Usage: leash run [options] -- COMMAND

Runs COMMAND on every host over SSH and reports each host's result.

Hosts:
  --hosts LIST             comma-separated [user@]host[:port], with ranges: web[01-20].example.com, 10.0.0.[1-5]
  --inventory FILE         a file of host entries (same syntax), # comments
  -u, --user USER          default remote user (default: the ssh config's User, else the local user)
  -p, --port PORT          default port (default: the ssh config's Port, else 22)
  -J, --jump HOP[,HOP...]  jump hosts, [user@]host[:port], first hop first (like ssh -J; overrides
                           ProxyJump; each hop is looked up in the ssh config; "none": no jump host)
  --demo                   also run on leash's built-in loopback demo target

SSH config (read as ssh does: HostName, User, Port, IdentityFile, ProxyJump, ConnectTimeout,
ServerAliveInterval/CountMax, StrictHostKeyChecking, UserKnownHostsFile; its User and Port come after
an entry's user@ and :port but before -u and -p; the timeout, keepalive and host key flags win over it):
  --ssh-config FILE        the OpenSSH client config to read (default: ~/.ssh/config, when it exists)
  --no-ssh-config          read no ssh config

Authentication (tried in this order):
  -i, --identity KEY       private key file (repeatable), tried before the ssh config's IdentityFile keys
                           (with neither: ~/.ssh/id_ed25519, id_ecdsa, id_rsa)
  --passphrase-env NAME    environment variable holding the key passphrase (default: LEASH_KEY_PASSPHRASE;
                           otherwise asked for on a terminal)
  --no-agent               do not use ssh-agent (default: use SSH_AUTH_SOCK when set)
  --password-env NAME      environment variable holding the password (default: LEASH_PASSWORD)
  --ask-password           ask for the password on the terminal

Host keys:
  --host-key-policy P      strict (default) | accept-new | off; without it, the ssh config's
                           StrictHostKeyChecking applies per host
  --known-hosts FILE       leash's known_hosts, read and appended to by accept-new
                           (default: ~/.local/state/leash/known_hosts; ~/.ssh/known_hosts, or the
                           ssh config's UserKnownHostsFile, is also read)

Deadlines (500ms, 10s, 2m, 1h; 0 disables):
  --timeout D              the command as a whole (default: 10m)
  --connect-timeout D      DNS and TCP connect (default: 10s)
  --handshake-timeout D    banner, key exchange, host key check (default: 15s)
  --auth-timeout D         authentication (default: 15s)
  --channel-timeout D      opening the session and starting the command (default: 10s)
  --idle-timeout D         longest silence from the command (default: off)
  --keepalive-interval D   SSH keepalive interval (default: 15s)
  --keepalive-count N      unanswered keepalives before the peer is dead (default: 3)

Connections:
  --no-reuse               a fresh connection per task, closed after it (default: pooled)
  --retries N              retry a host on a fresh connection when it fails before its
                           command started: refused, timed out, lost (default: 0)

Output:
  --concurrency N          hosts at once (default: 32)
  --max-output BYTES       bytes kept per stream and host, head and tail (default: 1M; K, M, G suffixes)
  --json                   one JSON object per host per line, as each finishes
  --group                  fold hosts with identical output into one block

Exit status: 0 when every host is ok, 1 when any is not, 2 on a usage error, 130 on Ctrl-C.
`;

/** One expanded host entry as written: user and port are null when the entry has no `user@` / `:port`. */
export interface HostEntry {
  readonly host: string;
  readonly user: string | null;
  readonly port: number | null;
}

/** Everything `leash run` was asked to do, validated. */
export interface RunOptions {
  /** The host entries, before the ssh config and the `-u` / `-p` defaults are applied. */
  readonly hosts: readonly HostEntry[];
  /** `-u`, or null. */
  readonly user: string | null;
  /** `-p`, or null. */
  readonly port: number | null;
  /** Whose name a host gets when nothing else names a user ($USER). */
  readonly localUser: string;
  /** $HOME, for `~` in paths and the ssh config. */
  readonly home: string;
  /** The ssh config to read (`required`: `--ssh-config` named it, so it must exist), or null with `--no-ssh-config`. */
  readonly sshConfig: { readonly file: string; readonly required: boolean } | null;
  /** `-J` hops, first hop first ([] for `-J none`), or null when not given. */
  readonly jump: readonly JumpHop[] | null;
  /** Which settings an ssh config also has were given as flags (a flag wins over the config). */
  readonly flagged: {
    readonly connectTimeout: boolean;
    readonly keepaliveInterval: boolean;
    readonly keepaliveCount: boolean;
    readonly hostKeyPolicy: boolean;
  };
  readonly demo: boolean;
  readonly command: string;
  readonly timeouts: TaskTimeouts;
  readonly keepalive: KeepaliveOptions;
  readonly concurrency: number;
  /** Borrow pooled connections (default); `--no-reuse`: one fresh connection per task. */
  readonly reuse: boolean;
  /** `--retries N`: further attempts on a fresh connection when a host fails before its command started. */
  readonly retries: number;
  readonly maxOutputBytes: number;
  readonly json: boolean;
  readonly group: boolean;
  readonly identities: readonly string[];
  readonly passphraseEnv: string;
  readonly useAgent: boolean;
  readonly passwordEnv: string;
  readonly askPassword: boolean;
  readonly hostKeyPolicy: HostKeyPolicy;
  readonly knownHostsFile: string;
}

const POLICIES: readonly HostKeyPolicy[] = ['strict', 'accept-new', 'off'];

/**
 * Parses and validates `leash run` arguments; every problem is a one-line
 * {@link UsageError}. Returns null when help was asked for.
 */
export async function parseRunOptions(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): Promise<RunOptions | null> {
  const { values, positionals } = parseFlags(argv);
  if (values.help) return null;

  const localUser = env.USER ?? os.userInfo().username;
  const port = values.port === undefined ? null : parseInteger(values.port, '--port', 1, 65535);
  // Parsed with markers for "not written" (no entry can have an empty user or port 0): the
  // ssh config comes between an entry's own user and port and the -u / -p defaults.
  const unset = { user: '', port: 0 };
  const specs: HostSpec[] = [];
  for (const list of values.hosts ?? []) specs.push(...parseHostList(list, unset, '--hosts'));
  for (const file of values.inventory ?? []) specs.push(...(await readInventory(file, unset)));
  const hosts = dedupe(specs).map((h): HostEntry => ({ host: h.host, user: h.user === '' ? null : h.user, port: h.port === 0 ? null : h.port }));
  const demo = values.demo ?? false;
  if (hosts.length === 0 && !demo) throw new UsageError('no hosts: give --hosts LIST or --inventory FILE (see leash run --help)');

  const command = positionals.join(' ').trim();
  if (command.length === 0) throw new UsageError('missing command: leash run [options] -- COMMAND');

  type DurationFlag = 'timeout' | 'connect-timeout' | 'handshake-timeout' | 'auth-timeout' | 'channel-timeout' | 'idle-timeout' | 'keepalive-interval';
  const duration = (flag: DurationFlag, fallback: number): number => {
    const text = values[flag];
    return typeof text === 'string' ? parseDuration(text, `--${flag}`) : fallback;
  };
  const policy = values['host-key-policy'] ?? 'strict';
  if (!(POLICIES as readonly string[]).includes(policy)) {
    throw new UsageError(`bad --host-key-policy "${policy}": expected strict, accept-new or off`);
  }
  const home = env.HOME ?? os.homedir();
  const stateHome = env.XDG_STATE_HOME ?? path.join(home, '.local', 'state');
  if (values['ssh-config'] !== undefined && values['no-ssh-config'] === true) {
    throw new UsageError('--ssh-config and --no-ssh-config contradict each other: give one');
  }
  const sshConfig =
    values['no-ssh-config'] === true
      ? null
      : values['ssh-config'] === undefined
        ? { file: path.join(home, '.ssh', 'config'), required: false }
        : { file: expandHome(values['ssh-config'], home), required: true };
  return {
    hosts,
    user: values.user ?? null,
    port,
    localUser,
    home,
    sshConfig,
    jump: values.jump === undefined ? null : parseJumpList(values.jump),
    flagged: {
      connectTimeout: values['connect-timeout'] !== undefined,
      keepaliveInterval: values['keepalive-interval'] !== undefined,
      keepaliveCount: values['keepalive-count'] !== undefined,
      hostKeyPolicy: values['host-key-policy'] !== undefined,
    },
    demo,
    command,
    timeouts: {
      connectMs: duration('connect-timeout', DEFAULT_TIMEOUTS.connectMs),
      handshakeMs: duration('handshake-timeout', DEFAULT_TIMEOUTS.handshakeMs),
      authMs: duration('auth-timeout', DEFAULT_TIMEOUTS.authMs),
      channelMs: duration('channel-timeout', DEFAULT_TIMEOUTS.channelMs),
      commandMs: duration('timeout', DEFAULT_TIMEOUTS.commandMs),
      idleMs: duration('idle-timeout', DEFAULT_TIMEOUTS.idleMs),
    },
    keepalive: {
      intervalMs: duration('keepalive-interval', DEFAULT_KEEPALIVE.intervalMs),
      countMax:
        values['keepalive-count'] === undefined ? DEFAULT_KEEPALIVE.countMax : parseInteger(values['keepalive-count'], '--keepalive-count', 1, 100),
    },
    concurrency: values.concurrency === undefined ? 32 : parseInteger(values.concurrency, '--concurrency', 1, 10_000),
    reuse: !(values['no-reuse'] ?? false),
    retries: values.retries === undefined ? 0 : parseInteger(values.retries, '--retries', 0, 5),
    maxOutputBytes: values['max-output'] === undefined ? DEFAULT_MAX_OUTPUT_BYTES : parseByteSize(values['max-output'], '--max-output'),
    json: values.json ?? false,
    group: values.group ?? false,
    identities: (values.identity ?? []).map((p) => expandHome(p, home)),
    passphraseEnv: envName(values['passphrase-env'] ?? 'LEASH_KEY_PASSPHRASE', '--passphrase-env'),
    useAgent: !(values['no-agent'] ?? false),
    passwordEnv: envName(values['password-env'] ?? 'LEASH_PASSWORD', '--password-env'),
    askPassword: values['ask-password'] ?? false,
    hostKeyPolicy: policy as HostKeyPolicy,
    knownHostsFile: expandHome(values['known-hosts'] ?? path.join(stateHome, 'leash', 'known_hosts'), home),
  };
}

function parseFlags(argv: readonly string[]) {
  try {
    return parseArgs({
      args: [...argv],
      strict: true,
      allowPositionals: true,
      options: {
        hosts: { type: 'string', multiple: true },
        inventory: { type: 'string', multiple: true },
        user: { type: 'string', short: 'u' },
        port: { type: 'string', short: 'p' },
        jump: { type: 'string', short: 'J' },
        'ssh-config': { type: 'string' },
        'no-ssh-config': { type: 'boolean' },
        demo: { type: 'boolean' },
        identity: { type: 'string', short: 'i', multiple: true },
        'passphrase-env': { type: 'string' },
        'no-agent': { type: 'boolean' },
        'password-env': { type: 'string' },
        'ask-password': { type: 'boolean' },
        'host-key-policy': { type: 'string' },
        'known-hosts': { type: 'string' },
        timeout: { type: 'string' },
        'connect-timeout': { type: 'string' },
        'handshake-timeout': { type: 'string' },
        'auth-timeout': { type: 'string' },
        'channel-timeout': { type: 'string' },
        'idle-timeout': { type: 'string' },
        'keepalive-interval': { type: 'string' },
        'keepalive-count': { type: 'string' },
        concurrency: { type: 'string' },
        'no-reuse': { type: 'boolean' },
        retries: { type: 'string' },
        'max-output': { type: 'string' },
        json: { type: 'boolean' },
        group: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (err) {
    throw new UsageError(describeParseError(err));
  }
}

/** node:util parseArgs errors, shortened to one line that names the flag. */
function describeParseError(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  const code = (err as { code?: string }).code;
  const flag = /'(-[^']*)'/.exec(message)?.[1];
  if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') return `unknown option ${flag ?? message} (see leash run --help)`;
  if (code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') {
    return /argument missing/.test(message) ? `option ${flag ?? ''} needs a value`.trim() : `option ${flag ?? ''} does not take a value`.trim();
  }
  return message.split('\n')[0] ?? message;
}

/**
 * `-J HOP[,HOP...]` as ssh takes it: `[user@]host[:port]`, `[user@][v6addr][:port]` or
 * `ssh://[user@]host[:port]` per hop; `none` alone means no jump host at all.
 */
export function parseJumpList(text: string): JumpHop[] {
  if (text.trim().toLowerCase() === 'none') return [];
  return text.split(',').map((raw) => {
    const bad = (why: string): never => {
      throw new UsageError(`bad -J hop "${raw}": ${why}; expected [user@]host[:port], comma-separated`);
    };
    let rest = raw.trim();
    if (rest.startsWith('ssh://')) rest = rest.slice('ssh://'.length).replace(/\/$/, '');
    const at = rest.lastIndexOf('@');
    const user = at >= 0 ? rest.slice(0, at) : null;
    if (user === '') bad('empty user before "@"');
    rest = rest.slice(at + 1);
    let host = rest;
    let portText: string | null = null;
    if (rest.startsWith('[')) {
      const close = rest.indexOf(']');
      if (close < 0) bad('"[" without a matching "]"');
      host = rest.slice(1, close);
      const after = rest.slice(close + 1);
      if (after !== '' && !after.startsWith(':')) bad('expected :port after "]"');
      if (after !== '') portText = after.slice(1);
    } else if (rest.split(':').length === 2) {
      [host = '', portText = ''] = rest.split(':');
    }
    if (host === '') bad('missing host name');
    if (/[\s/@,\p{Cc}]/u.test(host) || (user !== null && /[\s:\p{Cc}]/u.test(user))) bad('unexpected characters');
    const port = portText === null ? null : /^\d{1,5}$/.test(portText) ? Number(portText) : NaN;
    if (port !== null && !(port >= 1 && port <= 65535)) bad(`bad port "${portText}"`);
    return { host, user, port };
  });
}

function parseInteger(text: string, flag: string, min: number, max: number): number {
  if (!/^\d+$/.test(text)) throw new UsageError(`bad ${flag} "${text}": expected a whole number from ${min} to ${max}`);
  const n = Number(text);
  if (n < min || n > max) throw new UsageError(`bad ${flag} "${text}": expected a whole number from ${min} to ${max}`);
  return n;
}

const BYTE_UNITS: Record<string, number> = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 };

/** `1048576`, `512K`, `1M`, `1G` (binary units; a trailing `B`/`iB` is allowed). */
export function parseByteSize(text: string, flag: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmg]?)(?:i?b)?$/i.exec(text.trim());
  const n = m ? Number(m[1]) * BYTE_UNITS[(m[2] ?? '').toLowerCase()]! : NaN;
  if (!Number.isFinite(n) || n > 1024 ** 3) {
    throw new UsageError(`bad ${flag} "${text}": expected a size in bytes up to 1G, e.g. 65536, 512K, 1M`);
  }
  return Math.floor(n);
}

function envName(name: string, flag: string): string {
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) throw new UsageError(`bad ${flag} "${name}": expected an environment variable name`);
  return name;
}

function expandHome(p: string, home: string): string {
  return p === '~' || p.startsWith('~/') ? path.join(home, p.slice(1)) : p;
}

function dedupe(hosts: readonly HostSpec[]): HostSpec[] {
  const seen = new Set<string>();
  return hosts.filter((h) => {
    const key = `${h.user}@${h.host}:${h.port}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}
