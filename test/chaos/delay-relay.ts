// A userspace TCP relay that adds latency (this kernel has no tc netem, DESIGN.md
// "Testing against real things"). It listens on the root side of a peer's veth and forwards
// each connection to the peer's sshd, holding every chunk `delayMs` in each direction
// (order kept), so each round trip costs 2 × delayMs more. Packet loss is added separately,
// by iptables on the veth (Peer.randomLoss). close() destroys every socket it made and
// resolves once they have all closed (their fds must not outlive the test).
import * as net from 'node:net';

export interface DelayRelay {
  readonly host: string;
  readonly port: number;
  /** Connections accepted so far. */
  readonly accepted: number;
  close(): Promise<void>;
}

/** Writes `chunk` to `to` after `delayMs`, in arrival order. */
function delayedPipe(from: net.Socket, to: net.Socket, delayMs: number): void {
  const queue: { due: number; chunk: Buffer }[] = [];
  let timer: NodeJS.Timeout | null = null;
  let ended = false;
  const flush = (): void => {
    timer = null;
    const now = Date.now();
    while (queue.length > 0 && (queue[0]?.due ?? Infinity) <= now) {
      const item = queue.shift();
      if (item && !to.destroyed) to.write(item.chunk);
    }
    if (queue.length > 0) timer = setTimeout(flush, Math.max(0, (queue[0]?.due ?? now) - now));
    else if (ended && !to.destroyed) to.end();
  };
  from.on('data', (chunk: Buffer) => {
    queue.push({ due: Date.now() + delayMs, chunk });
    timer ??= setTimeout(flush, delayMs);
  });
  from.on('end', () => {
    ended = true;
    timer ??= setTimeout(flush, delayMs);
  });
  from.on('close', () => {
    if (timer) clearTimeout(timer);
    timer = null;
  });
}

export function startDelayRelay(listenHost: string, target: { host: string; port: number }, delayMs: number): Promise<DelayRelay> {
  const sockets = new Set<net.Socket>();
  let accepted = 0;
  const track = (s: net.Socket): void => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  };
  const server = net.createServer((client) => {
    accepted++;
    track(client);
    const upstream = net.connect({ host: target.host, port: target.port });
    track(upstream);
    const both = (): void => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', both);
    upstream.on('error', both);
    client.on('close', () => setTimeout(() => upstream.destroy(), delayMs));
    upstream.on('close', () => setTimeout(() => client.destroy(), delayMs));
    delayedPipe(client, upstream, delayMs);
    delayedPipe(upstream, client, delayMs);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, listenHost, () => {
      const addr = server.address();
      if (addr === null || typeof addr !== 'object') {
        reject(new Error('relay: no address'));
        return;
      }
      resolve({
        host: listenHost,
        port: addr.port,
        get accepted() {
          return accepted;
        },
        close: async () => {
          const closed = new Promise<void>((r) => server.close(() => r()));
          const all = [...sockets].map((s) => new Promise<void>((r) => (s.destroyed && s.closed ? r() : (s.once('close', () => r()), s.destroy()))));
          await Promise.all([closed, ...all]);
        },
      });
    });
  });
}
