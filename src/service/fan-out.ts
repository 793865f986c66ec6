import { getMaxListeners, setMaxListeners } from 'node:events';
import type { TaskReport } from '../lifecycle/task-report.ts';
import { runTask, type RunTaskOptions, type TaskRunnerDeps } from './task-runner.ts';
import type { TaskSpec } from './task-spec.ts';

/** Options for {@link fanOut}. */
export interface FanOutOptions {
  /** Most tasks running at once (≥ 1). */
  readonly concurrency: number;
  /** Cancels every task: running ones stop their remote process, queued ones end `cancelled`. */
  readonly signal: AbortSignal;
  /** Each report, as its task finishes (in completion order). */
  readonly onReport: (report: TaskReport, index: number) => void;
  readonly onStart?: RunTaskOptions['onStart'];
}

/**
 * Runs many tasks with at most `concurrency` at once and reports each as it finishes. Every
 * spec gets exactly one report, also after a cancel. Resolves when the last task is terminal.
 */
export async function fanOut(specs: readonly TaskSpec[], deps: TaskRunnerDeps, options: FanOutOptions): Promise<void> {
  // Each running task links a couple of stage signals to the shared cancel signal at a
  // time (always removed); that many listeners is expected, not a leak warning.
  const workers = Math.max(1, Math.min(options.concurrency, specs.length));
  setMaxListeners(Math.max(getMaxListeners(options.signal), workers * 4), options.signal);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < specs.length) {
      const index = next++;
      const report = await runTask(specs[index]!, deps, {
        signal: options.signal,
        ...(options.onStart ? { onStart: options.onStart } : {}),
      });
      options.onReport(report, index);
    }
  };
  await Promise.all(Array.from({ length: workers }, worker));
}
