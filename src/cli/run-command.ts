import ssh2 from 'ssh2';
import type { ParsedKey } from 'ssh2';
import { cancelledError } from '../lifecycle/errors.ts';
import { ledger } from '../lifecycle/ledger.ts';
import { taskTable } from '../lifecycle/task-table.ts';
import { fanOut } from '../service/fan-out.ts';
import type { TaskSpec } from '../service/task-spec.ts';
import type { Credentials } from '../ssh/credentials.ts';
import { startDemoTarget, type DemoTarget } from '../ssh/demo-target.ts';
import { HostKeyFileError, HostKeyVerifier, type HostKeyPolicy } from '../ssh/host-key-verifier.ts';
import { ConnectionPool } from '../ssh/connection-pool.ts';
import { SshRemoteExec } from '../ssh/remote-exec.ts';
import { CredentialSets } from './load-credentials.ts';
import type { CliIo } from './main.ts';
import { RUN_USAGE, parseRunOptions, type RunOptions } from './run-options.ts';
import { RunOutput } from './run-output.ts';
import { configureHosts, loadSshConfig, type ConfiguredHost } from './ssh-config-hosts.ts';
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
    // Only for hosts: `leash demo` does not depend on the user's ssh config.
    const hosts = options.hosts.length === 0 ? [] : configureHosts(options, await loadSshConfig(options));
    const credentials = await CredentialSets.load(options, { env: io.env, interactive: io.interactive, signal: cancel.signal, warn });
    const hostKeys = hostKeySets(options, warn);
    if (options.hostKeyPolicy === 'off') {
      warn('warning: --host-key-policy off: host keys are not checked; anyone on the network path can impersonate these hosts');
    }
    const unchecked = hosts.filter((h) => h.policyFromConfig && h.hostKeyPolicy === 'off').map((h) => h.alias);
    if (unchecked.length > 0) {
      const named = unchecked.length > 5 ? `${unchecked.slice(0, 5).join(', ')} and ${unchecked.length - 5} more` : unchecked.join(', ');
      warn(`warning: StrictHostKeyChecking no (ssh config): host keys of ${named} are not checked; anyone on the network path can impersonate them`);
    }
    const specs: TaskSpec[] = [];
    // One at a time: loading a key may ask for its passphrase.
    for (const host of hosts) {
      specs.push(taskSpec(options, host, await credentials.forHost(host.identityFiles), await hostKeys(host.hostKeyPolicy, host.knownHostsFiles)));
    }
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

type HostSettings = Pick<ConfiguredHost, 'target' | 'jump' | 'timeouts' | 'keepalive'>;

function taskSpec(options: RunOptions, host: HostSettings, credentials: Credentials, hostKeys: HostKeyVerifier): TaskSpec {
  return {
    target: host.target,
    ...(host.jump.length > 0 ? { jump: host.jump } : {}),
    command: options.command,
    timeouts: host.timeouts,
    keepalive: host.keepalive,
    maxOutputBytes: options.maxOutputBytes,
    credentials,
    hostKeys,
    reuse: options.reuse,
    retries: options.retries,
  };
}

/**
 * Host key verifiers by policy and files read (~/.ssh/known_hosts, or the ssh config's
 * UserKnownHostsFile; read-only) besides leash's own file: one object per distinct pair, as
 * the connection pool shares connections only between tasks with the same verifier object.
 * An unreadable file is a usage error; each warning is printed once.
 */
function hostKeySets(options: RunOptions, warn: (line: string) => void): (policy: HostKeyPolicy, readFiles: readonly string[]) => Promise<HostKeyVerifier> {
  const verifiers = new Map<string, HostKeyVerifier>();
  const warned = new Set<string>();
  return async (policy, readFiles) => {
    const id = [policy, ...readFiles].join('\u0000');
    let verifier = verifiers.get(id);
    if (verifier !== undefined) return verifier;
    try {
      verifier = await HostKeyVerifier.load({ policy, readFiles: [...readFiles], ownFile: options.knownHostsFile });
    } catch (err) {
      if (err instanceof HostKeyFileError) throw new UsageError(err.message);
      throw err;
    }
    verifiers.set(id, verifier);
    for (const w of verifier.warnings) {
      if (!warned.has(w)) warn(`warning: ${w}`);
      warned.add(w);
    }
    return verifier;
  };
}

/** The demo target: its own ephemeral key and a host key trusted for this run only. */
function demoSpec(options: RunOptions, demo: DemoTarget): TaskSpec {
  const parsed = ssh2.utils.parseKey(demo.clientPrivateKey);
  if (parsed instanceof Error || Array.isArray(parsed)) throw new Error('demo target: unusable client key');
  const key: ParsedKey = parsed;
  const hostKeys = HostKeyVerifier.fromLines([demo.knownHostsLine], 'strict');
  return taskSpec(
    options,
    { target: { host: demo.host, port: demo.port, user: demo.user }, jump: [], timeouts: options.timeouts, keepalive: options.keepalive },
    { keys: [{ path: 'demo', parsed: key }], agentSocket: null, password: null },
    hostKeys,
  );
}
