import { randomUUID } from 'node:crypto';

/**
 * How leash's command line looks on the remote side, and how a runaway one is found again.
 *
 * Every command runs as `export LEASH_EXEC_ID=<uuid> [ENV…]; <command>`. The id is in the
 * session leader's command line (the login shell's `-c` argument) and in the environment
 * of every process the command starts, so on a timeout leash finds the session and kills
 * it whole, even where the SSH `signal` request does nothing: OpenSSH ignores it for root
 * logins, which run without privilege separation ("session signalling requires privilege
 * separation").
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
  for (const [name] of exports.slice(1)) {
    if (!isEnvName(name)) throw new TypeError(`environment variable name ${JSON.stringify(name)} is not a shell identifier`);
    if (name === EXEC_ID_VARIABLE) throw new TypeError(`environment variable ${EXEC_ID_VARIABLE} is reserved: leash uses it to find the command's processes`);
  }
  const assignments = exports.map(([k, v]) => `${k}=${shellQuote(v)}`).join(' ');
  return { execId, line: `export ${assignments}; ${command}` };
}

/**
 * A command that SIGKILLs every session holding a process marked with `execId`: one grep
 * over every /proc/PID/environ and cmdline finds the marked processes (Linux; GNU grep for
 * -z), ps gives their session ids, pkill kills each session whole. A handful of processes
 * in all, so it stays fast on a busy host. Prints `killed sessions S1,S2` when it killed any. The kill command's own processes match too (the
 * id is in their command lines); they share its session, which is always left out.
 */
export function killSessionCommand(execId: string): string {
  const mark = shellQuote(`${EXEC_ID_VARIABLE}=${execId}`);
  return (
    `m=${mark}; ` +
    `p=$(grep -lzF "$m" /proc/[0-9]*/environ /proc/[0-9]*/cmdline 2>/dev/null | cut -d/ -f3 | sort -u | paste -sd, -); ` +
    `me=$(ps -o sid= -p $$ | tr -d ' '); ` +
    `[ -n "$p" ] && [ -n "$me" ] && s=$(ps -o sid= -p "$p" | tr -d ' ' | sort -u | grep -vx -e 0 -e 1 -e "$me" | paste -sd, -) && ` +
    `[ -n "$s" ] && pkill -KILL -s "$s" && echo "killed sessions $s"; true`
  );
}
