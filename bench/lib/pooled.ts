// Benchmark 2: one pooled connection, remote command `true`. Contenders: leash's
// ConnectionPool (one connection, up to 16 channels on it) and OpenSSH's ControlMaster
// (one master, an `ssh -S` client per task); the Go peer's sessions-on-one-connection in
// go-peer.ts. Each keeps its one connection open across repetitions.
import { execFileSync, spawnSync } from 'node:child_process';
import path from 'node:path';
import { ledger } from '../../src/lifecycle/ledger.ts';
import { taskTable } from '../../src/lifecycle/task-table.ts';
import { ConnectionPool } from '../../src/ssh/connection-pool.ts';
import { HostKeyVerifier } from '../../src/ssh/host-key-verifier.ts';
import { SshRemoteExec } from '../../src/ssh/remote-exec.ts';
import { keyCredentials, testSpec } from '../../test/support/run-task.ts';
import type { Sshd } from '../../test/support/sshd.ts';
import { assertLedgerEmpty, leashContenderWith, sshArgv, sshContenderWith, type Contender } from './fresh.ts';
import { cpuMs, pollUntil, procMemory } from './util.ts';

/** What the pooled part needs sshd to allow on one connection (its default MaxSessions is 10). */
export const POOLED_SSHD_CONFIG = ['Match all', '  MaxSessions 32'];

export interface PooledLeash {
  readonly contender: Contender;
  /** Runs one task, so the pool holds its one connection before measuring. */
  warm(): Promise<void>;
  /** Ledger entries the open pool holds at rest (after warm()). */
  readonly idleLedger: () => number;
  close(): Promise<void>;
}

export async function pooledLeash(sshd: Sshd, channels: number): Promise<PooledLeash> {
  const pool = new ConnectionPool(ledger, { maxConnectionsPerKey: 1, maxChannelsPerConnection: channels, idleTtlMs: 600_000 });
  // One credentials and one HostKeyVerifier object for every task: the pool key compares them by identity.
  const credentials = await keyCredentials(sshd.clientKey.path);
  const hostKeys = HostKeyVerifier.fromLines([sshd.knownHostsLine], 'strict');
  const spec = testSpec(sshd, 'true', credentials, { hostKeys, timeouts: { commandMs: 30_000 } });
  let idle = Number.NaN;
  const checkOne = (when: string): void => {
    const s = pool.stats();
    if (s.idle + s.busy + s.connecting !== 1) throw new Error(`leash pooled, ${when}: the pool holds ${JSON.stringify(s)}, expected exactly one connection`);
  };
  const contender = leashContenderWith({
    name: 'leash pool',
    spec,
    deps: { remote: new SshRemoteExec({ pool }), ledger, tasks: taskTable },
    afterRep: async () => {
      checkOne('after a repetition');
      if (Number.isNaN(idle)) return; // the warm-up task: nothing to compare with yet
      await pollUntil(
        () => taskTable.size === 0 && ledger.liveCount() === idle,
        2000,
        `leash pooled repetition: task table empty and the ledger back to the pool's ${idle} entries`,
        () => `${taskTable.size} tasks, ${ledger.liveCount()} ledger entries`,
      );
    },
    cpuNote: 'the bench process itself (process.cpuUsage), RSS sampler included; the pooled connection lives in it',
  });
  return {
    contender,
    warm: async () => {
      await contender.sequential(1);
      await pollUntil(() => taskTable.size === 0, 2000, 'leash pool warm-up: task table empty');
      checkOne('after warming up');
      idle = ledger.liveCount();
    },
    idleLedger: () => idle,
    close: async () => {
      await pool.close();
      await assertLedgerEmpty('after closing the pool');
    },
  };
}

export interface ControlMaster {
  readonly contender: Contender;
  readonly pid: number;
  /** The command line of the master and of one task, with the sshd's paths abbreviated. */
  readonly masterCmd: string[];
  readonly taskCmd: string[];
  stop(): void;
}

/** Starts `ssh -M -S SOCK -o ControlPersist=yes -N -f ...` and a contender of `ssh -S SOCK` clients. */
export function controlMaster(sshd: Sshd): ControlMaster {
  const sock = path.join(sshd.dir, 'cm.sock');
  const base = sshArgv(sshd).filter((a) => a !== 'ControlMaster=no');
  // sshArgv: [...options, '-o' (of ControlMaster=no, now removed), destination, 'true']
  const options = base.slice(0, -2);
  if (options.at(-1) === '-o') options.pop();
  const destination = base.at(-2)!;
  const masterCmd = ['ssh', ...options, '-M', '-S', sock, '-o', 'ControlPersist=yes', '-N', '-f', destination];
  const taskArgs = [...options, '-S', sock, '-o', 'ControlMaster=no', destination, 'true'];
  const r = spawnSync(masterCmd[0]!, masterCmd.slice(1), { encoding: 'utf8', timeout: 30_000, stdio: ['ignore', 'pipe', 'pipe'] });
  if (r.status !== 0) throw new Error(`ControlMaster did not start (${r.status ?? r.signal}): ${(r.stderr ?? '').trim().slice(-500)}`);
  const check = spawnSync('ssh', ['-S', sock, '-O', 'check', destination], { encoding: 'utf8', timeout: 10_000 });
  const pid = Number(/pid=(\d+)/.exec(`${check.stderr ?? ''}${check.stdout ?? ''}`)?.[1]);
  if (!Number.isInteger(pid)) throw new Error(`ControlMaster: ssh -O check says ${(check.stderr ?? '').trim()}`);
  const contender = sshContenderWith({
    name: 'ssh ControlMaster',
    args: taskArgs,
    extra: {
      cpuMs: () => cpuMs(pid).own,
      rssKiB: () => procMemory(pid)?.rssKiB ?? 0,
      note: "plus the master process: its CPU during the repetition (/proc/PID/stat) and its VmRSS at the end",
    },
  });
  return {
    contender,
    pid,
    masterCmd,
    taskCmd: ['ssh', ...taskArgs],
    stop: () => {
      try {
        execFileSync('ssh', ['-S', sock, '-O', 'exit', destination], { timeout: 10_000, stdio: 'ignore' });
      } catch {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone
        }
      }
    },
  };
}
