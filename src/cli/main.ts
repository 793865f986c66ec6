import { readFileSync } from 'node:fs';
import { HostListError } from '../service/host-list.ts';
import { UsageError } from './usage-error.ts';

/** `leash --help`. */
const USAGE = `Usage: leash <command> [options]

Commands:
  run [options] -- COMMAND   run COMMAND on many hosts over SSH (leash run --help)
  serve [options]            run the HTTP service (leash serve --help)
  demo [COMMAND]             run a command on leash's built-in loopback demo target
  debug <what> [options]     look inside a running leash serve: tasks, resources, leaks,
                             profile, heap (leash debug --help)

Options:
  -h, --help                 show this help
  -V, --version              show the version
`;

/** The streams and environment the CLI works with (tests pass their own). */
export interface CliIo {
  readonly stdout: NodeJS.WritableStream & { isTTY?: boolean };
  readonly stderr: NodeJS.WritableStream & { isTTY?: boolean };
  readonly env: NodeJS.ProcessEnv;
  /** True when secrets may be asked for on the terminal. */
  readonly interactive: boolean;
}

const processIo: CliIo = {
  stdout: process.stdout,
  stderr: process.stderr,
  env: process.env,
  interactive: process.stdin.isTTY === true && process.stderr.isTTY === true,
};

/**
 * Runs the CLI and returns the exit status: 0 all ok, 1 some host not ok, 2 usage error,
 * 130 interrupted. Never calls process.exit(): the process ends when nothing is left alive.
 */
export async function main(argv: readonly string[], io: CliIo = processIo): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      // Each command loads only its own modules: `leash run` must not pay for the service's
      // HTTP server, database and profiler (1.6 s of start-up under tsx).
      case 'run':
        return await (await import('./run-command.ts')).runCommand(rest, io);
      case 'serve':
        return await (await import('./serve-command.ts')).serveCommand(rest, io);
      case 'debug':
        return await (await import('./debug-command.ts')).debugCommand(rest, io);
      case 'demo':
        return await (await import('./run-command.ts')).runCommand(['--demo', '--', ...(rest.length > 0 ? rest : [DEMO_COMMAND])], io);
      case '-V':
      case '--version':
        io.stdout.write(`leash ${version()}\n`);
        return 0;
      case undefined:
      case '-h':
      case '--help':
      case 'help':
        io.stdout.write(USAGE);
        return command === undefined ? 2 : 0;
      default:
        throw new UsageError(`unknown command "${command}" (commands: run, serve, demo, debug; see leash --help)`);
    }
  } catch (err) {
    if (err instanceof UsageError || err instanceof HostListError) {
      io.stderr.write(`leash: ${err.message}\n`);
      return 2;
    }
    io.stderr.write(`leash: internal error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    return 70;
  }
}

/** What `leash demo` (and `npm start`) runs when given no command. */
const DEMO_COMMAND = 'echo "hello from $(hostname) as $(id -un)"; uname -sr; uptime';

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: string };
  return pkg.version ?? 'unknown';
}
