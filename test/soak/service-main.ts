// The service under soak, in its own process (forked by service-handle.ts) so that what the
// soak measures — heap, RSS, descriptors, ledger, tasks — is leash's alone, not the load
// generator's, the hostile servers' or the relay's. It reports a reading every second and
// answers `check` (after a forced GC) over the IPC channel; `stop` drains and exits.
//
// argv: CONFIG_PATH LOG_PATH HOME_DIR
import { createWriteStream } from 'node:fs';
import { once } from 'node:events';
import { loadConfig } from '../../src/app/config.ts';
import { startService } from '../../src/app/app.ts';
import { ledger } from '../../src/lifecycle/ledger.ts';
import { taskTable } from '../../src/lifecycle/task-table.ts';
import { collector } from '../support/gc.ts';
import { readCheck, readProbe, type FromService, type ToService } from './probe.ts';

const SAMPLE_INTERVAL_MS = 1000;

function send(message: FromService): void {
  process.send?.(message);
}

async function main(): Promise<void> {
  const [configPath, logPath, home] = process.argv.slice(2);
  if (!configPath || !logPath || !home || !process.send) throw new Error('usage: forked with IPC, argv CONFIG_PATH LOG_PATH HOME_DIR');
  const gc = collector();
  const log = createWriteStream(logPath, { flags: 'a' });
  const config = await loadConfig({ file: configPath, env: { HOME: home }, builtinIdentities: [] });
  const running = await startService(config, { demo: false, env: { HOME: home }, ledger, tasks: taskTable, logDestination: log });
  const sampler = setInterval(() => send({ type: 'sample', reading: readProbe(ledger, taskTable) }), SAMPLE_INTERVAL_MS);
  send({ type: 'ready', url: running.url, adminUrl: running.adminUrl });

  process.on('message', (raw) => {
    const message = raw as ToService;
    if (message.type === 'check') {
      send({ type: 'check', id: message.id, reading: readCheck(ledger, taskTable, gc) });
    } else if (message.type === 'stop') {
      clearInterval(sampler);
      void (async () => {
        await running.stop();
        log.end();
        if (!log.closed) await once(log, 'close');
        send({ type: 'stopped' });
        process.disconnect();
      })();
    }
  });
  // The driver gone (crashed or killed) means nobody will ever say stop.
  process.on('disconnect', () => {
    clearInterval(sampler);
    void running.stop().finally(() => process.exit(0));
  });
}

main().catch((err: unknown) => {
  send({ type: 'failed', message: err instanceof Error ? (err.stack ?? err.message) : String(err) });
  process.exitCode = 1;
  process.disconnect?.();
});
