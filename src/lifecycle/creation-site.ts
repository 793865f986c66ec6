/**
 * Where something was created, captured cheaply: V8 records the frames when the stack is
 * captured but formats them into text only when `.stack` is first read, so a creation site
 * costs a few microseconds and is formatted only when a debug dump asks for it
 * (../shared/DIAGNOSTICS.md: +2.9 µs captured, formatted at dump time). Until then the
 * recorded frames keep their functions' closures alive: fine for what lives as long as a
 * task; what outlives it should call {@link frames} once (ResourceHandle.transfer does).
 */
export class CreationSite {
  readonly #holder: { stack?: string } = {};
  #frames: readonly string[] | undefined;

  /** @param skip frames above and including this function are left out */
  // eslint-disable-next-line @typescript-eslint/no-unsafe-function-type -- any function may be the boundary
  constructor(skip: Function = CreationSite) {
    Error.captureStackTrace(this.#holder, skip);
  }

  /** The formatted frames, `at fn (file:line:col)`, without the `Error` header line. */
  frames(): readonly string[] {
    if (this.#frames === undefined) {
      const text = this.#holder.stack ?? '';
      this.#frames = internFrames(text);
    }
    return this.#frames;
  }

  /** One string identifying the site, for grouping identical creation points. */
  key(): string {
    return this.frames().join('\n');
  }

  /** The first frame, the most useful single line (e.g. `at connect (src/ssh/connect.ts:40:9)`). */
  top(): string {
    return this.frames()[0] ?? '<unknown>';
  }
}

/** Identical stacks share one frames array: a thousand tasks from one call site cost one. */
const INTERN_LIMIT = 2000;
const interned = new Map<string, readonly string[]>();
const cwdPrefix = `file://${process.cwd()}/`;
const cwdPlain = `${process.cwd()}/`;

function internFrames(text: string): readonly string[] {
  const cached = interned.get(text);
  if (cached) return cached;
  const frames = text
    .split('\n')
    .slice(1)
    .map((line) => line.trim().replaceAll(cwdPrefix, '').replaceAll(cwdPlain, ''))
    .filter((line) => line.length > 0);
  if (interned.size >= INTERN_LIMIT) interned.clear();
  interned.set(text, Object.freeze(frames));
  return frames;
}
