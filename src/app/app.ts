import { lstat, unlink } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import pino, { type Logger } from 'pino';
import { buildAdminApi } from '../api/admin-server.ts';
import { buildApi } from '../api/server.ts';
import { TokenAuth } from '../api/token-auth.ts';
import { createMetrics, type LeashMetrics } from '../diagnostics/metrics.ts';
import { Profiler, PROFILER_OWNER } from '../diagnostics/profiler.ts';
import { createRedactor, DEFAULT_REDACT_PATTERNS } from '../diagnostics/redaction.ts';
import { LEAK_KINDS, LeakWatchdog } from '../lifecycle/leak-watchdog.ts';
import type { ResourceHandle, ResourceLedger } from '../lifecycle/ledger.ts';
import type { TaskTable } from '../lifecycle/task-table.ts';
import { BatchService } from '../service/batch-service.ts';
import { Identities } from '../service/identities.ts';
import { Scheduler } from '../service/scheduler.ts';
import { hardDeadlineMs } from '../service/task-spec.ts';
import { AD_HOC_FLOW, TaskService } from '../service/task-service.ts';
import { startDemoTarget, type DemoTarget } from '../ssh/demo-target.ts';
import { parseSingleKey } from '../ssh/ephemeral-keys.ts';
import { ConnectionPool, POOL_OWNER } from '../ssh/connection-pool.ts';
import { HostKeyVerifier } from '../ssh/host-key-verifier.ts';
import { SshRemoteExec } from '../ssh/remote-exec.ts';
import { openStore } from '../store/open-store.ts';
import type { TaskStore } from '../store/task-store.ts';
import { formatListenAddress, type AdminAddress, type ServeConfig } from './config.ts';

/** Secrets never reach a log line, whatever object they hide in (pino redaction paths). */
export const REDACTED_PATHS = [
  'authorization',
  'req.headers.authorization',
  '*.password',
  '*.passphrase',
  '*.secret',
  '*.token',
  '*.privateKey',
  '*.stdin',
  '*.env',
];

/** A listener could not bind its address (in use, not permitted, no such address): names which one and why. */
export class ListenError extends Error {
  override readonly name = 'ListenError';
}

/** Binds a listener; a failure becomes a {@link ListenError} naming the listener, address and setting. */
async function listenOrExplain(what: string, setting: string, shown: string, listen: () => Promise<string>): Promise<string> {
  try {
    return await listen();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === undefined || !/^E[A-Z]+$/.test(code)) throw err;
    const why = code === 'EADDRINUSE' ? 'the address is in use (is another leash serve running?)' : code === 'EACCES' ? 'permission denied' : code === 'EADDRNOTAVAIL' ? 'no such local address' : code;
    throw new ListenError(`cannot listen on ${shown} for the ${what}: ${why}; choose another with ${setting}`, { cause: err });
  }
}

/** A running `leash serve`. */
export interface RunningService {
  /** Base URL of the API, e.g. `http://127.0.0.1:7070`. */
  readonly url: string;
  /** Base URL of the admin (/debug) listener, `unix:/path` for a socket, or null when off. */
  readonly adminUrl: string | null;
  /** The built-in demo target, when started with `demo`. */
  readonly demo: DemoTarget | null;
  readonly logger: Logger;
  /**
   * Graceful shutdown: /readyz fails and no new work is taken, running tasks get the
   * configured grace, the rest are cancelled (remote processes stopped), everything is
   * persisted, then the listener, the store and the demo target close. Idempotent.
   */
  stop(): Promise<void>;
}

/** What {@link startService} runs with besides the configuration. */
export interface ServiceOptions {
  readonly demo: boolean;
  readonly env: NodeJS.ProcessEnv;
  readonly ledger: ResourceLedger;
  readonly tasks: TaskTable;
  /** Where log lines go (default stdout); tests capture them. */
  readonly logDestination?: NodeJS.WritableStream;
}

/** How long the demo target's host key check and identity live: the life of the service. */
const DEMO_IDENTITY = 'demo';

/** Ledger owners that are long-lived parts of the service rather than tasks. */
export const COMPONENT_OWNERS: ReadonlySet<string> = new Set(['store', 'demo-target', 'retention', 'event-stream', 'task-service', POOL_OWNER, PROFILER_OWNER, 'admin-listener']);

/**
 * Wires the service together (the one composition root, STYLE.md) and starts it: store
 * (tasks left unfinished by a previous process become `interrupted`), identities, host keys,
 * scheduler, task and batch services, metrics and the HTTP API. Shutdown runs in reverse.
 */
export async function startService(config: ServeConfig, options: ServiceOptions): Promise<RunningService> {
  const { ledger, tasks } = options;
  const logger = pino({ level: config.logLevel, redact: { paths: REDACTED_PATHS, censor: '[redacted]' } }, options.logDestination ?? process.stdout);
  const cleanups: Array<() => Promise<void> | void> = [];
  const unwind = async (): Promise<void> => {
    for (const cleanup of cleanups.splice(0).reverse()) {
      try {
        await cleanup();
      } catch (err) {
        logger.error({ err }, 'shutdown step failed');
      }
    }
  };
  try {
    const store: TaskStore = await openStore(resolveStoreUrl(config), { ledger });
    cleanups.push(() => store.close());
    const interrupted = await store.interruptUnfinished('the leash process that ran this task stopped before it finished', Date.now());
    if (interrupted.length > 0) logger.warn({ interrupted: interrupted.length }, 'tasks left unfinished by a previous process are now interrupted');

    const identities = await Identities.load(config.identities, options.env);
    let demo: DemoTarget | null = null;
    if (options.demo) {
      demo = await startDemoTarget({ ledger });
      const target = demo;
      cleanups.push(() => target.close());
      const key = parseSingleKey(demo.clientPrivateKey);
      if (!key) throw new Error('demo target: its client key does not parse');
      identities.add({
        name: DEMO_IDENTITY,
        user: demo.user,
        credentials: { keys: [{ path: 'demo', parsed: key }], agentSocket: null, password: null },
        hostKeys: HostKeyVerifier.fromLines([demo.knownHostsLine], 'strict', 'demo target'),
      });
    }
    const hostKeys = await HostKeyVerifier.load({
      policy: config.hostKeys.policy,
      readFiles: config.hostKeys.readFiles,
      ownFile: config.hostKeys.knownHostsFile,
    });
    for (const warning of hostKeys.warnings) logger.warn({ warning }, 'known_hosts');
    if (config.hostKeys.policy === 'off') logger.warn('host key policy off: host keys are not checked');

    const scheduler = new Scheduler({
      globalConcurrency: config.limits.globalConcurrency,
      perTarget: config.limits.perHost,
      perTargetHandshakes: config.limits.perTargetHandshakes,
    });
    scheduler.openFlow(AD_HOC_FLOW, { capacity: config.limits.queueCapacity });
    const pool = new ConnectionPool(ledger, {
      maxConnectionsPerKey: config.pool.maxConnectionsPerHost,
      maxChannelsPerConnection: config.pool.maxChannelsPerConnection,
      idleTtlMs: config.pool.idleTtlMs,
    });
    // Closed after the task service drained (cleanups run newest first).
    cleanups.push(() => pool.close());
    const taskService = new TaskService({
      store,
      scheduler,
      remote: new SshRemoteExec({ pool, jumpHandshakes: config.pool.maxHandshakesPerJumpHost }),
      ledger,
      tasks,
      identities,
      hostKeys,
      logger,
      policy: {
        timeouts: config.defaults.timeouts,
        keepalive: config.defaults.keepalive,
        maxOutputBytes: config.defaults.maxOutputBytes,
        reuse: config.pool.reuse,
        defaultIdentity: config.defaultIdentity ?? (demo ? DEMO_IDENTITY : null),
        queueCapacity: config.limits.queueCapacity,
        eventOutputBudget: 256 * 1024,
        finishedLogs: 1000,
      },
    });
    taskService.reapOrphans(interrupted);
    const batchService = new BatchService({ store, scheduler, tasks: taskService, logger, maxHosts: config.limits.maxBatchHosts, maxQueuedTasks: config.limits.maxQueuedBatchTasks });
    cleanups.push(() => taskService.close());

    const maxDeadlineMs = hardDeadlineMs(config.defaults.timeouts);
    if (maxDeadlineMs === null) {
      const disabled = Object.entries(config.defaults.timeouts).filter(([key, ms]) => key !== 'idleMs' && ms <= 0).map(([key]) => `defaults.timeouts.${key}`);
      logger.warn({ disabled }, `a stage deadline is disabled (${disabled.join(', ')}): a task stuck there waits forever; only the leak watchdog's maxTaskAgeMs flags it`);
    }
    const watchdog = config.diagnostics.watchdogIntervalMs > 0
      ? new LeakWatchdog({ ledger, tasks, log: logger.child({ component: 'leak-watchdog' }), intervalMs: config.diagnostics.watchdogIntervalMs, components: COMPONENT_OWNERS, maxTaskAgeMs: config.diagnostics.maxTaskAgeMs })
      : null;
    watchdog?.start();
    cleanups.push(() => watchdog?.stop());
    const profiler = new Profiler({ ledger });
    if (config.diagnostics.heapSampling) profiler.start();
    cleanups.push(() => profiler.stop());

    const metrics: LeashMetrics = createMetrics({
      ledger,
      tasks,
      leaks: () => watchdog?.counts() ?? new Map(),
      pool: () => pool.stats(),
      leakKinds: LEAK_KINDS,
      maxTaskDeadlineSeconds: maxDeadlineMs === null ? 0 : maxDeadlineMs / 1000,
    });
    cleanups.push(() => metrics.close());
    const retention = startRetention(store, config, ledger, logger);
    cleanups.push(() => retention.release());

    const auth = new TokenAuth(config.tokens);
    const api: FastifyInstance = await buildApi({
      tasks: taskService,
      batches: batchService,
      store,
      auth,
      metrics,
      ledger,
      logger,
      limits: { bodyLimitBytes: config.limits.bodyLimitBytes, maxWaitSeconds: config.limits.maxWaitSeconds, maxBatchHosts: config.limits.maxBatchHosts },
      defaultIdentity: config.defaultIdentity ?? (demo ? DEMO_IDENTITY : null),
    });
    cleanups.push(() => api.close());
    const address = await listenOrExplain('API', 'listen / --listen / LEASH_LISTEN', formatListenAddress(config.listen), () => api.listen({ host: config.listen.host, port: config.listen.port }));

    let adminUrl: string | null = null;
    if (config.adminListen) {
      const admin = await buildAdminApi({
        auth,
        ledger,
        tasks,
        watchdog,
        profiler,
        redact: createRedactor([...DEFAULT_REDACT_PATTERNS, ...config.diagnostics.redactPatterns]),
        logger,
        components: COMPONENT_OWNERS,
        dumpLimit: config.diagnostics.dumpLimit,
        maxProfileSeconds: config.diagnostics.maxProfileSeconds,
      });
      cleanups.push(() => admin.close());
      const at = config.adminListen;
      adminUrl = await listenOrExplain('admin (/debug) listener', 'adminListen / --admin-listen / LEASH_ADMIN_LISTEN (or off)', 'path' in at ? `unix:${at.path}` : formatListenAddress(at), () => listenAdmin(admin, at, ledger));
    }
    logger.info({ url: address, adminUrl, demo: demo !== null, interrupted: interrupted.length }, 'leash serve listening');

    // Drain while the API still answers (readyz says draining, waiting callers and event
    // streams get their results); then close the listener and the rest, newest first.
    const shutdown = async (): Promise<void> => {
      await taskService.drain(config.shutdownGraceMs);
      await batchService.idle();
      await unwind();
      logger.info('leash serve stopped');
    };
    let stopping: Promise<void> | null = null;
    return { url: address, adminUrl, demo, logger, stop: () => (stopping ??= shutdown()) };
  } catch (err) {
    await unwind();
    throw err;
  }
}

/**
 * Starts the admin listener on a TCP address or a unix socket. A socket file left by a
 * process that died is removed, but only when nothing answers on it: a second leash must
 * not steal a live one's socket.
 */
async function listenAdmin(admin: FastifyInstance, at: AdminAddress, ledger: ResourceLedger): Promise<string> {
  if (!('path' in at)) return admin.listen({ host: at.host, port: at.port });
  const stat = await lstat(at.path).catch(() => null);
  if (stat?.isSocket() && !(await answers(at.path, ledger))) await unlink(at.path);
  await admin.listen({ path: at.path });
  return `unix:${at.path}`;
}

/** Whether something accepts connections on a unix socket (bounded: 1 s; socket and timer in the ledger). */
function answers(socketPath: string, ledger: ResourceLedger): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = net.connect({ path: socketPath });
    const handle = ledger.open('socket', 'admin-listener', { purpose: 'stale-socket-probe', path: socketPath });
    handle.attach(probe);
    probe.once('close', () => handle.release());
    const done = (result: boolean): void => {
      timer.release();
      probe.destroy();
      resolve(result);
    };
    const timer = ledger.timeout('admin-listener', 1000, () => done(true), { purpose: 'stale-socket-probe' });
    probe.once('connect', () => done(true));
    probe.once('error', () => done(false));
  });
}

/** Prunes old history now and every interval (a ledger timer, re-armed after each run). */
function startRetention(store: TaskStore, config: ServeConfig, ledger: ResourceLedger, logger: Logger): { release: () => void } {
  let timer: ResourceHandle | null = null;
  let stopped = false;
  const run = async (): Promise<void> => {
    try {
      const removed = await store.pruneHistory({ maxAgeMs: config.retention.maxAgeMs, maxRows: config.retention.maxRows }, Date.now());
      if (removed > 0) logger.info({ removed }, 'pruned task history');
    } catch (err) {
      logger.error({ err }, 'could not prune task history');
    }
    if (!stopped) timer = ledger.timeout('retention', config.retention.intervalMs, () => void run(), { purpose: 'history-retention' });
  };
  void run();
  return {
    release: () => {
      stopped = true;
      timer?.release();
    },
  };
}

/** `sqlite:` paths are relative to the data directory when relative. */
function resolveStoreUrl(config: ServeConfig): string {
  const m = /^sqlite:(.*)$/.exec(config.store);
  if (!m || m[1] === ':memory:' || path.isAbsolute(m[1] ?? '')) return config.store;
  return `sqlite:${path.resolve(m[1] ?? '')}`;
}
