import type { ErrorCode } from '../lifecycle/errors.ts';
import type { TaskReport } from '../lifecycle/task-report.ts';
import { formatDuration } from './duration.ts';
import { foldHosts } from './host-fold.ts';

/** Where `leash run` writes: stdout for results, stderr for progress and the summary. */
export interface OutputStreams {
  readonly out: NodeJS.WritableStream & { isTTY?: boolean };
  readonly err: NodeJS.WritableStream & { isTTY?: boolean };
}

/** How results are shown. */
export interface OutputMode {
  /** One JSON object per host (or per group) per line. */
  readonly json: boolean;
  /** Fold hosts with identical results into one block, printed at the end. */
  readonly group: boolean;
  /**
   * Label hosts `user@host`: needed when the same host is reached as several users.
   * Default: when the reports involve more than one user (known only for grouped output).
   */
  readonly showUsers?: boolean;
}

/** Counts of finished tasks, for the progress line and the summary. */
class Tally {
  done = 0;
  readonly byStatus = new Map<string, number>();
  readonly byCode = new Map<ErrorCode, number>();

  add(report: TaskReport): void {
    this.done++;
    this.byStatus.set(report.status, (this.byStatus.get(report.status) ?? 0) + 1);
    if (report.error) this.byCode.set(report.error.code, (this.byCode.get(report.error.code) ?? 0) + 1);
  }

  get failed(): number {
    return this.done - (this.byStatus.get('ok') ?? 0);
  }

  codes(): string {
    return [...this.byCode].map(([code, n]) => `${code} ${n}`).join(', ');
  }
}

/**
 * Shows `leash run` results: a block per host as it finishes (or one JSON line), a live
 * progress line on stderr when stderr is a terminal, and a summary at the end.
 */
export class RunOutput {
  readonly #streams: OutputStreams;
  readonly #mode: OutputMode;
  readonly #total: number;
  readonly #tally = new Tally();
  readonly #started = Date.now();
  readonly #grouped: TaskReport[] = [];
  readonly #progress: boolean;
  readonly #color: boolean;
  #progressShown = false;

  constructor(streams: OutputStreams, mode: OutputMode, total: number) {
    this.#streams = streams;
    this.#mode = mode;
    this.#total = total;
    this.#progress = streams.err.isTTY === true && !mode.json;
    this.#color = streams.out.isTTY === true && !mode.json && process.env.NO_COLOR === undefined;
  }

  /** One task finished. */
  report(report: TaskReport): void {
    this.#tally.add(report);
    if (this.#mode.group) this.#grouped.push(report);
    else if (this.#mode.json) this.#write(`${JSON.stringify(toJsonLine(report))}\n`);
    else this.#write(this.#block([report], this.#mode.showUsers ?? false));
    this.#drawProgress();
  }

  /** Every task finished: grouped blocks, then the summary on stderr (not in JSON mode). */
  finish(): void {
    if (this.#mode.group) {
      const showUsers = this.#mode.showUsers ?? new Set(this.#grouped.map((r) => r.user)).size > 1;
      for (const group of groupReports(this.#grouped)) {
        this.#write(this.#mode.json ? `${JSON.stringify(toJsonGroup(group))}\n` : this.#block(group, showUsers));
      }
    }
    this.#clearProgress();
    if (!this.#mode.json) this.#streams.err.write(`${this.#summary()}\n`);
  }

  /** A one-line message on stderr that does not garble the progress line. */
  notice(line: string): void {
    this.#clearProgress();
    this.#streams.err.write(`${line}\n`);
    this.#drawProgress();
  }

  #write(text: string): void {
    this.#clearProgress();
    this.#streams.out.write(text);
  }

  #block(reports: readonly TaskReport[], showUsers: boolean): string {
    const first = reports[0]!;
    const label = (r: TaskReport): string => hostLabel(r, showUsers);
    const names = reports.length === 1 ? label(first) : `${foldHosts(reports.map(label))} (${reports.length})`;
    const lines = [`${this.#paint(first.status, '──')} ${names}  ${this.#paint(first.status, first.status)}  ${describeOutcome(first, reports.length)}`];
    if (first.stdout.length > 0) lines.push(withNewline(first.stdout).trimEnd());
    if (first.stderr.length > 0) lines.push(`${this.#paint('nonzero-exit', '── stderr')}`, withNewline(first.stderr).trimEnd());
    if (first.truncated) {
      const { stdout, stderr } = first.bytesDropped;
      lines.push(`(output truncated: ${stdout} bytes of stdout and ${stderr} of stderr dropped between head and tail)`);
    }
    return `${lines.join('\n')}\n`;
  }

  #paint(status: string, text: string): string {
    if (!this.#color) return text;
    const code = status === 'ok' ? 32 : status === 'nonzero-exit' ? 33 : 31;
    return `\x1b[${code}m${text}\x1b[0m`;
  }

  #drawProgress(): void {
    if (!this.#progress) return;
    const t = this.#tally;
    const failures = t.failed > 0 ? ` · ${t.failed} not ok${t.byCode.size > 0 ? ` (${t.codes()})` : ''}` : '';
    this.#streams.err.write(`\r\x1b[2K${t.done}/${this.#total} done${failures}`);
    this.#progressShown = true;
  }

  #clearProgress(): void {
    if (!this.#progressShown) return;
    this.#streams.err.write('\r\x1b[2K');
    this.#progressShown = false;
  }

  #summary(): string {
    const t = this.#tally;
    const parts = [...t.byStatus].map(([status, n]) => `${n} ${status}`).join(', ');
    const codes = t.byCode.size > 0 ? ` (${t.codes()})` : '';
    return `${t.done} host${t.done === 1 ? '' : 's'}: ${parts || 'none'}${codes} in ${formatDuration(Date.now() - this.#started)}`;
  }
}

/**
 * A host as `--hosts` would take it: `host`, `host:port` when the port is not 22 (an IPv6
 * address in brackets then), with `user@` in front when asked.
 */
function hostLabel(report: TaskReport, showUser: boolean): string {
  const host = report.port === 22 ? report.host : `${report.host.includes(':') ? `[${report.host}]` : report.host}:${report.port}`;
  return showUser ? `${report.user}@${host}` : host;
}

/** What happened, for a block header; a group shares code and stage but not messages or timings. */
function describeOutcome(report: TaskReport, count: number): string {
  const took = count === 1 ? `  ${formatDuration(report.durationMs)}` : '';
  if (report.error) {
    const kill = report.killConfirmed === null ? '' : report.killConfirmed ? ' (remote process killed)' : ' (remote kill NOT confirmed)';
    const message = count === 1 ? `: ${report.error.message}` : '';
    return `${report.error.code} in ${report.error.stage}${message}${kill}${took}`;
  }
  if (report.signal !== null) return `killed by ${report.signal}${took}`;
  return `exit ${report.exitCode ?? '?'}${took}`;
}

function withNewline(text: string): string {
  return text.endsWith('\n') ? text : `${text}\n`;
}

/** The `--json` line of DESIGN.md "Contracts": contract fields first, then the extras. */
export function toJsonLine(report: TaskReport): Record<string, unknown> {
  return {
    host: report.host,
    port: report.port,
    user: report.user,
    status: report.status,
    exitCode: report.exitCode,
    signal: report.signal,
    stdout: report.stdout,
    stderr: report.stderr,
    truncated: report.truncated,
    durationMs: report.durationMs,
    stages: report.stages,
    error: report.error,
    bytesDropped: report.bytesDropped,
    exitStatusMissing: report.exitStatusMissing,
    killConfirmed: report.killConfirmed,
  };
}

function toJsonGroup(reports: readonly TaskReport[]): Record<string, unknown> {
  const first = reports[0]!;
  return {
    hosts: reports.map((r) => ({ host: r.host, port: r.port, user: r.user })),
    count: reports.length,
    status: first.status,
    exitCode: first.exitCode,
    signal: first.signal,
    stdout: first.stdout,
    stderr: first.stderr,
    truncated: first.truncated,
    error: first.error ? { code: first.error.code, stage: first.error.stage } : null,
  };
}

/**
 * Groups reports whose visible result is identical (status, exit, signal, output, error
 * code and stage, kill confirmation — not the error message, which names the host),
 * largest group first.
 */
export function groupReports(reports: readonly TaskReport[]): TaskReport[][] {
  const groups = new Map<string, TaskReport[]>();
  for (const r of reports) {
    const key = JSON.stringify([r.status, r.exitCode, r.signal, r.stdout, r.stderr, r.error?.code, r.error?.stage, r.killConfirmed]);
    const group = groups.get(key);
    if (group) group.push(r);
    else groups.set(key, [r]);
  }
  return [...groups.values()].sort((a, b) => b.length - a.length);
}
