// The repetition loop every comparison of the bench uses: contenders alternate who goes
// first each repetition (so drift — thermal, page cache, other tenants — hits all of them),
// a GC before each contender's turn, at least `minReps` repetitions, and no more once the
// scenario's time budget would be exceeded by one more.
import { fmt, percentile } from './util.ts';

/** One scenario of a comparison; {@link alternate} fills `results`, `reps` and `cut`. */
export interface AlternatedScenario<R> {
  readonly title: string;
  /** Repetitions actually run. */
  reps: number;
  /** Why fewer than planned, or null. */
  cut: string | null;
  /** Per contender name; index i of every list is repetition i (they ran back to back). */
  readonly results: Map<string, R[]>;
}

export interface AlternateOptions<C extends { readonly name: string }, R> {
  /** Progress lines are prefixed with this (e.g. "pooled"); empty for none. */
  readonly label: string;
  readonly contenders: readonly C[];
  readonly reps: number;
  readonly minReps: number;
  readonly budgetS: number;
  /** Runs before each contender's turn (a full GC); none when omitted. */
  readonly gc?: () => void;
  /** One repetition of the scenario by one contender. */
  readonly run: (contender: C, rep: number) => Promise<R>;
  /** A few words about one result for the progress line. */
  readonly describe: (result: R) => string;
  readonly progress: (line: string) => void;
}

export async function alternate<C extends { readonly name: string }, R>(s: AlternatedScenario<R>, o: AlternateOptions<C, R>): Promise<void> {
  const prefix = o.label ? `${o.label} ` : '';
  const start = performance.now();
  for (let i = 0; i < o.reps; i++) {
    const spent = performance.now() - start;
    if (i >= o.minReps && spent + spent / i > o.budgetS * 1000) {
      s.cut = `stopped after ${i} of ${o.reps} repetitions to stay within its ${o.budgetS} s budget`;
      o.progress(`${prefix}${s.title}: ${s.cut}`);
      break;
    }
    // Rotate who goes first each repetition (with two contenders: alternate).
    const shift = i % o.contenders.length;
    const order = [...o.contenders.slice(shift), ...o.contenders.slice(0, shift)];
    const line: string[] = [];
    for (const c of order) {
      o.gc?.();
      const result = await o.run(c, i);
      const list = s.results.get(c.name) ?? [];
      list.push(result);
      s.results.set(c.name, list);
      line.push(`${c.name} ${o.describe(result)}`);
    }
    s.reps = i + 1;
    o.progress(`${prefix}${s.title} rep ${i + 1}/${o.reps}: ${line.join('; ')}`);
  }
}

/** "p50 12.3 ms, 45.6/s" for a result with per-task latencies and a wall time. */
export function latencyLine(r: { readonly latencies: readonly number[]; readonly wallMs: number }): string {
  return `p50 ${fmt(percentile(r.latencies, 50))} ms, ${fmt(r.latencies.length / (r.wallMs / 1000))}/s`;
}
