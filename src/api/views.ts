import type { BatchView } from '../service/batch-service.ts';
import type { StoredTask } from '../store/task-store.ts';
import type { BatchJson, TaskJson } from './schemas.ts';

/** A stored task as the API shows it: DESIGN.md's `id, status, stage, stages[], result, error`. */
export function taskJson(task: StoredTask): TaskJson {
  const report = task.report;
  return {
    id: task.id,
    host: task.target.host,
    port: task.target.port,
    user: task.target.user,
    identity: task.identity,
    command: task.command,
    batchId: task.batchId,
    submittedBy: task.submittedBy,
    status: task.status,
    stage: task.stage,
    stages: [...task.stages],
    createdAt: iso(task.createdAt),
    finishedAt: task.finishedAt === null ? null : iso(task.finishedAt),
    result: report
      ? {
          exitCode: report.exitCode,
          signal: report.signal,
          exitStatusMissing: report.exitStatusMissing,
          stdout: report.stdout,
          stderr: report.stderr,
          truncated: report.truncated,
          bytesDropped: { ...report.bytesDropped },
          killConfirmed: report.killConfirmed,
          durationMs: report.durationMs,
        }
      : null,
    error: report?.error ? { ...report.error } : null,
    interruptedReason: task.interruptedReason,
  };
}

/** A batch with its counts and output groups. */
export function batchJson(view: BatchView): BatchJson {
  const { batch, counts, groups } = view;
  return {
    id: batch.id,
    command: batch.command,
    status: batch.status,
    hostCount: batch.hostCount,
    concurrency: batch.concurrency,
    maxErrors: batch.maxErrors,
    onBudgetExhausted: batch.onBudgetExhausted,
    submittedBy: batch.submittedBy,
    createdAt: iso(batch.createdAt),
    finishedAt: batch.finishedAt === null ? null : iso(batch.finishedAt),
    counts: { byStatus: { ...counts.byStatus }, byCode: { ...counts.byCode } },
    groups: groups.map((g) => ({
      hosts: g.hosts.map((h) => ({ host: h.host, port: h.port, user: h.user })),
      count: g.hosts.length,
      status: g.status,
      exitCode: g.exitCode,
      signal: g.signal,
      stdout: g.stdout,
      stderr: g.stderr,
      error: g.errorCode === null ? null : { code: g.errorCode, stage: g.errorStage },
    })),
  };
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}
