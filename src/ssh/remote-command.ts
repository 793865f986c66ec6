import { randomUUID } from 'node:crypto';

/**
 * How leash's command line looks on the remote side, and how a runaway one is found again.
 *
 * Every command runs as `export LEASH_EXEC_ID=<uuid> [ENV…]; exec "$SHELL" -c '<command>'`:
 * the login shell exports the variables and replaces itself with a fresh shell running
 * the command, so the session leader and every process it starts carry LEASH_EXEC_ID in
 * their environment. That lets leash kill the whole session on a timeout even where the
 * SSH `signal` request does nothing — OpenSSH ignores it for root logins, which run
 * without privilege separation ("session signalling requires privilege separation").
 *
 * Environment variables travel the same way, not as SSH `env` requests, which sshd drops
 * silently unless AcceptEnv lists them. Both need a POSIX login shell on the target (sh,
 * bash, dash, zsh, ksh); the exported values are visible in the remote process list.
 */

const NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** The variable that marks every process of one execution. */
export const EXEC_ID_VARIABLE = 'LEASH_EXEC_ID';

/** True when `name` can be exported by a POSIX shell. */
export function isEnvName(name: string): boolean {
  return NAME.test(name);
}

/** Quotes `value` as one POSIX shell word. */
export function shellQuote(value: string): string {
  return `'${value.replaceAll("'", `'\\''`)}'`;
}

/** A command ready to send, with the id that marks its processes. */
export interface RemoteCommandLine {
  readonly execId: string;
  readonly line: string;
}

/** Wraps `command` with its exports (see the module comment). */
export function remoteCommandLine(command: string, env: Readonly<Record<string, string>> | undefined, execId: string = randomUUID()): RemoteCommandLine {
  const exports: Array<[string, string]> = [[EXEC_ID_VARIABLE, execId], ...Object.entries(env ?? {})];
  for (const [name] of exports) {
    if (!isEnvName(name)) throw new TypeError(`environment variable name ${JSON.stringify(name)} is not a shell identifier`);
  }
  const assignments = exports.map(([k, v]) => `${k}=${shellQuote(v)}`).join(' ');
  return { execId, line: `export ${assignments}; exec "\${SHELL:-/bin/sh}" -c ${shellQuote(command)}` };
}

/**
 * A command that SIGKILLs every session holding a process marked with `execId`: one grep
 * over every /proc/PID/environ finds the marked processes (Linux; GNU grep for -z), ps gives their
 * session ids, pkill kills each session whole. A handful of processes in all, so it stays
 * fast on a busy host. Its own shell is not marked: the id is in its command line, never
 * in its environment.
 */
export function killSessionCommand(execId: string): string {
  const mark = shellQuote(`${EXEC_ID_VARIABLE}=${execId}`);
  return (
    `m=${mark}; ` +
    `p=$(grep -lzxF "$m" /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3 | paste -sd, -); ` +
    `[ -n "$p" ] && s=$(ps -o sid= -p "$p" | tr -d ' ' | sort -u | grep -vx '[01]' | paste -sd, -) && ` +
    `[ -n "$s" ] && pkill -KILL -s "$s"; true`
  );
}
