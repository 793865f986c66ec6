import { mkdirSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import type { ErrorCode } from '../lifecycle/errors.ts';
import { ledger as processLedger, type ResourceHandle, type ResourceLedger } from '../lifecycle/ledger.ts';
import { canEnter, TERMINAL_STATUSES, type Stage } from '../lifecycle/stages.ts';
import type { StageTiming, TaskReport } from '../lifecycle/task-report.ts';
import type { TaskTarget } from '../lifecycle/task-table.ts';
import { runMigrations } from './sqlite-migrations.ts';
import type {
  BatchCounts,
  BatchStatus,
  BudgetAction,
  NewBatch,
  NewTask,
  OutputGroup,
  RetentionPolicy,
  StoredBatch,
  StoredStatus,
  StoredTask,
  StoredTimeouts,
  TaskPage,
  TaskQuery,
  TaskStore,
} from './task-store.ts';
import { StoreCursorError } from './task-store.ts';

/** How long a write waits for another connection's lock before failing (SQLITE_BUSY). */
const BUSY_TIMEOUT_MS = 5000;

/** `status IN (…)` for live and terminal tasks; the values are constants, never input. */
const LIVE_SQL = `('queued', 'running')`;
const TERMINAL_SQL = `(${TERMINAL_STATUSES.map((s) => `'${s}'`).join(', ')})`;


interface TaskRow {
  id: string;
  host: string;
  port: number;
  user: string;
  identity: string | null;
  exec_id: string | null;
  jump: string | null;
  command: string;
  env_names: string;
  timeouts: string;
  max_output_bytes: number;
  batch_id: string | null;
  submitted_by: string | null;
  status: string;
  stage: string | null;
  stage_at: number | null;
  stages: string;
  created_at: number;
  updated_at: number;
  finished_at: number | null;
  report: string | null;
  stdout: string | null;
  stderr: string | null;
  interrupted_reason: string | null;
}

interface BatchRow {
  id: string;
  command: string;
  host_count: number;
  concurrency: number;
  max_errors: string;
  on_budget_exhausted: string;
  submitted_by: string | null;
  status: string;
  created_at: number;
  finished_at: number | null;
}

interface GroupRow {
  status: string;
  exit_code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
  error_code: string | null;
  error_stage: string | null;
  hosts: string;
}

/** The report as stored in the `report` column: its output and stages live in their own columns. */
type ReportRest = Omit<TaskReport, 'stdout' | 'stderr' | 'stages'>;

interface TaskInsert {
  id: string;
  host: string;
  port: number;
  user: string;
  identity: string | null;
  exec_id: string | null;
  jump: string | null;
  command: string;
  env_names: string;
  timeouts: string;
  max_output_bytes: number;
  batch_id: string | null;
  submitted_by: string | null;
  stages: string;
  created_at: number;
}

interface TaskFinish {
  id: string;
  status: string;
  stages: string;
  now: number;
  report: string;
  error_code: string | null;
  error_stage: string | null;
  exit_code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
}

/** Prepared once per store; listTasks adds one per filter shape (at most 16), cached. */
function prepareStatements(db: Database.Database) {
  return {
    ping: db.prepare<[], { one: number }>('SELECT 1 AS one'),
    insertTask: db.prepare<TaskInsert>(
      `INSERT INTO tasks (id, host, port, user, identity, exec_id, jump, command, env_names, timeouts, max_output_bytes, batch_id,
                          submitted_by, status, stage, stage_at, stages, created_at, updated_at)
       VALUES (@id, @host, @port, @user, @identity, @exec_id, @jump, @command, @env_names, @timeouts, @max_output_bytes, @batch_id,
               @submitted_by, 'queued', 'queued', @created_at, @stages, @created_at, @created_at)`,
    ),
    insertBatch: db.prepare<BatchRow>(
      `INSERT INTO batches (id, command, host_count, concurrency, max_errors, on_budget_exhausted, submitted_by, status,
                            created_at, finished_at)
       VALUES (@id, @command, @host_count, @concurrency, @max_errors, @on_budget_exhausted, @submitted_by, @status,
               @created_at, @finished_at)`,
    ),
    getTask: db.prepare<[string], TaskRow>('SELECT * FROM tasks WHERE id = ?'),
    getBatch: db.prepare<[string], BatchRow>('SELECT * FROM batches WHERE id = ?'),
    setStage: db.prepare<{ id: string; status: string; stage: string; at: number; stages: string; now: number }>(
      `UPDATE tasks SET status = @status, stage = @stage, stage_at = @at, stages = @stages, updated_at = @now
       WHERE id = @id AND status IN ${LIVE_SQL}`,
    ),
    finishTask: db.prepare<TaskFinish>(
      `UPDATE tasks SET status = @status, stage = NULL, stage_at = NULL, stages = @stages, updated_at = @now,
                        finished_at = @now, report = @report, error_code = @error_code, error_stage = @error_stage,
                        exit_code = @exit_code, signal = @signal, stdout = @stdout, stderr = @stderr
       WHERE id = @id AND status IN ${LIVE_SQL}`,
    ),
    finishBatch: db.prepare<[string, number, string]>(`UPDATE batches SET status = ?, finished_at = ? WHERE id = ? AND status = 'running'`),
    // The open stage is closed at the interruption: its duration runs until `at`.
    interruptTasks: db.prepare<{ reason: string; at: number }>(
      `UPDATE tasks
       SET status = 'interrupted', interrupted_reason = @reason, finished_at = @at, updated_at = @at,
           stages = CASE WHEN stage_at IS NULL OR json_array_length(stages) = 0 THEN stages
                         ELSE json_set(stages, '$[#-1].durationMs', MAX(0, @at - stage_at)) END,
           stage = NULL, stage_at = NULL
       WHERE status IN ${LIVE_SQL}`,
    ),
    liveIds: db.prepare<[], { id: string }>(`SELECT id FROM tasks WHERE status IN ${LIVE_SQL}`),
    cancelBatches: db.prepare<[number]>(`UPDATE batches SET status = 'cancelled', finished_at = ? WHERE status = 'running'`),
    countByStatus: db.prepare<[string], { status: string; n: number }>('SELECT status, COUNT(*) AS n FROM tasks WHERE batch_id = ? GROUP BY status'),
    countByCode: db.prepare<[string], { code: string; n: number }>(
      'SELECT error_code AS code, COUNT(*) AS n FROM tasks WHERE batch_id = ? AND error_code IS NOT NULL GROUP BY error_code',
    ),
    groups: db.prepare<[string], GroupRow>(
      `SELECT status, exit_code, signal, COALESCE(stdout, '') AS stdout, COALESCE(stderr, '') AS stderr,
              error_code, error_stage,
              json_group_array(json_array(host, port, user) ORDER BY host, port, user, id) AS hosts
       FROM tasks
       WHERE batch_id = ? AND status IN ${TERMINAL_SQL}
       GROUP BY status, exit_code, signal, COALESCE(stdout, ''), COALESCE(stderr, ''), error_code, error_stage
       ORDER BY COUNT(*) DESC, MIN(created_at), MIN(id)`,
    ),
    pruneByAge: db.prepare<[number]>(`DELETE FROM tasks WHERE status IN ${TERMINAL_SQL} AND finished_at IS NOT NULL AND finished_at < ?`),
    pruneByRows: db.prepare<[number]>(
      `DELETE FROM tasks WHERE id IN (
         SELECT id FROM tasks WHERE status IN ${TERMINAL_SQL}
         ORDER BY finished_at DESC, id DESC LIMIT -1 OFFSET ?)`,
    ),
    pruneBatches: db.prepare<[]>(
      `DELETE FROM batches WHERE status <> 'running' AND NOT EXISTS (SELECT 1 FROM tasks WHERE tasks.batch_id = batches.id)`,
    ),
  };
}

type Statements = ReturnType<typeof prepareStatements>;

/**
 * The embedded task store (DESIGN.md "store/"): one SQLite file in WAL mode, written
 * synchronously by better-sqlite3 behind the async {@link TaskStore} interface. The open
 * database is a ledger resource (kind `database`, owner `store`) released by {@link close}.
 */
export class SqliteTaskStore implements TaskStore {
  readonly #where: string;
  readonly #handle: ResourceHandle;
  readonly #listStatements = new Map<string, Database.Statement<unknown[], TaskRow>>();
  #db: Database.Database | null;
  #statements: Statements | null;
  /** Schema migrations this open applied (empty when the file was already current). */
  readonly migrationsApplied: readonly number[];

  private constructor(db: Database.Database, where: string, handle: ResourceHandle, migrationsApplied: readonly number[]) {
    this.#db = db;
    this.#where = where;
    this.#handle = handle;
    this.migrationsApplied = migrationsApplied;
    this.#statements = prepareStatements(db);
  }

  /**
   * Opens (creating it and its directory when missing) the database at `file`, or an
   * in-memory one for `:memory:`, and brings its schema up to date. A database written by a
   * newer leash is refused.
   */
  static open(file: string, options: { ledger?: ResourceLedger } = {}): Promise<SqliteTaskStore> {
    return attempt(() => SqliteTaskStore.#openSync(file, options.ledger ?? processLedger));
  }

  static #openSync(file: string, ledger: ResourceLedger): SqliteTaskStore {
    const memory = file === ':memory:';
    const where = memory ? ':memory:' : path.resolve(file);
    if (!memory) {
      const dir = path.dirname(where);
      try {
        mkdirSync(dir, { recursive: true });
      } catch (err) {
        throw new Error(`task database ${where}: cannot create its directory ${dir}: ${(err as Error).message}`, { cause: err });
      }
    }
    let db: Database.Database;
    try {
      db = new Database(where, { timeout: BUSY_TIMEOUT_MS });
    } catch (err) {
      throw new Error(`task database ${where}: cannot open it: ${(err as Error).message}`, { cause: err });
    }
    const opened = db;
    const handle = ledger.open('database', 'store', { path: where }, () => opened.close());
    try {
      db.pragma('journal_mode = WAL');
      db.pragma('synchronous = NORMAL');
      db.pragma('foreign_keys = ON');
      db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
      const applied = runMigrations(db, where);
      return new SqliteTaskStore(db, where, handle, applied);
    } catch (err) {
      handle.release();
      if (err instanceof Error && err.message.startsWith('task database')) throw err;
      throw new Error(`task database ${where}: cannot use it: ${(err as Error).message}`, { cause: err });
    }
  }

  /** The database file (absolute) or `:memory:`. */
  get location(): string {
    return this.#where;
  }

  createTask(task: NewTask): Promise<StoredTask> {
    return this.#run('createTask', (s) => {
      s.insertTask.run(taskInsert(task));
      return this.#readTask(s, task.id);
    });
  }

  createBatch(batch: NewBatch, tasks: readonly NewTask[]): Promise<StoredBatch> {
    return this.#run('createBatch', (s, db) => {
      for (const task of tasks) {
        if (task.batchId !== batch.id) throw new Error(`task ${task.id} belongs to batch ${String(task.batchId)}, not ${batch.id}`);
      }
      db.transaction(() => {
        s.insertBatch.run({
          id: batch.id,
          command: batch.command,
          host_count: batch.hostCount,
          concurrency: batch.concurrency,
          max_errors: JSON.stringify(batch.maxErrors),
          on_budget_exhausted: batch.onBudgetExhausted,
          submitted_by: batch.submittedBy,
          status: 'running',
          created_at: batch.createdAt,
          finished_at: null,
        });
        for (const task of tasks) s.insertTask.run(taskInsert(task));
      }).immediate();
      const row = s.getBatch.get(batch.id);
      if (!row) throw new Error(`batch ${batch.id} vanished after it was written`);
      return batchFromRow(row);
    });
  }

  markStage(id: string, stage: Stage, at: number): Promise<void> {
    return this.#run('markStage', (s, db) => {
      db.transaction(() => {
        const row = s.getTask.get(id);
        if (!row) throw new Error(`no task ${id}`);
        if (!isLive(row.status) || row.stage === null) return; // terminal: the report is the truth
        if (!canEnter(row.stage as Stage, stage)) return; // stages only move forward
        const stages = JSON.parse(row.stages) as StageTiming[];
        const last = stages.at(-1);
        if (last) stages[stages.length - 1] = { ...last, durationMs: Math.max(0, at - (row.stage_at ?? at)) };
        stages.push({ stage, startedAt: new Date(at).toISOString(), durationMs: 0 });
        s.setStage.run({
          id,
          status: stage === 'queued' ? 'queued' : 'running',
          stage,
          at,
          stages: JSON.stringify(stages),
          now: Date.now(),
        });
      }).immediate();
    });
  }

  finishTask(id: string, report: TaskReport): Promise<void> {
    return this.#run('finishTask', (s) => {
      const changed = s.finishTask.run({
        id,
        status: report.status,
        stages: JSON.stringify(stageTimings(report.stages)),
        now: Date.now(),
        report: JSON.stringify(reportRest(id, report)),
        error_code: report.error?.code ?? null,
        error_stage: report.error?.stage ?? null,
        exit_code: report.exitCode,
        signal: report.signal,
        stdout: report.stdout,
        stderr: report.stderr,
      }).changes;
      if (changed === 0 && !s.getTask.get(id)) throw new Error(`no task ${id}`);
    });
  }

  getTask(id: string): Promise<StoredTask | null> {
    return this.#run('getTask', (s) => {
      const row = s.getTask.get(id);
      return row ? taskFromRow(row) : null;
    });
  }

  listTasks(query: TaskQuery): Promise<TaskPage> {
    return this.#run('listTasks', (_s, db) => {
      const { limit } = query;
      if (!Number.isInteger(limit) || limit < 1 || limit > 1000) throw new RangeError(`limit must be an integer from 1 to 1000, not ${limit}`);
      const where: string[] = [];
      const params: Array<string | number> = [];
      if (query.status !== undefined) {
        where.push('status = ?');
        params.push(query.status);
      }
      if (query.host !== undefined) {
        where.push('host = ?');
        params.push(query.host);
      }
      if (query.batchId !== undefined) {
        where.push('batch_id = ?');
        params.push(query.batchId);
      }
      if (query.cursor !== undefined) {
        const after = decodeCursor(query.cursor);
        where.push('(created_at, id) < (?, ?)');
        params.push(after.createdAt, after.id);
      }
      const sql =
        `SELECT * FROM tasks ${where.length > 0 ? `WHERE ${where.join(' AND ')}` : ''} ` +
        'ORDER BY created_at DESC, id DESC LIMIT ?';
      let statement = this.#listStatements.get(sql);
      if (!statement) {
        statement = db.prepare<unknown[], TaskRow>(sql);
        this.#listStatements.set(sql, statement);
      }
      const rows = statement.all(...params, limit + 1);
      const more = rows.length > limit;
      const page = more ? rows.slice(0, limit) : rows;
      const last = page.at(-1);
      return {
        tasks: page.map(taskFromRow),
        nextCursor: more && last ? encodeCursor(last.created_at, last.id) : null,
      };
    });
  }

  getBatch(id: string): Promise<StoredBatch | null> {
    return this.#run('getBatch', (s) => {
      const row = s.getBatch.get(id);
      return row ? batchFromRow(row) : null;
    });
  }

  finishBatch(id: string, status: Exclude<BatchStatus, 'running'>, at: number): Promise<void> {
    return this.#run('finishBatch', (s) => {
      const changed = s.finishBatch.run(status, at, id).changes;
      if (changed === 0 && !s.getBatch.get(id)) throw new Error(`no batch ${id}`);
    });
  }

  batchCounts(id: string): Promise<BatchCounts> {
    return this.#run('batchCounts', (s) => {
      const byStatus: Partial<Record<StoredStatus, number>> = {};
      for (const r of s.countByStatus.all(id)) byStatus[r.status as StoredStatus] = r.n;
      const byCode: Partial<Record<ErrorCode, number>> = {};
      for (const r of s.countByCode.all(id)) byCode[r.code as ErrorCode] = r.n;
      return { byStatus, byCode };
    });
  }

  batchGroups(id: string): Promise<OutputGroup[]> {
    return this.#run('batchGroups', (s) =>
      s.groups.all(id).map((r) => ({
        hosts: (JSON.parse(r.hosts) as Array<[string, number, string]>).map(([host, port, user]) => ({ host, port, user })),
        status: r.status as StoredStatus,
        exitCode: r.exit_code,
        signal: r.signal,
        stdout: r.stdout,
        stderr: r.stderr,
        errorCode: r.error_code as ErrorCode | null,
        errorStage: r.error_stage as Stage | null,
      })),
    );
  }

  interruptUnfinished(reason: string, at: number): Promise<StoredTask[]> {
    return this.#run('interruptUnfinished', (s, db) =>
      db
        .transaction(() => {
          const ids = s.liveIds.all().map((r) => r.id);
          s.interruptTasks.run({ reason, at });
          s.cancelBatches.run(at);
          return ids.map((id) => this.#readTask(s, id));
        })
        .immediate(),
    );
  }

  pruneHistory(policy: RetentionPolicy, now: number): Promise<number> {
    return this.#run('pruneHistory', (s, db) =>
      db
        .transaction(() => {
          let removed = 0;
          if (policy.maxAgeMs > 0) removed += s.pruneByAge.run(now - policy.maxAgeMs).changes;
          if (policy.maxRows > 0) removed += s.pruneByRows.run(policy.maxRows).changes;
          s.pruneBatches.run();
          return removed;
        })
        .immediate(),
    );
  }

  ping(): Promise<void> {
    return this.#run('ping', (s) => {
      if (s.ping.get()?.one !== 1) throw new Error('SELECT 1 did not answer 1');
    });
  }

  /** Closes the database and releases its ledger entry; later calls do nothing. */
  close(): Promise<void> {
    if (!this.#db) return Promise.resolve();
    this.#db = null;
    this.#statements = null;
    this.#listStatements.clear();
    return attempt(() => {
      this.#handle.release();
    });
  }

  /** Runs one synchronous operation; a closed store or a failure becomes a rejection naming both. */
  #run<T>(op: string, fn: (s: Statements, db: Database.Database) => T): Promise<T> {
    const db = this.#db;
    const s = this.#statements;
    if (!db || !s) return Promise.reject(new Error(`task store ${this.#where} is closed (${op})`));
    return attempt(() => {
      try {
        return fn(s, db);
      } catch (err) {
        if (err instanceof StoreCursorError || err instanceof RangeError) throw err;
        throw new Error(`task store ${op}: ${(err as Error).message}`, { cause: err });
      }
    });
  }

  #readTask(s: Statements, id: string): StoredTask {
    const row = s.getTask.get(id);
    if (!row) throw new Error(`task ${id} vanished after it was written`);
    return taskFromRow(row);
  }
}

function attempt<T>(fn: () => T): Promise<T> {
  try {
    return Promise.resolve(fn());
  } catch (err) {
    return Promise.reject(err instanceof Error ? err : new Error(String(err)));
  }
}

function isLive(status: string): boolean {
  return status === 'queued' || status === 'running';
}

function taskInsert(task: NewTask): TaskInsert {
  const stages: StageTiming[] = [{ stage: 'queued', startedAt: new Date(task.createdAt).toISOString(), durationMs: 0 }];
  return {
    id: task.id,
    host: task.target.host,
    port: task.target.port,
    user: task.target.user,
    identity: task.identity,
    exec_id: task.execId,
    jump: task.jump && task.jump.length > 0 ? JSON.stringify(task.jump.map((h) => ({ host: h.host, port: h.port, user: h.user }))) : null,
    command: task.command,
    env_names: JSON.stringify(task.envNames.map(String)),
    timeouts: JSON.stringify(timeouts(task.timeouts)),
    max_output_bytes: task.maxOutputBytes,
    batch_id: task.batchId,
    submitted_by: task.submittedBy,
    stages: JSON.stringify(stages),
    created_at: task.createdAt,
  };
}

/*
 * Never serialise a caller's object wholesale: TypeScript lets a wider object (one that also
 * carries env values, stdin or a password) pass as a NewTask or a TaskReport, and
 * JSON.stringify would write every field of it. Each stored JSON value is built field by field.
 */

function timeouts(t: StoredTimeouts): StoredTimeouts {
  return {
    connectMs: t.connectMs,
    handshakeMs: t.handshakeMs,
    authMs: t.authMs,
    channelMs: t.channelMs,
    commandMs: t.commandMs,
    idleMs: t.idleMs,
  };
}

function stageTimings(stages: readonly StageTiming[]): StageTiming[] {
  return stages.map((st) => ({ stage: st.stage, startedAt: st.startedAt, durationMs: st.durationMs }));
}

function reportRest(id: string, r: TaskReport): ReportRest {
  return {
    id,
    host: r.host,
    port: r.port,
    user: r.user,
    status: r.status,
    exitCode: r.exitCode,
    signal: r.signal,
    exitStatusMissing: r.exitStatusMissing,
    truncated: r.truncated,
    bytesDropped: { stdout: r.bytesDropped.stdout, stderr: r.bytesDropped.stderr },
    killConfirmed: r.killConfirmed,
    durationMs: r.durationMs,
    error: r.error === null ? null : { code: r.error.code, stage: r.error.stage, message: r.error.message },
  };
}

function taskFromRow(row: TaskRow): StoredTask {
  const stages = JSON.parse(row.stages) as StageTiming[];
  let report: TaskReport | null = null;
  if (row.report !== null) {
    const rest = JSON.parse(row.report) as ReportRest;
    report = { ...rest, stdout: row.stdout ?? '', stderr: row.stderr ?? '', stages };
  }
  return {
    id: row.id,
    target: { host: row.host, port: row.port, user: row.user },
    command: row.command,
    identity: row.identity,
    execId: row.exec_id,
    ...(row.jump === null ? {} : { jump: JSON.parse(row.jump) as TaskTarget[] }),
    envNames: JSON.parse(row.env_names) as string[],
    timeouts: JSON.parse(row.timeouts) as StoredTimeouts,
    maxOutputBytes: row.max_output_bytes,
    batchId: row.batch_id,
    submittedBy: row.submitted_by,
    createdAt: row.created_at,
    status: row.status as StoredStatus,
    stage: row.stage as Stage | null,
    stages,
    updatedAt: row.updated_at,
    finishedAt: row.finished_at,
    report,
    interruptedReason: row.interrupted_reason,
  };
}

function batchFromRow(row: BatchRow): StoredBatch {
  return {
    id: row.id,
    command: row.command,
    hostCount: row.host_count,
    concurrency: row.concurrency,
    maxErrors: JSON.parse(row.max_errors) as number | string,
    onBudgetExhausted: row.on_budget_exhausted as BudgetAction,
    submittedBy: row.submitted_by,
    status: row.status as BatchStatus,
    createdAt: row.created_at,
    finishedAt: row.finished_at,
  };
}

/** Opaque to callers: base64url of `[createdAt, id]` of the last task of the page. */
function encodeCursor(createdAt: number, id: string): string {
  return Buffer.from(JSON.stringify([createdAt, id]), 'utf8').toString('base64url');
}

function decodeCursor(cursor: string): { createdAt: number; id: string } {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    value = null;
  }
  if (Array.isArray(value) && value.length === 2 && Number.isSafeInteger(value[0]) && typeof value[1] === 'string') {
    return { createdAt: value[0] as number, id: value[1] };
  }
  throw new StoreCursorError('cursor is not one this server returned (pass nextCursor from the previous page unchanged)');
}
