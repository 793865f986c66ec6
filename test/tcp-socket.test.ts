import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import net from 'node:net';
import { describe, test } from 'node:test';
import { ledger } from '../src/lifecycle/ledger.ts';
import { openTcpSocket } from '../src/ssh/tcp-socket.ts';
import { assertNothingAlive } from './support/assert-clean.ts';

/**
 * Node 20 takes TCP_NODELAY and keepalive from the socket's constructor and silently ignores
 * them in connect() on an existing socket; leash once ran with Nagle on (60 ms per pooled
 * session instead of 13). The kernel's view is checked with `ss`; NODELAY, which `ss` does
 * not show, through the flag Node applies when the connection is made.
 */
void describe('leash TCP sockets', () => {
  void test('have TCP keepalive (as the kernel reports it) and TCP_NODELAY on', async () => {
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as net.AddressInfo).port;
    const tracked = await openTcpSocket({ host: '127.0.0.1', port }, { ledger, owner: 'test', signal: new AbortController().signal, keepAliveInitialDelayMs: 15_000 });
    try {
      const local = tracked.socket as net.Socket;
      const ss = execFileSync('ss', ['-tno', 'state', 'established', `( sport = :${local.localPort} )`], { encoding: 'utf8' });
      assert.match(ss, /timer:\(keepalive,/, `keepalive timer on the socket:\n${ss}`);
      const noDelay = Object.getOwnPropertySymbols(local).find((s) => s.description === 'kSetNoDelay');
      assert.ok(noDelay, 'Node 20 keeps the NODELAY setting under kSetNoDelay');
      assert.equal((local as unknown as Record<symbol, unknown>)[noDelay], true);
    } finally {
      tracked.destroy();
      await tracked.closed;
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
    await assertNothingAlive();
  });
});
