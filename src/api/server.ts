import net from 'node:net';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import Fastify, { LogController, type FastifyInstance, type FastifyReply } from 'fastify';
import type { Logger } from 'pino';
import type { LeashMetrics } from '../diagnostics/metrics.ts';
import type { ResourceLedger } from '../lifecycle/ledger.ts';
import type { BatchRequest, BatchService } from '../service/batch-service.ts';
import { HostListError, parseHostList, type HostSpec } from '../service/host-list.ts';
import type { TaskRequest, TaskService } from '../service/task-service.ts';
import type { TaskStore } from '../store/task-store.ts';
import { ApiError, handleError } from './api-errors.ts';
import { streamTaskEvents } from './event-stream.ts';
import {
  BatchRequestSchema,
  BatchSchema,
  ErrorSchema,
  IdParamsSchema,
  TaskListQuerySchema,
  TaskPageSchema,
  TaskRequestSchema,
  TaskSchema,
  type BatchRequestBody,
  type TaskRequestBody,
} from './schemas.ts';
import type { Caller, TokenAuth } from './token-auth.ts';
import { batchJson, taskJson } from './views.ts';

/** What the HTTP API works with. */
export interface ApiDeps {
  readonly tasks: TaskService;
  readonly batches: BatchService;
  readonly store: TaskStore;
  readonly auth: TokenAuth;
  readonly metrics: LeashMetrics;
  readonly ledger: ResourceLedger;
  readonly logger: Logger;
  readonly limits: {
    readonly bodyLimitBytes: number;
    /** Longest `wait` honoured on POST /v1/tasks, in seconds. */
    readonly maxWaitSeconds: number;
    /** Most hosts in one batch. */
    readonly maxBatchHosts: number;
  };
  /** The identity a request without one runs as (for token checks). */
  readonly defaultIdentity: string | null;
}

declare module 'fastify' {
  interface FastifyRequest {
    /** Who is calling (set by the auth hook on every /v1 and /metrics request). */
    caller: Caller;
  }
}

/** Routes open without a token: probes and the API's own documentation. */
const PUBLIC = [/^\/healthz$/, /^\/readyz$/, /^\/openapi\.json$/, /^\/docs(\/|$)/];

const errors = { 400: ErrorSchema, 401: ErrorSchema, 403: ErrorSchema, 404: ErrorSchema, 413: ErrorSchema, 429: ErrorSchema, 503: ErrorSchema };

/**
 * The HTTP API of DESIGN.md "Contracts": tasks, batches, server-sent events, metrics and
 * probes, with bearer-token auth and one JSON error shape. Requests are validated by the
 * same TypeBox schemas the OpenAPI document at /openapi.json is generated from.
 */
export async function buildApi(deps: ApiDeps): Promise<FastifyInstance> {
  const app = Fastify({
    loggerInstance: deps.logger,
    // One audit line per task is the log's unit, not one line per HTTP request.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: deps.limits.bodyLimitBytes,
    // Unknown fields and wrong types are errors: never drop or coerce a caller's input.
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, useDefaults: false, allErrors: false } },
    return503OnClosing: true,
  }).withTypeProvider<TypeBoxTypeProvider>();

  app.setErrorHandler(handleError);
  app.setNotFoundHandler((request, reply) => handleError(new ApiError('not-found', `no route ${request.method} ${request.url.split('?')[0] ?? ''}`), request, reply));
  app.decorateRequest('caller', null as unknown as Caller);
  app.addHook('onRequest', (request, _reply, done) => {
    const path = request.url.split('?')[0] ?? '';
    try {
      if (!PUBLIC.some((p) => p.test(path))) request.caller = deps.auth.authenticate(request.headers.authorization);
      done();
    } catch (err) {
      done(err as Error);
    }
  });

  await app.register(swagger, {
    openapi: {
      info: { title: 'leash', version: '1', description: 'Run commands on fleets of machines over SSH. Errors are {error: {code, message, field?}}.' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
  });
  await app.register(swaggerUi, { routePrefix: '/docs' });

  app.get('/openapi.json', { schema: { hide: true } }, () => app.swagger());
  app.get('/healthz', { schema: { description: 'The process is up.' } }, () => ({ status: 'ok' }));
  app.get('/readyz', { schema: { description: 'The store answers and the service is not draining.' } }, async (_request, reply) => {
    if (deps.tasks.draining) return reply.status(503).send({ status: 'draining' });
    try {
      await deps.store.ping();
    } catch {
      return reply.status(503).send({ status: 'store-unavailable' });
    }
    return { status: 'ready' };
  });
  app.get('/metrics', { schema: { description: 'Prometheus metrics (text exposition format).' } }, async (request, reply) => {
    request.caller.require('read');
    return reply.type(deps.metrics.contentType).send(await deps.metrics.render());
  });

  app.post(
    '/v1/tasks',
    { schema: { description: 'Run a command on one host.', body: TaskRequestSchema, response: { 200: TaskSchema, 202: TaskSchema, ...errors } } },
    async (request, reply) => {
      const body = request.body;
      const identity = body.identity ?? deps.defaultIdentity;
      checkHost(body.host);
      request.caller.mayRun(identity, body.host);
      const jump = jumpHops(body.jump);
      // A jump host is a host leash logs in to: the token must allow it like the target.
      for (const hop of jump) request.caller.mayRun(identity, hop.host);
      const task = await deps.tasks.submit(taskRequest(body, jump), request.caller.name);
      const wait = Math.min(body.wait ?? 0, deps.limits.maxWaitSeconds);
      if (wait > 0) {
        const settled = await deps.tasks.waitFor(task.id, wait * 1000, abortOnClose(reply));
        if (settled && settled.status !== 'queued' && settled.status !== 'running') return reply.status(200).send(taskJson(settled));
        return reply.status(202).send(taskJson(settled ?? task));
      }
      return reply.status(202).send(taskJson(task));
    },
  );

  app.get('/v1/tasks', { schema: { description: 'List tasks, newest first.', querystring: TaskListQuerySchema, response: { 200: TaskPageSchema, ...errors } } }, async (request) => {
    request.caller.require('read');
    const q = request.query;
    const limit = q.limit === undefined ? 50 : Number(q.limit);
    if (limit < 1 || limit > 1000) throw new ApiError('bad-request', 'querystring.limit: must be from 1 to 1000', { field: 'limit' });
    const page = await deps.store.listTasks({
      limit,
      ...(q.status ? { status: q.status } : {}),
      ...(q.host ? { host: q.host } : {}),
      ...(q.batch ? { batchId: q.batch } : {}),
      ...(q.cursor ? { cursor: q.cursor } : {}),
    });
    return { tasks: page.tasks.map(taskJson), nextCursor: page.nextCursor };
  });

  app.get('/v1/tasks/:id', { schema: { description: 'One task.', params: IdParamsSchema, response: { 200: TaskSchema, ...errors } } }, async (request) => {
    request.caller.require('read');
    const task = await deps.tasks.get(request.params.id);
    if (!task) throw new ApiError('not-found', `no task ${request.params.id}`);
    return taskJson(task);
  });

  app.post('/v1/tasks/:id/cancel', { schema: { description: 'Cancel a task (idempotent); the remote process is stopped.', params: IdParamsSchema, response: { 200: TaskSchema, ...errors } } }, async (request) => {
    request.caller.require('run');
    return taskJson(await deps.tasks.cancel(request.params.id, request.caller.name));
  });

  app.get('/v1/tasks/:id/events', { schema: { description: 'Server-sent events: stage, output, result. Resumable with Last-Event-ID.', params: IdParamsSchema } }, async (request, reply) => {
    request.caller.require('read');
    const task = await deps.tasks.get(request.params.id);
    if (!task) throw new ApiError('not-found', `no task ${request.params.id}`);
    const header = request.headers['last-event-id'];
    streamTaskEvents({
      request,
      reply,
      task,
      log: deps.tasks.events(task.id),
      lastEventId: typeof header === 'string' && header.length > 0 ? header : null,
      ledger: deps.ledger,
      load: () => deps.tasks.get(task.id),
    });
  });

  app.post('/v1/batches', { schema: { description: 'Run a command on many hosts.', body: BatchRequestSchema, response: { 202: BatchSchema, ...errors } } }, async (request, reply) => {
    const body = request.body;
    const hosts = batchHosts(body, deps.limits.maxBatchHosts);
    const identity = body.identity ?? deps.defaultIdentity;
    for (const h of hosts) request.caller.mayRun(identity, h.host);
    const jump = jumpHops(body.jump);
    for (const hop of jump) request.caller.mayRun(identity, hop.host);
    const batch = await deps.batches.submit(batchRequest(body, hosts, jump), request.caller.name);
    return reply.status(202).send(batchJson(await deps.batches.get(batch.id)));
  });

  app.get('/v1/batches/:id', { schema: { description: 'A batch: counts by status and error code, hosts grouped by identical output.', params: IdParamsSchema, response: { 200: BatchSchema, ...errors } } }, async (request) => {
    request.caller.require('read');
    return batchJson(await deps.batches.get(request.params.id));
  });

  app.post('/v1/batches/:id/cancel', { schema: { description: 'Cancel a batch (idempotent).', params: IdParamsSchema, response: { 200: BatchSchema, ...errors } } }, async (request) => {
    request.caller.require('run');
    return batchJson(await deps.batches.cancel(request.params.id, request.caller.name));
  });

  await app.ready();
  // The typed instance (TypeBox provider, pino logger) is only needed inside this module.
  return app as unknown as FastifyInstance;
}

/** A task's host: one name or address, not a list or a range (those are batches). */
function checkHost(host: string): void {
  if (net.isIP(host) !== 0) return;
  let specs: HostSpec[];
  try {
    specs = parseHostList(host, { user: 'x', port: 22 }, 'host');
  } catch (err) {
    throw new ApiError('bad-request', err instanceof Error ? err.message : 'bad host', { field: 'host' });
  }
  if (specs.length !== 1 || specs[0]!.host.toLowerCase() !== host.toLowerCase()) {
    throw new ApiError('bad-request', `host ${JSON.stringify(host)}: give one host name or address (lists, ranges, user@ and :port belong elsewhere)`, { field: 'host' });
  }
}

/** `jump` entries, one host each (no lists or ranges); a user left out is the identity's (''). */
function jumpHops(entries: readonly string[] | undefined): HostSpec[] {
  return (entries ?? []).map((entry, i) => {
    let specs: HostSpec[];
    try {
      specs = parseHostList(entry, { user: '', port: 22 }, `jump[${i}]`);
    } catch (err) {
      if (err instanceof HostListError) throw new ApiError('bad-request', err.message, { field: 'jump' });
      throw err;
    }
    if (specs.length !== 1) throw new ApiError('bad-request', `jump[${i}]: one jump host per entry, [user@]host[:port]`, { field: 'jump' });
    return specs[0]!;
  });
}

function taskRequest(body: TaskRequestBody, jump: readonly HostSpec[]): TaskRequest {
  return {
    host: body.host,
    port: body.port ?? 22,
    user: body.user ?? null,
    identity: body.identity ?? null,
    command: body.command,
    env: body.env ?? {},
    stdin: body.stdin ?? null,
    timeouts: body.timeouts ?? {},
    maxOutputBytes: body.maxOutputBytes ?? null,
    reuse: body.reuse ?? null,
    retries: body.retries ?? 0,
    jump,
  };
}

/** The hosts of a batch: `hosts` entries or a `pattern`, with the request's user and port as defaults. */
function batchHosts(body: BatchRequestBody, maxHosts: number): HostSpec[] {
  if ((body.hosts === undefined) === (body.pattern === undefined)) {
    throw new ApiError('bad-request', 'give exactly one of "hosts" (a list of entries) or "pattern" (a host list like web[01-20])', { field: 'hosts' });
  }
  const defaults = { user: body.user ?? '', port: body.port ?? 22 };
  const field = body.pattern !== undefined ? 'pattern' : 'hosts';
  let specs: HostSpec[];
  try {
    specs = body.pattern !== undefined ? parseHostList(body.pattern, defaults, 'pattern') : body.hosts!.flatMap((entry, i) => parseHostList(entry, defaults, `hosts[${i}]`));
  } catch (err) {
    if (err instanceof HostListError) throw new ApiError('bad-request', err.message, { field });
    throw err;
  }
  if (specs.length > maxHosts) throw new ApiError('bad-request', `${specs.length} hosts is more than the ${maxHosts} a batch may have`, { field });
  const seen = new Set<string>();
  return specs.filter((s) => {
    // Host names compare without case, across entries as within one.
    const key = `${s.user}@${s.host.toLowerCase()}:${s.port}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

function batchRequest(body: BatchRequestBody, hosts: HostSpec[], jump: readonly HostSpec[]): BatchRequest {
  return {
    hosts: hosts.map((h) => ({ ...h, user: h.user })),
    identity: body.identity ?? null,
    command: body.command,
    env: body.env ?? {},
    stdin: body.stdin ?? null,
    timeouts: body.timeouts ?? {},
    maxOutputBytes: body.maxOutputBytes ?? null,
    reuse: body.reuse ?? null,
    retries: body.retries ?? 0,
    jump,
    concurrency: body.concurrency ?? 32,
    maxErrors: body.maxErrors ?? '100%',
    onBudgetExhausted: body.onBudgetExhausted ?? 'finish',
  };
}

/**
 * A signal that aborts when the client goes away before its answer (a long `wait` stops
 * waiting). The response's `close` is the one to watch: the request's fires as soon as its
 * body has been read.
 */
function abortOnClose(reply: FastifyReply): AbortSignal {
  const controller = new AbortController();
  reply.raw.once('close', () => {
    if (!reply.raw.writableFinished) controller.abort();
  });
  return controller.signal;
}
