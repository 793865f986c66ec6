import os from 'node:os';
import path from 'node:path';
import ssh2 from 'ssh2';
import type { ParsedKey } from 'ssh2';
import { cancelledError } from '../lifecycle/errors.ts';
import { ledger } from '../lifecycle/ledger.ts';
import { taskTable } from '../lifecycle/task-table.ts';
import { fanOut } from '../service/fan-out.ts';
import type { TaskSpec } from '../service/task-spec.ts';
import type { Credentials } from '../ssh/credentials.ts';
import { startDemoTarget, type DemoTarget } from '../ssh/demo-target.ts';
import { HostKeyFileError, HostKeyVerifier } from '../ssh/host-key-verifier.ts';
import { ConnectionPool } from '../ssh/connection-pool.ts';
import { SshRemoteExec } from '../ssh/remote-exec.ts';
import { loadCredentials } from './load-credentials.ts';
import type { CliIo } from './main.ts';
import { RUN_USAGE, parseRunOptions, type RunOptions } from './run-options.ts';
import { RunOutput } from './run-output.ts';
import { UsageError } from './usage-error.ts';

/** Exit status after Ctrl-C, as shells report a death by SIGINT. */
const EXIT_INTERRUPTED = 130;

/** How long `leash run` keeps an unused connection for another task to the same host. */
const CLI_POOL_IDLE_MS = 2000;

/**
 * `leash run`: validates everything up front (exit 2 on any bad input, before a single
 * connection), runs the command on every host with bounded concurrency, prints each result
 * as it arrives, and returns 0 / 1 / 130. Ctrl-C cancels every task — remote processes are
 * killed — and a second Ctrl-C exits at once.
 */
export async function runCommand(argv: readonly string[], io: CliIo): Promise<number> {
  const options = await parseRunOptions(argv, io.env);
  if (options === null) {
    io.stdout.write(RUN_USAGE);
    return 0;
  }

  const cancel = new AbortController();
  let interrupts = 0;
  const onSigint = (): void => {
    interrupts++;
    if (interrupts > 1) {
      io.stderr.write('\nleash: interrupted twice, exiting without waiting\n');
      process.exit(EXIT_INTERRUPTED);
    }
    cancel.abort(cancelledError('queued', 'cancelled by Ctrl-C'));
  };
  process.on('SIGINT', onSigint);
  let demo: DemoTarget | null = null;
  // Each host usually appears once: a connection left unused closes soon, not at the end.
  const pool = new ConnectionPool(ledger, { idleTtlMs: CLI_POOL_IDLE_MS });
  try {
    const warn = (line: string): void => void io.stderr.write(`${line}\n`);
    const credentials = await loadCredentials(options, { env: io.env, interactive: io.interactive, signal: cancel.signal, warn });
    const hostKeys = await loadHostKeys(options, io.env, warn);
    if (options.hostKeyPolicy === 'off') {
      warn('warning: --host-key-policy off: host keys are not checked; anyone on the network path can impersonate these hosts');
    }
    const specs = options.hosts.map((target) => taskSpec(options, target, credentials, hostKeys));
    if (options.demo) {
      demo = await startDemoTarget({ ledger });
      specs.push(demoSpec(options, demo));
    }

    const showUsers = new Set(specs.map((s) => s.target.user)).size > 1;
    const output = new RunOutput({ out: io.stdout, err: io.stderr }, { json: options.json, group: options.group, showUsers }, specs.length);
    cancel.signal.addEventListener('abort', () => output.notice('leash: cancelling; remote processes are being stopped (Ctrl-C again to quit at once)'), {
      once: true,
    });
    let allOk = true;
    await fanOut(specs, { remote: new SshRemoteExec({ pool }), ledger, tasks: taskTable }, {
      concurrency: options.concurrency,
      signal: cancel.signal,
      onReport: (report) => {
        if (report.status !== 'ok') allOk = false;
        output.report(report);
      },
    });
    output.finish();
    if (cancel.signal.aborted) return EXIT_INTERRUPTED;
    return allOk ? 0 : 1;
  } finally {
    process.off('SIGINT', onSigint);
    await pool.close();
    await demo?.close();
  }
}

function taskSpec(options: RunOptions, target: TaskSpec['target'], credentials: Credentials, hostKeys: HostKeyVerifier): TaskSpec {
  return {
    target,
    command: options.command,
    timeouts: options.timeouts,
    keepalive: options.keepalive,
    maxOutputBytes: options.maxOutputBytes,
    credentials,
    hostKeys,
    reuse: options.reuse,
    retries: options.retries,
  };
}

/** Reads ~/.ssh/known_hosts (read-only) and leash's own file; an unreadable one is a usage error. */
async function loadHostKeys(options: RunOptions, env: NodeJS.ProcessEnv, warn: (line: string) => void): Promise<HostKeyVerifier> {
  const home = env.HOME ?? os.homedir();
  try {
    const verifier = await HostKeyVerifier.load({
      policy: options.hostKeyPolicy,
      readFiles: [path.join(home, '.ssh', 'known_hosts')],
      ownFile: options.knownHostsFile,
    });
    for (const w of verifier.warnings) warn(`warning: ${w}`);
    return verifier;
  } catch (err) {
    if (err instanceof HostKeyFileError) throw new UsageError(err.message);
    throw err;
  }
}

/** The demo target: its own ephemeral key and a host key trusted for this run only. */
function demoSpec(options: RunOptions, demo: DemoTarget): TaskSpec {
  const parsed = ssh2.utils.parseKey(demo.clientPrivateKey);
  if (parsed instanceof Error || Array.isArray(parsed)) throw new Error('demo target: unusable client key');
  const key: ParsedKey = parsed;
  const hostKeys = HostKeyVerifier.fromLines([demo.knownHostsLine], 'strict');
  return taskSpec(
    options,
    { host: demo.host, port: demo.port, user: demo.user },
    { keys: [{ path: 'demo', parsed: key }], agentSocket: null, password: null },
    hostKeys,
  );
}
