import assert from 'node:assert/strict';
import { afterEach, describe, test } from 'node:test';
import { finished } from 'node:stream/promises';
import { setImmediate as yieldToLoop, setTimeout as sleep } from 'node:timers/promises';
import { gunzipSync } from 'node:zlib';
import { Profile } from 'pprof-format';
import { Profiler, ProfilerBusyError } from '../src/diagnostics/profiler.ts';

/** Functions with names unique enough to find in a profile's string table. */
function leashBusyLoopForPprof(ms: number): number {
  const end = Date.now() + ms;
  let x = 0;
  while (Date.now() < end) for (let i = 0; i < 10_000; i++) x += Math.sqrt(i * x + 1);
  return x;
}
/**
 * A separate function for the inspector profile, run only there: on Node 20 an inspector
 * profile often charges the samples of a function already optimized before the profile
 * started to its caller (seen with the same loop, run twice). The pprof profiler does not.
 */
function leashBusyLoopForInspector(ms: number): number {
  const end = Date.now() + ms;
  let x = 0;
  while (Date.now() < end) for (let i = 0; i < 10_000; i++) x += Math.sqrt(i * x + 1);
  return x;
}

/** Keeps what it allocates alive, so the sampled heap profile still holds it. */
const retained: object[][] = [];
function leashHeapHogForProfile(): void {
  const batch: object[] = [];
  for (let i = 0; i < 200_000; i++) batch.push({ i, s: `leash-${i}` });
  retained.push(batch);
}

/**
 * The profiler's deadline timer is unref'd (a pending profile must not keep a service alive);
 * in a test nothing else holds the event loop open, so hold it while awaiting a profile.
 */
async function held<T>(promise: Promise<T>): Promise<T> {
  const keepAlive = setInterval(() => undefined, 1000);
  try {
    return await promise;
  } finally {
    clearInterval(keepAlive);
  }
}

function decodePprof(body: Buffer): Profile {
  const raw = gunzipSync(body);
  assert.ok(raw.length > 0, 'the gunzipped profile is empty');
  return Profile.decode(raw);
}

function hasFunction(profile: Profile, name: string): boolean {
  return profile.function.some((f) => profile.stringTable.strings[Number(f.name)] === name);
}

/** Runs a CPU profile while the main thread burns CPU in a named function. */
async function profileBusyLoop(profiler: Profiler, format: 'pprof' | 'cpuprofile', busyLoop: (ms: number) => number): Promise<Buffer> {
  const done = profiler.cpu(1, format, new AbortController().signal);
  // Burns in slices that yield to the event loop: the inspector profile starts a few
  // microtasks after cpu() returns, and the deadline timer must get its turn.
  let settled = false;
  void done.finally(() => (settled = true)).catch(() => undefined);
  const giveUp = Date.now() + 5000;
  while (!settled && Date.now() < giveUp) {
    busyLoop(50);
    await yieldToLoop();
  }
  const result = await held(done);
  assert.equal(result.filename.includes(':'), false, result.filename);
  return result.body;
}

void describe('Profiler', () => {
  const profilers: Profiler[] = [];
  function make(options?: ConstructorParameters<typeof Profiler>[0]): Profiler {
    const p = new Profiler(options);
    profilers.push(p);
    return p;
  }
  afterEach(() => {
    for (const p of profilers.splice(0)) {
      p.stop();
      assert.equal(p.busy, false, 'a profile or snapshot was left running');
    }
  });

  void test('pprof CPU profile of a busy loop decodes and names the loop', async () => {
    const profiler = make();
    const profile = decodePprof(await profileBusyLoop(profiler, 'pprof', leashBusyLoopForPprof));
    assert.ok(profile.sample.length > 0, 'no samples');
    const types = profile.sampleType.map((t) => profile.stringTable.strings[Number(t.type)]);
    assert.ok(types.includes('wall') && types.includes('cpu'), `sample types: ${types.join(',')}`);
    assert.ok(hasFunction(profile, 'leashBusyLoopForPprof'), 'the busy function is not in the profile');
    assert.equal(profiler.busy, false);
  });

  void test('pprof result is named and typed for a download', async () => {
    const profiler = make();
    const result = await held(profiler.cpu(0.1, 'pprof', new AbortController().signal));
    assert.match(result.filename, /^leash-cpu-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d\.\d{3}Z\.pb\.gz$/);
    assert.equal(result.contentType, 'application/octet-stream');
  });

  void test('cpuprofile is DevTools JSON naming the loop', async () => {
    const profiler = make();
    const json = JSON.parse((await profileBusyLoop(profiler, 'cpuprofile', leashBusyLoopForInspector)).toString('utf8'));
    assert.ok(Array.isArray(json.nodes) && json.nodes.length > 0);
    assert.ok(Array.isArray(json.samples) && json.samples.length > 0);
    assert.ok(json.nodes.some((n: any) => n.callFrame.functionName === 'leashBusyLoopForInspector'), `the busy function is not in the profile: ${JSON.stringify(json.nodes.map((n: any) => [n.callFrame.functionName, n.hitCount]))} samples ${json.samples.length}`);
    assert.equal(profiler.busy, false);
  });

  void test('one at a time: a second cpu() or a heap snapshot while a CPU profile runs is busy', async () => {
    const profiler = make();
    const other = make();
    const running = profiler.cpu(0.5, 'cpuprofile', new AbortController().signal);
    assert.equal(profiler.busy, true);
    assert.equal(other.busy, true, 'the lock is process-wide');
    await assert.rejects(profiler.cpu(1, 'pprof', new AbortController().signal), ProfilerBusyError);
    await assert.rejects(other.cpu(1, 'cpuprofile', new AbortController().signal), ProfilerBusyError);
    assert.throws(() => profiler.heapSnapshot(), ProfilerBusyError);
    // heap() is instant and not exclusive.
    decodePprof((await profiler.heap()).body);
    await held(running);
    assert.equal(profiler.busy, false);
  });

  for (const format of ['pprof', 'cpuprofile'] as const) {
    void test(`${format}: abort ends a 30 s profile early and returns what was collected`, async () => {
      const profiler = make();
      const controller = new AbortController();
      const started = Date.now();
      const done = profiler.cpu(30, format, controller.signal);
      await sleep(200);
      controller.abort();
      const result = await done;
      assert.ok(Date.now() - started < 5000, 'abort did not end the profile');
      assert.ok(result.body.length > 0);
      if (format === 'pprof') decodePprof(result.body);
      else assert.ok(Array.isArray(JSON.parse(result.body.toString('utf8')).nodes));
      assert.equal(result.contentType, format === 'pprof' ? 'application/octet-stream' : 'application/json');
      assert.match(result.filename, format === 'pprof' ? /^leash-cpu-[^:]+\.pb\.gz$/ : /^leash-cpu-[^:]+\.cpuprofile$/);
      assert.equal(profiler.busy, false);
      // The profiler was released: another profile can start right away.
      await held(profiler.cpu(0.05, format, new AbortController().signal));
    });
  }

  void test('an already-aborted signal gives an immediate, empty-ish profile', async () => {
    const profiler = make();
    const started = Date.now();
    const result = await profiler.cpu(30, 'pprof', AbortSignal.abort());
    assert.ok(Date.now() - started < 5000);
    decodePprof(result.body);
  });

  void test('stop() ends a CPU profile in progress', async () => {
    const profiler = make();
    const started = Date.now();
    const done = profiler.cpu(30, 'pprof', new AbortController().signal);
    await sleep(100);
    profiler.stop();
    decodePprof((await done).body);
    assert.ok(Date.now() - started < 5000);
    assert.equal(profiler.busy, false);
  });

  void test('cpu() rejects bad arguments without taking the lock', async () => {
    const profiler = make();
    await assert.rejects(profiler.cpu(0, 'pprof', new AbortController().signal), RangeError);
    await assert.rejects(profiler.cpu(Number.NaN, 'pprof', new AbortController().signal), RangeError);
    await assert.rejects(profiler.cpu(1, 'svg' as 'pprof', new AbortController().signal), RangeError);
    assert.equal(profiler.busy, false);
  });

  void test('heap(): sampled heap profile names the allocating function', async () => {
    // Fine sampling so a few MB of allocations are certain to be sampled.
    const profiler = make({ heapSamplingBytes: 16 * 1024 });
    profiler.start();
    profiler.start(); // idempotent
    leashHeapHogForProfile();
    const result = await profiler.heap();
    assert.match(result.filename, /^leash-heap-[^:]+\.pb\.gz$/);
    assert.equal(result.contentType, 'application/octet-stream');
    const profile = decodePprof(result.body);
    assert.ok(profile.sample.length > 0, 'no samples');
    assert.ok(hasFunction(profile, 'leashHeapHogForProfile'), 'the allocating function is not in the profile');
    retained.length = 0; // keeps the heap snapshots below small and quick
  });

  void test('heap() without start() starts sampling and still returns a valid profile', async () => {
    const profiler = make();
    decodePprof((await profiler.heap()).body);
    profiler.stop();
    profiler.stop(); // idempotent
    decodePprof((await profiler.heap()).body); // restarts after stop
  });

  void test('two started Profilers (two services in one process) share heap sampling until the last stops', async () => {
    const first = make();
    const second = make();
    first.start();
    second.start(); // V8's sampler is process-wide: starting it twice must not throw
    first.stop();
    leashHeapHogForProfile();
    const profile = decodePprof((await second.heap()).body);
    assert.ok(profile.sample.length > 0, 'still sampling while one Profiler is started');
    second.stop();
  });

  void test('heapSnapshot(): a full snapshot, busy until the stream ends', async () => {
    const profiler = make();
    const { stream, filename } = profiler.heapSnapshot();
    assert.match(filename, /^leash-[^:]+\.heapsnapshot$/);
    assert.equal(profiler.busy, true);
    assert.throws(() => profiler.heapSnapshot(), ProfilerBusyError);
    await assert.rejects(profiler.cpu(1, 'pprof', new AbortController().signal), ProfilerBusyError);
    const chunks: Buffer[] = [];
    for await (const chunk of stream) chunks.push(Buffer.from(chunk as Uint8Array));
    await finished(stream);
    const snapshot = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    assert.ok(snapshot.snapshot.meta, 'no snapshot.meta');
    assert.equal(profiler.busy, false);
  });

  void test('heapSnapshot(): destroying the stream unread releases the lock', async () => {
    const profiler = make();
    const { stream } = profiler.heapSnapshot();
    assert.equal(profiler.busy, true);
    stream.destroy();
    await finished(stream).catch(() => undefined); // premature close is expected
    assert.equal(profiler.busy, false);
  });
});
