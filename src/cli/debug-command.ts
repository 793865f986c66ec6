import { createWriteStream } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { parseArgs } from 'node:util';
import { formatDuration, parseDuration } from './duration.ts';
import type { CliIo } from './main.ts';
import { quoteInput, UsageError } from './usage-error.ts';

/** `leash debug --help`. */
export const DEBUG_USAGE = `Usage: leash debug <what> [options]

Reads a running leash serve's admin listener (/debug, modelled on Go's pprof).

  tasks      live tasks, grouped by stage, wait and creation site (--debug 2: every task)
  resources  the resource ledger: sockets, connections, channels, timers (--debug 1|2)
  leaks      what the leak watchdog flags now
  profile    CPU profile for --seconds, written to a file (pprof; --format cpuprofile for Chrome)
  heap       sampled heap profile (pprof), written to a file

Options:
  --admin URL       admin listener: http://HOST:PORT or unix:/path/to.sock
                    (default $LEASH_ADMIN, else http://127.0.0.1:7071)
  --token TOKEN     an admin-scope API token; prefer $LEASH_ADMIN_TOKEN (a flag shows in ps)
  --debug 1|2       grouped (default) or every entry
  --json            JSON instead of text
  --seconds N       profile length (default 30; the server caps it)
  --format F        profile format: pprof (default) or cpuprofile
  -o, --output FILE where the profile goes (default: the server's name, in this directory)
  --timeout D       give up after D (default 10s; for profile: the seconds plus 30s)
`;

const DEFAULT_ADMIN = 'http://127.0.0.1:7071';
const DEFAULT_TIMEOUT_MS = 10_000;
const DUMPS = new Set(['tasks', 'resources', 'leaks']);
const PROFILES = new Set(['profile', 'heap']);

/** Where the admin listener is: a TCP base URL, or a unix socket. */
interface AdminTarget {
  readonly base: URL;
  readonly socketPath: string | null;
  /** As the user gave it, for messages. */
  readonly shown: string;
}

/**
 * `leash debug ...`: fetches a dump and prints it, or a profile and writes it to a file
 * (written to a temporary name and renamed, so a half-written profile never looks whole),
 * then says how to open it. Exit status 0 on success, 1 when the service refused or could
 * not be reached, 2 on a usage error.
 */
export async function debugCommand(argv: readonly string[], io: CliIo): Promise<number> {
  try {
    return await debug(argv, io);
  } catch (err) {
    if (!(err instanceof AdminUnreachable)) throw err;
    io.stderr.write(`leash: ${err.message}\n`);
    return 1;
  }
}

/** The admin listener could not be reached, or its answer broke off: exit status 1. */
class AdminUnreachable extends Error {}

async function debug(argv: readonly string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseDebugFlags(argv);
  if (values.help || positionals.length === 0) {
    io.stdout.write(DEBUG_USAGE);
    return values.help ? 0 : 2;
  }
  const [what, ...extra] = positionals;
  if (extra.length > 0) throw new UsageError(`unexpected ${quoteInput(extra[0] ?? '')} after "debug ${what}" (see leash debug --help)`);
  if (what === undefined || (!DUMPS.has(what) && !PROFILES.has(what))) {
    throw new UsageError(`unknown debug target ${quoteInput(what ?? '')}: tasks, resources, leaks, profile or heap (see leash debug --help)`);
  }
  const admin = adminTarget(values.admin ?? io.env.LEASH_ADMIN ?? DEFAULT_ADMIN);
  const token = values.token ?? io.env.LEASH_ADMIN_TOKEN ?? null;
  const query = new URLSearchParams();
  let timeoutMs = values.timeout === undefined ? DEFAULT_TIMEOUT_MS : parseDuration(values.timeout, '--timeout');

  if (DUMPS.has(what)) {
    if (values.seconds !== undefined || values.format !== undefined || values.output !== undefined) {
      throw new UsageError(`--seconds, --format and --output are for profile and heap, not ${what}`);
    }
    if (values.debug !== undefined) {
      if (what === 'leaks') throw new UsageError('--debug is for tasks and resources');
      if (values.debug !== '1' && values.debug !== '2') throw new UsageError(`bad --debug ${quoteInput(values.debug)}: 1 (grouped) or 2 (every entry)`);
      query.set('debug', values.debug);
    }
    if (values.json) query.set('format', 'json');
    const response = await request(admin, `/debug/${what}`, query, token, timeoutMs);
    if (response.statusCode !== 200) return refused(response, admin, io);
    try {
      await pipeline(response, io.stdout, { end: false });
    } catch (err) {
      throw cutOff(err, admin, timeoutMs);
    }
    return 0;
  }

  if (values.debug !== undefined || values.json) throw new UsageError(`--debug and --json are for tasks, resources and leaks, not ${what}`);
  let route = '/debug/pprof/heap';
  if (what === 'profile') {
    route = '/debug/pprof/profile';
    const seconds = values.seconds === undefined ? 30 : Number(values.seconds);
    if (!Number.isInteger(seconds) || seconds < 1) throw new UsageError(`bad --seconds ${quoteInput(values.seconds ?? '')}: a whole number of seconds, at least 1`);
    query.set('seconds', String(seconds));
    const format = values.format ?? 'pprof';
    if (format !== 'pprof' && format !== 'cpuprofile') throw new UsageError(`bad --format ${quoteInput(format)}: pprof or cpuprofile`);
    query.set('format', format);
    if (values.timeout === undefined) timeoutMs = seconds * 1000 + 30_000;
    io.stderr.write(`leash: profiling for ${seconds} s...\n`);
  } else if (values.seconds !== undefined || values.format !== undefined) {
    throw new UsageError('--seconds and --format are for profile, not heap');
  }
  const response = await request(admin, route, query, token, timeoutMs);
  if (response.statusCode !== 200) return refused(response, admin, io);
  const file = path.resolve(values.output ?? serverFilename(response) ?? `leash-${what}.pb.gz`);
  const partial = `${file}.partial`;
  try {
    await pipeline(response, createWriteStream(partial, { mode: 0o600 }));
    await rename(partial, file);
  } catch (err) {
    await rm(partial, { force: true });
    if (response.errored) throw cutOff(err, admin, timeoutMs);
    throw new UsageError(`could not write ${file}: ${err instanceof Error ? err.message : String(err)}`);
  }
  io.stdout.write(`${howToOpen(what, query.get('format') ?? 'pprof', file)}\n`);
  return 0;
}

function parseDebugFlags(argv: readonly string[]): ReturnType<typeof parse> {
  try {
    return parse(argv);
  } catch (err) {
    const message = err instanceof Error ? (err.message.split('\n')[0] ?? err.message) : String(err);
    throw new UsageError(`${message} (see leash debug --help)`);
  }
}

function parse(argv: readonly string[]) {
  return parseArgs({
    args: [...argv],
    strict: true,
    allowPositionals: true,
    options: {
      admin: { type: 'string' },
      token: { type: 'string' },
      debug: { type: 'string' },
      json: { type: 'boolean' },
      seconds: { type: 'string' },
      format: { type: 'string' },
      output: { type: 'string', short: 'o' },
      timeout: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
}

function adminTarget(text: string): AdminTarget {
  const unix = /^unix:(.+)$/.exec(text);
  if (unix) return { base: new URL('http://localhost'), socketPath: unix[1]!, shown: text };
  let base: URL;
  try {
    base = new URL(/^[a-z]+:\/\//i.test(text) ? text : `http://${text}`);
  } catch {
    throw new UsageError(`bad --admin ${quoteInput(text)}: expected http://HOST:PORT or unix:/path/to.sock`);
  }
  if (base.protocol !== 'http:') throw new UsageError(`bad --admin ${quoteInput(text)}: only http:// (the admin listener is loopback or a unix socket) or unix:/path`);
  return { base, socketPath: null, shown: base.origin };
}

/** One GET, bounded by `timeoutMs` from start to the end of the body. */
function request(admin: AdminTarget, route: string, query: URLSearchParams, token: string | null, timeoutMs: number): Promise<http.IncomingMessage> {
  const url = new URL(route, admin.base);
  url.search = query.toString();
  const signal = AbortSignal.timeout(timeoutMs);
  return new Promise((resolve, reject) => {
    const req = http.get(url, {
      ...(admin.socketPath === null ? {} : { socketPath: admin.socketPath }),
      headers: token === null ? {} : { authorization: `Bearer ${token}` },
      signal,
    });
    req.once('response', resolve);
    req.once('error', (err: NodeJS.ErrnoException) => {
      if (signal.aborted) reject(new AdminUnreachable(`no complete answer from ${admin.shown} within ${formatDuration(timeoutMs)} (raise --timeout)`));
      else reject(new AdminUnreachable(`cannot reach the admin listener at ${admin.shown} (${err.code ?? err.message}): is leash serve running? It prints its admin address at start; pass it with --admin`));
    });
  });
}

/** The error for a response that stopped before its end (the deadline, or the service went away). */
function cutOff(err: unknown, admin: AdminTarget, timeoutMs: number): AdminUnreachable {
  if (err instanceof Error && err.name === 'AbortError') return new AdminUnreachable(`no complete answer from ${admin.shown} within ${formatDuration(timeoutMs)} (raise --timeout)`);
  return new AdminUnreachable(`the answer from ${admin.shown} broke off: ${err instanceof Error ? err.message : String(err)}`);
}

/** Prints the service's error (`{error: {code, message}}`) and returns exit status 1. */
async function refused(response: http.IncomingMessage, admin: AdminTarget, io: CliIo): Promise<number> {
  const chunks: Buffer[] = [];
  for await (const chunk of response) chunks.push(chunk as Buffer);
  let message = Buffer.concat(chunks).toString('utf8').slice(0, 500).trim();
  try {
    const body = JSON.parse(message) as { error?: { code?: string; message?: string } };
    if (body.error?.message) message = `${body.error.code ?? 'error'}: ${body.error.message}`;
  } catch {
    // not JSON: show the text as it came
  }
  const hint = response.statusCode === 401 || response.statusCode === 403 ? ' (set LEASH_ADMIN_TOKEN to a token with the admin scope)' : '';
  io.stderr.write(`leash: ${admin.shown} answered ${response.statusCode}: ${message}${hint}\n`);
  return 1;
}

/** The name in `Content-Disposition`, if it is a plain file name. */
function serverFilename(response: http.IncomingMessage): string | null {
  const m = /filename="([^"/\\]+)"/.exec(response.headers['content-disposition'] ?? '');
  return m ? m[1]! : null;
}

function howToOpen(what: string, format: string, file: string): string {
  const shown = quoteForShell(file);
  if (format === 'cpuprofile') {
    return `wrote ${file}\nopen it in Chrome DevTools (Performance → Load profile) or VS Code`;
  }
  const kind = what === 'heap' ? 'heap profile (pprof)' : 'CPU profile (pprof)';
  const index = what === 'heap' ? ' -sample_index=inuse_space' : '';
  return `wrote ${kind} to ${file}\nopen it with: go tool pprof${index} -http=127.0.0.1:0 ${shown}   (or -top for a text summary)`;
}

function quoteForShell(text: string): string {
  return /^[\w@%+=:,./-]+$/.test(text) ? text : `'${text.replaceAll("'", "'\\''")}'`;
}
