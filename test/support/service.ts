import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { stringify } from 'yaml';
import { loadConfig, type ServeConfig } from '../../src/app/config.ts';
import { startService, type RunningService } from '../../src/app/app.ts';
import { ledger } from '../../src/lifecycle/ledger.ts';
import { taskTable } from '../../src/lifecycle/task-table.ts';
import type { Sshd } from './sshd.ts';

/** A token every test service accepts, with every scope. */
export const ADMIN_TOKEN = 'test-admin-token-0123456789abcdef';
/** A token with only the read scope. */
export const READ_TOKEN = 'test-read-token-0123456789abcdef';

/** A `leash serve` running in this process for a test, with its logs captured. */
export interface TestService {
  readonly url: string;
  readonly dataDir: string;
  readonly configPath: string;
  readonly running: RunningService;
  /** Every log line so far, parsed. */
  logs(): Array<Record<string, unknown>>;
  /** The raw log text so far. */
  logText(): string;
  /** JSON request with the admin token (or `token`); returns status, headers and parsed body. */
  request(method: string, route: string, body?: unknown, options?: { token?: string | null; headers?: Record<string, string> }): Promise<ApiResponse>;
  /** Stops the service (drain) and removes its data directory. */
  stop(options?: { keepData?: boolean }): Promise<void>;
}

/** What {@link TestService.request} returns. */
export interface ApiResponse {
  readonly status: number;
  readonly headers: Headers;
  readonly body: any;
}

/**
 * The YAML configuration of a test service: the sshd's client key as identity `sshd`
 * (default), its host key trusted, an admin and a read token, port 0. `extra` is merged
 * over it (top-level keys replaced).
 */
export function testConfigYaml(sshd: Sshd | null, dataDir: string, extra: Record<string, unknown> = {}): string {
  const config: Record<string, unknown> = {
    listen: '127.0.0.1:0',
    adminListen: '127.0.0.1:0',
    dataDir,
    logLevel: 'debug',
    identities: sshd ? { sshd: { user: sshd.user, keyPath: sshd.clientKey.path } } : {},
    ...(sshd ? { defaultIdentity: 'sshd' } : {}),
    hostKeys: { policy: 'strict', readFiles: sshd ? [sshd.knownHostsPath] : [], knownHostsFile: path.join(dataDir, 'known_hosts') },
    tokens: [
      { name: 'admin', token: ADMIN_TOKEN, scopes: ['admin'] },
      { name: 'reader', token: READ_TOKEN, scopes: ['read'] },
    ],
    shutdownGraceMs: 5000,
    ...extra,
  };
  return stringify(config);
}

/** Starts a service in this process (see {@link testConfigYaml}); `dataDir` reuses a previous one. */
export async function startTestService(sshd: Sshd | null, options: { extra?: Record<string, unknown>; dataDir?: string; demo?: boolean } = {}): Promise<TestService> {
  const dataDir = options.dataDir ?? (await mkdtemp(path.join(os.tmpdir(), 'leash-serve-')));
  const configPath = path.join(dataDir, 'leash.yaml');
  await writeFile(configPath, testConfigYaml(sshd, dataDir, options.extra));
  const config: ServeConfig = await loadConfig({ file: configPath, env: { HOME: dataDir }, builtinIdentities: options.demo ? ['demo'] : [] });
  let text = '';
  const sink = new PassThrough();
  sink.setEncoding('utf8');
  sink.on('data', (chunk: string) => (text += chunk));
  const running = await startService(config, { demo: options.demo ?? false, env: { HOME: dataDir }, ledger, tasks: taskTable, logDestination: sink });
  return {
    url: running.url,
    dataDir,
    configPath,
    running,
    logText: () => text,
    logs: () =>
      text
        .split('\n')
        .filter((l) => l.trim().length > 0)
        .map((l) => JSON.parse(l) as Record<string, unknown>),
    request: (method, route, body, requestOptions) => apiRequest(running.url, method, route, body, requestOptions),
    stop: async (stopOptions) => {
      await running.stop();
      sink.end();
      if (!stopOptions?.keepData) await rm(dataDir, { recursive: true, force: true });
    },
  };
}

/** One JSON request to a running API (loopback only), bounded by a timeout. */
export async function apiRequest(
  base: string,
  method: string,
  route: string,
  body?: unknown,
  options: { token?: string | null; headers?: Record<string, string>; timeoutMs?: number } = {},
): Promise<ApiResponse> {
  const token = options.token === undefined ? ADMIN_TOKEN : options.token;
  const headers: Record<string, string> = { ...(token ? { authorization: `Bearer ${token}` } : {}), ...options.headers };
  if (body !== undefined) headers['content-type'] ??= 'application/json';
  const response = await fetch(`${base}${route}`, {
    method,
    headers,
    ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
    signal: AbortSignal.timeout(options.timeoutMs ?? 60_000),
  });
  const text = await response.text();
  let parsed: unknown = text;
  try {
    parsed = text.length > 0 ? JSON.parse(text) : null;
  } catch {
    // Not JSON (metrics, docs): keep the text.
  }
  return { status: response.status, headers: response.headers, body: parsed };
}

/** A server-sent event as read off the wire. */
export interface SseEvent {
  readonly id: string | null;
  readonly event: string;
  readonly data: any;
}

/** One frame of a server-sent event stream (the text between blank lines); null for a comment-only frame. */
export function parseSseFrame(frame: string): SseEvent | null {
  const fields = new Map<string, string>();
  for (const line of frame.split('\n')) {
    if (line.startsWith(':')) continue;
    const colon = line.indexOf(':');
    if (colon < 0) continue;
    fields.set(line.slice(0, colon), line.slice(colon + 1).trimStart());
  }
  const event = fields.get('event');
  if (event === undefined) return null;
  return { id: fields.get('id') ?? null, event, data: JSON.parse(fields.get('data') ?? 'null') };
}

/**
 * Reads a task's event stream until it ends (after `result`) or `limitMs` passes; sends
 * Last-Event-ID when given. Returns the events in order.
 */
export async function readEvents(base: string, taskId: string, options: { lastEventId?: string; token?: string; limitMs?: number; until?: (e: SseEvent) => boolean } = {}): Promise<SseEvent[]> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), options.limitMs ?? 30_000);
  const events: SseEvent[] = [];
  try {
    const response = await fetch(`${base}/v1/tasks/${taskId}/events`, {
      headers: { authorization: `Bearer ${options.token ?? ADMIN_TOKEN}`, ...(options.lastEventId ? { 'last-event-id': options.lastEventId } : {}) },
      signal: controller.signal,
    });
    if (!response.ok || !response.body) throw new Error(`events: HTTP ${response.status}`);
    const decoder = new TextDecoder();
    let buffer = '';
    for await (const chunk of response.body) {
      buffer += decoder.decode(chunk as Uint8Array, { stream: true });
      let end: number;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const event = parseSseFrame(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
        if (!event) continue;
        events.push(event);
        if (options.until?.(event)) {
          controller.abort();
          return events;
        }
      }
    }
  } catch (err) {
    if (!controller.signal.aborted) throw err;
  } finally {
    clearTimeout(timer);
  }
  return events;
}
