import { StringDecoder } from 'node:string_decoder';
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

/**
 * The events of one task, numbered 1, 2, 3… and ending with `result`, kept so that a
 * client can resume with Last-Event-ID. Stage events are always kept; output events only
 * up to a byte budget (the oldest go first), and all of them once the task is finished —
 * the result carries the captured output. Bounded memory whatever the task prints.
 */
export class TaskEventLog {
  readonly #outputBudget: number;
  /** Stage events and the result: few, always kept. */
  #kept: TaskEvent[] = [];
  /** Output events, oldest first from `#outHead` (a queue that drops from the front in O(1)). */
  #output: Array<Extract<TaskEvent, { type: 'output' }>> = [];
  #outHead = 0;
  #outputBytes = 0;
  #next = 1;
  /** Highest event id dropped so far (0 for none): a reader who saw less has a gap. */
  #maxDropped = 0;
  readonly #subscribers = new Set<(event: TaskEvent) => void>();
  readonly #decoders = { stdout: new StringDecoder('utf8'), stderr: new StringDecoder('utf8') };
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
    // Decode per stream so a multi-byte character split across chunks stays whole.
    const data = this.#decoders[stream].write(chunk);
    if (data.length === 0) return;
    const event = { id: String(this.#next++), type: 'output', stream, data } as const;
    this.#output.push(event);
    this.#outputBytes += Buffer.byteLength(data);
    while (this.#outputBytes > this.#outputBudget && this.#outHead < this.#output.length) this.#dropOldestOutput();
    this.#publish(event);
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
    const live = [...this.#kept.filter((e) => e.type === 'stage'), ...this.#output.slice(this.#outHead)];
    const events: TaskEvent[] = live.filter((e) => Number(e.id) > from).sort((a, b) => Number(a.id) - Number(b.id));
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
    this.#outputBytes -= Buffer.byteLength(dropped.data);
    this.#maxDropped = Math.max(this.#maxDropped, Number(dropped.id));
    // Compact now and then so the queue's dead front does not grow without bound.
    if (this.#outHead > 1024 && this.#outHead * 2 > this.#output.length) {
      this.#output = this.#output.slice(this.#outHead);
      this.#outHead = 0;
    }
  }
}
