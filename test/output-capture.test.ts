import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { OutputCapture } from '../src/ssh/output-capture.ts';
import { prng } from './support/prng.ts';


/** `n` bytes whose values follow their position, so any misplaced byte shows. */
function bytes(n: number, offset = 0): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (offset + i * 7 + ((offset + i) >> 8)) & 0xff;
  return b;
}

/** What a capture with `cap` must keep of `all`: the first ceil(cap/2) and last floor(cap/2) bytes. */
function reference(all: Buffer, cap: number): { head: Buffer; tail: Buffer; dropped: number } {
  const headCap = Math.ceil(cap / 2);
  if (all.length <= cap) return { head: all.subarray(0, headCap), tail: all.subarray(Math.min(headCap, all.length)), dropped: 0 };
  return { head: all.subarray(0, headCap), tail: all.subarray(all.length - Math.floor(cap / 2)), dropped: all.length - cap };
}

function capture(cap: number, chunks: readonly Buffer[]): OutputCapture {
  const c = new OutputCapture(cap);
  for (const chunk of chunks) c.push(chunk);
  return c;
}

/** Splits `all` into chunks whose sizes come from `size()` (0-byte chunks included). */
function chunked(all: Buffer, size: () => number): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < all.length; ) {
    const n = Math.max(0, Math.min(size(), all.length - i));
    out.push(all.subarray(i, i + n));
    i += n;
  }
  return out;
}

void describe('OutputCapture', () => {
  void test('below the cap keeps everything, in order, and is not truncated', () => {
    const all = bytes(100);
    const c = capture(1000, chunked(all, () => 13));
    assert.deepEqual(c.toBuffer(), all);
    assert.equal(c.totalBytes, 100);
    assert.equal(c.bytesDropped, 0);
    assert.equal(c.truncated, false);
  });

  void test('nothing pushed keeps nothing', () => {
    const c = new OutputCapture(64);
    assert.equal(c.toBuffer().length, 0);
    assert.deepEqual(c.parts(), { head: Buffer.alloc(0), tail: Buffer.alloc(0) });
    assert.equal(c.totalBytes, 0);
    assert.equal(c.truncated, false);
  });

  void test('exactly at the cap keeps everything and is not truncated', () => {
    const all = bytes(64);
    for (const size of [1, 7, 32, 33, 64]) {
      const c = capture(64, chunked(all, () => size));
      assert.deepEqual(c.toBuffer(), all, `chunks of ${size}`);
      assert.equal(c.bytesDropped, 0);
      assert.equal(c.truncated, false);
      const { head, tail } = c.parts();
      assert.deepEqual(head, all.subarray(0, 32));
      assert.deepEqual(tail, all.subarray(32));
    }
  });

  void test('one byte over the cap drops exactly one byte, from the middle', () => {
    const all = bytes(65);
    const c = capture(64, [all]);
    assert.equal(c.bytesDropped, 1);
    assert.equal(c.truncated, true);
    const { head, tail } = c.parts();
    assert.deepEqual(head, all.subarray(0, 32));
    assert.deepEqual(tail, all.subarray(33));
  });

  void test('one huge chunk keeps its first and last halves of the cap', () => {
    const all = bytes(1_000_000);
    const c = capture(1000, [all]);
    const { head, tail } = c.parts();
    assert.deepEqual(head, all.subarray(0, 500));
    assert.deepEqual(tail, all.subarray(all.length - 500));
    assert.equal(c.bytesDropped, 999_000);
    assert.equal(c.totalBytes, 1_000_000);
    assert.equal(c.truncated, true);
  });

  void test('many 1-byte chunks keep the exact head and tail', () => {
    const all = bytes(50_000);
    const c = capture(4096, chunked(all, () => 1));
    const { head, tail } = c.parts();
    assert.deepEqual(head, all.subarray(0, 2048));
    assert.deepEqual(tail, all.subarray(all.length - 2048));
    assert.equal(c.bytesDropped, 50_000 - 4096);
    assert.equal(c.totalBytes, 50_000);
  });

  void test('cap 0 keeps nothing but counts everything as dropped', () => {
    const c = capture(0, [bytes(10), bytes(1), Buffer.alloc(0), bytes(1000)]);
    assert.equal(c.toBuffer().length, 0);
    assert.deepEqual(c.parts(), { head: Buffer.alloc(0), tail: Buffer.alloc(0) });
    assert.equal(c.totalBytes, 1011);
    assert.equal(c.bytesDropped, 1011);
    assert.equal(c.truncated, true);
  });

  void test('cap 0 with no output is not truncated', () => {
    const c = capture(0, [Buffer.alloc(0)]);
    assert.equal(c.truncated, false);
    assert.equal(c.totalBytes, 0);
  });

  void test('odd caps give the extra byte to the head', () => {
    const all = bytes(100);
    for (const cap of [1, 3, 7, 99]) {
      const c = capture(cap, [all]);
      const { head, tail } = c.parts();
      assert.equal(head.length, Math.ceil(cap / 2), `cap ${cap}`);
      assert.equal(tail.length, Math.floor(cap / 2), `cap ${cap}`);
      assert.deepEqual(head, all.subarray(0, Math.ceil(cap / 2)));
      assert.deepEqual(tail, all.subarray(100 - Math.floor(cap / 2)));
      assert.equal(c.bytesDropped, 100 - cap);
    }
  });

  void test('cap 1 keeps only the first byte', () => {
    const c = capture(1, [Buffer.from('abc'), Buffer.from('def')]);
    assert.equal(c.toBuffer().toString(), 'a');
    assert.equal(c.bytesDropped, 5);
  });

  void test('truncated turns true only once a byte is dropped', () => {
    const c = new OutputCapture(10);
    c.push(bytes(6));
    assert.equal(c.truncated, false);
    c.push(bytes(4));
    assert.equal(c.truncated, false);
    c.push(bytes(1));
    assert.equal(c.truncated, true);
  });

  void test('kept data is a copy: changing the pushed buffer later changes nothing', () => {
    const chunk = Buffer.from('hello world');
    const c = new OutputCapture(1000);
    c.push(chunk);
    chunk.fill(0x21);
    assert.equal(c.toBuffer().toString(), 'hello world');
  });

  void test('head and tail match the reference for random chunkings and caps (seeded)', () => {
    for (let seed = 1; seed <= 300; seed++) {
      const rand = prng(seed);
      const cap = Math.floor(rand() * 200);
      const length = Math.floor(rand() * 600);
      const maxChunk = 1 + Math.floor(rand() * (rand() < 0.3 ? 4 : 300));
      const all = bytes(length, seed);
      const chunks = chunked(all, () => Math.floor(rand() * (maxChunk + 1)));
      const c = capture(cap, chunks);
      const want = reference(Buffer.concat(chunks), cap);
      const { head, tail } = c.parts();
      const what = `seed ${seed}: cap ${cap}, ${length} bytes in ${chunks.length} chunks`;
      assert.deepEqual(head, want.head, `head, ${what}`);
      assert.deepEqual(tail, want.tail, `tail, ${what}`);
      assert.deepEqual(c.toBuffer(), Buffer.concat([want.head, want.tail]), `toBuffer, ${what}`);
      assert.equal(c.bytesDropped, want.dropped, `bytesDropped, ${what}`);
      assert.equal(c.totalBytes, length, `totalBytes, ${what}`);
      assert.equal(c.truncated, want.dropped > 0, `truncated, ${what}`);
    }
  });

  void test('200 MB in 64 KiB chunks with a 1 MiB cap keeps exactly the cap', () => {
    const cap = 1024 * 1024;
    const chunkSize = 64 * 1024;
    const chunk = bytes(chunkSize);
    const count = Math.ceil((200 * 1000 * 1000) / chunkSize);
    const c = new OutputCapture(cap);
    for (let i = 0; i < count; i++) c.push(chunk);
    assert.equal(c.toBuffer().length, cap);
    assert.equal(c.totalBytes, count * chunkSize);
    assert.equal(c.bytesDropped, count * chunkSize - cap);
    const { head, tail } = c.parts();
    assert.deepEqual(head.subarray(0, chunkSize), chunk);
    assert.deepEqual(tail.subarray(tail.length - chunkSize), chunk);
  });

  // A hostile peer can send its output as 1-byte SSH data messages (ssh2 emits one 'data'
  // chunk per message). The capture must cost time and memory per byte, not per chunk.

  void test('1-byte chunks retain about cap bytes of memory, not a Buffer object per byte', async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    /** Collects twice, letting freed external memory (earlier tests' buffers) be returned in between. */
    const settle = async (): Promise<NodeJS.MemoryUsage> => {
      gc();
      await new Promise((r) => setImmediate(r));
      gc();
      return process.memoryUsage();
    };
    const cap = 256 * 1024;
    const one = Buffer.from('x');
    const before = await settle();
    const c = new OutputCapture(cap);
    for (let i = 0; i < cap; i++) c.push(one);
    const after = await settle();
    const retained = after.heapUsed - before.heapUsed + Math.max(0, after.arrayBuffers - before.arrayBuffers);
    assert.equal(c.toBuffer().length, cap);
    assert.ok(retained < 8 * cap, `a ${cap}-byte capture of 1-byte chunks retains ${(retained / 1e6).toFixed(1)} MB`);
  });
});
