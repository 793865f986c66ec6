import type { Stage } from '../lifecycle/stages.ts';
import type { OutputStream } from '../ssh/exec.ts';
import type { StoredTask } from '../store/task-store.ts';

/** One event of a task's stream (the API's server-sent events). */
export type TaskEvent =
  | { readonly id: string; readonly type: 'stage'; readonly stage: Stage; readonly at: number }
  | { readonly id: string; readonly type: 'output'; readonly stream: OutputStream; readonly data: string }
  /** Live readers get the final record; a replay gets null (read it from the store). */
  | { readonly id: string; readonly type: 'result'; readonly task: StoredTask | null };

/** The id of the last event of every stream: after it there is nothing more. */
export const RESULT_EVENT_ID = 'result';

/** What a reader gets from {@link TaskEventLog.since}. */
export interface Replay {
  readonly events: readonly TaskEvent[];
  /** Some events after the given id are no longer held (old output); the result holds all output kept. */
  readonly gap: boolean;
}

/** An output event as kept: the bytes, decoded only when someone reads them. */
interface KeptOutput {
  readonly id: string;
  readonly stream: OutputStream;
  /** Whole UTF-8 characters only (a character split across chunks is carried to the next). */
  readonly bytes: Buffer;
}

/**
 * The events of one task, numbered 1, 2, 3… and ending with `result`, kept so that a
 * client can resume with Last-Event-ID. Stage events are always kept; output events only
 * up to a byte budget (the oldest go first), and all of them once the task is finished —
 * the result carries the captured output. Bounded memory whatever the task prints.
 *
 * Output is kept as bytes and turned into text only for a reader: a flood nobody watches
 * (a hostile endless-output peer) costs no strings — decoding every chunk made ~150 MB of
 * heap garbage a second of flood (the soak, issue 6).
 */
export class TaskEventLog {
  readonly #outputBudget: number;
  /** Stage events and the result: few, always kept. */
  #kept: TaskEvent[] = [];
  /** Output events, oldest first from `#outHead` (a queue that drops from the front in O(1)). */
  #output: KeptOutput[] = [];
  #outHead = 0;
  #outputBytes = 0;
  #next = 1;
  /** Highest event id dropped so far (0 for none): a reader who saw less has a gap. */
  #maxDropped = 0;
  readonly #subscribers = new Set<(event: TaskEvent) => void>();
  /** The start of a UTF-8 character cut off at the end of the last chunk, per stream. */
  readonly #partial: Record<OutputStream, Buffer | null> = { stdout: null, stderr: null };
  #finished = false;

  /** @param outputBudgetBytes output bytes kept for resuming readers */
  constructor(outputBudgetBytes: number) {
    this.#outputBudget = outputBudgetBytes;
  }

  get finished(): boolean {
    return this.#finished;
  }

  stage(stage: Stage, at: number): void {
    const event: TaskEvent = { id: String(this.#next++), type: 'stage', stage, at };
    this.#kept.push(event);
    this.#publish(event);
  }

  output(stream: OutputStream, chunk: Buffer): void {
    // Keep characters whole so each kept chunk decodes on its own.
    const carried = this.#partial[stream];
    const joined = carried ? Buffer.concat([carried, chunk]) : chunk;
    const cut = incompleteTail(joined);
    this.#partial[stream] = cut > 0 ? Buffer.from(joined.subarray(joined.length - cut)) : null;
    const whole = cut > 0 ? joined.subarray(0, joined.length - cut) : joined;
    if (whole.length === 0) return;
    // A small view of a larger buffer (a packet, a pool slab) would keep all of it alive.
    const bytes = whole.length * 2 < whole.buffer.byteLength ? Buffer.from(whole) : whole;
    const kept: KeptOutput = { id: String(this.#next++), stream, bytes };
    this.#output.push(kept);
    this.#outputBytes += bytes.length;
    while (this.#outputBytes > this.#outputBudget && this.#outHead < this.#output.length) this.#dropOldestOutput();
    if (this.#subscribers.size > 0) this.#publish(asEvent(kept));
  }

  /** The final event. Drops the output events (the result holds the output) and ends every subscription. */
  result(task: StoredTask): void {
    if (this.#finished) return;
    this.#finished = true;
    const last = this.#output[this.#output.length - 1];
    if (this.#outHead < this.#output.length && last) this.#maxDropped = Math.max(this.#maxDropped, Number(last.id));
    this.#output = [];
    this.#outHead = 0;
    this.#outputBytes = 0;
    this.#partial.stdout = null;
    this.#partial.stderr = null;
    // Kept without the record: it holds the captured output, which the store already has.
    this.#kept.push({ id: RESULT_EVENT_ID, type: 'result', task: null });
    this.#publish({ id: RESULT_EVENT_ID, type: 'result', task });
    this.#subscribers.clear();
  }

  /** Events after `lastId` (all of them for null). */
  since(lastId: string | null): Replay {
    if (lastId === RESULT_EVENT_ID) return { events: [], gap: false };
    const after = lastId === null ? 0 : Number(lastId);
    const from = Number.isSafeInteger(after) && after >= 0 ? after : 0;
    const output = this.#output.slice(this.#outHead).filter((k) => Number(k.id) > from);
    const live = [...this.#kept.filter((e) => e.type === 'stage' && Number(e.id) > from), ...output.map(asEvent)];
    const events: TaskEvent[] = live.sort((a, b) => Number(a.id) - Number(b.id));
    const result = this.#kept.find((e) => e.type === 'result');
    if (result) events.push(result);
    return { events, gap: this.#maxDropped > from };
  }

  /** Calls `listener` for every later event until the result; returns the unsubscribe function. */
  subscribe(listener: (event: TaskEvent) => void): () => void {
    if (this.#finished) return () => {};
    this.#subscribers.add(listener);
    return () => this.#subscribers.delete(listener);
  }

  #publish(event: TaskEvent): void {
    for (const listener of [...this.#subscribers]) listener(event);
  }

  #dropOldestOutput(): void {
    const dropped = this.#output[this.#outHead++]!;
    this.#outputBytes -= dropped.bytes.length;
    this.#maxDropped = Math.max(this.#maxDropped, Number(dropped.id));
    // Compact now and then so the queue's dead front does not grow without bound.
    if (this.#outHead > 1024 && this.#outHead * 2 > this.#output.length) {
      this.#output = this.#output.slice(this.#outHead);
      this.#outHead = 0;
    }
  }
}

function asEvent(kept: KeptOutput): TaskEvent {
  return { id: kept.id, type: 'output', stream: kept.stream, data: kept.bytes.toString('utf8') };
}

/**
 * How many bytes at the end of `buf` begin a UTF-8 character that continues in the next
 * chunk (0–3); what StringDecoder would hold back. Invalid bytes are not held: they decode
 * to U+FFFD where they are.
 */
export function incompleteTail(buf: Buffer): number {
  for (let back = 1; back <= Math.min(3, buf.length); back++) {
    const byte = buf[buf.length - back]!;
    if ((byte & 0xc0) === 0x80) continue; // a continuation byte: look further back
    // 0xc0, 0xc1 and 0xf5–0xff never start a character; ASCII is complete.
    const length = byte >= 0xf5 ? 1 : byte >= 0xf0 ? 4 : byte >= 0xe0 ? 3 : byte >= 0xc2 ? 2 : 1;
    return length > back ? back : 0;
  }
  return 0;
}
