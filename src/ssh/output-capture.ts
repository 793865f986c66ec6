/**
 * Bounded capture of one output stream (DESIGN.md invariant 3): keeps the first half of the
 * cap and a rolling last half, counts what falls between, and never stops accepting data —
 * the stream must always be drained, or the remote process blocks on a full channel window
 * and never exits (../shared/SSH-PITFALLS.md 9).
 */
export class OutputCapture {
  readonly #headCap: number;
  readonly #tailCap: number;
  readonly #head: Buffer[] = [];
  #headBytes = 0;
  /** The tail is a ring of chunks trimmed from the front as new data arrives. */
  readonly #tail: Buffer[] = [];
  #tailBytes = 0;
  #dropped = 0;
  #total = 0;

  /** @param capBytes bytes kept in all (head + tail); 0 keeps nothing but still counts */
  constructor(capBytes: number) {
    this.#headCap = Math.ceil(capBytes / 2);
    this.#tailCap = capBytes - this.#headCap;
  }

  push(chunk: Buffer): void {
    this.#total += chunk.length;
    let rest = chunk;
    if (this.#headBytes < this.#headCap) {
      const take = Math.min(this.#headCap - this.#headBytes, rest.length);
      // Copy: ssh2 may hand us slices of a larger packet buffer we must not pin.
      this.#head.push(Buffer.from(rest.subarray(0, take)));
      this.#headBytes += take;
      rest = rest.subarray(take);
      if (rest.length === 0) return;
    }
    if (this.#tailCap === 0) {
      this.#dropped += rest.length;
      return;
    }
    if (rest.length >= this.#tailCap) {
      this.#dropped += this.#tailBytes + rest.length - this.#tailCap;
      this.#tail.length = 0;
      this.#tail.push(Buffer.from(rest.subarray(rest.length - this.#tailCap)));
      this.#tailBytes = this.#tailCap;
      return;
    }
    this.#tail.push(Buffer.from(rest));
    this.#tailBytes += rest.length;
    while (this.#tailBytes > this.#tailCap) {
      const first = this.#tail[0]!;
      const excess = this.#tailBytes - this.#tailCap;
      if (first.length <= excess) {
        this.#tail.shift();
        this.#tailBytes -= first.length;
        this.#dropped += first.length;
      } else {
        this.#tail[0] = first.subarray(excess);
        this.#tailBytes -= excess;
        this.#dropped += excess;
      }
    }
  }

  /** Bytes seen in all. */
  get totalBytes(): number {
    return this.#total;
  }

  /** Bytes seen but not kept (between head and tail). */
  get bytesDropped(): number {
    return this.#dropped;
  }

  get truncated(): boolean {
    return this.#dropped > 0;
  }

  /** What was kept: head then tail, contiguous only when nothing was dropped. */
  parts(): { head: Buffer; tail: Buffer } {
    return { head: Buffer.concat(this.#head), tail: Buffer.concat(this.#tail) };
  }

  /** Head and tail as one buffer (the gap is reported by `bytesDropped`). */
  toBuffer(): Buffer {
    return Buffer.concat([...this.#head, ...this.#tail]);
  }
}
