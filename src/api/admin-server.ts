import Fastify, { LogController, type FastifyInstance, type FastifyReply } from 'fastify';
import type { Logger } from 'pino';
import { ProfilerBusyError, type Profiler, type ProfileFormat } from '../diagnostics/profiler.ts';
import type { Redactor } from '../diagnostics/redaction.ts';
import { groupResources, listResources, renderResources } from '../diagnostics/resource-dump.ts';
import { renderTasks, tasksJson } from '../diagnostics/task-dump.ts';
import { groupLeaks, renderLeaks } from '../diagnostics/leak-dump.ts';
import type { LeakWatchdog } from '../lifecycle/leak-watchdog.ts';
import type { ResourceLedger } from '../lifecycle/ledger.ts';
import type { TaskTable } from '../lifecycle/task-table.ts';
import { ApiError, handleError } from './api-errors.ts';
import type { TokenAuth } from './token-auth.ts';

/** What the admin (diagnostics) listener works with. */
export interface AdminDeps {
  readonly auth: TokenAuth;
  readonly ledger: ResourceLedger;
  readonly tasks: TaskTable;
  readonly watchdog: LeakWatchdog | null;
  readonly profiler: Profiler;
  readonly redact: Redactor;
  readonly logger: Logger;
  /** Ledger owners that are components, not tasks. */
  readonly components: ReadonlySet<string>;
  /** Most entries a debug=2 dump lists. */
  readonly dumpLimit: number;
  /** Longest CPU profile, in seconds; also the default (Go's is 30). */
  readonly maxProfileSeconds: number;
}

const INDEX = `leash debug endpoints (admin scope):

  /debug/tasks?debug=1          live tasks grouped by stage, wait and creation site
  /debug/tasks?debug=2          every live task: stage history and creation stack
  /debug/resources?debug=1|2    the resource ledger, grouped or listed
  /debug/leaks                  what the leak watchdog flags now
  /debug/pprof/profile?seconds=N[&format=cpuprofile]   CPU profile (pprof, or Chrome DevTools)
  /debug/pprof/heap             sampled heap profile (pprof)
  /debug/heapsnapshot?confirm=1 full V8 heap snapshot: PAUSES THE PROCESS while it is taken

Add format=json to the dumps for machines.
`;

/**
 * The admin listener: leash's pprof (DESIGN.md "Debug"). Served apart from the API —
 * exposing profiles on the API port is a known hole (kubelet CVE-2019-11248): function names,
 * paths, and `profile?seconds=` as a lever — and behind the admin scope when tokens exist.
 */
export async function buildAdminApi(deps: AdminDeps): Promise<FastifyInstance> {
  const app = Fastify({
    loggerInstance: deps.logger.child({ listener: 'admin' }),
    logController: new LogController({ disableRequestLogging: true }),
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false } },
    return503OnClosing: true,
  });
  app.setErrorHandler(handleError);
  app.setNotFoundHandler((request, reply) => handleError(new ApiError('not-found', `no route ${request.method} ${request.url.split('?')[0] ?? ''}; see /debug/`), request, reply));
  app.addHook('onRequest', (request, _reply, done) => {
    try {
      deps.auth.authenticate(request.headers.authorization).require('admin');
      done();
    } catch (err) {
      done(err as Error);
    }
  });

  app.get('/', (_request, reply) => reply.redirect('/debug/'));
  app.get('/debug/', (_request, reply) => reply.type('text/plain; charset=utf-8').send(INDEX));

  app.get('/debug/tasks', (request, reply) => {
    const { debug, json } = dumpQuery(request.query);
    const tasks = deps.tasks.live();
    const options = { now: Date.now(), redact: deps.redact, limit: deps.dumpLimit };
    if (json) return reply.send(tasksJson(tasks, debug, options));
    return text(reply, renderTasks(tasks, debug, options));
  });

  app.get('/debug/resources', (request, reply) => {
    const { debug, json } = dumpQuery(request.query);
    const entries = deps.ledger.live();
    const now = Date.now();
    if (json) {
      if (debug === 1) return reply.send({ total: entries.length, groups: groupResources(entries, deps.components, now) });
      const { items, omitted } = listResources(entries, deps.tasks, deps.components, now, deps.dumpLimit);
      return reply.send({ total: entries.length, resources: items, omitted });
    }
    return text(reply, renderResources(entries, debug, { tasks: deps.tasks, components: deps.components, now, limit: deps.dumpLimit }));
  });

  app.get('/debug/leaks', (request, reply) => {
    const { json } = dumpQuery(request.query);
    const findings = deps.watchdog?.findings() ?? [];
    const counts = deps.watchdog?.counts() ?? new Map<string, number>();
    const now = Date.now();
    if (json) return reply.send({ enabled: deps.watchdog !== null, flagged: findings.length, counts: Object.fromEntries(counts), groups: groupLeaks(findings, now) });
    return text(reply, renderLeaks(findings, counts, deps.watchdog !== null, now));
  });

  app.get('/debug/pprof/profile', async (request, reply) => {
    const query = request.query as Record<string, string | undefined>;
    const seconds = query.seconds === undefined ? Math.min(30, deps.maxProfileSeconds) : Number(query.seconds);
    if (!Number.isInteger(seconds) || seconds < 1) throw new ApiError('bad-request', 'querystring.seconds: a whole number of seconds, at least 1', { field: 'seconds' });
    const format = (query.format ?? 'pprof') as ProfileFormat;
    if (format !== 'pprof' && format !== 'cpuprofile') throw new ApiError('bad-request', 'querystring.format: pprof or cpuprofile', { field: 'format' });
    const controller = new AbortController();
    reply.raw.once('close', () => {
      if (!reply.raw.writableFinished) controller.abort();
    });
    const result = await busyIsConflict(() => deps.profiler.cpu(Math.min(seconds, deps.maxProfileSeconds), format, controller.signal));
    return attachment(reply, result.filename, result.contentType).send(result.body);
  });

  app.get('/debug/pprof/heap', async (_request, reply) => {
    const result = await busyIsConflict(() => deps.profiler.heap());
    return attachment(reply, result.filename, result.contentType).send(result.body);
  });

  app.get('/debug/heapsnapshot', async (request, reply) => {
    const query = request.query as Record<string, string | undefined>;
    if (query.confirm !== '1') {
      throw new ApiError('bad-request', 'a heap snapshot pauses the whole process for seconds and needs several times the heap in memory; add confirm=1 (take the instance out of rotation first)', { field: 'confirm' });
    }
    deps.logger.warn('taking a full heap snapshot: the process pauses until it is written');
    const snapshot = await busyIsConflict(() => Promise.resolve(deps.profiler.heapSnapshot()));
    return attachment(reply, snapshot.filename, 'application/json').send(snapshot.stream);
  });

  await app.ready();
  return app as unknown as FastifyInstance;
}

function dumpQuery(query: unknown): { debug: 1 | 2; json: boolean } {
  const q = (query ?? {}) as Record<string, string | undefined>;
  const debug = q.debug === undefined ? 1 : Number(q.debug);
  if (debug !== 1 && debug !== 2) throw new ApiError('bad-request', 'querystring.debug: 1 (grouped) or 2 (every entry)', { field: 'debug' });
  const format = q.format ?? 'text';
  if (format !== 'text' && format !== 'json') throw new ApiError('bad-request', 'querystring.format: text or json', { field: 'format' });
  return { debug, json: format === 'json' };
}

function text(reply: FastifyReply, body: string): FastifyReply {
  return reply.type('text/plain; charset=utf-8').send(body);
}

function attachment(reply: FastifyReply, filename: string, contentType: string): FastifyReply {
  return reply.type(contentType).header('content-disposition', `attachment; filename="${filename}"`);
}

async function busyIsConflict<T>(run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (err) {
    if (err instanceof ProfilerBusyError) throw new ApiError('conflict', 'another profile or snapshot is being taken; one at a time');
    throw err;
  }
}
