// The driver's side of the service under soak: forks service-main.ts with an IPC channel,
// waits (bounded) for it to listen, passes its per-second readings on, asks for checks and
// stops it. Every wait has a limit; a service that does not exit is killed and that is an error.
import { fork, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import type { CheckReading, FromService, ProbeReading, ToService } from './probe.ts';

const MAIN = path.join(import.meta.dirname, 'service-main.ts');
/** Hang detectors (tsx compiles the sources at start-up), not speed claims. */
const START_LIMIT_MS = 60_000;
const CHECK_LIMIT_MS = 30_000;
const STOP_LIMIT_MS = 60_000;

export class SoakService {
  readonly #child: ChildProcess;
  readonly #exited: Promise<void>;
  readonly #checks: Map<number, (reading: CheckReading) => void>;
  #nextCheck = 1;
  #stopped: Promise<void> | undefined;

  private constructor(
    child: ChildProcess,
    readonly url: string,
    readonly adminUrl: string | null,
    checks: Map<number, (reading: CheckReading) => void>,
  ) {
    this.#child = child;
    this.#checks = checks;
    this.#exited = new Promise((resolve) => child.once('exit', () => resolve()));
  }

  /** Whether stop() was called (an exit after it is expected). */
  get stopping(): boolean {
    return this.#stopped !== undefined;
  }

  get pid(): number {
    return this.#child.pid ?? 0;
  }

  /** Forks the service; `onSample` gets each per-second reading, `onExit` an exit nobody asked for. */
  static async start(args: { configPath: string; logPath: string; home: string; onSample: (r: ProbeReading) => void; onExit: (why: string) => void }): Promise<SoakService> {
    const child = fork(MAIN, [args.configPath, args.logPath, args.home], {
      execArgv: ['--import', 'tsx'],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      env: { ...process.env, HOME: args.home },
    });
    let service: SoakService | undefined;
    const checks = new Map<number, (reading: CheckReading) => void>();
    const ready = new Promise<{ url: string; adminUrl: string | null }>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the service did not start within ${START_LIMIT_MS} ms`)), START_LIMIT_MS);
      child.on('message', (raw) => {
        const m = raw as FromService;
        if (m.type === 'ready') {
          clearTimeout(timer);
          resolve(m);
        } else if (m.type === 'failed') {
          clearTimeout(timer);
          reject(new Error(`the service failed: ${m.message}`));
        } else if (m.type === 'sample') {
          args.onSample(m.reading);
        } else if (m.type === 'check') {
          checks.get(m.id)?.(m.reading);
        }
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        const why = `the service exited (code ${code}, signal ${signal})`;
        reject(new Error(why));
        if (service && !service.stopping) args.onExit(why);
      });
    });
    try {
      const { url, adminUrl } = await ready;
      service = new SoakService(child, url, adminUrl, checks);
      return service;
    } catch (err) {
      child.kill('SIGKILL');
      throw err;
    }
  }

  /** A reading after a forced GC, with everything still alive named. */
  check(): Promise<CheckReading> {
    const id = this.#nextCheck++;
    return new Promise<CheckReading>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#checks.delete(id);
        reject(new Error(`no check reading within ${CHECK_LIMIT_MS} ms`));
      }, CHECK_LIMIT_MS);
      this.#checks.set(id, (reading) => {
        clearTimeout(timer);
        this.#checks.delete(id);
        resolve(reading);
      });
      this.#send({ type: 'check', id });
    });
  }

  /** Drains and stops the service; kills it (and throws) if it does not exit in time. Idempotent. */
  stop(): Promise<void> {
    this.#stopped ??= (async () => {
      if (this.#child.exitCode !== null || this.#child.signalCode !== null) return;
      this.#send({ type: 'stop' });
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), STOP_LIMIT_MS)));
      const outcome = await Promise.race([this.#exited, late]);
      clearTimeout(timer);
      if (outcome === 'late') {
        this.#child.kill('SIGKILL');
        await this.#exited;
        throw new Error(`the service did not exit within ${STOP_LIMIT_MS} ms of stop; killed`);
      }
    })();
    return this.#stopped;
  }

  #send(message: ToService): void {
    if (this.#child.connected) this.#child.send(message);
  }
}
