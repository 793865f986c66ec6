import type Database from 'better-sqlite3';

/** One schema step: applied once, in order, inside a transaction, and recorded. */
export interface Migration {
  /** 1, 2, 3, … — the position in {@link MIGRATIONS}; never reused or reordered. */
  readonly version: number;
  readonly name: string;
  readonly sql: string;
}

/**
 * The task database's schema, as an ordered list of steps. Append only: a released step is
 * never edited (databases in the field have already run it); a change is a new step.
 *
 * Times are epoch ms. JSON columns hold small structured values (`env_names`, `timeouts`,
 * `stages`, the report without its output); the output itself and the fields that lists
 * and groups filter on are plain columns. Never secrets: there is no column for an
 * environment value, stdin or a credential (see NewTask in task-store.ts).
 */
export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'tasks and batches',
    sql: `
      CREATE TABLE batches (
        id                  TEXT PRIMARY KEY,
        command             TEXT NOT NULL,
        host_count          INTEGER NOT NULL,
        concurrency         INTEGER NOT NULL,
        max_errors          TEXT NOT NULL,            -- JSON: a count or "10%"
        on_budget_exhausted TEXT NOT NULL,
        submitted_by        TEXT,
        status              TEXT NOT NULL,
        created_at          INTEGER NOT NULL,
        finished_at         INTEGER
      ) STRICT;
      CREATE INDEX batches_status ON batches (status);

      CREATE TABLE tasks (
        id                 TEXT PRIMARY KEY,
        host               TEXT NOT NULL,
        port               INTEGER NOT NULL,
        user               TEXT NOT NULL,
        identity           TEXT,
        command            TEXT NOT NULL,
        env_names          TEXT NOT NULL,             -- JSON array of names; never values
        timeouts           TEXT NOT NULL,             -- JSON StoredTimeouts
        max_output_bytes   INTEGER NOT NULL,
        batch_id           TEXT REFERENCES batches (id),
        submitted_by       TEXT,
        status             TEXT NOT NULL,
        stage              TEXT,                      -- latest stage; NULL once terminal
        stage_at           INTEGER,                   -- when it was entered; NULL once terminal
        stages             TEXT NOT NULL,             -- JSON StageTiming[]
        created_at         INTEGER NOT NULL,
        updated_at         INTEGER NOT NULL,
        finished_at        INTEGER,
        report             TEXT,                      -- JSON TaskReport without stdout/stderr/stages
        error_code         TEXT,
        error_stage        TEXT,
        exit_code          INTEGER,
        signal             TEXT,
        stdout             TEXT,
        stderr             TEXT,
        interrupted_reason TEXT
      ) STRICT;
      CREATE INDEX tasks_newest   ON tasks (created_at, id);
      CREATE INDEX tasks_status   ON tasks (status, created_at, id);
      CREATE INDEX tasks_host     ON tasks (host, created_at, id);
      CREATE INDEX tasks_batch    ON tasks (batch_id, created_at, id);
      CREATE INDEX tasks_finished ON tasks (finished_at, id);
    `,
  },
  {
    version: 2,
    name: 'exec ids, to find the remote processes of a task after a crash',
    sql: `ALTER TABLE tasks ADD COLUMN exec_id TEXT;`,
  },
  {
    version: 3,
    name: 'jump hosts, to reach the remote processes of a task behind them after a crash',
    sql: `ALTER TABLE tasks ADD COLUMN jump TEXT;`,
  },
];

/** The schema version this code knows: the last step of {@link MIGRATIONS}. */
export const SCHEMA_VERSION = MIGRATIONS.length;

/** The database was written by a newer leash than this one. */
export class SchemaTooNewError extends Error {
  override readonly name = 'SchemaTooNewError';
  readonly found: number;
  readonly known: number;

  constructor(where: string, found: number, known: number) {
    super(
      `task database ${where} has schema version ${found}, newer than this leash knows (${known}); ` +
        'it was written by a newer leash: run that version, or point --data/store at another file',
    );
    this.found = found;
    this.known = known;
  }
}

/**
 * Brings the database up to {@link SCHEMA_VERSION}: each missing step runs once, in its own
 * immediate transaction (so two processes opening the same file at once cannot both apply
 * it), and is recorded in `schema_migrations`. Refuses a database newer than the code.
 * Returns the versions applied now (empty when the schema was already current).
 */
export function runMigrations(db: Database.Database, where: string): number[] {
  db.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at INTEGER NOT NULL
  ) STRICT`);
  const current = db.prepare<[], { v: number | null }>('SELECT MAX(version) AS v FROM schema_migrations');
  const isApplied = db.prepare<[number], { version: number }>('SELECT version FROM schema_migrations WHERE version = ?');
  const record = db.prepare<[number, string, number]>('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)');

  const found = current.get()?.v ?? 0;
  if (found > SCHEMA_VERSION) throw new SchemaTooNewError(where, found, SCHEMA_VERSION);

  const applied: number[] = [];
  const step = db.transaction((m: Migration): void => {
    if (isApplied.get(m.version)) return; // another process got there first
    db.exec(m.sql);
    record.run(m.version, m.name, Date.now());
    applied.push(m.version);
  });
  for (const m of MIGRATIONS) {
    if (m.version <= found) continue;
    try {
      step.immediate(m);
    } catch (err) {
      throw new Error(`task database ${where}: schema migration ${m.version} (${m.name}) failed: ${(err as Error).message}`, { cause: err });
    }
  }
  return applied;
}
