// The soak's chart: one SVG, one panel a metric, all on one time axis, so that a leak (a
// line that climbs from one quiet period to the next) is seen at a glance and lines up with
// the load phase and the network fault that were in effect. No dependencies: the chart is
// plain text built here, small enough to attach to a CI run.

/** One row of the soak CSV (one per second). */
export interface SoakSample {
  readonly tSec: number; // seconds since the soak started (float ok)
  readonly heapUsedMiB: number;
  readonly rssMiB: number;
  readonly fds: number; // open file descriptors of the process
  readonly ledgerLive: number; // live resource-ledger entries
  readonly inFlight: number; // tasks accepted and not terminal
  readonly tasksDone: number; // cumulative tasks finished since start
  readonly phase: 'active' | 'quiet';
  readonly fault: string; // name of the network fault active at that second, '' for none
}

/** A quiet-period checkpoint: heap after a forced GC, measured at the end of each quiet period. */
export interface SoakCheckpoint {
  readonly tSec: number;
  readonly heapAfterGcMiB: number;
  readonly fds: number;
}

/** What to write on the chart besides the samples. */
export interface SoakChartOptions {
  readonly title: string;
  readonly subtitle?: string; // e.g. "10 min, 5 tasks/s, 3021 tasks, 63 faults"
  readonly checkpoints?: readonly SoakCheckpoint[];
  readonly heapBaselineMiB?: number; // draws a dashed baseline line and a dashed "baseline + 10 MB" limit line (the pass limit) on the heap panel
  readonly fdBaseline?: number; // dashed line on the fds panel
}

const WIDTH = 1200;
const LEFT = 70; // room for the y tick labels
const RIGHT = 20;
const PLOT_W = WIDTH - LEFT - RIGHT;
const PANEL_HEAD = 20; // the panel's name and stats, above its plot
const PANEL_H = 96;
const PANEL_GAP = 10;
const BAND_H = 16; // the fault band at the top
/** The soak's pass limit for heap after GC (issue 6: within 10 MB of the baseline). */
export const HEAP_ALLOWANCE_MIB = 10e6 / 2 ** 20;
/** Fault colours in order of first appearance, so one fault keeps one colour all along the run. */
const FAULT_PALETTE = ['#e15759', '#4e79a7', '#f28e2b', '#59a14f', '#b07aa1', '#edc948', '#76b7b2', '#ff9da7'] as const;
const QUIET_FILL = '#ececec';
const GRID = '#dddddd';
const CHECKPOINT = '#d62728';

type Pt = readonly [t: number, v: number];
interface Dot {
  readonly t: number;
  readonly v: number;
  readonly label: string;
}
interface RefLine {
  readonly v: number;
  readonly label: string;
  readonly color: string;
}
interface Panel {
  readonly name: string;
  readonly unit: string;
  readonly color: string;
  readonly fromZero: boolean; // counts start at 0; memory is zoomed to its range so growth shows
  readonly minSpan: number; // the smallest y range, so that a flat series is not blown up into noise
  readonly integer: boolean; // no fractional ticks for counts
  readonly points: readonly Pt[];
  readonly dots: readonly Dot[];
  readonly refs: readonly RefLine[];
}
interface Span {
  readonly from: number;
  readonly to: number;
  readonly key: string;
}

/** Renders a soak run's samples as a complete standalone SVG document. */
export function renderSoakChart(samples: readonly SoakSample[], options: SoakChartOptions): string {
  // A sample without a time cannot be placed; the rest are drawn in time order whatever the input order.
  const rows = samples.filter((s) => Number.isFinite(s.tSec)).sort((a, b) => a.tSec - b.tSec);
  const first = rows[0];
  const last = rows[rows.length - 1];
  if (!first || !last) return emptyChart(options);

  // Under a second of data (one sample) still gets a 1 s axis, centred on it.
  const short = last.tSec - first.tSec < 1;
  const t0 = short ? (first.tSec + last.tSec) / 2 - 0.5 : first.tSec;
  const t1 = short ? t0 + 1 : last.tSec;
  const sx = (t: number): number => LEFT + ((t - t0) / (t1 - t0)) * PLOT_W;
  const clock = t1 >= 60;
  const checkpoints = (options.checkpoints ?? []).filter((c) => Number.isFinite(c.tSec) && c.tSec >= t0 && c.tSec <= t1);

  // Finished per second from successive cumulative counts; a missing count is a gap, and the
  // rate after it spans back to the last known count.
  const rate: Pt[] = [];
  let known: SoakSample | undefined;
  for (const s of rows) {
    if (!Number.isFinite(s.tasksDone)) {
      rate.push([s.tSec, Number.NaN]);
      continue;
    }
    const dt = known ? s.tSec - known.tSec : 0;
    if (known && dt > 0) rate.push([s.tSec, (s.tasksDone - known.tasksDone) / dt]);
    known = s;
  }
  const series = (pick: (s: SoakSample) => number): Pt[] => rows.map((s) => [s.tSec, pick(s)]);
  const heapBase = options.heapBaselineMiB;
  const fdBase = options.fdBaseline;
  const panels: Panel[] = [
    {
      name: 'heap used',
      unit: 'MiB',
      color: '#1f77b4',
      fromZero: false,
      minSpan: 2,
      integer: false,
      points: series((s) => s.heapUsedMiB),
      dots: checkpoints.map((c) => ({ t: c.tSec, v: c.heapAfterGcMiB, label: `heap after GC at ${fmtTime(c.tSec, clock)}: ${fmtVal(c.heapAfterGcMiB)} MiB` })),
      refs:
        heapBase !== undefined && Number.isFinite(heapBase)
          ? [
              { v: heapBase, label: 'baseline', color: '#555555' },
              { v: heapBase + HEAP_ALLOWANCE_MIB, label: 'baseline + 10 MB', color: CHECKPOINT },
            ]
          : [],
    },
    { name: 'RSS', unit: 'MiB', color: '#9467bd', fromZero: false, minSpan: 2, integer: false, points: series((s) => s.rssMiB), dots: [], refs: [] },
    {
      name: 'open fds',
      unit: 'count',
      color: '#2ca02c',
      fromZero: true,
      minSpan: 2,
      integer: true,
      points: series((s) => s.fds),
      dots: checkpoints.map((c) => ({ t: c.tSec, v: c.fds, label: `fds at checkpoint ${fmtTime(c.tSec, clock)}: ${fmtVal(c.fds)}` })),
      refs: fdBase !== undefined && Number.isFinite(fdBase) ? [{ v: fdBase, label: 'baseline', color: '#555555' }] : [],
    },
    { name: 'live ledger entries', unit: 'count', color: '#8c564b', fromZero: true, minSpan: 2, integer: true, points: series((s) => s.ledgerLive), dots: [], refs: [] },
    { name: 'in-flight tasks', unit: 'count', color: '#ff7f0e', fromZero: true, minSpan: 2, integer: true, points: series((s) => s.inFlight), dots: [], refs: [] },
    { name: 'tasks finished', unit: 'per s', color: '#17becf', fromZero: true, minSpan: 2, integer: false, points: rate, dots: [], refs: [] },
  ];

  const faults = spans(rows, (s) => s.fault, t0, t1);
  const faultColor = new Map<string, string>();
  for (const f of faults) if (!faultColor.has(f.key)) faultColor.set(f.key, FAULT_PALETTE[faultColor.size % FAULT_PALETTE.length]!);

  const out: string[] = [];
  const legend = legendItems(options, checkpoints.length > 0, faultColor);
  let y = header(out, options);
  y = drawLegend(out, legend, y + 8);
  const bandTop = y + 8;
  const panelsTop = bandTop + BAND_H + 8;
  const plotTop = (i: number): number => panelsTop + i * (PANEL_HEAD + PANEL_H + PANEL_GAP) + PANEL_HEAD;
  const plotsBottom = plotTop(panels.length - 1) + PANEL_H;
  const height = plotsBottom + 44;

  // Quiet periods first, so that everything else draws over the shading.
  for (const q of spans(rows, (s) => (s.phase === 'quiet' ? 'quiet' : ''), t0, t1)) {
    out.push(`<rect x="${r1(sx(q.from))}" y="${bandTop}" width="${r1(sx(q.to) - sx(q.from))}" height="${plotsBottom - bandTop}" fill="${QUIET_FILL}"/>`);
  }

  // The fault band.
  out.push(`<g><text x="${LEFT - 6}" y="${bandTop + 12}" text-anchor="end" fill="#555">faults</text>`);
  out.push(`<rect x="${LEFT}" y="${bandTop}" width="${PLOT_W}" height="${BAND_H}" fill="none" stroke="${GRID}"/>`);
  if (faults.length === 0) out.push(`<text x="${LEFT + 6}" y="${bandTop + 12}" fill="#999">none</text>`);
  for (const f of faults) {
    const x = sx(f.from);
    const w = sx(f.to) - x;
    const tip = `${f.key} ${fmtTime(f.from, clock)}–${fmtTime(f.to, clock)}`;
    out.push(`<rect x="${r1(x)}" y="${bandTop}" width="${r1(w)}" height="${BAND_H}" fill="${faultColor.get(f.key) ?? FAULT_PALETTE[0]}"><title>${esc(tip)}</title></rect>`);
    // Only a label that fits: overlapping names are worse than none (the legend names every fault).
    if (w >= textWidth(f.key, 9) + 4) out.push(`<text x="${r1(x + w / 2)}" y="${bandTop + 11.5}" text-anchor="middle" font-size="9" fill="#111">${esc(f.key)}</text>`);
  }
  out.push('</g>');

  // Time ticks, shared by every panel.
  const xStep = timeStep(t1 - t0);
  const xTicks: number[] = [];
  for (let t = Math.ceil(t0 / xStep) * xStep; t <= t1 + 1e-9; t += xStep) xTicks.push(t);

  panels.forEach((p, i) => drawPanel(out, p, plotTop(i), sx, xTicks));

  out.push(`<g text-anchor="middle" fill="#555">`);
  for (const t of xTicks) out.push(`<text x="${r1(sx(t))}" y="${plotsBottom + 14}">${fmtTime(t, clock)}</text>`);
  out.push(`<text x="${LEFT + PLOT_W / 2}" y="${plotsBottom + 32}">time since start (${clock ? 'm:ss' : 's'})</text></g>`);

  return svgDocument(options.title, height, out);
}

/** Draws one panel: name and stats, grid, y ticks, reference lines, the series and its dots. */
function drawPanel(out: string[], p: Panel, top: number, sx: (t: number) => number, xTicks: readonly number[]): void {
  const values = p.points.map(([, v]) => v).filter(Number.isFinite);
  const extra = [...p.dots.map((d) => d.v), ...p.refs.map((r) => r.v)].filter(Number.isFinite);
  const ticks = yTicks([...values, ...extra], p);
  const lo = ticks[0]!;
  const hi = ticks[ticks.length - 1]!;
  const bottom = top + PANEL_H;
  const sy = (v: number): number => bottom - ((v - lo) / (hi - lo)) * PANEL_H;

  const range = extent(values);
  const stats = range ? `min ${fmtVal(range[0])} · max ${fmtVal(range[1])} · last ${fmtVal(values[values.length - 1]!)}` : '';
  out.push(
    `<g><text x="${LEFT}" y="${top - 6}"><tspan font-weight="bold">${esc(p.name)}</tspan> (${esc(p.unit)})<tspan dx="12" fill="#777">${stats}</tspan></text>`,
  );
  let grid = '';
  for (const v of ticks) grid += `M${LEFT} ${r1(sy(v))}h${PLOT_W}`;
  for (const t of xTicks) grid += `M${r1(sx(t))} ${top}v${PANEL_H}`;
  out.push(`<path d="${grid}" stroke="${GRID}" fill="none"/>`);
  out.push(`<rect x="${LEFT}" y="${top}" width="${PLOT_W}" height="${PANEL_H}" fill="none" stroke="#bbbbbb"/>`);
  out.push(`<g text-anchor="end" font-size="10" fill="#555">`);
  for (const v of ticks) out.push(`<text x="${LEFT - 6}" y="${r1(sy(v) + 3.5)}">${fmtTick(v)}</text>`);
  out.push('</g>');

  // Reference lines under the series, their labels over it (with a white halo to stay readable).
  for (const r of p.refs) out.push(`<path d="M${LEFT} ${r1(sy(r.v))}h${PLOT_W}" stroke="${r.color}" stroke-dasharray="6 4" fill="none"/>`);
  if (values.length === 0) {
    out.push(`<text x="${LEFT + PLOT_W / 2}" y="${top + PANEL_H / 2 + 4}" text-anchor="middle" fill="#999">no data</text>`);
  } else {
    out.push(`<path d="${linePath(p.points, sx, sy)}" fill="none" stroke="${p.color}" stroke-width="1.3" stroke-linejoin="round" stroke-linecap="round"/>`);
  }
  for (const r of p.refs) {
    out.push(
      `<text x="${LEFT + PLOT_W - 4}" y="${r1(sy(r.v) - 3)}" text-anchor="end" font-size="10" fill="${r.color}" stroke="#fff" stroke-width="3" paint-order="stroke">${esc(r.label)}</text>`,
    );
  }
  for (const d of p.dots) {
    if (!Number.isFinite(d.v)) continue;
    out.push(`<circle cx="${r1(sx(d.t))}" cy="${r1(sy(d.v))}" r="3.5" fill="${CHECKPOINT}" stroke="#fff"><title>${esc(d.label)}</title></circle>`);
  }
  out.push('</g>');
}

/**
 * One path for a whole series, a gap where a value is missing. Points that round to the same
 * spot are dropped and a horizontal run keeps only its ends, which keeps a long flat series small.
 */
function linePath(points: readonly Pt[], sx: (t: number) => number, sy: (v: number) => number): string {
  let d = '';
  let seg: (readonly [number, number])[] = [];
  const flush = (): void => {
    const [head, ...rest] = seg;
    if (!head) return;
    if (rest.length > 0) d += `M${head[0]} ${head[1]}L${rest.map(([x, y]) => `${x} ${y}`).join(' ')}`;
    // A lone point (one sample between gaps) becomes a small ring, which the stroke fills into a dot.
    else d += `M${r1(head[0] - 1.5)} ${head[1]}a1.5 1.5 0 1 0 3 0a1.5 1.5 0 1 0 -3 0`;
    seg = [];
  };
  for (const [t, v] of points) {
    if (!Number.isFinite(v)) {
      flush();
      continue;
    }
    const p = [r1(sx(t)), r1(sy(v))] as const;
    const n = seg.length;
    const prev = seg[n - 1];
    if (prev && prev[0] === p[0] && prev[1] === p[1]) continue;
    if (prev && n >= 2 && prev[1] === p[1] && seg[n - 2]![1] === p[1]) seg[n - 1] = p;
    else seg.push(p);
  }
  flush();
  return d;
}

/** Runs of consecutive samples with the same non-empty key; each sample owns the time up to halfway to its neighbours. */
function spans(rows: readonly SoakSample[], keyOf: (s: SoakSample) => string, t0: number, t1: number): Span[] {
  const out: Span[] = [];
  let open: { from: number; key: string } | null = null;
  for (let i = 0; i < rows.length; i++) {
    const s = rows[i]!;
    const key = keyOf(s);
    const prev = rows[i - 1];
    const next = rows[i + 1];
    const from = prev ? (prev.tSec + s.tSec) / 2 : t0;
    const to = next ? (s.tSec + next.tSec) / 2 : t1;
    if (open && open.key !== key) {
      out.push({ from: open.from, to: from, key: open.key });
      open = null;
    }
    if (!open && key !== '') open = { from, key };
    if (open && !next) out.push({ from: open.from, to, key: open.key });
  }
  return out;
}

/** 3 to 5 round tick values covering `values` (1, 2, 2.5 or 5 times a power of ten apart). */
function yTicks(values: readonly number[], p: Panel): number[] {
  let [lo, hi] = extent(values) ?? [0, 0];
  if (p.fromZero) lo = Math.min(0, lo);
  if (hi - lo < p.minSpan) {
    // A flat (or single-valued) series: centre it, or sit it on zero for counts.
    const mid = (hi + lo) / 2;
    [lo, hi] = p.fromZero && lo === 0 ? [0, p.minSpan] : [mid - p.minSpan / 2, mid + p.minSpan / 2];
  }
  // 5% headroom, so that a line at its extreme is not hidden under the panel's frame.
  const pad = (hi - lo) * 0.05;
  hi += pad;
  if (!p.fromZero || lo < 0) lo -= pad;
  const base = 10 ** Math.floor(Math.log10((hi - lo) / 5));
  for (const m of [1, 2, 2.5, 5, 10, 20, 25, 50, 100]) {
    const step = base * m;
    if (p.integer && (step < 1 || !Number.isInteger(Math.round(step * 1e9) / 1e9))) continue;
    const a = Math.floor(lo / step + 1e-9);
    const b = Math.ceil(hi / step - 1e-9);
    if (b - a + 1 > 5) continue;
    // toFixed undoes float noise such as 0.30000000000000004 in the tick values.
    const decimals = Math.max(0, Math.ceil(-Math.log10(step)) + 1);
    const ticks: number[] = [];
    for (let k = a; k <= b; k++) ticks.push(Number((k * step).toFixed(decimals)));
    return ticks;
  }
  return [lo, hi]; // unreachable for finite input: the last step covers the range in 2 intervals
}

/** [min, max] of values, undefined for none; a loop because a day-long soak has more samples than Math.min(...v) takes arguments. */
function extent(values: readonly number[]): [number, number] | undefined {
  if (values.length === 0) return undefined;
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) {
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  return [lo, hi];
}

/** The smallest clock-friendly step that puts at most 12 ticks on the time axis. */
function timeStep(range: number): number {
  for (const s of [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400]) {
    if (range / s <= 12) return s;
  }
  return Math.ceil(range / 12 / 86400) * 86400;
}

/** Seconds as m:ss (h:mm:ss past an hour) on a clock axis, else as "12s". */
function fmtTime(sec: number, clock: boolean): string {
  const s = Math.round(sec);
  if (!clock) return `${s}s`;
  const sign = s < 0 ? '-' : '';
  const a = Math.abs(s);
  const h = Math.floor(a / 3600);
  const m = Math.floor((a % 3600) / 60);
  const pad = (n: number): string => String(n).padStart(2, '0');
  return h > 0 ? `${sign}${h}:${pad(m)}:${pad(a % 60)}` : `${sign}${m}:${pad(a % 60)}`;
}

/** A value for the stats and tooltips: integers as they are, else one decimal (none from 100 up). */
function fmtVal(v: number): string {
  if (Number.isInteger(v)) return String(v);
  return Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(1);
}

/** A tick value, already rounded by yTicks: thousands shortened so that the label fits the margin. */
function fmtTick(v: number): string {
  return Math.abs(v) >= 10_000 ? `${Number((v / 1000).toFixed(1))}k` : String(v);
}

interface LegendItem {
  readonly swatch: string; // SVG for a 14×10 swatch at (0, -9), placed with a translate
  readonly label: string;
}

/** Legend entries for what this chart actually draws. */
function legendItems(options: SoakChartOptions, checkpoints: boolean, faultColor: ReadonlyMap<string, string>): LegendItem[] {
  const items: LegendItem[] = [{ swatch: `<rect y="-9" width="14" height="10" fill="${QUIET_FILL}" stroke="#bbb"/>`, label: 'quiet period' }];
  if (checkpoints) items.push({ swatch: `<circle cx="7" cy="-4" r="3.5" fill="${CHECKPOINT}"/>`, label: 'after forced GC (checkpoint)' });
  const heapBase = Number.isFinite(options.heapBaselineMiB);
  if (heapBase || Number.isFinite(options.fdBaseline)) {
    items.push({ swatch: '<path d="M0 -4h14" stroke="#555" stroke-dasharray="4 2"/>', label: 'baseline' });
  }
  if (heapBase) {
    items.push({ swatch: `<path d="M0 -4h14" stroke="${CHECKPOINT}" stroke-dasharray="4 2"/>`, label: 'heap limit' });
  }
  for (const [name, color] of faultColor) items.push({ swatch: `<rect y="-9" width="14" height="10" fill="${color}"/>`, label: `fault: ${name}` });
  return items;
}

/** Lays the legend out in rows that wrap at the chart's width; returns the y below it. */
function drawLegend(out: string[], items: readonly LegendItem[], top: number): number {
  let x = LEFT;
  let y = top + 10;
  for (const item of items) {
    const w = 14 + 5 + textWidth(item.label, 11) + 16;
    if (x + w > WIDTH - RIGHT && x > LEFT) {
      x = LEFT;
      y += 16;
    }
    out.push(`<g transform="translate(${r1(x)} ${y})">${item.swatch}<text x="19">${esc(item.label)}</text></g>`);
    x += w;
  }
  return y + 4;
}

/** Title and subtitle; returns the y below them. */
function header(out: string[], options: SoakChartOptions): number {
  out.push(`<text x="${LEFT}" y="26" font-size="18" font-weight="bold">${esc(options.title)}</text>`);
  if (options.subtitle === undefined || options.subtitle === '') return 32;
  out.push(`<text x="${LEFT}" y="46" font-size="12" fill="#555">${esc(options.subtitle)}</text>`);
  return 52;
}

/** The whole document when there is nothing to plot: a chart that says so rather than an error. */
function emptyChart(options: SoakChartOptions): string {
  const out: string[] = [];
  const y = header(out, options);
  out.push(`<text x="${WIDTH / 2}" y="${y + 40}" text-anchor="middle" font-size="14" fill="#999">no samples</text>`);
  return svgDocument(options.title, y + 70, out);
}

/** Wraps the body in the root element; the white background keeps it legible in dark-mode viewers. */
function svgDocument(title: string, height: number, body: readonly string[]): string {
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" viewBox="0 0 ${WIDTH} ${height}" ` +
    `font-family="system-ui, -apple-system, 'Segoe UI', sans-serif" font-size="11">\n` +
    `<title>${esc(title)}</title>\n<rect width="100%" height="100%" fill="#fff"/>\n${body.join('\n')}\n</svg>\n`
  );
}

/** Rough text width for a sans-serif font, enough to decide whether a label fits. */
function textWidth(text: string, fontSize: number): number {
  return text.length * fontSize * 0.56;
}

/** Coordinates to one decimal: sub-pixel precision beyond that only makes the file bigger. */
function r1(n: number): number {
  return Math.round(n * 10) / 10 || 0; // `|| 0` turns -0 into 0
}

/**
 * Text for XML content and attribute values: the five special characters as entities, and
 * control characters (invalid in XML 1.0 even as entities) and lone surrogates replaced.
 */
function esc(text: string): string {
  return String(text)
    .replace(/\p{Cc}/gu, ' ')
    .replace(/\p{Cs}/gu, '\uFFFD')
    .replace(/[&<>"']/g, (c) => ENTITIES[c as keyof typeof ENTITIES]);
}
const ENTITIES = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;' } as const;
