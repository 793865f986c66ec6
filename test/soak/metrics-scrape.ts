// Prometheus' view of the service during the soak: the gauges and the leak counter that
// must agree with what the service process reports about itself.
import type { SoakClient } from './http-client.ts';

export interface ScrapedMetrics {
  /** `leash_tasks_in_flight`, summed over stages. */
  readonly inFlight: number;
  /** `leash_resources_live`, summed over kinds. */
  readonly resourcesLive: number;
  /** `leash_leaks_total` by its label set as written. */
  readonly leaks: Readonly<Record<string, number>>;
}

export async function scrapeMetrics(client: SoakClient, timeoutMs: number): Promise<ScrapedMetrics> {
  const res = await client.json('GET', '/metrics', undefined, timeoutMs);
  if (res.status !== 200 || typeof res.body !== 'string') throw new Error(`GET /metrics: HTTP ${res.status}`);
  const text: string = res.body;
  const sum = (name: string): number => metricLines(text, name).reduce((a, l) => a + l.value, 0);
  const leaks: Record<string, number> = {};
  for (const l of metricLines(text, 'leash_leaks_total')) leaks[l.labels] = l.value;
  return { inFlight: sum('leash_tasks_in_flight'), resourcesLive: sum('leash_resources_live'), leaks };
}

/** Samples of one metric in Prometheus' text format: labels as written, value. */
function metricLines(text: string, name: string): Array<{ labels: string; value: number }> {
  const out: Array<{ labels: string; value: number }> = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!m || m[1] !== name) continue;
    out.push({ labels: m[2] ?? '', value: Number(m[3]) });
  }
  return out;
}
