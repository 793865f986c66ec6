// The ops assets (ops/): the Prometheus alert rules pass `promtool check` and their own
// unit tests, the Grafana dashboard asks only for metrics leash exposes, and a real
// Prometheus (Debian's package, on loopback) scrapes a real `leash serve` with the rules
// loaded. Needs `promtool` and `prometheus` on PATH: a missing binary is a failure, never
// a skip (.ci/run installs them).
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { parse, stringify } from 'yaml';
import { assertNothingAlive } from './support/assert-clean.ts';
import { apiRequest, READ_TOKEN, startTestService } from './support/service.ts';

const execFileAsync = promisify(execFile);
const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const ALERTS = path.join(REPO_ROOT, 'ops/prometheus/alerts.yml');
const ALERT_TESTS = path.join(REPO_ROOT, 'ops/prometheus/alerts.test.yml');
const DASHBOARD = path.join(REPO_ROOT, 'ops/grafana/leash.json');

/** leash's own metrics (DESIGN.md "Contracts"); the contract the ops assets rely on. */
const LEASH_METRICS = new Set([
  'leash_tasks_started_total',
  'leash_tasks_finished_total',
  'leash_tasks_in_flight',
  'leash_ssh_connections',
  'leash_resources_live',
  'leash_resources_opened_total',
  'leash_resources_closed_total',
  'leash_task_oldest_age_seconds',
  'leash_leaks_total',
  'leash_event_loop_delay_p99_seconds',
  'leash_max_task_deadline_seconds',
]);
const LEASH_HISTOGRAMS = new Set(['leash_task_stage_seconds']);
/** prom-client's default metrics. */
const RUNTIME_METRIC = /^(process|nodejs)_[a-z0-9_]+$/;

function isKnownMetric(name: string): boolean {
  if (LEASH_METRICS.has(name) || RUNTIME_METRIC.test(name)) return true;
  const histogram = /^(.*)_(bucket|sum|count)$/.exec(name);
  return histogram !== null && LEASH_HISTOGRAMS.has(histogram[1]!);
}

const PROMQL_KEYWORDS = new Set(['and', 'or', 'unless', 'offset', 'bool', 'by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'inf', 'nan']);

/**
 * The metric names a PromQL expression selects: identifiers that are not functions,
 * keywords, label names (inside `{}` or after by/without/on/ignoring/group_*), durations
 * or Grafana variables.
 */
function metricNames(expr: string): string[] {
  const stripped = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'/g, '""')
    .replace(/\{[^}]*\}/g, '')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, '')
    .replace(/\[[^\]]*\]/g, '')
    .replace(/\$\{?\w+\}?/g, '');
  const names: string[] = [];
  for (const m of stripped.matchAll(/(?<![\w.])([a-zA-Z_:][\w:]*)(\s*\()?/g)) {
    if (m[2] !== undefined || PROMQL_KEYWORDS.has(m[1]!.toLowerCase())) continue;
    names.push(m[1]!);
  }
  return names;
}

/** The absolute path of `name` on PATH (or /usr/bin), or a failed assertion saying how to get it. */
function requireBinary(name: string): string {
  const dirs = [...(process.env.PATH ?? '').split(path.delimiter).filter((d) => d.length > 0), '/usr/bin'];
  for (const dir of dirs) {
    const candidate = path.join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // Not here.
    }
  }
  assert.fail(`${name} not found on PATH: install Debian's prometheus package; .ci/run does`);
}

/** Runs a tool to completion (bounded); on failure the assertion shows its output. */
async function run(file: string, args: string[]): Promise<string> {
  try {
    const { stdout, stderr } = await execFileAsync(file, args, { cwd: REPO_ROOT, timeout: 60_000 });
    return stdout + stderr;
  } catch (err) {
    const e = err as { code?: unknown; signal?: unknown; stdout?: string; stderr?: string };
    assert.fail(`${path.basename(file)} ${args.join(' ')} failed (code ${String(e.code)}, signal ${String(e.signal)}):\n${e.stdout ?? ''}${e.stderr ?? ''}`);
  }
}

/** A TCP port on 127.0.0.1 that was free a moment ago. */
async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: '127.0.0.1', port: 0 }, resolve);
  });
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Every panel of a dashboard, rows' nested panels included. */
function allPanels(panels: any[]): any[] {
  return panels.flatMap((p) => [p, ...allPanels(Array.isArray(p.panels) ? p.panels : [])]);
}

/** Polls `check` every 250 ms until it returns a value or `limitMs` passes; `what` names it in the failure. */
async function pollFor<T>(what: string, limitMs: number, check: () => Promise<T | undefined>, detail: () => string): Promise<T> {
  const until = Date.now() + limitMs;
  let last = '';
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (err) {
      last = String(err);
    }
    if (Date.now() >= until) assert.fail(`${what}: not within ${limitMs} ms (last error: ${last || 'none'})\n${detail()}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** GET on the Prometheus HTTP API (loopback), its `data` when the status is success. */
async function promApi(base: string, route: string): Promise<any> {
  const response = await fetch(`${base}${route}`, { signal: AbortSignal.timeout(2000) });
  const body: any = await response.json();
  if (body.status !== 'success') throw new Error(`${route}: ${JSON.stringify(body)}`);
  return body.data;
}

void describe('ops: Prometheus rules and Grafana dashboard', () => {
  void test('promtool accepts the alert rules and their unit tests pass', async () => {
    const promtool = requireBinary('promtool');
    const checked = await run(promtool, ['check', 'rules', ALERTS]);
    assert.match(checked, /SUCCESS: \d+ rules found/, checked);
    const tested = await run(promtool, ['test', 'rules', ALERT_TESTS]);
    assert.match(tested, /SUCCESS/, tested);
  });

  void test('every alert has for, a severity, and annotations that say where to look; only known metrics', async () => {
    const rules = parse(await readFile(ALERTS, 'utf8'));
    const group = rules.groups.find((g: any) => g.name === 'leash');
    assert.ok(group, 'rule group `leash`');
    const names = group.rules.map((r: any) => r.alert);
    for (const required of ['LeashTasksInFlightNotDraining', 'LeashTaskOlderThanMaxDeadline', 'LeashLeaksDetected', 'LeashEventLoopDelayHigh', 'LeashOpenFdsNearLimit']) {
      assert.ok(names.includes(required), `alert ${required} in ${names.join(', ')}`);
    }
    const tests = await readFile(ALERT_TESTS, 'utf8');
    for (const rule of group.rules) {
      assert.match(String(rule.for), /^\d+[smh]$/, `${rule.alert}: for`);
      assert.ok(['warning', 'critical'].includes(rule.labels?.severity), `${rule.alert}: severity`);
      assert.ok(rule.annotations?.summary, `${rule.alert}: summary`);
      assert.match(rule.annotations?.description ?? '', /\/debug\//, `${rule.alert}: the description names a debug endpoint`);
      assert.ok(tests.includes(`alertname: ${rule.alert}\n`), `${rule.alert} has a promtool unit test`);
      const unknown = metricNames(rule.expr).filter((n) => !isKnownMetric(n));
      assert.deepEqual(unknown, [], `${rule.alert}: unknown metrics in ${rule.expr}`);
    }
  });

  void test('the Grafana dashboard parses and queries only metrics leash exposes', async () => {
    const dashboard = JSON.parse(await readFile(DASHBOARD, 'utf8'));
    assert.equal(typeof dashboard.title, 'string');
    assert.ok(dashboard.schemaVersion >= 36, `schemaVersion ${dashboard.schemaVersion}`);
    const variables = dashboard.templating.list;
    assert.ok(
      variables.some((v: any) => v.name === 'DS_PROMETHEUS' && v.type === 'datasource' && v.query === 'prometheus'),
      'a datasource variable DS_PROMETHEUS',
    );
    for (const v of variables.filter((x: any) => x.type === 'query')) {
      assert.equal(v.datasource.uid, '${DS_PROMETHEUS}', `variable ${v.name}: datasource`);
      const query = typeof v.query === 'string' ? v.query : v.query.query;
      const metric = /^label_values\(([a-zA-Z_:][\w:]*)/.exec(query)?.[1];
      assert.ok(metric && isKnownMetric(metric), `variable ${v.name}: ${query}`);
    }

    const panels = allPanels(dashboard.panels);
    const ids = panels.map((p) => p.id);
    assert.equal(new Set(ids).size, ids.length, 'panel ids are unique');
    const used = new Set<string>();
    let exprs = 0;
    for (const panel of panels.filter((p) => p.type !== 'row')) {
      assert.equal(panel.datasource?.uid, '${DS_PROMETHEUS}', `${panel.title}: datasource`);
      assert.ok(Array.isArray(panel.targets) && panel.targets.length > 0, `${panel.title}: targets`);
      for (const target of panel.targets) {
        assert.equal(target.datasource?.uid, '${DS_PROMETHEUS}', `${panel.title}: target datasource`);
        const names = metricNames(target.expr);
        assert.ok(names.length > 0, `${panel.title}: no metric in ${target.expr}`);
        const unknown = names.filter((n) => !isKnownMetric(n));
        assert.deepEqual(unknown, [], `${panel.title}: unknown metrics in ${target.expr}`);
        for (const n of names) used.add(n);
        exprs++;
      }
    }
    assert.ok(exprs >= 10, `${exprs} queries`);
    for (const required of [
      'leash_tasks_in_flight',
      'leash_tasks_finished_total',
      'leash_task_stage_seconds_bucket',
      'leash_task_oldest_age_seconds',
      'leash_resources_live',
      'leash_resources_opened_total',
      'leash_resources_closed_total',
      'leash_leaks_total',
      'leash_event_loop_delay_p99_seconds',
      'process_open_fds',
      'process_max_fds',
      'process_resident_memory_bytes',
      'nodejs_heap_size_used_bytes',
    ]) {
      assert.ok(used.has(required), `the dashboard shows ${required}`);
    }
  });

  void test('the metric-name check itself: catches a typo, ignores labels, functions and variables', () => {
    assert.deepEqual(metricNames('histogram_quantile(0.99, sum by (stage, le) (rate(leash_task_stage_seconds_bucket{job=~"$job"}[$__rate_interval])))'), ['leash_task_stage_seconds_bucket']);
    assert.deepEqual(metricNames('a_b > on (instance, job) (max by (instance) (c_d offset 30m) > 0) unless e_f'), ['a_b', 'c_d', 'e_f']);
    assert.equal(isKnownMetric('leash_task_started_total'), false);
    assert.equal(isKnownMetric('leash_task_stage_seconds_count'), true);
  });

  void test('a real Prometheus scrapes a real leash serve, with the alert rules loaded', { timeout: 120_000 }, async () => {
    const prometheus = requireBinary('prometheus');
    const service = await startTestService(null, { demo: true });
    let dir: string | null = null;
    let child: ReturnType<typeof spawn> | null = null;
    let log = '';
    try {
      const api = new URL(service.url);
      assert.equal(api.hostname, '127.0.0.1', `the service listens on loopback: ${service.url}`);
      const demo = service.running.demo;
      assert.ok(demo, 'the demo target runs');
      const r = await service.request('POST', '/v1/tasks', { host: demo.host, port: demo.port, identity: 'demo', command: 'true', wait: 20 });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.equal(r.body.status, 'ok', JSON.stringify(r.body));
      // What Prometheus will see, with the read token it will use.
      const metrics = await apiRequest(service.url, 'GET', '/metrics', undefined, { token: READ_TOKEN });
      assert.equal(metrics.status, 200);
      assert.match(String(metrics.body), /^leash_tasks_started_total [1-9]/m);

      dir = await mkdtemp(path.join(os.tmpdir(), 'leash-prometheus-'));
      const port = await freePort();
      const configPath = path.join(dir, 'prometheus.yml');
      await writeFile(
        configPath,
        stringify({
          global: { scrape_interval: '1s', scrape_timeout: '1s', evaluation_interval: '1s' },
          rule_files: [ALERTS],
          scrape_configs: [
            {
              job_name: 'leash',
              metrics_path: '/metrics',
              scheme: 'http',
              authorization: { type: 'Bearer', credentials: READ_TOKEN },
              static_configs: [{ targets: [api.host] }],
            },
          ],
        }),
      );
      await run(requireBinary('promtool'), ['check', 'config', configPath]);
      const proc = spawn(
        prometheus,
        [`--config.file=${configPath}`, `--storage.tsdb.path=${path.join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${port}`, '--log.level=info'],
        { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] },
      );
      child = proc;
      const keep = (chunk: Buffer): void => {
        log = (log + chunk.toString('utf8')).slice(-20_000);
      };
      proc.stdout.on('data', keep);
      proc.stderr.on('data', keep);
      const detail = (): string => `prometheus ${proc.exitCode === null ? 'running' : `exited ${proc.exitCode}`}; its log:\n${log}`;
      const base = `http://127.0.0.1:${port}`;
      const live = (): void => assert.equal(proc.exitCode, null, `prometheus exited early\n${log}`);

      const sample = await pollFor('leash_tasks_started_total >= 1 in Prometheus', 30_000, async () => {
        live();
        const data = await promApi(base, `/api/v1/query?query=${encodeURIComponent('leash_tasks_started_total')}`);
        return data.result.find((s: any) => Number(s.value[1]) >= 1);
      }, detail);
      assert.equal(sample.metric.job, 'leash');
      assert.equal(sample.metric.instance, api.host);
      assert.ok(Number(sample.value[1]) >= 1, JSON.stringify(sample));

      const target = await pollFor('the leash target to be up', 10_000, async () => {
        live();
        const data = await promApi(base, '/api/v1/targets?state=active');
        return data.activeTargets.find((t: any) => t.labels.instance === api.host && t.health === 'up');
      }, detail);
      assert.equal(target.labels.job, 'leash');
      assert.equal(target.lastError, '');

      // The rules loaded and evaluate without error (on real series, not only promtool's).
      const group = await pollFor('the leash rule group to be evaluated', 10_000, async () => {
        live();
        const data = await promApi(base, '/api/v1/rules?type=alert');
        const g = data.groups.find((x: any) => x.name === 'leash');
        return g && g.rules.every((rule: any) => rule.health !== 'unknown') ? g : undefined;
      }, detail);
      const broken = group.rules.filter((rule: any) => rule.health !== 'ok').map((rule: any) => `${rule.name}: ${rule.health} ${rule.lastError ?? ''}`);
      assert.deepEqual(broken, []);
      // Every rule has a `for:` of a minute or more, so nothing can fire yet; `pending` on a
      // few seconds of data (a derivative of two samples) is allowed.
      const firing = group.rules.filter((rule: any) => rule.state === 'firing').map((rule: any) => rule.name);
      assert.deepEqual(firing, [], 'a healthy leash fires no alert');
    } finally {
      if (child) await stopProcess(child);
      if (dir) await rm(dir, { recursive: true, force: true });
      await service.stop();
    }
    await assertNothingAlive();
  });
});

/** SIGTERM, then SIGKILL after 5 s; resolves when the process has exited. */
async function stopProcess(child: ReturnType<typeof spawn>): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
  try {
    await exited;
  } finally {
    clearTimeout(timer);
  }
}
