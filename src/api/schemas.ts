import { Type, type Static } from 'typebox';
import { ERROR_CODES } from '../lifecycle/errors.ts';
import { STAGES, TERMINAL_STATUSES } from '../lifecycle/stages.ts';

/**
 * The API's request and response shapes (DESIGN.md "Contracts"), written once: Fastify
 * validates requests with them and the OpenAPI document at /openapi.json is generated from
 * them. Unknown fields are errors, never silently dropped.
 */

const MAX_DEADLINE_MS = 7 * 24 * 3600 * 1000;

/** A string from a fixed set, typed as that set's union. */
function StringEnum<T extends string>(values: readonly T[], options: { description?: string } = {}) {
  return Type.Unsafe<T>({ type: 'string', enum: [...values], ...options });
}

const Duration = (description: string) => Type.Integer({ minimum: 0, maximum: MAX_DEADLINE_MS, description: `${description}, in ms; 0 disables` });

export const TimeoutsSchema = Type.Object(
  {
    connectMs: Type.Optional(Duration('DNS lookup and TCP connect')),
    handshakeMs: Type.Optional(Duration('SSH banner, key exchange and host key check')),
    authMs: Type.Optional(Duration('authentication')),
    channelMs: Type.Optional(Duration('opening the session and starting the command')),
    commandMs: Type.Optional(Duration('the command as a whole')),
    idleMs: Type.Optional(Duration('longest silence from the command')),
  },
  { additionalProperties: false, description: 'Per-stage deadlines; omitted ones take the configured defaults.' },
);

const EnvSchema = Type.Unsafe<Record<string, string>>({
  type: 'object',
  propertyNames: { pattern: '^[A-Za-z_][A-Za-z0-9_]*$', maxLength: 128 },
  additionalProperties: { type: 'string', maxLength: 32768 },
  maxProperties: 64,
  description: 'Environment variables for the command (names are shell identifiers). Values are not stored.',
});

const HostField = Type.String({ minLength: 1, maxLength: 255, description: 'Host name, IPv4 or IPv6 address' });
const PortField = Type.Integer({ minimum: 1, maximum: 65535 });
const UserField = Type.String({ minLength: 1, maxLength: 64, pattern: '^[^\\s@:\\[\\]]+$' });
const CommandField = Type.String({ minLength: 1, maxLength: 65536 });
const IdentityField = Type.String({ minLength: 1, maxLength: 128, description: 'A named identity from the configuration' });
const MaxOutputField = Type.Integer({ minimum: 0, maximum: 64 * 1024 * 1024, description: 'Bytes kept per stream (head and tail)' });
const ReuseField = Type.Boolean({ description: 'Borrow a pooled SSH connection (default true); false: a fresh connection, closed after' });
const JumpField = Type.Array(Type.String({ minLength: 1, maxLength: 300 }), {
  minItems: 1,
  maxItems: 8,
  description: 'Jump hosts (like ssh -J), first hop first: [user@]host[:port] each; the user defaults to the identity\'s',
});
const RetriesField = Type.Integer({ minimum: 0, maximum: 5, description: 'Further attempts on a fresh connection when the task fails before its command started (default 0)' });

export const TaskRequestSchema = Type.Object(
  {
    host: HostField,
    port: Type.Optional(PortField),
    user: Type.Optional(UserField),
    identity: Type.Optional(IdentityField),
    command: CommandField,
    env: Type.Optional(EnvSchema),
    stdin: Type.Optional(Type.String({ description: 'Written to the command, then closed. Not stored.' })),
    timeouts: Type.Optional(TimeoutsSchema),
    maxOutputBytes: Type.Optional(MaxOutputField),
    reuse: Type.Optional(ReuseField),
    retries: Type.Optional(RetriesField),
    jump: Type.Optional(JumpField),
    wait: Type.Optional(Type.Number({ minimum: 0, maximum: 3600, description: 'Seconds to wait for the result before answering 202 (capped by the server)' })),
  },
  { additionalProperties: false },
);
export type TaskRequestBody = Static<typeof TaskRequestSchema>;

export const BatchRequestSchema = Type.Object(
  {
    hosts: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 1024 }), { minItems: 1, description: 'Entries [user@]host[:port], ranges allowed' })),
    pattern: Type.Optional(Type.String({ minLength: 1, maxLength: 65536, description: 'A host list like web[01-20].example.com,db1' })),
    port: Type.Optional(PortField),
    user: Type.Optional(UserField),
    identity: Type.Optional(IdentityField),
    command: CommandField,
    env: Type.Optional(EnvSchema),
    stdin: Type.Optional(Type.String()),
    timeouts: Type.Optional(TimeoutsSchema),
    maxOutputBytes: Type.Optional(MaxOutputField),
    reuse: Type.Optional(ReuseField),
    retries: Type.Optional(RetriesField),
    jump: Type.Optional(JumpField),
    concurrency: Type.Optional(Type.Integer({ minimum: 1, maximum: 10000, description: 'Tasks of the batch at once (default 32)' })),
    maxErrors: Type.Optional(
      Type.Union([Type.Integer({ minimum: 0 }), Type.String({ pattern: '^\\d+(\\.\\d+)?%$' })], {
        description: 'Errors tolerated: a count, or a percentage of the hosts like "10%" (default "100%")',
      }),
    ),
    onBudgetExhausted: Type.Optional(StringEnum(['cancel', 'finish'] as const, { description: 'default finish' })),
  },
  { additionalProperties: false },
);
export type BatchRequestBody = Static<typeof BatchRequestSchema>;

export const IdParamsSchema = Type.Object({ id: Type.String({ minLength: 1, maxLength: 64 }) }, { additionalProperties: false });

const StoredStatusSchema = StringEnum(['queued', 'running', ...TERMINAL_STATUSES] as const);

export const TaskListQuerySchema = Type.Object(
  {
    status: Type.Optional(StoredStatusSchema),
    host: Type.Optional(HostField),
    batch: Type.Optional(Type.String({ minLength: 1, maxLength: 64 })),
    limit: Type.Optional(Type.String({ pattern: '^[0-9]{1,4}$', description: '1–1000, default 50' })),
    cursor: Type.Optional(Type.String({ maxLength: 512 })),
  },
  { additionalProperties: false },
);
export type TaskListQuery = Static<typeof TaskListQuerySchema>;

const StageSchema = StringEnum(STAGES);
const ErrorCodeSchema = StringEnum(ERROR_CODES);

const StageTimingSchema = Type.Object({ stage: StageSchema, startedAt: Type.String(), durationMs: Type.Number() });

export const TaskSchema = Type.Object(
  {
    id: Type.String(),
    host: Type.String(),
    port: Type.Integer(),
    user: Type.String(),
    identity: Type.Union([Type.String(), Type.Null()]),
    command: Type.String(),
    batchId: Type.Union([Type.String(), Type.Null()]),
    submittedBy: Type.Union([Type.String(), Type.Null()]),
    status: StoredStatusSchema,
    stage: Type.Union([StageSchema, Type.Null()]),
    stages: Type.Array(StageTimingSchema),
    createdAt: Type.String(),
    finishedAt: Type.Union([Type.String(), Type.Null()]),
    result: Type.Union([
      Type.Object({
        exitCode: Type.Union([Type.Integer(), Type.Null()]),
        signal: Type.Union([Type.String(), Type.Null()]),
        exitStatusMissing: Type.Boolean(),
        stdout: Type.String(),
        stderr: Type.String(),
        truncated: Type.Boolean(),
        bytesDropped: Type.Object({ stdout: Type.Integer(), stderr: Type.Integer() }),
        killConfirmed: Type.Union([Type.Boolean(), Type.Null()]),
        durationMs: Type.Number(),
      }),
      Type.Null(),
    ]),
    error: Type.Union([Type.Object({ code: ErrorCodeSchema, stage: StageSchema, message: Type.String() }), Type.Null()]),
    interruptedReason: Type.Union([Type.String(), Type.Null()]),
  },
  { description: 'A task; `result` and `error` use the field names of `leash run --json`.' },
);
export type TaskJson = Static<typeof TaskSchema>;

export const TaskPageSchema = Type.Object({ tasks: Type.Array(TaskSchema), nextCursor: Type.Union([Type.String(), Type.Null()]) });

const TargetSchema = Type.Object({ host: Type.String(), port: Type.Integer(), user: Type.String() });

export const BatchSchema = Type.Object({
  id: Type.String(),
  command: Type.String(),
  status: StringEnum(['running', 'finished', 'cancelled', 'budget-exhausted'] as const),
  hostCount: Type.Integer(),
  concurrency: Type.Integer(),
  maxErrors: Type.Union([Type.Integer(), Type.String()]),
  onBudgetExhausted: StringEnum(['cancel', 'finish'] as const),
  submittedBy: Type.Union([Type.String(), Type.Null()]),
  createdAt: Type.String(),
  finishedAt: Type.Union([Type.String(), Type.Null()]),
  counts: Type.Object({
    byStatus: Type.Record(Type.String(), Type.Integer()),
    byCode: Type.Record(Type.String(), Type.Integer()),
  }),
  groups: Type.Array(
    Type.Object({
      hosts: Type.Array(TargetSchema),
      count: Type.Integer(),
      status: StoredStatusSchema,
      exitCode: Type.Union([Type.Integer(), Type.Null()]),
      signal: Type.Union([Type.String(), Type.Null()]),
      stdout: Type.String(),
      stderr: Type.String(),
      error: Type.Union([Type.Object({ code: ErrorCodeSchema, stage: Type.Union([StageSchema, Type.Null()]) }), Type.Null()]),
    }),
  ),
});
export type BatchJson = Static<typeof BatchSchema>;

export const ErrorSchema = Type.Object(
  {
    error: Type.Object({
      code: Type.String({ description: 'bad-request, unauthorized, forbidden, not-found, conflict, too-large, queue-full, draining, unavailable, internal' }),
      message: Type.String(),
      field: Type.Optional(Type.String()),
    }),
  },
  { description: 'Every error response' },
);
