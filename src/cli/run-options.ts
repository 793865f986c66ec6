import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import type { HostKeyPolicy } from '../ssh/host-key-verifier.ts';
import { DEFAULT_KEEPALIVE, DEFAULT_MAX_OUTPUT_BYTES, DEFAULT_TIMEOUTS, type TaskTimeouts } from '../service/task-spec.ts';
import type { KeepaliveOptions } from '../ssh/connect.ts';
import { parseDuration } from './duration.ts';
import { parseHostList, type HostSpec } from '../service/host-list.ts';
import { readInventory } from './inventory.ts';
import { UsageError } from './usage-error.ts';

/** `leash run --help`. */
export const RUN_USAGE = `Usage: leash run [options] -- COMMAND

Runs COMMAND on every host over SSH and reports each host's result.

Hosts:
  --hosts LIST             comma-separated [user@]host[:port], with ranges: web[01-20].example.com, 10.0.0.[1-5]
  --inventory FILE         a file of host entries (same syntax), # comments
  -u, --user USER          default remote user (default: the local user)
  -p, --port PORT          default port (default: 22)
  --demo                   also run on leash's built-in loopback demo target

Authentication (tried in this order):
  -i, --identity KEY       private key file (repeatable; default: ~/.ssh/id_ed25519, id_ecdsa, id_rsa)
  --passphrase-env NAME    environment variable holding the key passphrase (default: LEASH_KEY_PASSPHRASE;
                           otherwise asked for on a terminal)
  --no-agent               do not use ssh-agent (default: use SSH_AUTH_SOCK when set)
  --password-env NAME      environment variable holding the password (default: LEASH_PASSWORD)
  --ask-password           ask for the password on the terminal

Host keys:
  --host-key-policy P      strict (default) | accept-new | off
  --known-hosts FILE       leash's known_hosts, read and appended to by accept-new
                           (default: ~/.local/state/leash/known_hosts; ~/.ssh/known_hosts is also read)

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

/** Everything `leash run` was asked to do, validated. */
export interface RunOptions {
  readonly hosts: readonly HostSpec[];
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

  const user = values.user ?? env.USER ?? os.userInfo().username;
  const port = values.port === undefined ? 22 : parseInteger(values.port, '--port', 1, 65535);
  const defaults = { user, port };
  const hosts: HostSpec[] = [];
  for (const list of values.hosts ?? []) hosts.push(...parseHostList(list, defaults, '--hosts'));
  for (const file of values.inventory ?? []) hosts.push(...(await readInventory(file, defaults)));
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
  return {
    hosts: dedupe(hosts),
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
