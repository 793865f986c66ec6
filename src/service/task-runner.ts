import { asTaskError } from '../lifecycle/errors.ts';
import type { ResourceLedger } from '../lifecycle/ledger.ts';
import type { TerminalStatus } from '../lifecycle/stages.ts';
import type { LiveTask, TaskTable } from '../lifecycle/task-table.ts';
import type { ExecResult, OutputStream } from '../ssh/exec.ts';
import type { RemoteExec } from '../ssh/remote-exec.ts';
import type { StageTiming, TaskReport } from '../lifecycle/task-report.ts';
import { hardDeadlineMs, type TaskSpec } from './task-spec.ts';

/** What {@link runTask} runs with. */
export interface TaskRunnerDeps {
  readonly remote: RemoteExec;
  readonly ledger: ResourceLedger;
  readonly tasks: TaskTable;
}

/** Per-run options of {@link runTask}. */
export interface RunTaskOptions {
  /** Cancels the task. Abort with `cancelledError(...)`; a bare abort() also counts as cancel. */
  readonly signal: AbortSignal;
  readonly id?: string;
  /**
   * A task already in the table (accepted earlier and queued); by default the task is
   * created here. Its hard deadline starts now.
   */
  readonly task?: LiveTask;
  /** Called as soon as the task is in the task table. */
  readonly onStart?: (task: LiveTask) => void;
  readonly onOutput?: (stream: OutputStream, chunk: Buffer) => void;
}

/**
 * Runs one task from acceptance to terminal state: registers it in the task table, runs the
 * command through the {@link RemoteExec} seam, and turns the outcome into a
 * {@link TaskReport}. The task leaves the table only after its resources are released.
 */
export async function runTask(spec: TaskSpec, deps: TaskRunnerDeps, options: RunTaskOptions): Promise<TaskReport> {
  const task =
    options.task ??
    deps.tasks.create({
      ...(options.id === undefined ? {} : { id: options.id }),
      target: spec.target,
      attrs: { command: spec.command },
    });
  task.bound(hardDeadlineMs(spec.timeouts, spec.jump?.length ?? 0));
  options.onStart?.(task);
  let result: ExecResult | null = null;
  let report: TaskReport | null = null;
  try {
    if (options.signal.aborted) throw options.signal.reason;
    result = await deps.remote.run(
      {
        target: spec.target,
        timeouts: spec.timeouts,
        keepalive: spec.keepalive,
        credentials: spec.credentials,
        hostKeys: spec.hostKeys,
        ...(spec.reuse === undefined ? {} : { reuse: spec.reuse }),
        ...(spec.retries === undefined ? {} : { retries: spec.retries }),
        ...(spec.jump === undefined ? {} : { jump: spec.jump }),
        exec: {
          command: spec.command,
          timeouts: spec.timeouts,
          maxOutputBytes: spec.maxOutputBytes,
          ...(spec.env ? { env: spec.env } : {}),
          ...(spec.execId ? { execId: spec.execId } : {}),
          ...(spec.stdin != null ? { stdin: spec.stdin } : {}),
          ...(options.onOutput ? { onOutput: options.onOutput } : {}),
        },
      },
      { ledger: deps.ledger, task, signal: options.signal },
    );
    report = toReport(task, result, null);
    return report;
  } catch (err) {
    report = toReport(task, result, asTaskError(err, task.stage));
    return report;
  } finally {
    // No report only if building one threw: a bug, and reported as one.
    deps.tasks.finish(task, report?.status ?? 'error', report ? (report.error?.code ?? null) : 'internal');
  }
}

/** The terminal status a result means. */
export function statusOf(result: Pick<ExecResult, 'error' | 'exitCode'>): TerminalStatus {
  if (result.error) return result.error.code === 'cancelled' ? 'cancelled' : 'error';
  return result.exitCode === 0 ? 'ok' : 'nonzero-exit';
}

function toReport(task: LiveTask, result: ExecResult | null, thrown: ReturnType<typeof asTaskError> | null): TaskReport {
  const finishedAt = Date.now();
  const error = thrown ?? result?.error ?? null;
  const exitCode = result?.exitCode ?? null;
  const stdout = result?.stdout;
  const stderr = result?.stderr;
  return {
    id: task.id,
    host: task.target.host,
    port: task.target.port,
    user: task.target.user,
    status: statusOf({ error, exitCode }),
    exitCode,
    signal: result?.signal ?? null,
    exitStatusMissing: result?.exitStatusMissing ?? false,
    stdout: stdout ? stdout.toBuffer().toString('utf8') : '',
    stderr: stderr ? stderr.toBuffer().toString('utf8') : '',
    truncated: (stdout?.truncated ?? false) || (stderr?.truncated ?? false),
    bytesDropped: { stdout: stdout?.bytesDropped ?? 0, stderr: stderr?.bytesDropped ?? 0 },
    killConfirmed: result?.killConfirmed ?? null,
    durationMs: finishedAt - task.createdAt,
    stages: stageTimings(task, finishedAt),
    error: error ? error.toJSON() : null,
  };
}

function stageTimings(task: LiveTask, finishedAt: number): StageTiming[] {
  const marks = task.history;
  return marks.map((mark, i) => ({
    stage: mark.stage,
    startedAt: new Date(mark.at).toISOString(),
    durationMs: (marks[i + 1]?.at ?? finishedAt) - mark.at,
  }));
}
