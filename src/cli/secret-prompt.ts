import { cancelledError } from '../lifecycle/errors.ts';

/**
 * Asks for a secret (password, passphrase) on the terminal without echoing it. Only on a
 * TTY: the caller checks `process.stdin.isTTY` first. Ctrl-C or the signal rejects with a
 * cancel; the human at the keyboard is the deadline, and the signal is the way out.
 */
export function promptSecret(question: string, signal: AbortSignal): Promise<string> {
  const stdin = process.stdin;
  const stderr = process.stderr;
  return new Promise<string>((resolve, reject) => {
    let typed = '';
    const finish = (err: Error | null): void => {
      stdin.off('data', onData);
      signal.removeEventListener('abort', onAbort);
      stdin.setRawMode(false);
      stdin.pause();
      stderr.write('\n');
      if (err) reject(err);
      else resolve(typed);
    };
    const onAbort = (): void => finish(cancelledError('queued', 'cancelled at the prompt'));
    const onData = (data: Buffer): void => {
      for (const ch of data.toString('utf8')) {
        if (ch === '\r' || ch === '\n') return finish(null);
        if (ch === '\u0003') return finish(cancelledError('queued', 'cancelled at the prompt'));
        if (ch === '\u007f' || ch === '\b') typed = typed.slice(0, -1);
        else typed += ch;
      }
    };
    if (signal.aborted) return onAbort();
    // Echo off before the question shows, or an answer typed (or pasted) at once is echoed.
    stdin.setRawMode(true);
    stderr.write(question);
    stdin.resume();
    stdin.on('data', onData);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
