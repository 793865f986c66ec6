/**
 * A mistake in what the user typed (a flag, a host list, an inventory file). The CLI
 * prints its one-line message after `leash: ` and exits with status 2; no stack trace.
 * Messages name the offending input, e.g.
 * `bad duration "10x" for --timeout: expected a number with a unit: ms, s, m or h (e.g. 500ms, 10s, 2m)`.
 */
export class UsageError extends Error {
  override readonly name = 'UsageError';
  /** The process exit status for a usage error (DESIGN.md "Contracts"). */
  readonly exitCode = 2;

  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
  }
}

export { quoteInput } from '../service/quote-input.ts';
