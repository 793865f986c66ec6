/**
 * Host key verification against OpenSSH known_hosts files, under a policy (SSH-PITFALLS 3).
 * ssh2 accepts every key unless its `hostVerifier` says otherwise; this class gives that
 * verifier its answer. It never logs: warnings are collected, verdicts carry a one-line message.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { ServerHostKeyAlgorithm } from 'ssh2';
import {
  findHostKeysByName,
  fingerprintSha256,
  formatKnownHostsLine,
  keyBlobType,
  lineRef,
  lookupName,
  parseKnownHosts,
  type HostKeyMatches,
  type KnownHostEntry,
} from './known-hosts.ts';

/**
 * `strict`: only known keys. `accept-new`: record the key of a host with no known key, refuse
 * a changed one. `off`: accept everything (the caller warns).
 */
export type HostKeyPolicy = 'strict' | 'accept-new' | 'off';

export type HostKeyOutcome = 'match' | 'unknown' | 'mismatch' | 'revoked' | 'accepted-new' | 'unchecked';

/** The answer for one presented host key. Accept on `match`, `accepted-new` and `unchecked`. */
export interface HostKeyVerdict {
  readonly outcome: HostKeyOutcome;
  /** The type embedded in the presented key blob, e.g. `ssh-ed25519`; `unknown` if unreadable. */
  readonly keyType: string;
  /** `SHA256:...` of the presented key, as `ssh-keygen -lf` prints it. */
  readonly fingerprint: string;
  /** One line for error messages, naming host, key type, fingerprint, and for mismatch the file:line of the known key. */
  readonly message: string;
}

export interface HostKeyVerifierOptions {
  policy: HostKeyPolicy;
  /** Read-only files, e.g. ~/.ssh/known_hosts; missing files are fine. */
  readFiles: string[];
  /** leash's own known_hosts: read, and appended to under accept-new; missing is fine (created with parent dirs, mode 0600, on first write). */
  ownFile: string;
}

/** A known_hosts file exists but cannot be read (EACCES, EISDIR, ...). */
export class HostKeyFileError extends Error {
  override readonly name = 'HostKeyFileError';
  readonly path: string;
  /** The errno code, e.g. `EACCES`, when there is one. */
  readonly code: string | undefined;

  constructor(filePath: string, cause: unknown) {
    const code = errnoCode(cause);
    super(`cannot read known_hosts file ${filePath}: ${describeFsError(cause)}`, { cause });
    this.path = filePath;
    this.code = code;
  }
}

/** ssh2 1.17's server host key algorithm names, in its preference order (`ssh-dss` is supported, not offered by default). */
const HOST_KEY_ALGORITHMS: readonly ServerHostKeyAlgorithm[] = [
  'ssh-ed25519',
  'ecdsa-sha2-nistp256',
  'ecdsa-sha2-nistp384',
  'ecdsa-sha2-nistp521',
  'rsa-sha2-512',
  'rsa-sha2-256',
  'ssh-rsa',
  'ssh-dss',
];

/** One RSA key serves all three RSA signature algorithms (RFC 8332); the blob type stays `ssh-rsa`. */
const ALGORITHMS_OF_KEY_TYPE: Readonly<Record<string, readonly string[]>> = {
  'ssh-rsa': ['rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa'],
};

/** Distinct lookup names remembered; past this the memo is dropped and rebuilt on demand. */
const MAX_MEMO = 4096;
/** Known keys named in one mismatch message. */
const MAX_NAMED = 3;

export class HostKeyVerifier {
  readonly policy: HostKeyPolicy;
  /** `file:line: problem` for malformed lines and unsupported `@cert-authority` lines. */
  readonly warnings: readonly string[];
  /** Where accept-new records keys; null for a verifier built {@link fromLines}. */
  readonly ownFile: string | null;

  readonly #readEntries: readonly KnownHostEntry[];
  /** Entries of ownFile, plus keys accepted but not saved (file `(memory)`). */
  #ownEntries: KnownHostEntry[];
  #memo = new Map<string, HostKeyMatches>();
  /** Appends run one at a time; each decides again after the previous one. */
  #queue: Promise<void> = Promise.resolve();
  #memoryLines = 0;

  private constructor(policy: HostKeyPolicy, readEntries: KnownHostEntry[], ownEntries: KnownHostEntry[], ownFile: string | null, warnings: string[]) {
    this.policy = policy;
    this.#readEntries = readEntries;
    this.#ownEntries = ownEntries;
    this.ownFile = ownFile;
    this.warnings = Object.freeze([...warnings]);
  }

  /**
   * Reads every file (missing ones count as empty). Throws {@link HostKeyFileError} when a
   * file exists but cannot be read.
   */
  static async load(options: HostKeyVerifierOptions): Promise<HostKeyVerifier> {
    const [own, ...read] = await Promise.all([readKnownHosts(options.ownFile), ...options.readFiles.map(readKnownHosts)]);
    const warnings = [...read.flatMap((r) => r?.warnings ?? []), ...(own?.warnings ?? [])];
    return new HostKeyVerifier(
      options.policy,
      read.flatMap((r) => r?.entries ?? []),
      own?.entries ?? [],
      options.ownFile,
      warnings,
    );
  }

  /**
   * A verifier over in-memory known_hosts lines (`source` names them in warnings). Under
   * accept-new a new key is trusted for the life of this object only.
   */
  static fromLines(lines: readonly string[], policy: HostKeyPolicy, source = '(inline)'): HostKeyVerifier {
    const parsed = parseKnownHosts(lines.join('\n'), source);
    return new HostKeyVerifier(policy, parsed.entries, [], null, parsed.warnings);
  }

  /**
   * Key types known for this host, as ssh2 `serverHostKey` algorithm names in ssh2's
   * preference order (an `ssh-rsa` key gives rsa-sha2-512, rsa-sha2-256, ssh-rsa); empty when
   * unknown. Put first, they make the server present a key we can check, as OpenSSH does.
   */
  knownKeyTypes(host: string, port: number): string[] {
    const types = new Set<string>();
    for (const e of this.#matches(lookupName(host, port)).known) {
      for (const a of ALGORITHMS_OF_KEY_TYPE[e.keyType] ?? [e.keyType]) types.add(a);
    }
    return HOST_KEY_ALGORITHMS.filter((a) => types.has(a));
  }

  /**
   * The host key algorithms to offer this host, known types first, then ssh2's defaults —
   * so that a server with several keys presents one we can check rather than a "mismatch"
   * on a type never seen. Null when nothing is known (ssh2's defaults apply). ssh2's
   * `prepend` would not move an algorithm already in its default list, hence a full list.
   */
  preferredAlgorithms(host: string, port: number): ServerHostKeyAlgorithm[] | null {
    const known = this.knownKeyTypes(host, port);
    if (known.length === 0) return null;
    const rest = HOST_KEY_ALGORITHMS.filter((a) => a !== 'ssh-dss' && !known.includes(a));
    return [...(known as ServerHostKeyAlgorithm[]), ...rest];
  }

  /**
   * Checks the key the server presented (`blob`, SSH wire format, as ssh2 hands it to
   * hostVerifier). Never rejects.
   */
  async verify(host: string, port: number, blob: Buffer): Promise<HostKeyVerdict> {
    const name = lookupName(host, port);
    const keyType = keyBlobType(blob) ?? 'unknown';
    const fingerprint = fingerprintSha256(blob);
    const verdict = (outcome: HostKeyOutcome, message: string): HostKeyVerdict => ({ outcome, keyType, fingerprint, message });
    const presented = `${keyType} key ${fingerprint}`;

    if (this.policy === 'off') {
      return verdict('unchecked', `host key of ${name} not checked (host key policy off): ${presented}`);
    }
    const decided = this.#decide(name, blob, verdict, presented);
    if (decided) return decided;
    const unknown = (why: string): HostKeyVerdict => verdict('unknown', `no host key is known for ${name}; it presented ${presented}${why}`);
    if (this.policy === 'strict') {
      return unknown(`; host key policy strict refuses unknown hosts (add the key to ${this.ownFile ?? 'known_hosts'} or use accept-new)`);
    }

    const line = formatKnownHostsLine(host, port, blob);
    if (line === null) return unknown(`; it cannot be recorded: ${JSON.stringify(host)} is not a plain host name`);
    return this.#serialize(async () => {
      // A call queued before this one may have recorded this host meanwhile.
      const again = this.#decide(name, blob, verdict, presented);
      if (again) return again;
      const saved = await this.#append(line, name);
      if (saved.fresh) {
        const fresh = this.#decide(name, blob, verdict, presented);
        if (fresh) return fresh;
      }
      if (saved.error !== null) {
        return verdict('accepted-new', `accepted new host key for ${name}: ${presented}; trusted for this run only, not saved to ${this.ownFile}: ${saved.error}`);
      }
      if (this.ownFile === null) return verdict('accepted-new', `accepted new host key for ${name}: ${presented}; trusted for this run only`);
      return verdict('accepted-new', `accepted new host key for ${name}: ${presented}; added to ${this.ownFile}`);
    });
  }

  /** match, mismatch or revoked; null when the host has no known key. */
  #decide(
    name: string,
    blob: Buffer,
    verdict: (outcome: HostKeyOutcome, message: string) => HostKeyVerdict,
    presented: string,
  ): HostKeyVerdict | null {
    const { known, revoked } = this.#matches(name);
    const revokedBy = revoked.find((e) => e.key.equals(blob));
    if (revokedBy) {
      return verdict('revoked', `host key of ${name} is REVOKED (${lineRef(revokedBy)}): it presented ${presented}; refusing to connect`);
    }
    const same = known.find((e) => e.key.equals(blob));
    if (same) return verdict('match', `host key of ${name} matches ${lineRef(same)}: ${presented}`);
    const first = known[0];
    if (!first) return null;
    const listed = known
      .slice(0, MAX_NAMED)
      .map((e) => `${lineRef(e)} (${e.keyType} ${fingerprintSha256(e.key)})`)
      .join(', ');
    const more = known.length > MAX_NAMED ? ` and ${known.length - MAX_NAMED} more` : '';
    return verdict(
      'mismatch',
      `HOST KEY MISMATCH for ${name}: it presented ${presented} but the known key is at ${listed}${more}; refusing to connect (possible man-in-the-middle; if the host was reinstalled, remove the old key from ${first.file})`,
    );
  }

  #matches(name: string): HostKeyMatches {
    let m = this.#memo.get(name);
    if (!m) {
      const entries = [...this.#readEntries, ...this.#ownEntries];
      m = findHostKeysByName(entries, name);
      if (this.#memo.size >= MAX_MEMO) this.#memo.clear();
      this.#memo.set(name, m);
    }
    return m;
  }

  #serialize<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(fn);
    this.#queue = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  /**
   * Appends `line` for `name` to ownFile (re-reading it first: when another process recorded
   * the host meanwhile, `fresh` is true and nothing is written), or keeps it in memory when
   * there is no file or the write failed (`error`).
   */
  async #append(line: string, name: string): Promise<{ fresh: boolean; error: string | null }> {
    const file = this.ownFile;
    if (file === null) {
      this.#remember(line, '(memory)', ++this.#memoryLines);
      return { fresh: false, error: null };
    }
    try {
      await fs.mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
      const handle = await fs.open(file, 'a+', 0o600);
      try {
        const text = await handle.readFile('utf8');
        const parsed = parseKnownHosts(text, file);
        if (findHostKeysByName(parsed.entries, name).known.length > 0) {
          this.#ownEntries = [...parsed.entries, ...this.#ownEntries.filter((e) => e.file !== file)];
          this.#memo.clear();
          return { fresh: true, error: null };
        }
        const needsNewline = text.length > 0 && !text.endsWith('\n');
        const lineNo = countLines(text) + 1;
        await handle.write(`${needsNewline ? '\n' : ''}${line}\n`);
        await handle.datasync();
        this.#remember(line, file, lineNo);
      } finally {
        await handle.close();
      }
      return { fresh: false, error: null };
    } catch (err) {
      this.#remember(line, '(memory)', ++this.#memoryLines);
      return { fresh: false, error: describeFsError(err) };
    }
  }

  /** Adds a line written by formatKnownHostsLine to the in-memory index. */
  #remember(line: string, file: string, lineNo: number): void {
    const entry = parseKnownHosts(line, file).entries[0];
    if (!entry) return;
    this.#ownEntries.push({ ...entry, line: lineNo });
    this.#memo.clear();
  }
}

/** A file's entries and warnings; null when it does not exist. */
async function readKnownHosts(file: string): Promise<ReturnType<typeof parseKnownHosts> | null> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return null;
    throw new HostKeyFileError(file, err);
  }
  return parseKnownHosts(text, file);
}

function countLines(text: string): number {
  if (text.length === 0) return 0;
  let n = 0;
  for (let i = text.indexOf('\n'); i >= 0; i = text.indexOf('\n', i + 1)) n++;
  return text.endsWith('\n') ? n : n + 1;
}

function errnoCode(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

const FS_REASONS: Readonly<Record<string, string>> = {
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  EISDIR: 'is a directory',
  ENOTDIR: 'a parent path is not a directory',
  ELOOP: 'too many symbolic links',
  EROFS: 'read-only file system',
  ENOSPC: 'no space left on device',
  EIO: 'I/O error',
};

/** `EACCES (permission denied)`, one line. */
function describeFsError(err: unknown): string {
  const code = errnoCode(err);
  const reason = code !== undefined ? FS_REASONS[code] : undefined;
  if (code !== undefined && reason !== undefined) return `${code} (${reason})`;
  const message = err instanceof Error ? err.message : String(err);
  return message.replace(/\s+/g, ' ').trim();
}
