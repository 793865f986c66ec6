import type { FastifyReply, FastifyRequest } from 'fastify';
import type { ResourceHandle, ResourceLedger } from '../lifecycle/ledger.ts';
import { RESULT_EVENT_ID, type TaskEvent, type TaskEventLog } from '../service/task-events.ts';
import type { StoredTask } from '../store/task-store.ts';
import { taskJson } from './views.ts';

/** How often an idle stream gets a comment, so proxies keep it open and dead clients show. */
const HEARTBEAT_MS = 15_000;

/**
 * Serves a task's events as server-sent events (text/event-stream): `stage`, `output` and
 * a final `result`, each with an `id` a client can resume from with Last-Event-ID. The
 * stream ends after `result`; a client that goes away is unsubscribed at once. For a task
 * whose events are no longer in memory, the stages and the result come from the store.
 */
export function streamTaskEvents(options: {
  request: FastifyRequest;
  reply: FastifyReply;
  task: StoredTask;
  log: TaskEventLog | null;
  lastEventId: string | null;
  ledger: ResourceLedger;
  /** Reads the final record when the log no longer holds it. */
  load: () => Promise<StoredTask | null>;
}): void {
  const { reply, log, lastEventId, ledger } = options;
  const raw = reply.raw;
  reply.hijack();
  raw.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-store',
    connection: 'keep-alive',
    'x-accel-buffering': 'no',
  });
  let ended = false;
  let unsubscribe: () => void = () => {};
  let heartbeat: ResourceHandle | null = null;
  const end = (): void => {
    if (ended) return;
    ended = true;
    unsubscribe();
    heartbeat?.release();
    raw.end();
  };
  raw.on('close', end);
  const beat = (): void => {
    if (ended) return;
    raw.write(': keep-alive\n\n');
    heartbeat = ledger.timeout('event-stream', HEARTBEAT_MS, beat, { purpose: 'sse-heartbeat' });
  };
  heartbeat = ledger.timeout('event-stream', HEARTBEAT_MS, beat, { purpose: 'sse-heartbeat' });

  const send = async (event: TaskEvent): Promise<void> => {
    if (ended) return;
    if (event.type === 'result') {
      const task = event.task ?? (await options.load()) ?? options.task;
      if (ended) return;
      raw.write(frame(event.id, 'result', taskJson(task)));
      end();
      return;
    }
    raw.write(frame(event.id, event.type, event.type === 'stage' ? { stage: event.stage, at: new Date(event.at).toISOString() } : { stream: event.stream, data: event.data }));
  };

  if (log) {
    const replay = log.since(lastEventId);
    if (replay.gap) raw.write(frame(null, 'gap', { message: 'some output events are no longer held; the result carries the output kept' }));
    // Subscribe before replaying so nothing published in between is missed; queue live
    // events until the replay is written.
    const pending: TaskEvent[] = [];
    let replaying = true;
    unsubscribe = log.subscribe((event) => {
      if (replaying) pending.push(event);
      else void send(event);
    });
    void (async () => {
      for (const event of replay.events) await send(event);
      for (const event of pending.splice(0)) if (!replay.events.some((e) => e.id === event.id)) await send(event);
      replaying = false;
    })();
    return;
  }
  // Not in memory: the task finished a while ago (or on another run of the service).
  void (async () => {
    if (lastEventId !== RESULT_EVENT_ID) {
      if (lastEventId === null) {
        options.task.stages.forEach((s, i) => raw.write(frame(String(i + 1), 'stage', { stage: s.stage, at: s.startedAt })));
      }
      await send({ id: RESULT_EVENT_ID, type: 'result', task: options.task.status === 'queued' || options.task.status === 'running' ? null : options.task });
    } else {
      end();
    }
  })();
}

function frame(id: string | null, event: string, data: unknown): string {
  return `${id === null ? '' : `id: ${id}\n`}event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
}
