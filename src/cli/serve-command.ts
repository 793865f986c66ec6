import { parseArgs } from 'node:util';
import { assertSafeListen, ConfigError, loadConfig } from '../app/config.ts';
import { ListenError, startService } from '../app/app.ts';
import { ledger } from '../lifecycle/ledger.ts';
import { taskTable } from '../lifecycle/task-table.ts';
import { IdentityError } from '../service/identities.ts';
import type { CliIo } from './main.ts';
import { UsageError } from './usage-error.ts';

/** `leash serve --help`. */
export const SERVE_USAGE = `Usage: leash serve [--config FILE] [--listen ADDR] [--admin-listen ADDR] [--data DIR] [--demo]

Runs leash as a service: the HTTP API (tasks, batches, server-sent events), Prometheus
metrics at /metrics, an embedded SQLite history, and on a separate admin listener the
/debug endpoints (task and resource dumps, leaks, CPU and heap profiles).

  --config FILE        YAML configuration (identities, tokens, limits, deadlines, ...)
  --listen ADDR        API address, HOST:PORT (default 127.0.0.1:7070)
  --admin-listen ADDR  diagnostics (/debug) address: HOST:PORT, unix:/path or off
                       (default 127.0.0.1:7071; leash debug --help)
  --data DIR           data directory (default ./data)
  --demo               also start a built-in loopback SSH target, identity "demo"

SIGTERM or Ctrl-C drains: running tasks get the configured grace, then are cancelled.
`;

/**
 * `leash serve`: loads and checks the configuration (a bad one refuses to start with one
 * line naming the key), starts the service, prints where it listens and a first curl, and
 * drains on SIGTERM/SIGINT (a second signal exits at once).
 */
export async function serveCommand(argv: readonly string[], io: CliIo): Promise<number> {
  const { values } = parseServeFlags(argv);
  if (values.help) {
    io.stdout.write(SERVE_USAGE);
    return 0;
  }
  let config;
  try {
    config = await loadConfig({
      file: values.config ?? null,
      env: io.env,
      builtinIdentities: values.demo ? ['demo'] : [],
      overrides: {
        ...(values.listen === undefined ? {} : { listen: values.listen }),
        ...(values.data === undefined ? {} : { dataDir: values.data }),
        ...(values['admin-listen'] === undefined ? {} : { adminListen: values['admin-listen'] }),
      },
    });
    assertSafeListen(config);
  } catch (err) {
    if (err instanceof ConfigError) throw new UsageError(`configuration: ${err.message}`);
    throw err;
  }

  let service;
  try {
    service = await startService(config, { demo: values.demo ?? false, env: io.env, ledger, tasks: taskTable });
  } catch (err) {
    if (err instanceof IdentityError) throw new UsageError(`configuration: ${err.message}`);
    if (err instanceof ListenError) {
      io.stderr.write(`leash: ${err.message}\n`);
      return 1;
    }
    throw err;
  }
  io.stderr.write(welcome(service.url, service.adminUrl, service.demo, config.tokens.length > 0));

  const stopped = new Promise<void>((resolve) => {
    let signals = 0;
    const onSignal = (signal: NodeJS.Signals): void => {
      signals++;
      if (signals > 1) {
        io.stderr.write(`leash: ${signal} again, exiting without waiting\n`);
        process.exit(1);
      }
      io.stderr.write(`leash: ${signal}: draining (running tasks get ${config.shutdownGraceMs} ms)\n`);
      void service.stop().then(() => {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
        resolve();
      });
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  });
  await stopped;
  return 0;
}

function parseServeFlags(argv: readonly string[]) {
  try {
    return parseArgs({
      args: [...argv],
      strict: true,
      allowPositionals: false,
      options: {
        config: { type: 'string' },
        listen: { type: 'string' },
        'admin-listen': { type: 'string' },
        data: { type: 'string' },
        demo: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (err) {
    const message = err instanceof Error ? (err.message.split('\n')[0] ?? err.message) : String(err);
    throw new UsageError(`${message.replace(/\. To specify a positional.*$/, '')} (see leash serve --help)`);
  }
}

/** Where the service listens and a first request to try. */
function welcome(url: string, adminUrl: string | null, demo: { host: string; port: number } | null, tokens: boolean): string {
  const auth = tokens ? ` -H "authorization: Bearer $LEASH_TOKEN"` : '';
  const lines = [`leash serve: listening on ${url}  (API docs: ${url}/docs, metrics: ${url}/metrics)`];
  if (adminUrl) lines.push(`debug endpoints on ${adminUrl}/debug/  (leash debug tasks --admin ${adminUrl})`);
  if (demo) {
    const body = JSON.stringify({ host: demo.host, port: demo.port, identity: 'demo', command: 'uname -a; uptime', wait: 10 });
    lines.push(
      `demo SSH target on ${demo.host}:${demo.port} (identity "demo"). Try:`,
      `  curl -s${auth} -H 'content-type: application/json' -d '${body}' ${url}/v1/tasks`,
    );
  }
  return `${lines.join('\n')}\n`;
}
