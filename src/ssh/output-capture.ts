/**
 * Bounded capture of one output stream (DESIGN.md invariant 3): keeps the first half of the
 * cap and a rolling last half, counts what falls between, and never stops accepting data —
 * the stream must always be drained, or the remote process blocks on a full channel window
 * and never exits (../shared/SSH-PITFALLS.md 9).
 *
 * Constant work per byte and at most about `cap` bytes held, whatever the chunking: a
 * hostile peer sending one-byte messages must not cost a buffer object (or an array shift)
 * per byte. Both halves grow geometrically, so a small output costs a small buffer.
 */
export class OutputCapture {
  readonly #headCap: number;
  readonly #tailCap: number;
  #head: Buffer = Buffer.alloc(0);
  #headLen = 0;
  /** The tail: a ring buffer once it has grown to `tailCap`, linear before that. */
  #ring: Buffer = Buffer.alloc(0);
  #ringStart = 0;
  #ringLen = 0;
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
    if (this.#headLen < this.#headCap) {
      const take = Math.min(this.#headCap - this.#headLen, rest.length);
      this.#head = grow(this.#head, this.#headLen, this.#headLen + take, this.#headCap);
      rest.copy(this.#head, this.#headLen, 0, take);
      this.#headLen += take;
      rest = rest.subarray(take);
      if (rest.length === 0) return;
    }
    this.#pushTail(rest);
  }

  #pushTail(data: Buffer): void {
    const cap = this.#tailCap;
    if (data.length >= cap) {
      // Only the last `cap` bytes can survive; everything held before is dropped.
      this.#dropped += this.#ringLen + data.length - cap;
      if (this.#ring.length < cap) this.#ring = Buffer.allocUnsafe(cap);
      data.copy(this.#ring, 0, data.length - cap);
      this.#ringStart = 0;
      this.#ringLen = cap;
      return;
    }
    const needed = this.#ringLen + data.length;
    if (needed > this.#ring.length && this.#ring.length < cap) {
      this.#ring = this.#linearized(Math.min(cap, Math.max(needed, this.#ring.length * 2)));
      this.#ringStart = 0;
    }
    if (needed > this.#ring.length) {
      // Full ring: the oldest bytes make room.
      const overflow = needed - this.#ring.length;
      this.#ringStart = (this.#ringStart + overflow) % this.#ring.length;
      this.#ringLen -= overflow;
      this.#dropped += overflow;
    }
    const size = this.#ring.length;
    const at = (this.#ringStart + this.#ringLen) % size;
    const first = Math.min(data.length, size - at);
    data.copy(this.#ring, at, 0, first);
    if (first < data.length) data.copy(this.#ring, 0, first);
    this.#ringLen += data.length;
  }

  /** The tail's bytes in order, in a fresh buffer of `capacity` bytes. */
  #linearized(capacity: number): Buffer {
    const out = Buffer.allocUnsafe(capacity);
    const size = this.#ring.length;
    const first = Math.min(this.#ringLen, size - this.#ringStart);
    this.#ring.copy(out, 0, this.#ringStart, this.#ringStart + first);
    if (first < this.#ringLen) this.#ring.copy(out, first, 0, this.#ringLen - first);
    return out;
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
    return { head: Buffer.from(this.#head.subarray(0, this.#headLen)), tail: this.#linearized(this.#ringLen) };
  }

  /** Head and tail as one buffer (the gap is reported by `bytesDropped`). */
  toBuffer(): Buffer {
    const { head, tail } = this.parts();
    return Buffer.concat([head, tail]);
  }
}

/** `buffer` with room for `needed` bytes (doubling, at most `max`), keeping its first `used`. */
function grow(buffer: Buffer, used: number, needed: number, max: number): Buffer {
  if (needed <= buffer.length) return buffer;
  const bigger = Buffer.allocUnsafe(Math.min(max, Math.max(needed, buffer.length * 2, 256)));
  buffer.copy(bigger, 0, 0, used);
  return bigger;
}
