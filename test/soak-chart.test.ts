import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { renderSoakChart } from './soak/chart.ts';
import type { SoakCheckpoint, SoakSample } from './soak/chart.ts';
import { prng } from './support/prng.ts';

const PANELS = ['heap used', 'RSS', 'open fds', 'live ledger entries', 'in-flight tasks', 'tasks finished'];

/** 600 one-second samples: quiet at 200–259 s and 450–509 s, four fault spans (one fault twice). */
function syntheticRun(): { samples: SoakSample[]; checkpoints: SoakCheckpoint[] } {
  const rand = prng(42);
  const faultAt = (t: number): string =>
    t >= 40 && t < 70 ? 'vanish' : t >= 120 && t < 150 ? 'loss-10pct' : t >= 300 && t < 330 ? 'rate-1mbit' : t >= 540 && t < 560 ? 'vanish' : '';
  const samples: SoakSample[] = [];
  let done = 0;
  for (let t = 0; t < 600; t++) {
    const quiet = (t >= 200 && t < 260) || (t >= 450 && t < 510);
    if (!quiet) done += 3 + Math.floor(rand() * 5);
    samples.push({
      tSec: t + rand() * 0.05,
      heapUsedMiB: 40 + (quiet ? 0 : 8 * rand()) + t / 200,
      rssMiB: 110 + t / 50 + rand(),
      fds: 30 + (quiet ? 0 : Math.floor(rand() * 12)),
      ledgerLive: quiet ? 0 : Math.floor(rand() * 40),
      inFlight: quiet ? 0 : Math.floor(rand() * 25),
      tasksDone: done,
      phase: quiet ? 'quiet' : 'active',
      fault: faultAt(t),
    });
  }
  const checkpoints = [
    { tSec: 259, heapAfterGcMiB: 38.5, fds: 30 },
    { tSec: 509, heapAfterGcMiB: 39.2, fds: 30 },
  ];
  return { samples, checkpoints };
}

/** A flat sample, for the edge cases. */
function sample(tSec: number, over: Partial<SoakSample> = {}): SoakSample {
  return { tSec, heapUsedMiB: 50, rssMiB: 120, fds: 40, ledgerLive: 3, inFlight: 2, tasksDone: tSec * 5, phase: 'active', fault: '', ...over };
}

/**
 * Checks the document is well-formed XML as far as this renderer's output goes: every tag
 * closed in order, one root <svg>, attributes quoted, and no raw `<` or bare `&` in text.
 */
function assertWellFormed(svg: string): void {
  assert.ok(svg.startsWith('<svg'), 'starts with <svg');
  assert.ok(svg.trimEnd().endsWith('</svg>'), 'ends with </svg>');
  const stack: string[] = [];
  const tag = /<(\/?)([a-zA-Z][\w:-]*)([^<>]*?)(\/?)>/g;
  const textOk = /^(?:[^<>&]|&(?:amp|lt|gt|quot|apos);)*$/;
  const attrsOk = /^(?:\s+[a-zA-Z][\w:-]*="(?:[^"<>&]|&(?:amp|lt|gt|quot|apos);)*")*\s*$/;
  let at = 0;
  let roots = 0;
  for (const m of svg.matchAll(tag)) {
    const between = svg.slice(at, m.index);
    assert.match(between, textOk, `text before offset ${m.index} is escaped: ${JSON.stringify(between.slice(0, 80))}`);
    at = m.index + m[0].length;
    const [, closing, name, attrs, selfClosing] = m;
    if (closing) {
      assert.equal(attrs!.trim(), '', `no attributes on </${name}>`);
      assert.equal(stack.pop(), name, `</${name}> closes the open element`);
      continue;
    }
    assert.match(attrs!, attrsOk, `attributes of <${name}> are quoted and escaped: ${attrs}`);
    if (stack.length === 0) roots++;
    if (!selfClosing) stack.push(name!);
  }
  assert.match(svg.slice(at), /^\s*$/, 'nothing after the root');
  assert.deepEqual(stack, [], 'every element closed');
  assert.equal(roots, 1, 'one root element');
  // The counts the brief asks for, as a second opinion on the parser above.
  for (const name of ['svg', 'g', 'text']) {
    const opened = svg.match(new RegExp(`<${name}[\\s>]`, 'g'))?.length ?? 0;
    const closed = svg.match(new RegExp(`</${name}>`, 'g'))?.length ?? 0;
    assert.equal(opened, closed, `<${name}> opened ${opened} times, closed ${closed}`);
  }
  assert.doesNotMatch(svg, /NaN|Infinity|undefined/, 'no non-finite number or missing value leaked into the output');
}

void describe('renderSoakChart', () => {
  void test('a 600-sample run: well-formed, every panel and fault named, compact', () => {
    const { samples, checkpoints } = syntheticRun();
    const svg = renderSoakChart(samples, {
      title: 'soak <&> "nightly" \'run\'',
      subtitle: '10 min, 5 tasks/s, 3021 tasks, 4 faults',
      checkpoints,
      heapBaselineMiB: 38,
      fdBaseline: 30,
    });
    assertWellFormed(svg);
    assert.ok(svg.includes('soak &lt;&amp;&gt; &quot;nightly&quot; &apos;run&apos;'), 'the title is escaped');
    assert.ok(!svg.includes('<&>'), 'no raw <&> anywhere');
    assert.ok(svg.includes('10 min, 5 tasks/s, 3021 tasks, 4 faults'), 'the subtitle');
    for (const name of PANELS) assert.ok(svg.includes(`>${name}</tspan>`), `panel "${name}"`);
    for (const fault of ['vanish', 'loss-10pct', 'rate-1mbit']) assert.ok(svg.includes(`fault: ${fault}`), `fault "${fault}" in the legend`);
    assert.ok(svg.includes('quiet period'), 'quiet legend');
    assert.ok(svg.includes('baseline + 10 MB'), 'heap limit line');
    assert.equal(svg.match(/<circle [^>]*><title>/g)?.length, 2 * checkpoints.length, 'a dot a checkpoint on the heap and fds panels');
    assert.ok(svg.includes('5:00'), 'time axis in m:ss');
    // Fault rects carry a <title>; the same fault has the same colour both times.
    const fills = [...svg.matchAll(/fill="(#[0-9a-f]{6})"><title>([\w-]+) /g)].map(([, fill, name]) => `${name}=${fill}`);
    assert.equal(fills.length, 4, `four fault spans: ${fills.join(', ')}`);
    assert.equal(new Set(fills).size, 3, `one colour a fault: ${fills.join(', ')}`);
    // Two quiet periods, shaded once each across all panels.
    assert.equal(svg.match(/fill="#ececec"\/>/g)?.length, 2, 'two quiet spans');
    const bytes = Buffer.byteLength(svg);
    assert.ok(bytes < 200 * 1024, `${bytes} bytes`);
  });

  void test('no samples: a valid document that says so', () => {
    const svg = renderSoakChart([], { title: 'empty <run>\u0001' });
    assertWellFormed(svg);
    assert.ok(svg.includes('no samples'));
    assert.ok(svg.includes('empty &lt;run&gt;'));
    assert.ok(!svg.includes('\u0001'), 'a control character (invalid in XML even escaped) is dropped');
  });

  void test('one sample', () => {
    const svg = renderSoakChart([sample(0, { phase: 'quiet', fault: 'reboot' })], { title: 'one', checkpoints: [{ tSec: 0, heapAfterGcMiB: 49, fds: 40 }] });
    assertWellFormed(svg);
    for (const name of PANELS) assert.ok(svg.includes(`>${name}</tspan>`), `panel "${name}"`);
    assert.ok(svg.includes('no data'), 'the rate panel needs two samples');
    assert.ok(svg.includes('a1.5 1.5 0 1 0 3 0'), 'a lone point is drawn as a dot');
  });

  void test('flat series, NaN and Infinity values, unsorted and timeless samples', () => {
    const samples = Array.from({ length: 30 }, (_, t) =>
      sample(t, {
        heapUsedMiB: t % 7 === 3 ? Number.NaN : 50,
        rssMiB: t === 10 ? Number.POSITIVE_INFINITY : 120,
        fds: t === 11 ? Number.NEGATIVE_INFINITY : 0,
        tasksDone: t === 12 ? Number.NaN : t * 5,
      }),
    ).reverse();
    samples.push(sample(Number.NaN));
    const svg = renderSoakChart(samples, { title: 'flat', heapBaselineMiB: Number.NaN, checkpoints: [{ tSec: 5, heapAfterGcMiB: Number.NaN, fds: 0 }] });
    assertWellFormed(svg);
    assert.ok(svg.includes('>25s</text>'), 'a short run is labelled in seconds');
    assert.ok(!svg.includes('no data'), 'every panel has data');
    assert.ok(!svg.includes('heap limit'), 'a NaN baseline draws no line and no legend entry');
  });

  void test('all values non-finite: every panel says no data', () => {
    const nan = Number.NaN;
    const samples = [0, 1, 2].map((t) => sample(t, { heapUsedMiB: nan, rssMiB: nan, fds: nan, ledgerLive: nan, inFlight: nan, tasksDone: nan }));
    const svg = renderSoakChart(samples, { title: 'nan' });
    assertWellFormed(svg);
    assert.equal(svg.match(/no data/g)?.length, PANELS.length);
  });
});
