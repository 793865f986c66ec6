import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { incompleteTail, TaskEventLog, type TaskEvent } from '../src/service/task-events.ts';
import type { StoredTask } from '../src/store/task-store.ts';

const TEXT = 'héllo wörld € 𝄞 ascii';

function outputText(events: readonly TaskEvent[], stream = 'stdout'): string {
  return events.map((e) => (e.type === 'output' && e.stream === stream ? e.data : '')).join('');
}

void describe('TaskEventLog output', () => {
  void test('characters split across chunks arrive whole, live and on replay, at every split point', () => {
    const bytes = Buffer.from(TEXT);
    for (let cut = 0; cut <= bytes.length; cut++) {
      for (let cut2 = cut; cut2 <= bytes.length; cut2 += 3) {
        const log = new TaskEventLog(1 << 20);
        const live: TaskEvent[] = [];
        log.subscribe((e) => live.push(e));
        for (const part of [bytes.subarray(0, cut), bytes.subarray(cut, cut2), bytes.subarray(cut2)]) log.output('stdout', part);
        assert.equal(outputText(live), TEXT, `live, cut at ${cut} and ${cut2}`);
        assert.equal(outputText(log.since(null).events), TEXT, `replay, cut at ${cut} and ${cut2}`);
        for (const e of live) assert.ok(e.type !== 'output' || !e.data.includes('\uFFFD'), 'no replacement character');
      }
    }
  });

  void test('stdout and stderr carry their own partial characters', () => {
    const log = new TaskEventLog(1 << 20);
    const euro = Buffer.from('€');
    log.output('stdout', euro.subarray(0, 1));
    log.output('stderr', Buffer.from('err '));
    log.output('stdout', euro.subarray(1));
    const events = log.since(null).events;
    assert.equal(outputText(events, 'stdout'), '€');
    assert.equal(outputText(events, 'stderr'), 'err ');
  });

  void test('invalid bytes decode as Buffer.toString would: U+FFFD in place, nothing held back', () => {
    const bad = Buffer.from([0x61, 0xff, 0x62, 0xc0, 0x80, 0x63]);
    const log = new TaskEventLog(1 << 20);
    log.output('stdout', bad);
    assert.equal(outputText(log.since(null).events), bad.toString('utf8'));
  });

  void test('the byte budget drops the oldest output and reports the gap; a reader past the drop has none', () => {
    const log = new TaskEventLog(100);
    for (let i = 0; i < 10; i++) log.output('stdout', Buffer.from(`${String(i).repeat(40)}\n`));
    const all = log.since(null);
    assert.equal(all.gap, true);
    const kept = outputText(all.events);
    assert.ok(Buffer.byteLength(kept) <= 100, `${Buffer.byteLength(kept)} bytes kept`);
    assert.ok(kept.endsWith(`${'9'.repeat(40)}\n`));
    const firstKept = all.events[0]!;
    const later = log.since(String(Number(firstKept.id) - 1));
    assert.equal(later.gap, false);
    assert.equal(outputText(later.events), kept);
  });

  void test('stages interleave with output in id order; the result ends the stream and drops the output', () => {
    const log = new TaskEventLog(1 << 20);
    const live: TaskEvent[] = [];
    log.subscribe((e) => live.push(e));
    log.stage('running', 1);
    log.output('stdout', Buffer.from('a'));
    log.stage('closing', 2);
    log.output('stdout', Buffer.from('b'));
    assert.deepEqual(
      log.since(null).events.map((e) => e.id),
      ['1', '2', '3', '4'],
    );
    assert.deepEqual(
      log.since('2').events.map((e) => e.id),
      ['3', '4'],
    );
    log.result({ id: 't' } as StoredTask);
    assert.equal(live[live.length - 1]?.type, 'result');
    assert.equal(log.finished, true);
    const replay = log.since(null).events;
    assert.deepEqual(
      replay.map((e) => e.type),
      ['stage', 'stage', 'result'],
    );
    log.output('stdout', Buffer.from('late'));
    assert.equal(live.filter((e) => e.type === 'output').length, 2, 'nothing published after the result');
  });
});

void describe('incompleteTail', () => {
  void test('counts the bytes that begin a character the next chunk finishes', () => {
    const euro = Buffer.from('€'); // e2 82 ac
    const clef = Buffer.from('𝄞'); // f0 9d 84 9e
    assert.equal(incompleteTail(Buffer.from('abc')), 0);
    assert.equal(incompleteTail(euro), 0);
    assert.equal(incompleteTail(euro.subarray(0, 1)), 1);
    assert.equal(incompleteTail(euro.subarray(0, 2)), 2);
    assert.equal(incompleteTail(clef.subarray(0, 3)), 3);
    assert.equal(incompleteTail(clef), 0);
    assert.equal(incompleteTail(Buffer.concat([Buffer.from('x'), clef.subarray(0, 2)])), 2);
    assert.equal(incompleteTail(Buffer.from([0xc0])), 0, 'never a lead byte');
    assert.equal(incompleteTail(Buffer.from([0xf8])), 0, 'never a lead byte');
    assert.equal(incompleteTail(Buffer.from([0x80, 0x80, 0x80])), 0, 'stray continuation bytes');
    assert.equal(incompleteTail(Buffer.alloc(0)), 0);
  });
});
