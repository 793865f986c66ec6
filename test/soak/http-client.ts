// The soak's HTTP client for the service API: one connection per request (`agent: false`,
// `Connection: close`), so that between load phases no keep-alive socket of the client's
// is left open in this process and the descriptor count can return to its baseline.
// fetch() would keep idle sockets in undici's global pool for seconds.
import http from 'node:http';
import { parseSseFrame, type SseEvent } from '../support/service.ts';

export interface JsonResponse {
  readonly status: number;
  readonly body: any;
}

export class SoakClient {
  constructor(
    readonly base: string,
    readonly token: string,
  ) {}

  /** A JSON request; rejects on a network error or when `timeoutMs` passes. */
  json(method: string, route: string, body: unknown, timeoutMs: number): Promise<JsonResponse> {
    return this.#request(method, route, body, timeoutMs, async (res) => {
      const text = await readAll(res);
      let parsed: unknown = text;
      try {
        parsed = text.length > 0 ? JSON.parse(text) : null;
      } catch {
        // metrics and other text answers stay text
      }
      return { status: res.statusCode ?? 0, body: parsed };
    });
  }

  /** Reads a task's event stream until the `result` event, the end of the stream or `timeoutMs`. */
  events(taskId: string, timeoutMs: number): Promise<SseEvent[]> {
    return this.#request('GET', `/v1/tasks/${taskId}/events`, undefined, timeoutMs, async (res) => {
      if (res.statusCode !== 200) throw new Error(`events of ${taskId}: HTTP ${res.statusCode} ${await readAll(res)}`);
      const events: SseEvent[] = [];
      let buffer = '';
      res.setEncoding('utf8');
      for await (const chunk of res as AsyncIterable<string>) {
        buffer += chunk;
        let end: number;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const event = parseSseFrame(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
          if (!event) continue;
          events.push(event);
          if (event.event === 'result') {
            res.destroy();
            return events;
          }
        }
      }
      return events;
    });
  }

  #request<T>(method: string, route: string, body: unknown, timeoutMs: number, read: (res: http.IncomingMessage) => Promise<T>): Promise<T> {
    const url = new URL(route, this.base);
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const signal = AbortSignal.timeout(Math.ceil(timeoutMs));
    return new Promise<T>((resolve, reject) => {
      const req = http.request(
        url,
        {
          method,
          agent: false,
          signal,
          headers: {
            authorization: `Bearer ${this.token}`,
            connection: 'close',
            ...(payload === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) }),
          },
        },
        (res) => {
          read(res).then(resolve, (err: unknown) => {
            res.destroy();
            reject(err instanceof Error ? err : new Error(String(err)));
          });
        },
      );
      req.on('error', (err) => reject(signal.aborted ? new Error(`${method} ${route}: no answer within ${Math.ceil(timeoutMs)} ms`, { cause: err }) : err));
      req.end(payload);
    });
  }
}

async function readAll(res: http.IncomingMessage): Promise<string> {
  res.setEncoding('utf8');
  let text = '';
  for await (const chunk of res as AsyncIterable<string>) text += chunk;
  return text;
}
