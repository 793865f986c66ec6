import { readFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import { Type, type Static, type TSchema } from 'typebox';
import { Value } from 'typebox/value';
import { LineCounter, isMap, isScalar, isSeq, parseDocument, type Document } from 'yaml';
import type { IdentitySpec } from '../service/identities.ts';
import { quoteInput } from '../service/quote-input.ts';
import { DEFAULT_KEEPALIVE, DEFAULT_MAX_OUTPUT_BYTES, DEFAULT_TIMEOUTS, type TaskTimeouts } from '../service/task-spec.ts';
import type { KeepaliveOptions } from '../ssh/connect.ts';
import type { HostKeyPolicy } from '../ssh/host-key-verifier.ts';

/*
 * The configuration of `leash serve` (issue "leash serve": start-up and configuration).
 *
 * Sources, lowest precedence first: built-in defaults, the YAML file (`--config FILE`),
 * environment variables, command-line options. The file's keys are the camelCase names of
 * {@link ServeConfig}; unknown keys are errors. Durations are a number of milliseconds or a
 * string such as `500ms`, `30s`, `10m`, `2h`, `30d`, `1h30m`; sizes a number of bytes or
 * `64K`, `1M`, `1G`. `~/` in paths is the `HOME` of the environment given. A key left
 * empty (`limits:` with everything under it commented out) counts as absent.
 *
 *   environment variable      overrides                 command-line option
 *   ------------------------  ------------------------  -------------------
 *   LEASH_LISTEN              listen                    --listen
 *   LEASH_ADMIN_LISTEN        adminListen ("off": none) --admin-listen
 *   LEASH_STORE               store
 *   LEASH_DATA_DIR            dataDir                   --data
 *   LEASH_LOG_LEVEL           logLevel
 *   LEASH_HOST_KEY_POLICY     hostKeys.policy
 *   LEASH_GLOBAL_CONCURRENCY  limits.globalConcurrency
 *
 * An empty environment variable counts as unset. Token secrets come from the file
 * (`token: "..."`) or, better, from the environment (`tokenEnv: NAME`, read once here);
 * they are kept only in memory and never appear in an error message.
 */

/** Log levels (pino's). */
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** API token scopes: `run` includes `read`; `admin` includes both. */
export const TOKEN_SCOPES = ['read', 'run', 'admin'] as const;
export type TokenScope = (typeof TOKEN_SCOPES)[number];

const HOST_KEY_POLICIES = ['strict', 'accept-new', 'off'] as const satisfies readonly HostKeyPolicy[];

/** A named credential: which user, and where its secrets come from (read at start-up). */
export type IdentityConfig = IdentitySpec;

/** An API token, its secret resolved. */
export interface TokenConfig {
  name: string;
  /** The bearer secret; from the file or from the environment variable the file names. */
  secret: string;
  scopes: TokenScope[];
  /** Identities it may run tasks with; absent: any. */
  identities?: string[];
  /** Host name patterns (`*`, `?`), e.g. `web*.example.com`; absent: any. */
  hosts?: string[];
}

export interface ListenAddress {
  host: string;
  port: number;
}

/** Where the admin (diagnostics) listener is: a TCP address or a unix socket path. */
export type AdminAddress = ListenAddress | { path: string };

/** The admin listener when none is configured: loopback only (DESIGN.md: never the API port). */
export const DEFAULT_ADMIN_LISTEN: ListenAddress = { host: '127.0.0.1', port: 7071 };

export interface ServeConfig {
  /** The API. Default 127.0.0.1:7070. */
  listen: ListenAddress;
  /** The diagnostics listener; default none. */
  /** Diagnostics (/debug); default 127.0.0.1:7071; null when turned off ("off"). */
  adminListen: AdminAddress | null;
  /** `sqlite:PATH`; default `sqlite:<dataDir>/leash.db`. */
  store: string;
  /** Default `./data`. */
  dataDir: string;
  identities: Record<string, IdentityConfig>;
  defaultIdentity: string | null;
  hostKeys: {
    policy: HostKeyPolicy;
    /** leash's own known_hosts, appended to by accept-new; default `<dataDir>/known_hosts`. */
    knownHostsFile: string;
    /** Further known_hosts files, read only; default `~/.ssh/known_hosts`. */
    readFiles: string[];
  };
  defaults: { timeouts: TaskTimeouts; maxOutputBytes: number; keepalive: KeepaliveOptions };
  limits: {
    globalConcurrency: number;
    perHost: number;
    perTargetHandshakes: number;
    queueCapacity: number;
    maxBatchHosts: number;
    /** Tasks of all batches waiting to start, at most; a batch that would exceed it gets 429. */
    maxQueuedBatchTasks: number;
    maxWaitSeconds: number;
    bodyLimitBytes: number;
  };
  tokens: TokenConfig[];
  retention: { maxAgeMs: number; maxRows: number; intervalMs: number };
  /** SSH connections kept open between tasks (src/ssh/connection-pool.ts). */
  pool: {
    /** Whether tasks borrow pooled connections unless a task says `reuse: false`. */
    reuse: boolean;
    maxConnectionsPerHost: number;
    /** Below sshd's default MaxSessions (10): a kill needs a channel of its own. */
    maxChannelsPerConnection: number;
    idleTtlMs: number;
    /** Handshakes in progress through one jump host at once, over every task and batch. */
    maxHandshakesPerJumpHost: number;
  };
  diagnostics: {
    /** How often the leak watchdog looks; 0 turns it off. */
    watchdogIntervalMs: number;
    /** A live task older than this is flagged even without a hard deadline (a disabled one); 0: only hard deadlines. */
    maxTaskAgeMs: number;
    /** Extra regular expressions whose matches (first group) are hidden in dumps, besides the defaults. */
    redactPatterns: string[];
    /** Longest CPU profile /debug/pprof/profile takes, in seconds. */
    maxProfileSeconds: number;
    /** Most entries a debug=2 dump lists. */
    dumpLimit: number;
    /** Sampled heap profiling from the start, so /debug/pprof/heap has data (about 1-3%). */
    heapSampling: boolean;
  };
  shutdownGraceMs: number;
  logLevel: LogLevel;
}

export interface LoadConfigOptions {
  /** YAML file; null or absent: no file (defaults and environment only). */
  file?: string | null;
  /** Default `process.env`. */
  env?: NodeJS.ProcessEnv;
  /** Command-line options; they win over the environment. */
  overrides?: { listen?: string; dataDir?: string; adminListen?: string };
  /**
   * Identities the process provides itself (e.g. `demo` under `--demo`), which tokens and
   * `defaultIdentity` may name although the file does not define them.
   */
  builtinIdentities?: readonly string[];
}

/**
 * A configuration that cannot be used. The one-line message names the key, the problem and
 * where the value came from (`FILE:LINE:COL`, `environment variable NAME`, `option --flag`);
 * it never contains a secret.
 */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  /** Dotted path of the offending key, e.g. `limits.perHost`, `tokens[1].scopes[0]`; '' for the file as a whole. */
  readonly key: string;
  /** Where the value came from, or null (a default, or a check across keys). */
  readonly source: string | null;

  constructor(key: string, message: string, source: string | null = null, options?: ErrorOptions) {
    super(oneLine(source === null ? message : `${message} (${source})`), options);
    this.key = key;
    this.source = source;
  }
}

export const DEFAULT_LISTEN: Readonly<ListenAddress> = { host: '127.0.0.1', port: 7070 };
export const DEFAULT_DATA_DIR = './data';
export const MIN_TOKEN_SECRET_LENGTH = 16;

const SECOND = 1_000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;
const KIB = 1024;
const MIB = 1024 * KIB;
const GIB = 1024 * MIB;

const DEFAULT_LIMITS: ServeConfig['limits'] = {
  globalConcurrency: 64,
  perHost: 4,
  perTargetHandshakes: 8,
  queueCapacity: 10_000,
  maxBatchHosts: 10_000,
  maxQueuedBatchTasks: 100_000,
  maxWaitSeconds: 60,
  bodyLimitBytes: MIB,
};
const DEFAULT_RETENTION: ServeConfig['retention'] = { maxAgeMs: 30 * DAY, maxRows: 100_000, intervalMs: HOUR };
const DEFAULT_POOL: ServeConfig['pool'] = { reuse: true, maxConnectionsPerHost: 4, maxChannelsPerConnection: 8, idleTtlMs: 30 * SECOND, maxHandshakesPerJumpHost: 10 };
const DEFAULT_DIAGNOSTICS: ServeConfig['diagnostics'] = { watchdogIntervalMs: 30 * SECOND, maxTaskAgeMs: 0, redactPatterns: [], maxProfileSeconds: 60, dumpLimit: 1000, heapSampling: true };
const DEFAULT_SHUTDOWN_GRACE_MS = 30 * SECOND;
const DEFAULT_READ_KNOWN_HOSTS = ['~/.ssh/known_hosts'];
const MAX_CONFIG_FILE_BYTES = MIB;

// ---------------------------------------------------------------------------------------
// The file's schema (TypeBox). Durations and sizes are checked for type here and parsed
// below, where the range of each is known.

const NAME_PATTERN = '^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$';
const NAME_EXPECTED = 'a name of letters, digits, "_", ".", "@" and "-" (at most 64, starting with a letter or digit)';
const ENV_NAME_PATTERN = '^[A-Za-z_][A-Za-z0-9_]*$';

const Text = (description?: string) => Type.String({ minLength: 1, ...(description === undefined ? {} : { description }) });
const EnvName = Type.String({ pattern: ENV_NAME_PATTERN, description: 'an environment variable name' });
const Count = (minimum: number) => Type.Integer({ minimum });
const Duration = Type.Union([Type.Integer({ minimum: 0 }), Type.String()], {
  description: 'a duration: a number of milliseconds, or a string such as 500ms, 30s, 10m, 2h, 7d',
});
const Size = Type.Union([Type.Integer({ minimum: 0 }), Type.String()], {
  description: 'a size: a number of bytes, or a string such as 64K, 1M, 1G',
});
const oneOf = <const T extends readonly string[]>(values: T) => Type.Union(values.map((v) => Type.Literal(v)));
const Strict = { additionalProperties: false } as const;

const IdentitySchema = Type.Object(
  {
    user: Type.Optional(Text()),
    keyPath: Type.Optional(Text()),
    passphraseEnv: Type.Optional(EnvName),
    agent: Type.Optional(Type.Boolean()),
    passwordEnv: Type.Optional(EnvName),
  },
  Strict,
);

const TokenSchema = Type.Object(
  {
    name: Type.String({ pattern: NAME_PATTERN, description: NAME_EXPECTED }),
    tokenEnv: Type.Optional(EnvName),
    token: Type.Optional(Type.String()),
    scopes: Type.Array(oneOf(TOKEN_SCOPES), { minItems: 1 }),
    identities: Type.Optional(Type.Array(Text('an identity name'), { minItems: 1, description: 'a non-empty list of identities (omit it to allow every identity)' })),
    hosts: Type.Optional(
      Type.Array(Type.String({ pattern: '^\\S+$', description: 'a host name pattern such as web*.example.com' }), {
        minItems: 1,
        description: 'a non-empty list of host patterns (omit it to allow every host)',
      }),
    ),
  },
  Strict,
);

const FileSchema = Type.Object(
  {
    listen: Type.Optional(Text('HOST:PORT')),
    adminListen: Type.Optional(Type.Union([Text(), Type.Null()], { description: 'HOST:PORT, unix:/path/to.sock, "off" or null for none' })),
    store: Type.Optional(Text('sqlite:PATH')),
    dataDir: Type.Optional(Text('a directory')),
    identities: Type.Optional(Type.Record(Type.String(), IdentitySchema)),
    defaultIdentity: Type.Optional(Type.Union([Text(), Type.Null()], { description: 'an identity name, or null' })),
    hostKeys: Type.Optional(
      Type.Object(
        { policy: Type.Optional(oneOf(HOST_KEY_POLICIES)), knownHostsFile: Type.Optional(Text('a file')), readFiles: Type.Optional(Type.Array(Text('a file'))) },
        Strict,
      ),
    ),
    defaults: Type.Optional(
      Type.Object(
        {
          timeouts: Type.Optional(
            Type.Object(
              {
                connectMs: Type.Optional(Duration),
                handshakeMs: Type.Optional(Duration),
                authMs: Type.Optional(Duration),
                channelMs: Type.Optional(Duration),
                commandMs: Type.Optional(Duration),
                idleMs: Type.Optional(Duration),
              },
              Strict,
            ),
          ),
          maxOutputBytes: Type.Optional(Size),
          keepalive: Type.Optional(Type.Object({ intervalMs: Type.Optional(Duration), countMax: Type.Optional(Count(1)) }, Strict)),
        },
        Strict,
      ),
    ),
    limits: Type.Optional(
      Type.Object(
        {
          globalConcurrency: Type.Optional(Count(1)),
          perHost: Type.Optional(Count(1)),
          perTargetHandshakes: Type.Optional(Count(1)),
          queueCapacity: Type.Optional(Count(1)),
          maxBatchHosts: Type.Optional(Count(1)),
          maxQueuedBatchTasks: Type.Optional(Count(1)),
          maxWaitSeconds: Type.Optional(Type.Integer({ minimum: 1, maximum: 3600 })),
          bodyLimitBytes: Type.Optional(Size),
        },
        Strict,
      ),
    ),
    tokens: Type.Optional(Type.Array(TokenSchema)),
    retention: Type.Optional(
      Type.Object({ maxAgeMs: Type.Optional(Duration), maxRows: Type.Optional(Count(1)), intervalMs: Type.Optional(Duration) }, Strict),
    ),
    shutdownGraceMs: Type.Optional(Duration),
    logLevel: Type.Optional(oneOf(LOG_LEVELS)),
    pool: Type.Optional(
      Type.Object(
        {
          reuse: Type.Optional(Type.Boolean()),
          maxConnectionsPerHost: Type.Optional(Count(1)),
          maxChannelsPerConnection: Type.Optional(Count(1)),
          idleTtlMs: Type.Optional(Duration),
          maxHandshakesPerJumpHost: Type.Optional(Count(1)),
        },
        Strict,
      ),
    ),
    diagnostics: Type.Optional(
      Type.Object(
        {
          watchdogIntervalMs: Type.Optional(Duration),
          maxTaskAgeMs: Type.Optional(Duration),
          redactPatterns: Type.Optional(Type.Array(Text('a regular expression'))),
          maxProfileSeconds: Type.Optional(Type.Integer({ minimum: 1, maximum: 600 })),
          dumpLimit: Type.Optional(Count(1)),
          heapSampling: Type.Optional(Type.Boolean()),
        },
        Strict,
      ),
    ),
  },
  Strict,
);

type FileConfig = Static<typeof FileSchema>;

/** The JSON Schema of the configuration file (for documentation and editors). */
export const CONFIG_FILE_SCHEMA: TSchema = FileSchema;

// ---------------------------------------------------------------------------------------
// Where a value came from, for error messages.

type Segment = string | number;

interface At {
  readonly path: readonly Segment[];
  /** FILE:LINE:COL, `environment variable NAME`, `option --flag`, or null. */
  readonly source: string | null;
}

function fail(at: At, problem: string): never {
  const key = formatKey(at.path);
  throw new ConfigError(key, key === '' ? problem : `${key}: ${problem}`, at.source);
}

/** `tokens[1].scopes[0]`, `identities["my key"].user`. */
export function formatKey(path: readonly Segment[]): string {
  let out = '';
  for (const segment of path) {
    if (typeof segment === 'number') out += `[${segment}]`;
    else if (/^[A-Za-z0-9_][A-Za-z0-9_-]*$/.test(segment)) out += out === '' ? segment : `.${segment}`;
    else out += `[${quoteInput(segment, 40)}]`;
  }
  return out;
}

interface FileSource {
  readonly file: string;
  readonly config: FileConfig;
  at(path: readonly Segment[]): At;
}

// ---------------------------------------------------------------------------------------

/**
 * Loads the configuration of `leash serve`: defaults, then the file, then the environment,
 * then `overrides` (the command line). Rejects with {@link ConfigError} on the first
 * problem, in file order.
 */
export async function loadConfig(options: LoadConfigOptions = {}): Promise<ServeConfig> {
  const env = options.env ?? process.env;
  const home = env.HOME !== undefined && env.HOME !== '' ? env.HOME : os.homedir();
  const expand = (p: string): string => (p === '~' || p.startsWith('~/') ? `${home.replace(/\/+$/, '')}${p.slice(1)}` : p);
  const overrides = options.overrides ?? {};
  const builtins = new Set(options.builtinIdentities ?? []);

  const source = options.file === undefined || options.file === null ? null : await readConfigFile(options.file);
  const f: FileConfig = source?.config ?? {};
  const inFile = (...path: Segment[]): At => source?.at(path) ?? { path, source: null };

  /** The command-line option, else the environment variable, else null. */
  const override = (path: readonly Segment[], variable: string, cli?: { flag: string; value: string | undefined }): { text: string; at: At } | null => {
    if (cli?.value !== undefined) return { text: cli.value, at: { path, source: `option ${cli.flag}` } };
    const value = env[variable];
    if (value !== undefined && value !== '') return { text: value, at: { path, source: `environment variable ${variable}` } };
    return null;
  };

  // listen, adminListen
  const listenOverride = override(['listen'], 'LEASH_LISTEN', { flag: '--listen', value: overrides.listen });
  const listen = listenOverride
    ? listenAt(listenOverride.text, listenOverride.at)
    : f.listen !== undefined
      ? listenAt(f.listen, inFile('listen'))
      : { ...DEFAULT_LISTEN };
  const adminOverride = override(['adminListen'], 'LEASH_ADMIN_LISTEN', { flag: '--admin-listen', value: overrides.adminListen });
  const adminAt = (text: string, at: At): AdminAddress | null => {
    if (isOff(text)) return null;
    const unix = /^unix:(.+)$/.exec(text.trim());
    if (unix) return { path: expand(unix[1]!) };
    return listenAt(text, at);
  };
  const adminListen = adminOverride
    ? adminAt(adminOverride.text, adminOverride.at)
    : f.adminListen === null
      ? null
      : f.adminListen !== undefined
        ? adminAt(f.adminListen, inFile('adminListen'))
        : { ...DEFAULT_ADMIN_LISTEN };

  // dataDir first: the store and known_hosts defaults live in it.
  const dataOverride = override(['dataDir'], 'LEASH_DATA_DIR', { flag: '--data', value: overrides.dataDir });
  const dataDir = expand(dataOverride ? nonEmpty(dataOverride.text, dataOverride.at) : (f.dataDir ?? DEFAULT_DATA_DIR));
  const inData = (name: string): string => `${dataDir.length > 1 ? dataDir.replace(/\/+$/, '') : dataDir}/${name}`.replace(/^\/\//, '/');

  const storeOverride = override(['store'], 'LEASH_STORE');
  const store = storeOverride
    ? parseStore(storeOverride.text, storeOverride.at, expand)
    : f.store !== undefined
      ? parseStore(f.store, inFile('store'), expand)
      : `sqlite:${inData('leash.db')}`;

  // identities
  const identities: Record<string, IdentityConfig> = {};
  for (const [name, spec] of Object.entries(f.identities ?? {})) {
    const at = inFile('identities', name);
    if (!new RegExp(NAME_PATTERN).test(name)) fail(at, `bad identity name: expected ${NAME_EXPECTED}`);
    if (spec.keyPath === undefined && spec.agent !== true && spec.passwordEnv === undefined) {
      fail(at, 'no way to authenticate: give keyPath, agent: true or passwordEnv');
    }
    if (spec.passphraseEnv !== undefined && spec.keyPath === undefined) fail(inFile('identities', name, 'passphraseEnv'), 'needs keyPath (the key it unlocks)');
    identities[name] = { ...spec, ...(spec.keyPath === undefined ? {} : { keyPath: expand(spec.keyPath) }) };
  }
  const known = (name: string): boolean => Object.hasOwn(identities, name) || builtins.has(name);
  const knownList = (): string => {
    const names = [...Object.keys(identities), ...builtins];
    return names.length === 0 ? 'no identities are configured' : `configured: ${names.join(', ')}`;
  };

  const defaultIdentity = f.defaultIdentity ?? null;
  if (defaultIdentity !== null && !known(defaultIdentity)) fail(inFile('defaultIdentity'), `unknown identity ${quoteInput(defaultIdentity)}; ${knownList()}`);

  // hostKeys
  const policyOverride = override(['hostKeys', 'policy'], 'LEASH_HOST_KEY_POLICY');
  const hostKeys: ServeConfig['hostKeys'] = {
    policy: policyOverride ? oneOfText(policyOverride.text, HOST_KEY_POLICIES, policyOverride.at) : (f.hostKeys?.policy ?? 'strict'),
    knownHostsFile: expand(f.hostKeys?.knownHostsFile ?? inData('known_hosts')),
    readFiles: (f.hostKeys?.readFiles ?? DEFAULT_READ_KNOWN_HOSTS).map(expand),
  };

  // defaults
  const t = f.defaults?.timeouts ?? {};
  const timeout = (key: keyof TaskTimeouts): number => durationAt(t[key], inFile('defaults', 'timeouts', key), { max: 7 * DAY }) ?? DEFAULT_TIMEOUTS[key];
  const timeouts: TaskTimeouts = {
    connectMs: timeout('connectMs'),
    handshakeMs: timeout('handshakeMs'),
    authMs: timeout('authMs'),
    channelMs: timeout('channelMs'),
    commandMs: timeout('commandMs'),
    idleMs: timeout('idleMs'),
  };
  const defaults: ServeConfig['defaults'] = {
    timeouts,
    maxOutputBytes: sizeAt(f.defaults?.maxOutputBytes, inFile('defaults', 'maxOutputBytes'), { min: 0, max: GIB }) ?? DEFAULT_MAX_OUTPUT_BYTES,
    keepalive: {
      intervalMs: durationAt(f.defaults?.keepalive?.intervalMs, inFile('defaults', 'keepalive', 'intervalMs'), { max: HOUR }) ?? DEFAULT_KEEPALIVE.intervalMs,
      countMax: f.defaults?.keepalive?.countMax ?? DEFAULT_KEEPALIVE.countMax,
    },
  };

  // limits
  const l = f.limits ?? {};
  const concurrencyOverride = override(['limits', 'globalConcurrency'], 'LEASH_GLOBAL_CONCURRENCY');
  const limits: ServeConfig['limits'] = {
    globalConcurrency: concurrencyOverride ? positiveInteger(concurrencyOverride.text, concurrencyOverride.at) : (l.globalConcurrency ?? DEFAULT_LIMITS.globalConcurrency),
    perHost: l.perHost ?? DEFAULT_LIMITS.perHost,
    perTargetHandshakes: l.perTargetHandshakes ?? DEFAULT_LIMITS.perTargetHandshakes,
    queueCapacity: l.queueCapacity ?? DEFAULT_LIMITS.queueCapacity,
    maxBatchHosts: l.maxBatchHosts ?? DEFAULT_LIMITS.maxBatchHosts,
    maxQueuedBatchTasks: l.maxQueuedBatchTasks ?? DEFAULT_LIMITS.maxQueuedBatchTasks,
    maxWaitSeconds: l.maxWaitSeconds ?? DEFAULT_LIMITS.maxWaitSeconds,
    bodyLimitBytes: sizeAt(l.bodyLimitBytes, inFile('limits', 'bodyLimitBytes'), { min: KIB, max: GIB }) ?? DEFAULT_LIMITS.bodyLimitBytes,
  };

  // tokens
  const tokens: TokenConfig[] = [];
  const byName = new Map<string, number>();
  const bySecret = new Map<string, number>();
  for (const [i, token] of (f.tokens ?? []).entries()) {
    const seen = byName.get(token.name);
    if (seen !== undefined) fail(inFile('tokens', i, 'name'), `duplicate token name ${quoteInput(token.name)} (tokens[${seen}] has it too)`);
    byName.set(token.name, i);
    const secret = tokenSecret(token, inFile('tokens', i), env);
    const sameSecret = bySecret.get(secret);
    if (sameSecret !== undefined) fail(inFile('tokens', i), `same secret as tokens[${sameSecret}]; every token needs its own secret`);
    bySecret.set(secret, i);
    for (const [j, identity] of (token.identities ?? []).entries()) {
      if (!known(identity)) fail(inFile('tokens', i, 'identities', j), `unknown identity ${quoteInput(identity)}; ${knownList()}`);
    }
    tokens.push({
      name: token.name,
      secret,
      scopes: [...new Set(token.scopes)],
      ...(token.identities === undefined ? {} : { identities: [...token.identities] }),
      ...(token.hosts === undefined ? {} : { hosts: [...token.hosts] }),
    });
  }

  // retention, shutdown, logging
  const r = f.retention ?? {};
  const retention: ServeConfig['retention'] = {
    maxAgeMs: durationAt(r.maxAgeMs, inFile('retention', 'maxAgeMs'), { min: MINUTE, max: 3650 * DAY }) ?? DEFAULT_RETENTION.maxAgeMs,
    maxRows: r.maxRows ?? DEFAULT_RETENTION.maxRows,
    intervalMs: durationAt(r.intervalMs, inFile('retention', 'intervalMs'), { min: SECOND, max: 7 * DAY }) ?? DEFAULT_RETENTION.intervalMs,
  };
  const shutdownGraceMs = durationAt(f.shutdownGraceMs, inFile('shutdownGraceMs'), { max: DAY }) ?? DEFAULT_SHUTDOWN_GRACE_MS;
  const levelOverride = override(['logLevel'], 'LEASH_LOG_LEVEL');
  const logLevel = levelOverride ? oneOfText(levelOverride.text, LOG_LEVELS, levelOverride.at) : (f.logLevel ?? 'info');

  const p = f.pool ?? {};
  const pool: ServeConfig['pool'] = {
    reuse: p.reuse ?? DEFAULT_POOL.reuse,
    maxConnectionsPerHost: p.maxConnectionsPerHost ?? DEFAULT_POOL.maxConnectionsPerHost,
    maxChannelsPerConnection: p.maxChannelsPerConnection ?? DEFAULT_POOL.maxChannelsPerConnection,
    idleTtlMs: durationAt(p.idleTtlMs, inFile('pool', 'idleTtlMs'), { max: DAY }) ?? DEFAULT_POOL.idleTtlMs,
    maxHandshakesPerJumpHost: p.maxHandshakesPerJumpHost ?? DEFAULT_POOL.maxHandshakesPerJumpHost,
  };

  const d = f.diagnostics ?? {};
  const redactPatterns = (d.redactPatterns ?? []).map((pattern, i) => {
    try {
      new RegExp(pattern, 'gi');
    } catch (err) {
      fail(inFile('diagnostics', 'redactPatterns', i), `not a valid regular expression: ${err instanceof Error ? err.message : String(err)}`);
    }
    return pattern;
  });
  const diagnostics: ServeConfig['diagnostics'] = {
    watchdogIntervalMs: durationAt(d.watchdogIntervalMs, inFile('diagnostics', 'watchdogIntervalMs'), { max: DAY }) ?? DEFAULT_DIAGNOSTICS.watchdogIntervalMs,
    maxTaskAgeMs: durationAt(d.maxTaskAgeMs, inFile('diagnostics', 'maxTaskAgeMs'), { max: 30 * DAY }) ?? DEFAULT_DIAGNOSTICS.maxTaskAgeMs,
    redactPatterns,
    maxProfileSeconds: d.maxProfileSeconds ?? DEFAULT_DIAGNOSTICS.maxProfileSeconds,
    dumpLimit: d.dumpLimit ?? DEFAULT_DIAGNOSTICS.dumpLimit,
    heapSampling: d.heapSampling ?? DEFAULT_DIAGNOSTICS.heapSampling,
  };
  return { listen, adminListen, store, dataDir, identities, defaultIdentity, hostKeys, defaults, limits, tokens, retention, pool, shutdownGraceMs, logLevel, diagnostics };
}

/**
 * Refuses (ConfigError, key `listen` or `adminListen`) to listen on an address other
 * machines can reach when no API token is configured: without tokens every caller has
 * every scope.
 */
export function assertSafeListen(config: ServeConfig): void {
  if (config.tokens.length > 0) return;
  const check = (key: string, what: string, address: AdminAddress | null): void => {
    if (address === null || 'path' in address || isLoopback(address.host)) return;
    throw new ConfigError(key, `refusing to ${what} ${formatListenAddress(address)} without any API token; add tokens or listen on 127.0.0.1`);
  };
  check('listen', 'listen on', config.listen);
  check('adminListen', 'serve diagnostics on', config.adminListen);
}

/** `127.0.0.1:7070`, `[::1]:7070`. */
export function formatListenAddress(address: ListenAddress): string {
  return address.host.includes(':') ? `[${address.host}]:${address.port}` : `${address.host}:${address.port}`;
}

/**
 * Parses `HOST:PORT` or `[IPV6]:PORT` (port 0–65535, 0 meaning any free port; host an IPv4 address, an IPv6 address
 * in brackets, or a host name). Throws {@link ConfigError} with `key`.
 */
export function parseListenAddress(text: string, key: string): ListenAddress {
  return listenAt(text, { path: [key], source: null });
}

/** True for 127.0.0.0/8, ::1 (and ::ffff:127.x.x.x) and `localhost`; brackets allowed. */
export function isLoopback(host: string): boolean {
  const h = host.trim().toLowerCase().replace(/^\[(.*)\]$/, '$1');
  if (h === 'localhost' || h === 'localhost.') return true;
  if (net.isIPv4(h)) return h.startsWith('127.');
  if (!net.isIPv6(h) || h.includes('%')) return false;
  let canonical: string;
  try {
    canonical = new URL(`http://[${h}]/`).hostname;
  } catch {
    return false;
  }
  return canonical === '[::1]' || /^\[::ffff:7f[0-9a-f]{2}:[0-9a-f]{1,4}\]$/.test(canonical);
}

// ---------------------------------------------------------------------------------------
// Values

function listenAt(text: string, at: At): ListenAddress {
  const value = text.trim();
  const shown = quoteInput(text);
  const bad = (why: string): never => fail(at, `bad address ${shown}: ${why}`);
  let host: string;
  let portText: string;
  if (value.startsWith('[')) {
    const m = /^\[([^\]]*)\]:(.*)$/.exec(value);
    if (!m) return bad('expected [IPV6]:PORT, e.g. [::1]:7070');
    host = m[1] ?? '';
    portText = m[2] ?? '';
    if (!net.isIPv6(host)) return bad('not an IPv6 address in the brackets');
  } else {
    const colon = value.lastIndexOf(':');
    if (colon < 0) return bad('expected HOST:PORT, e.g. 127.0.0.1:7070');
    host = value.slice(0, colon);
    portText = value.slice(colon + 1);
    if (host === '') return bad('missing host; use 127.0.0.1:PORT (this machine only) or 0.0.0.0:PORT (every interface)');
    if (host.includes(':')) return bad('put an IPv6 address in brackets, e.g. [::1]:7070');
    const ipv4ish = /^[\d.]+$/.test(host);
    if (ipv4ish ? !net.isIPv4(host) : !isHostName(host)) return bad(ipv4ish ? 'not an IPv4 address' : 'not a host name or address');
  }
  if (!/^\d{1,5}$/.test(portText)) return bad('the port must be a number from 0 to 65535 (0: any free port)');
  const port = Number(portText);
  if (port > 65535) return bad('the port must be a number from 0 to 65535 (0: any free port)');
  return { host, port };
}

function isHostName(host: string): boolean {
  return host.length <= 253 && host.split('.').every((label) => /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/.test(label));
}

function isOff(text: string): boolean {
  return ['off', 'none'].includes(text.trim().toLowerCase());
}

function nonEmpty(text: string, at: At): string {
  if (text.trim() === '') fail(at, 'must not be empty');
  return text;
}

function parseStore(text: string, at: At, expand: (p: string) => string): string {
  const sqlite = /^sqlite:(.*)$/.exec(text.trim());
  if (sqlite) {
    if ((sqlite[1] ?? '').trim() === '') return fail(at, 'sqlite: needs a path, e.g. sqlite:./data/leash.db');
    return `sqlite:${expand(sqlite[1] ?? '')}`;
  }
  // A database URL may hold a password: name its scheme only.
  const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):/.exec(text.trim())?.[1]?.toLowerCase();
  if (scheme === 'postgres' || scheme === 'postgresql') return fail(at, 'PostgreSQL stores are not supported yet; use sqlite:PATH');
  return fail(at, `expected sqlite:PATH (e.g. sqlite:./data/leash.db)${scheme === undefined ? '' : `, not a ${quoteInput(scheme, 20)} URL`}`);
}

function oneOfText<const T extends readonly string[]>(text: string, allowed: T, at: At): T[number] {
  const found: T[number] | undefined = allowed.find((a) => a === text.trim());
  if (found !== undefined) return found;
  return fail(at, `expected one of ${allowed.join(', ')}, got ${quoteInput(text)}`);
}

function positiveInteger(text: string, at: At): number {
  const value = text.trim();
  if (!/^\d+$/.test(value) || Number(value) < 1 || !Number.isSafeInteger(Number(value))) fail(at, `expected a whole number of at least 1, got ${quoteInput(text)}`);
  return Number(value);
}

const DURATION_UNITS: Readonly<Record<string, number>> = { ms: 1, s: SECOND, m: MINUTE, h: HOUR, d: DAY };
const DURATION_EXPECTED = 'expected a number of milliseconds or a number with a unit (ms, s, m, h, d), e.g. 500ms, 30s, 10m, 1h30m';

/** A duration from the file (already a number or a string), or null when absent. */
function durationAt(value: number | string | undefined, at: At, range: { min?: number; max: number }): number | null {
  if (value === undefined) return null;
  const shown = typeof value === 'number' ? String(value) : quoteInput(value);
  let ms: number;
  if (typeof value === 'number') {
    ms = value;
  } else {
    const text = value.trim().replace(/\s+/g, '');
    if (text === '0') {
      ms = 0;
    } else {
      if (!/^(?:(?:\d+(?:\.\d+)?|\.\d+)(?:ms|s|m|h|d))+$/.test(text)) {
        return fail(at, `bad duration ${shown}: ${/^\d+(?:\.\d+)?$/.test(text) ? 'missing unit; ' : ''}${DURATION_EXPECTED}`);
      }
      ms = 0;
      for (const m of text.matchAll(/(\d+(?:\.\d+)?|\.\d+)(ms|s|m|h|d)/g)) ms += Number(m[1]) * (DURATION_UNITS[m[2] ?? ''] ?? NaN);
      ms = Math.round(ms);
      if (ms === 0 && /[1-9]/.test(text)) return fail(at, `bad duration ${shown}: shorter than 1ms`);
    }
  }
  const min = range.min ?? 0;
  if (ms < min) return fail(at, `bad duration ${shown}: must be at least ${describeMs(min)}`);
  if (ms > range.max) return fail(at, `bad duration ${shown}: must be at most ${describeMs(range.max)}`);
  return ms;
}

function describeMs(ms: number): string {
  for (const [unit, size] of [['d', DAY], ['h', HOUR], ['m', MINUTE], ['s', SECOND]] as const) if (ms >= size && ms % size === 0) return `${ms / size}${unit}`;
  return `${ms}ms`;
}

function describeBytes(bytes: number): string {
  for (const [unit, size] of [['G', GIB], ['M', MIB], ['K', KIB]] as const) if (bytes >= size && bytes % size === 0) return `${bytes / size}${unit}`;
  return `${bytes} bytes`;
}

const SIZE_UNITS: Readonly<Record<string, number>> = { '': 1, k: KIB, m: MIB, g: GIB };

/** A size from the file: bytes, or `64K`, `1M`, `1G` (binary; a trailing `B`/`iB` allowed). */
function sizeAt(value: number | string | undefined, at: At, range: { min: number; max: number }): number | null {
  if (value === undefined) return null;
  const shown = typeof value === 'number' ? String(value) : quoteInput(value);
  let bytes: number;
  if (typeof value === 'number') {
    bytes = value;
  } else {
    const m = /^(\d+(?:\.\d+)?)\s*([kmg]?)(?:i?b)?$/i.exec(value.trim());
    if (!m) return fail(at, `bad size ${shown}: expected a number of bytes or a number with a unit (K, M, G), e.g. 65536, 512K, 1M`);
    bytes = Math.floor(Number(m[1]) * (SIZE_UNITS[(m[2] ?? '').toLowerCase()] ?? NaN));
  }
  if (bytes < range.min) return fail(at, `bad size ${shown}: must be at least ${describeBytes(range.min)}`);
  if (bytes > range.max) return fail(at, `bad size ${shown}: must be at most ${describeBytes(range.max)}`);
  return bytes;
}

/** The token's secret from the file or the environment; problems never show it. */
function tokenSecret(token: Static<typeof TokenSchema>, at: At, env: NodeJS.ProcessEnv): string {
  const child = (key: string): At => ({ path: [...at.path, key], source: at.source });
  if (token.token !== undefined && token.tokenEnv !== undefined) fail(at, 'give either tokenEnv or token, not both');
  let secret: string;
  let where: At;
  let from: string;
  if (token.tokenEnv !== undefined) {
    where = child('tokenEnv');
    const value = env[token.tokenEnv];
    if (value === undefined || value === '') fail(where, `environment variable ${token.tokenEnv} is ${value === undefined ? 'not set' : 'empty'}`);
    secret = value;
    from = `the secret in environment variable ${token.tokenEnv}`;
  } else if (token.token !== undefined) {
    where = child('token');
    secret = token.token;
    from = 'the secret';
  } else {
    return fail(at, 'no secret: give tokenEnv: NAME (read from the environment at start-up) or token: "..."');
  }
  if (secret.length < MIN_TOKEN_SECRET_LENGTH) fail(where, `${from} is shorter than ${MIN_TOKEN_SECRET_LENGTH} characters`);
  if (secret.length > 4096) fail(where, `${from} is longer than 4096 characters`);
  // eslint-disable-next-line no-control-regex
  if (/[\s\u0000-\u001f\u007f]/.test(secret)) fail(where, `${from} contains whitespace or control characters, which a bearer token cannot carry`);
  return secret;
}

// ---------------------------------------------------------------------------------------
// The file

async function readConfigFile(file: string): Promise<FileSource> {
  const whole = { path: [] as Segment[], source: file };
  let text: string;
  try {
    const bytes = await readFile(file);
    if (bytes.length > MAX_CONFIG_FILE_BYTES) fail(whole, `configuration file is larger than ${MAX_CONFIG_FILE_BYTES} bytes`);
    text = bytes.toString('utf8');
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    const why =
      code === 'ENOENT' ? 'configuration file not found' : code === 'EISDIR' ? 'configuration file is a directory' : code === 'EACCES' ? 'configuration file is not readable (permission denied)' : `cannot read configuration file (${code ?? String(err)})`;
    throw new ConfigError('', why, file, { cause: err });
  }

  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  const problem = doc.errors[0] ?? doc.warnings[0];
  if (problem) {
    const pos = lineCounter.linePos(problem.pos[0]);
    throw new ConfigError('', `YAML syntax error: ${yamlMessage(problem.message)}`, `${file}:${pos.line}:${pos.col}`);
  }
  let raw: unknown;
  try {
    raw = doc.toJS({ maxAliasCount: 100 }) as unknown;
  } catch (err) {
    throw new ConfigError('', `YAML error: ${yamlMessage(err instanceof Error ? err.message : String(err))}`, file, { cause: err });
  }
  raw ??= {};

  const position = (path: readonly Segment[]): string => {
    const offset = locate(doc, path);
    if (offset === null) return file;
    const { line, col } = lineCounter.linePos(offset);
    return `${file}:${line}:${col}`;
  };
  const at = (path: readonly Segment[]): At => ({ path, source: position(path) });

  if (typeof raw !== 'object' || Array.isArray(raw)) fail(at([]), `expected a mapping of settings at the top level, got ${describeValue(raw, [])}`);
  dropNulls(raw, []);
  checkSchema(raw, at, (path) => locate(doc, path) ?? Number.MAX_SAFE_INTEGER);
  return { file, config: raw as FileConfig, at };
}

/** The first line of a YAML message without its position (shown separately) and capped. */
function yamlMessage(message: string): string {
  const first = (message.split('\n')[0] ?? message).replace(/ at line \d+, column \d+:?\s*$/, '').trim();
  return first.length > 120 ? `${first.slice(0, 117)}...` : first;
}

/** Offset in the source of the key (or sequence item) at `path`, or of the nearest parent found. */
function locate(doc: Document, path: readonly Segment[]): number | null {
  let node: unknown = doc.contents;
  let offset = startOf(node);
  for (const segment of path) {
    if (isMap(node)) {
      const pair = node.items.find((p) => isScalar(p.key) && String(p.key.value) === String(segment));
      if (!pair) break;
      offset = startOf(pair.key) ?? offset;
      node = pair.value;
    } else if (isSeq(node) && typeof segment === 'number') {
      node = node.items[segment];
      offset = startOf(node) ?? offset;
    } else {
      break;
    }
  }
  return offset;
}

function startOf(node: unknown): number | null {
  const range = (node as { range?: unknown } | null | undefined)?.range;
  return Array.isArray(range) && typeof range[0] === 'number' ? range[0] : null;
}

/** `limits:` with nothing under it (null) counts as absent, unless null means something there. */
function dropNulls(node: unknown, path: readonly Segment[]): void {
  if (node === null || typeof node !== 'object') return;
  if (Array.isArray(node)) {
    node.forEach((item, i) => dropNulls(item, [...path, i]));
    return;
  }
  const record = node as Record<string, unknown>;
  // An entry of a named collection (an identity) left empty is an entry with no settings.
  const named = schemaAt(FileSchema, path)?.patternProperties !== undefined;
  for (const [key, value] of Object.entries(record)) {
    const schema = schemaAt(FileSchema, [...path, key]);
    const nullable = (schema?.anyOf as JsonSchema[] | undefined)?.some((s) => s.type === 'null') ?? false;
    if (value === null && named) record[key] = {};
    else if (value === null && schema !== null && !nullable) delete record[key];
    else dropNulls(value, [...path, key]);
  }
}

interface SchemaProblem {
  readonly path: Segment[];
  readonly message: string;
  readonly order: number;
}

/** Validates the file against {@link FileSchema}; throws for the problem that comes first in the file. */
function checkSchema(raw: unknown, at: (path: readonly Segment[]) => At, offsetOf: (path: readonly Segment[]) => number): void {
  const problems: SchemaProblem[] = [];
  for (const error of Value.Errors(FileSchema, raw)) {
    // Each alternative of a union reports separately; the union's own error covers them.
    if (error.schemaPath.includes('/anyOf/') || error.keyword === 'boolean') continue;
    const path = toSegments(raw, error.instancePath);
    const key = formatKey(path);
    if (error.keyword === 'additionalProperties') {
      const names = (error.params as { additionalProperties?: string[] }).additionalProperties ?? [];
      const allowed = propertiesOf(schemaAt(FileSchema, path));
      for (const name of names) {
        const child = [...path, name];
        problems.push({ path: child, message: `unknown key ${formatKey(child)}${suggest(name, allowed)}`, order: offsetOf(child) });
      }
    } else if (error.keyword === 'required') {
      for (const name of (error.params as { requiredProperties?: string[] }).requiredProperties ?? []) {
        const child = [...path, name];
        problems.push({ path: child, message: `${formatKey(child)}: missing; it is required`, order: offsetOf(path) });
      }
    } else {
      const schema = schemaAt(FileSchema, path);
      const expected = schema === null ? 'a different value' : expectation(schema);
      problems.push({ path, message: `${key}: expected ${expected}, got ${describeValue(valueAt(raw, path), path)}`, order: offsetOf(path) });
    }
  }
  if (problems.length === 0) return;
  const first = problems.reduce((a, b) => (b.order < a.order ? b : a));
  throw new ConfigError(formatKey(first.path), first.message, at(first.path).source);
}

/** JSON Pointer → segments, numbers where the value is an array. */
function toSegments(raw: unknown, pointer: string): Segment[] {
  if (pointer === '') return [];
  const out: Segment[] = [];
  let node = raw;
  for (const part of pointer.slice(1).split('/')) {
    const name = part.replace(/~1/g, '/').replace(/~0/g, '~');
    if (Array.isArray(node)) {
      const index = Number(name);
      out.push(index);
      node = node[index] as unknown;
    } else {
      out.push(name);
      node = node !== null && typeof node === 'object' ? (node as Record<string, unknown>)[name] : undefined;
    }
  }
  return out;
}

function valueAt(raw: unknown, path: readonly Segment[]): unknown {
  let node = raw;
  for (const segment of path) {
    if (node === null || typeof node !== 'object' || !Object.hasOwn(node, segment)) return undefined;
    node = (node as Record<string, unknown>)[segment];
  }
  return node;
}

type JsonSchema = Record<string, unknown>;

/** The schema that describes the value at `path`. */
function schemaAt(root: TSchema, path: readonly Segment[]): JsonSchema | null {
  let schema: JsonSchema | null = root as unknown as JsonSchema;
  for (const segment of path) {
    if (schema === null) return null;
    const properties = schema.properties as Record<string, JsonSchema> | undefined;
    const patterns = schema.patternProperties as Record<string, JsonSchema> | undefined;
    if (typeof segment === 'number') schema = (schema.items as JsonSchema | undefined) ?? null;
    else if (properties && Object.hasOwn(properties, segment)) schema = properties[segment] ?? null;
    else if (patterns) schema = Object.values(patterns)[0] ?? null;
    else schema = null;
  }
  return schema;
}

function propertiesOf(schema: JsonSchema | null): string[] {
  const properties = schema?.properties;
  return properties && typeof properties === 'object' ? Object.keys(properties) : [];
}

/** What a schema accepts, for people. */
function expectation(schema: JsonSchema): string {
  if (typeof schema.description === 'string') return schema.description;
  const anyOf = schema.anyOf as JsonSchema[] | undefined;
  if (anyOf) {
    if (anyOf.every((s) => 'const' in s)) return `one of ${anyOf.map((s) => JSON.stringify(s.const)).join(', ')}`;
    return anyOf.map(expectation).join(' or ');
  }
  switch (schema.type) {
    case 'integer': {
      const { minimum: min, maximum: max } = schema as { minimum?: number; maximum?: number };
      if (min !== undefined && max !== undefined) return `a whole number from ${min} to ${max}`;
      if (min !== undefined) return `a whole number of at least ${min}`;
      return 'a whole number';
    }
    case 'string':
      if (typeof schema.pattern === 'string') return `a string matching ${schema.pattern}`;
      return typeof schema.minLength === 'number' && schema.minLength > 0 ? 'a non-empty string' : 'a string';
    case 'boolean':
      return 'true or false';
    case 'null':
      return 'null';
    case 'object':
      return 'a mapping';
    case 'array': {
      const items = schema.items as JsonSchema | undefined;
      const min = typeof schema.minItems === 'number' && schema.minItems > 0 ? 'a non-empty list' : 'a list';
      const consts = items?.anyOf as JsonSchema[] | undefined;
      if (consts?.every((s) => 'const' in s)) return `${min} of ${consts.map((s) => JSON.stringify(s.const)).join(', ')}`;
      return items ? `${min} of ${expectation(items)}` : min;
    }
    default:
      return 'a different value';
  }
}

/** Keys whose values are, or may mistakenly be, secrets: never echoed. */
const SECRET_KEYS = new Set(['token', 'tokenEnv', 'secret', 'password', 'passwordEnv', 'passphrase', 'passphraseEnv']);
const TOKEN_PUBLIC_KEYS = new Set(['name', 'scopes', 'identities', 'hosts']);

function isSecretPath(path: readonly Segment[]): boolean {
  const last = path[path.length - 1];
  if (typeof last === 'string' && SECRET_KEYS.has(last)) return true;
  // Inside a token, only the fields known to be public are shown.
  if (path[0] === 'tokens') return !(typeof path[2] === 'string' && TOKEN_PUBLIC_KEYS.has(path[2]));
  return false;
}

function describeValue(value: unknown, path: readonly Segment[]): string {
  if (value === null || value === undefined) return 'nothing (null)';
  if (Array.isArray(value)) return 'a list';
  if (Buffer.isBuffer(value)) return 'binary data';
  if (typeof value === 'object') return 'a mapping';
  if (isSecretPath(path)) return `a ${typeof value} (not shown)`;
  if (typeof value === 'string') return quoteInput(value);
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') return String(value);
  return `a ${typeof value}`;
}

/** `; did you mean perHost?` for a near miss, else the keys allowed there. */
function suggest(name: string, allowed: readonly string[]): string {
  if (allowed.length === 0) return '';
  let best: string | null = null;
  let bestDistance = Infinity;
  for (const candidate of allowed) {
    const distance = editDistance(name.toLowerCase(), candidate.toLowerCase());
    if (distance < bestDistance) [best, bestDistance] = [candidate, distance];
  }
  if (best !== null && bestDistance <= Math.max(1, Math.floor(best.length / 3))) return `; did you mean ${best}?`;
  return `; expected one of ${allowed.join(', ')}`;
}

/** Optimal string alignment distance (a transposition counts as one edit). */
function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  const at = (i: number, j: number): number => d[i]?.[j] ?? Infinity;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(at(i - 1, j) + 1, at(i, j - 1) + 1, at(i - 1, j - 1) + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, at(i - 2, j - 2) + 1);
      d[i]![j] = v;
    }
  }
  return at(a.length, b.length);
}

function oneLine(text: string): string {
  return text.replace(/[\r\n]+/g, ' ');
}
