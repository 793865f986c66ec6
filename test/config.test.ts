import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  ConfigError,
  assertSafeListen,
  formatListenAddress,
  isLoopback,
  loadConfig,
  parseListenAddress,
  type LoadConfigOptions,
  type ServeConfig,
} from '../src/app/config.ts';
import { DEFAULT_KEEPALIVE, DEFAULT_MAX_OUTPUT_BYTES, DEFAULT_TIMEOUTS } from '../src/service/task-spec.ts';

const SECRET_A = 'tok-A-0123456789abcdef';
const SECRET_B = 'tok-B-fedcba9876543210';
const SHORT_SECRET = 'short-S3cr3t';

let dir = '';
let home = '';
let counter = 0;

before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'leash-config-'));
  home = path.join(dir, 'home');
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Writes a config file into the test's temp dir and returns its path. */
async function configFile(text: string): Promise<string> {
  const file = path.join(dir, `leash-${++counter}.yaml`);
  await writeFile(file, text);
  return file;
}

async function load(text: string | null, options: Omit<LoadConfigOptions, 'file'> = {}): Promise<ServeConfig> {
  const file = text === null ? null : await configFile(text);
  return loadConfig({ ...options, file, env: { HOME: home, ...options.env } });
}

/**
 * Asserts that loading rejects with a one-line ConfigError for `key`, whose message names
 * the key, matches `why`, names `source` (a file path or an environment variable), and
 * contains none of `secrets`.
 */
async function rejects(
  text: string | null,
  expected: { key: string; why: RegExp; source?: RegExp | 'file'; secrets?: readonly string[] },
  options: Omit<LoadConfigOptions, 'file'> = {},
): Promise<ConfigError> {
  const file = text === null ? null : await configFile(text);
  let caught: unknown = null;
  try {
    await loadConfig({ ...options, file, env: { HOME: home, ...options.env } });
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof ConfigError, `expected a ConfigError, got ${String(caught)}`);
  const err = caught;
  assert.equal(err.name, 'ConfigError');
  assert.equal(err.key, expected.key, `key of: ${err.message}`);
  if (expected.key !== '') assert.ok(err.message.includes(expected.key), `message names the key: ${err.message}`);
  assert.match(err.message, expected.why);
  assert.ok(!/[\r\n]/.test(err.message), `one line: ${err.message}`);
  if (expected.source === 'file') assert.ok(file !== null && err.message.includes(file), `message names the file: ${err.message}`);
  else if (expected.source) assert.match(err.message, expected.source);
  for (const secret of expected.secrets ?? [SECRET_A, SECRET_B, SHORT_SECRET]) {
    assert.ok(!err.message.includes(secret), `the message must not show a secret: ${err.message}`);
  }
  return err;
}

const FULL = `
listen: 0.0.0.0:8080
adminListen: "[::1]:9090"
store: sqlite:~/leash/history.db
dataDir: ~/leash
identities:
  deploy:
    user: deploy
    keyPath: ~/.ssh/id_ed25519
    passphraseEnv: DEPLOY_PASSPHRASE
  ops:
    agent: true
  legacy:
    user: root
    passwordEnv: LEGACY_PASSWORD
defaultIdentity: deploy
hostKeys:
  policy: accept-new
  knownHostsFile: /var/lib/leash/known_hosts
  readFiles: [~/.ssh/known_hosts, /etc/ssh/ssh_known_hosts]
defaults:
  timeouts:
    connectMs: 5s
    handshakeMs: 7500
    authMs: 1m
    channelMs: 500ms
    commandMs: 1h30m
    idleMs: 0
  maxOutputBytes: 64K
  keepalive:
    intervalMs: 10s
    countMax: 5
limits:
  globalConcurrency: 200
  perHost: 2
  perTargetHandshakes: 4
  queueCapacity: 5000
  maxBatchHosts: 2000
  maxWaitSeconds: 30
  bodyLimitBytes: 2M
tokens:
  - name: ci
    tokenEnv: LEASH_TOKEN_CI
    scopes: [run]
    identities: [deploy]
    hosts: ["web*.example.com", "db?.example.com"]
  - name: admin
    token: "${SECRET_B}"
    scopes: [admin, read, admin]
retention:
  maxAgeMs: 7d
  maxRows: 5000
  intervalMs: 10m
shutdownGraceMs: 45s
logLevel: debug
pool:
  reuse: false
  maxConnectionsPerHost: 2
  maxChannelsPerConnection: 4
  idleTtlMs: 2m
  maxHandshakesPerJumpHost: 3
diagnostics:
  watchdogIntervalMs: 10s
  maxTaskAgeMs: 2h
  redactPatterns: ['db-pass=(\\S+)']
  maxProfileSeconds: 120
  dumpLimit: 50
  heapSampling: false
`;

void describe('loadConfig', () => {
  void test('defaults with no file', async () => {
    const config = await load(null);
    assert.deepEqual(config, {
      listen: { host: '127.0.0.1', port: 7070 },
      adminListen: { host: '127.0.0.1', port: 7071 },
      store: 'sqlite:./data/leash.db',
      dataDir: './data',
      identities: {},
      defaultIdentity: null,
      hostKeys: { policy: 'strict', knownHostsFile: './data/known_hosts', readFiles: [`${home}/.ssh/known_hosts`] },
      defaults: { timeouts: { ...DEFAULT_TIMEOUTS }, maxOutputBytes: DEFAULT_MAX_OUTPUT_BYTES, keepalive: { ...DEFAULT_KEEPALIVE } },
      limits: {
        globalConcurrency: 64,
        perHost: 4,
        perTargetHandshakes: 8,
        queueCapacity: 10_000,
        maxBatchHosts: 10_000,
        maxQueuedBatchTasks: 100_000,
        maxWaitSeconds: 60,
        bodyLimitBytes: 1024 * 1024,
      },
      tokens: [],
      retention: { maxAgeMs: 30 * 24 * 3_600_000, maxRows: 100_000, intervalMs: 3_600_000 },
      shutdownGraceMs: 30_000,
      logLevel: 'info',
      pool: { reuse: true, maxConnectionsPerHost: 4, maxChannelsPerConnection: 8, idleTtlMs: 30_000, maxHandshakesPerJumpHost: 10 },
      diagnostics: { watchdogIntervalMs: 30_000, maxTaskAgeMs: 0, redactPatterns: [], maxProfileSeconds: 60, dumpLimit: 1000, heapSampling: true },
    } satisfies ServeConfig);
  });

  void test('an empty file, and empty sections, mean the defaults', async () => {
    const defaults = await load(null);
    assert.deepEqual(await load(''), defaults);
    assert.deepEqual(await load('# nothing here yet\nlimits:\n  # perHost: 2\ntokens:\n'), defaults);
  });

  void test('the data directory moves the database and known_hosts defaults', async () => {
    const config = await load('dataDir: /srv/leash/\n');
    assert.equal(config.dataDir, '/srv/leash/');
    assert.equal(config.store, 'sqlite:/srv/leash/leash.db');
    assert.equal(config.hostKeys.knownHostsFile, '/srv/leash/known_hosts');
  });

  void test('a full valid file', async () => {
    const config = await load(FULL, { env: { LEASH_TOKEN_CI: SECRET_A } });
    assert.deepEqual(config, {
      listen: { host: '0.0.0.0', port: 8080 },
      adminListen: { host: '::1', port: 9090 },
      store: `sqlite:${home}/leash/history.db`,
      dataDir: `${home}/leash`,
      identities: {
        deploy: { user: 'deploy', keyPath: `${home}/.ssh/id_ed25519`, passphraseEnv: 'DEPLOY_PASSPHRASE' },
        ops: { agent: true },
        legacy: { user: 'root', passwordEnv: 'LEGACY_PASSWORD' },
      },
      defaultIdentity: 'deploy',
      hostKeys: {
        policy: 'accept-new',
        knownHostsFile: '/var/lib/leash/known_hosts',
        readFiles: [`${home}/.ssh/known_hosts`, '/etc/ssh/ssh_known_hosts'],
      },
      defaults: {
        timeouts: { connectMs: 5_000, handshakeMs: 7_500, authMs: 60_000, channelMs: 500, commandMs: 5_400_000, idleMs: 0 },
        maxOutputBytes: 64 * 1024,
        keepalive: { intervalMs: 10_000, countMax: 5 },
      },
      limits: {
        globalConcurrency: 200,
        perHost: 2,
        perTargetHandshakes: 4,
        queueCapacity: 5000,
        maxBatchHosts: 2000,
        maxQueuedBatchTasks: 100_000,
        maxWaitSeconds: 30,
        bodyLimitBytes: 2 * 1024 * 1024,
      },
      tokens: [
        { name: 'ci', secret: SECRET_A, scopes: ['run'], identities: ['deploy'], hosts: ['web*.example.com', 'db?.example.com'] },
        { name: 'admin', secret: SECRET_B, scopes: ['admin', 'read'] },
      ],
      retention: { maxAgeMs: 7 * 24 * 3_600_000, maxRows: 5000, intervalMs: 600_000 },
      shutdownGraceMs: 45_000,
      logLevel: 'debug',
      pool: { reuse: false, maxConnectionsPerHost: 2, maxChannelsPerConnection: 4, idleTtlMs: 120_000, maxHandshakesPerJumpHost: 3 },
      diagnostics: { watchdogIntervalMs: 10_000, maxTaskAgeMs: 7_200_000, redactPatterns: ['db-pass=(\\S+)'], maxProfileSeconds: 120, dumpLimit: 50, heapSampling: false },
    } satisfies ServeConfig);
    assert.doesNotThrow(() => assertSafeListen(config), 'tokens make 0.0.0.0 acceptable');
  });

  void test('identities the process provides (demo) may be named by tokens and defaultIdentity', async () => {
    const text = `defaultIdentity: demo\ntokens:\n  - name: t\n    token: "${SECRET_A}"\n    scopes: [run]\n    identities: [demo]\n`;
    const config = await load(text, { builtinIdentities: ['demo'] });
    assert.equal(config.defaultIdentity, 'demo');
    assert.deepEqual(config.tokens[0]?.identities, ['demo']);
    await rejects(text, { key: 'defaultIdentity', why: /unknown identity "demo"/, source: 'file' });
  });
});

void describe('loadConfig errors name the key, the problem and the source', () => {
  void test('a redaction pattern that is not a regular expression', async () => {
    await rejects('diagnostics:\n  redactPatterns: ["(unclosed"]\n', { key: 'diagnostics.redactPatterns[0]', why: /not a valid regular expression/, source: 'file' });
  });

  void test('wrong type', async () => {
    const err = await rejects('limits:\n  perHost: "lots"\n', { key: 'limits.perHost', why: /expected a whole number of at least 1, got "lots"/, source: 'file' });
    assert.match(err.message, /:2:3\)$/, 'with the line and column of the key');
    await rejects('defaults:\n  keepalive:\n    countMax: 1.5\n', { key: 'defaults.keepalive.countMax', why: /whole number/, source: 'file' });
    await rejects('identities:\n  ops:\n    agent: "yes"\n', { key: 'identities.ops.agent', why: /expected true or false, got "yes"/, source: 'file' });
    await rejects('limits: 5\n', { key: 'limits', why: /expected a mapping, got 5/, source: 'file' });
    await rejects('- listen: 1\n', { key: '', why: /expected a mapping of settings at the top level, got a list/, source: 'file' });
  });

  void test('unknown key, with a suggestion when close', async () => {
    await rejects('limits:\n  perhots: 3\n', { key: 'limits.perhots', why: /^unknown key limits\.perhots; did you mean perHost\?/, source: 'file' });
    await rejects('identities:\n  ops:\n    agnet: true\n', { key: 'identities.ops.agnet', why: /did you mean agent\?/, source: 'file' });
    await rejects('colour: blue\n', { key: 'colour', why: /unknown key colour; expected one of listen, adminListen, .*logLevel/, source: 'file' });
  });

  void test('the first problem in the file is reported', async () => {
    await rejects('logLevel: loud\nlimits:\n  perHost: 0\n', { key: 'logLevel', why: /expected one of "fatal", .*"trace", got "loud"/ });
    await rejects('limits:\n  perHost: 0\nlogLevel: loud\n', { key: 'limits.perHost', why: /at least 1, got 0/ });
  });

  void test('bad listen address and port', async () => {
    await rejects('listen: 0.0.0.0:70000\n', { key: 'listen', why: /port must be a number from 0 to 65535/, source: 'file' });
    await rejects('listen: "127.0.0.1"\n', { key: 'listen', why: /expected HOST:PORT/, source: 'file' });
    await rejects('listen: "::1:7070"\n', { key: 'listen', why: /brackets/, source: 'file' });
    await rejects('adminListen: 127.0.0.1:http\n', { key: 'adminListen', why: /port must be a number/, source: 'file' });
  });

  void test('bad duration', async () => {
    await rejects('defaults:\n  timeouts:\n    commandMs: 10x\n', { key: 'defaults.timeouts.commandMs', why: /bad duration "10x"/, source: 'file' });
    await rejects('defaults:\n  timeouts:\n    connectMs: "30"\n', { key: 'defaults.timeouts.connectMs', why: /missing unit/, source: 'file' });
    await rejects('shutdownGraceMs: -5\n', { key: 'shutdownGraceMs', why: /expected a duration.*got -5/, source: 'file' });
    await rejects('defaults:\n  timeouts:\n    commandMs: 8d\n', { key: 'defaults.timeouts.commandMs', why: /at most 7d/, source: 'file' });
    await rejects('retention:\n  intervalMs: 0\n', { key: 'retention.intervalMs', why: /at least 1s/, source: 'file' });
  });

  void test('bad size', async () => {
    await rejects('defaults:\n  maxOutputBytes: lots\n', { key: 'defaults.maxOutputBytes', why: /bad size "lots"/, source: 'file' });
    await rejects('limits:\n  bodyLimitBytes: 2G\n', { key: 'limits.bodyLimitBytes', why: /at most 1G/, source: 'file' });
  });

  void test('bad enums and store', async () => {
    await rejects('hostKeys:\n  policy: loose\n', { key: 'hostKeys.policy', why: /"strict", "accept-new", "off", got "loose"/, source: 'file' });
    await rejects('store: mysql://leash:hunter2@db/leash\n', { key: 'store', why: /expected sqlite:PATH/, source: 'file', secrets: ['hunter2'] });
    await rejects('store: postgres://leash:hunter2@db/leash\n', { key: 'store', why: /not supported yet/, source: 'file', secrets: ['hunter2'] });
  });

  void test('bad scope, empty scopes', async () => {
    const token = `  - name: ci\n    token: "${SECRET_A}"\n`;
    await rejects(`tokens:\n${token}    scopes: [read, wrte]\n`, { key: 'tokens[0].scopes[1]', why: /expected one of "read", "run", "admin", got "wrte"/, source: 'file' });
    await rejects(`tokens:\n${token}    scopes: []\n`, { key: 'tokens[0].scopes', why: /non-empty list of "read", "run", "admin"/, source: 'file' });
    await rejects('tokens:\n  - name: ci\n    tokenEnv: X\n', { key: 'tokens[0].scopes', why: /missing; it is required/, source: 'file' });
  });

  void test('a token naming an unknown identity', async () => {
    const text = `identities:\n  ops:\n    agent: true\ntokens:\n  - name: ci\n    token: "${SECRET_A}"\n    scopes: [run]\n    identities: [ops, deploy]\n`;
    await rejects(text, { key: 'tokens[0].identities[1]', why: /unknown identity "deploy"; configured: ops/, source: 'file' });
  });

  void test('unknown defaultIdentity; an identity with no way to authenticate', async () => {
    await rejects('defaultIdentity: ghost\n', { key: 'defaultIdentity', why: /unknown identity "ghost"/, source: 'file' });
    await rejects('identities:\n  ops:\n    user: root\n', { key: 'identities.ops', why: /no way to authenticate/, source: 'file' });
    await rejects('identities:\n  ops:\n', { key: 'identities.ops', why: /no way to authenticate/, source: 'file' });
  });

  void test('tokenEnv names a variable that is not set', async () => {
    const text = 'tokens:\n  - name: ci\n    tokenEnv: LEASH_TOKEN_CI\n    scopes: [run]\n';
    await rejects(text, { key: 'tokens[0].tokenEnv', why: /environment variable LEASH_TOKEN_CI is not set/, source: 'file' });
    await rejects(text, { key: 'tokens[0].tokenEnv', why: /LEASH_TOKEN_CI is empty/ }, { env: { LEASH_TOKEN_CI: '' } });
  });

  void test('duplicate token names', async () => {
    const text = `tokens:\n  - name: ci\n    token: "${SECRET_A}"\n    scopes: [run]\n  - name: ci\n    token: "${SECRET_B}"\n    scopes: [read]\n`;
    const err = await rejects(text, { key: 'tokens[1].name', why: /duplicate token name "ci" \(tokens\[0\] has it too\)/, source: 'file' });
    assert.match(err.message, /:5:5\)$/);
  });

  void test('a short secret is refused and never shown', async () => {
    await rejects(`tokens:\n  - name: ci\n    token: "${SHORT_SECRET}"\n    scopes: [run]\n`, { key: 'tokens[0].token', why: /shorter than 16 characters/, source: 'file' });
    await rejects(
      'tokens:\n  - name: ci\n    tokenEnv: LEASH_TOKEN_CI\n    scopes: [run]\n',
      { key: 'tokens[0].tokenEnv', why: /secret in environment variable LEASH_TOKEN_CI is shorter than 16/ },
      { env: { LEASH_TOKEN_CI: SHORT_SECRET } },
    );
  });

  void test('secrets never appear, even where they do not belong', async () => {
    // The secret pasted where the variable name goes, in a list of tokens, under a typo.
    await rejects(`tokens:\n  - name: ci\n    tokenEnv: "${SECRET_A}"\n    scopes: [run]\n`, { key: 'tokens[0].tokenEnv', why: /expected an environment variable name, got a string \(not shown\)/ });
    await rejects(`tokens:\n  - "${SECRET_A}"\n`, { key: 'tokens[0]', why: /expected a mapping, got a string \(not shown\)/ });
    await rejects(`tokens:\n  - name: ci\n    tokn: "${SECRET_A}"\n    scopes: [run]\n`, { key: 'tokens[0].tokn', why: /did you mean token\?/ });
    await rejects(`tokens:\n  - name: ci\n    token: 12345678901234567\n    scopes: [run]\n`, { key: 'tokens[0].token', why: /got a number \(not shown\)/, secrets: ['12345678901234567'] });
    await rejects(`tokens:\n  - name: ci\n    token: "${SECRET_A} x"\n    scopes: [run]\n`, { key: 'tokens[0].token', why: /whitespace/ });
    const both = `tokens:\n  - name: a\n    token: "${SECRET_A}"\n    scopes: [run]\n  - name: b\n    token: "${SECRET_A}"\n    scopes: [run]\n`;
    await rejects(both, { key: 'tokens[1]', why: /same secret as tokens\[0\]/ });
    await rejects(`tokens:\n  - name: a\n    token: "${SECRET_A}"\n    tokenEnv: X\n    scopes: [run]\n`, { key: 'tokens[0]', why: /either tokenEnv or token, not both/ });
  });

  void test('a missing file, given explicitly', async () => {
    const missing = path.join(dir, 'nope.yaml');
    await assert.rejects(loadConfig({ file: missing, env: {} }), (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.equal(err.key, '');
      assert.match(err.message, /configuration file not found/);
      assert.ok(err.message.includes(missing));
      return true;
    });
  });

  void test('YAML syntax errors give the line and column and no source text', async () => {
    const err = await rejects(`listen: 127.0.0.1:7070\ntoken: "${SECRET_A}": x\n`, { key: '', why: /^YAML syntax error: .+ \(.*:2:\d+\)$/, source: 'file' });
    assert.ok(!err.message.includes('^'), err.message);
    await rejects('limits:\n  perHost: 1\n  perHost: 2\n', { key: '', why: /YAML syntax error: Map keys must be unique \(.*:3:3\)/ });
    await rejects('a: b: c\n', { key: '', why: /YAML syntax error: .* \(.*:1:4\)/ });
  });
});

void describe('environment and command-line overrides', () => {
  const FILE = 'listen: 127.0.0.1:8000\nadminListen: 127.0.0.1:8001\ndataDir: /from/file\nlogLevel: warn\nhostKeys:\n  policy: strict\nlimits:\n  globalConcurrency: 10\n';

  void test('the environment wins over the file', async () => {
    const config = await load(FILE, {
      env: {
        LEASH_LISTEN: '127.0.0.1:9000',
        LEASH_ADMIN_LISTEN: 'off',
        LEASH_STORE: 'sqlite:/env/db.sqlite',
        LEASH_DATA_DIR: '/from/env',
        LEASH_LOG_LEVEL: 'trace',
        LEASH_HOST_KEY_POLICY: 'accept-new',
        LEASH_GLOBAL_CONCURRENCY: '128',
      },
    });
    assert.deepEqual(config.listen, { host: '127.0.0.1', port: 9000 });
    assert.equal(config.adminListen, null);
    assert.equal(config.store, 'sqlite:/env/db.sqlite');
    assert.equal(config.dataDir, '/from/env');
    assert.equal(config.hostKeys.knownHostsFile, '/from/env/known_hosts');
    assert.equal(config.logLevel, 'trace');
    assert.equal(config.hostKeys.policy, 'accept-new');
    assert.equal(config.limits.globalConcurrency, 128);
  });

  void test('an empty environment variable counts as unset', async () => {
    const config = await load(FILE, { env: { LEASH_LISTEN: '', LEASH_LOG_LEVEL: '' } });
    assert.deepEqual(config.listen, { host: '127.0.0.1', port: 8000 });
    assert.equal(config.logLevel, 'warn');
  });

  void test('command-line overrides win over the environment', async () => {
    const config = await load(FILE, {
      env: { LEASH_LISTEN: '127.0.0.1:9000', LEASH_DATA_DIR: '/from/env', LEASH_ADMIN_LISTEN: '127.0.0.1:9001' },
      overrides: { listen: '[::1]:9100', dataDir: '~/cli-data', adminListen: 'localhost:9101' },
    });
    assert.deepEqual(config.listen, { host: '::1', port: 9100 });
    assert.deepEqual(config.adminListen, { host: 'localhost', port: 9101 });
    assert.equal(config.dataDir, `${home}/cli-data`);
    assert.equal(config.store, `sqlite:${home}/cli-data/leash.db`);
  });

  void test('a bad override names the variable or the option', async () => {
    await rejects(FILE, { key: 'listen', why: /bad address "nowhere"/, source: /\(environment variable LEASH_LISTEN\)$/ }, { env: { LEASH_LISTEN: 'nowhere' } });
    await rejects(
      FILE,
      { key: 'limits.globalConcurrency', why: /whole number of at least 1, got "0"/, source: /\(environment variable LEASH_GLOBAL_CONCURRENCY\)$/ },
      { env: { LEASH_GLOBAL_CONCURRENCY: '0' } },
    );
    await rejects(FILE, { key: 'logLevel', why: /got "loud"/, source: /LEASH_LOG_LEVEL/ }, { env: { LEASH_LOG_LEVEL: 'loud' } });
    await rejects(FILE, { key: 'hostKeys.policy', why: /got "yolo"/, source: /LEASH_HOST_KEY_POLICY/ }, { env: { LEASH_HOST_KEY_POLICY: 'yolo' } });
    await rejects(null, { key: 'store', why: /needs a path/, source: /LEASH_STORE/ }, { env: { LEASH_STORE: 'sqlite:' } });
    await rejects(null, { key: 'listen', why: /port must be a number from 0 to 65535/, source: /\(option --listen\)$/ }, { overrides: { listen: '127.0.0.1:99999' } });
    await rejects(null, { key: 'adminListen', why: /bad address/, source: /\(option --admin-listen\)$/ }, { overrides: { adminListen: 'x' } });
  });

  void test('the admin listener: loopback 7071 by default, a unix socket, or off', async () => {
    assert.deepEqual((await loadConfig({ env: {}, overrides: { adminListen: 'unix:/tmp/leash-admin.sock' } })).adminListen, { path: '/tmp/leash-admin.sock' });
    assert.equal((await loadConfig({ env: {}, overrides: { adminListen: 'off' } })).adminListen, null);
    assert.deepEqual((await loadConfig({ env: {} })).adminListen, { host: '127.0.0.1', port: 7071 });
  });
});

void describe('assertSafeListen', () => {
  const withTokens = `tokens:\n  - name: ci\n    token: "${SECRET_A}"\n    scopes: [run]\n`;

  void test('refuses 0.0.0.0 without tokens', async () => {
    const config = await load(null, { overrides: { listen: '0.0.0.0:7070' } });
    assert.throws(
      () => assertSafeListen(config),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError);
        assert.equal(err.key, 'listen');
        assert.equal(err.message, 'refusing to listen on 0.0.0.0:7070 without any API token; add tokens or listen on 127.0.0.1');
        return true;
      },
    );
    const v6 = await load(null, { overrides: { listen: '[::]:7070' } });
    assert.throws(() => assertSafeListen(v6), /refusing to listen on \[::\]:7070/);
    const named = await load(null, { overrides: { listen: 'leash.example.com:7070' } });
    assert.throws(() => assertSafeListen(named), /refusing to listen on leash\.example\.com:7070/);
  });

  void test('refuses a non-loopback admin listener without tokens', async () => {
    const config = await load(null, { overrides: { adminListen: '0.0.0.0:7071' } });
    assert.throws(
      () => assertSafeListen(config),
      (err: unknown) => err instanceof ConfigError && err.key === 'adminListen' && /0\.0\.0\.0:7071 without any API token/.test(err.message),
    );
  });

  void test('accepts 0.0.0.0 with tokens', async () => {
    const config = await load(withTokens, { overrides: { listen: '0.0.0.0:7070', adminListen: '0.0.0.0:7071' } });
    assert.doesNotThrow(() => assertSafeListen(config));
  });

  void test('accepts loopback without tokens: 127.0.0.1, ::1, localhost', async () => {
    for (const listen of ['127.0.0.1:7070', '127.8.9.10:7070', '[::1]:7070', 'localhost:7070']) {
      const config = await load(null, { overrides: { listen } });
      assert.doesNotThrow(() => assertSafeListen(config), listen);
    }
  });
});

void describe('parseListenAddress, isLoopback, formatListenAddress', () => {
  void test('parses HOST:PORT and [IPV6]:PORT', () => {
    assert.deepEqual(parseListenAddress('127.0.0.1:7070', 'listen'), { host: '127.0.0.1', port: 7070 });
    assert.deepEqual(parseListenAddress('[::1]:1', 'listen'), { host: '::1', port: 1 });
    assert.deepEqual(parseListenAddress('[fe80::1]:65535', 'listen'), { host: 'fe80::1', port: 65535 });
    assert.deepEqual(parseListenAddress('api.example.com:443', 'listen'), { host: 'api.example.com', port: 443 });
  });

  void test('refuses with the key named', () => {
    for (const text of ['', '7070', ':7070', '1.2.3:80', '300.1.1.1:80', '[::1]', '[nope]:80', '::1:80', 'host:65536', 'host:-1', 'host:', 'bad_host!:80']) {
      assert.throws(
        () => parseListenAddress(text, 'adminListen'),
        (err: unknown) => err instanceof ConfigError && err.key === 'adminListen' && err.message.startsWith('adminListen: bad address'),
        JSON.stringify(text),
      );
    }
  });

  void test('isLoopback', () => {
    for (const host of ['127.0.0.1', '127.255.0.9', '::1', '[::1]', '0:0:0:0:0:0:0:1', '::ffff:127.0.0.1', 'localhost', 'LocalHost']) {
      assert.equal(isLoopback(host), true, host);
    }
    for (const host of ['0.0.0.0', '::', '10.0.0.1', '128.0.0.1', '::2', 'example.com', 'localhost.example.com', '']) {
      assert.equal(isLoopback(host), false, host);
    }
  });

  void test('formatListenAddress brackets IPv6', () => {
    assert.equal(formatListenAddress({ host: '::1', port: 7070 }), '[::1]:7070');
    assert.equal(formatListenAddress({ host: '127.0.0.1', port: 7070 }), '127.0.0.1:7070');
  });
});
