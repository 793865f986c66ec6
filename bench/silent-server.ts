// A TCP server that accepts and never speaks (test/support/hostile-servers.ts 'silent-tcp'),
// run as a child of bench/run.ts so that its server-side sockets do not count in the
// bench process's RSS. Protocol on stdio, one JSON object per line:
//   out: {"port":N,"knownHostsLine":"..."} once listening
//   in:  "stats" → out: {"open":N,"accepted":N}
// Exits when stdin ends (the bench closed it or died) or on SIGTERM, closing every socket.
import { createInterface } from 'node:readline';
import { startHostileServer } from '../test/support/hostile-servers.ts';

const server = await startHostileServer('silent-tcp');
let closing = false;
const shutdown = (): void => {
  if (closing) return;
  closing = true;
  // close() waits at most 2 s for the sockets; the timer is a last resort.
  setTimeout(() => process.exit(1), 5000).unref();
  server.close().then(
    () => process.exit(0),
    () => process.exit(1),
  );
};
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

const lines = createInterface({ input: process.stdin });
lines.on('line', (line) => {
  if (line.trim() === 'stats') {
    process.stdout.write(`${JSON.stringify({ open: server.openConnections(), accepted: server.acceptedConnections() })}\n`);
  }
});
lines.on('close', shutdown);
process.stdout.write(`${JSON.stringify({ port: server.port, knownHostsLine: server.knownHostsLine })}\n`);
