/**
 * OpenSSH known_hosts: parser and host matcher (sshd(8), "SSH_KNOWN_HOSTS FILE FORMAT").
 * Pure: no I/O, no logging. A malformed line is skipped and reported as a one-line warning
 * naming `file:line` and the problem; nothing here throws on bad input.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

/** `@revoked` or `@cert-authority`; plain lines have none. */
export type KnownHostMarker = 'revoked' | 'cert-authority';

/** One element of a line's host field. */
export type HostPattern =
  /** A host name or `[host]:port`, lower-cased, with `*` and `?` wildcards; `!` negates. */
  | { readonly kind: 'pattern'; readonly pattern: string; readonly negated: boolean }
  /** `|1|salt|hmac`: hmac = HMAC-SHA1(key = salt, data = lookup name). */
  | { readonly kind: 'hashed'; readonly salt: Buffer; readonly hash: Buffer };

/** One usable known_hosts line. */
export interface KnownHostEntry {
  readonly file: string;
  /** 1-based. */
  readonly line: number;
  readonly marker: KnownHostMarker | null;
  readonly patterns: readonly HostPattern[];
  /** The key type as written on the line, equal to the type embedded in `key`. */
  readonly keyType: string;
  /** The public key in SSH wire format. */
  readonly key: Buffer;
  readonly comment: string;
}

/** The result of parsing one file. */
export interface ParsedKnownHosts {
  /** Every well-formed line, `@cert-authority` lines included (the matcher ignores them). */
  readonly entries: KnownHostEntry[];
  /** `file:line: problem`, one per skipped or unsupported line. */
  readonly warnings: string[];
}

/** The keys of a known_hosts set that apply to one lookup name. */
export interface HostKeyMatches {
  /** Plain lines (no marker) whose patterns match. */
  readonly known: KnownHostEntry[];
  /** `@revoked` lines whose patterns match. */
  readonly revoked: KnownHostEntry[];
}

const HASH_MAGIC = '|1|';
const SHA1_BYTES = 20;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/** `file:line`, as warnings and messages name a line. */
export function lineRef(entry: Pick<KnownHostEntry, 'file' | 'line'>): string {
  return `${entry.file}:${entry.line}`;
}

/**
 * The name OpenSSH looks up (and hashes) for a host: `host`, or `[host]:port` when port is
 * not 22; lower-cased. A host already in brackets (`[::1]`) is unwrapped first.
 */
export function lookupName(host: string, port: number): string {
  let h = host.trim().toLowerCase();
  if (h.startsWith('[') && h.endsWith(']')) h = h.slice(1, -1);
  return port === 22 ? h : `[${h}]:${port}`;
}

/** OpenSSH's fingerprint: `SHA256:` and the unpadded base64 of sha256(blob). */
export function fingerprintSha256(blob: Buffer): string {
  return `SHA256:${createHash('sha256').update(blob).digest('base64').replace(/=+$/, '')}`;
}

/** The key type embedded at the start of an SSH wire-format key blob, or null when unreadable. */
export function keyBlobType(blob: Buffer): string | null {
  const fields = readSshStrings(blob);
  const first = fields?.[0];
  if (!first || first.length === 0) return null;
  const type = first.toString('latin1');
  return /^[\x21-\x7e]+$/.test(type) ? type : null;
}

/** A lookup name hashed as `ssh-keygen -H` writes it: `|1|base64salt|base64hmac`. */
export function hashHostName(name: string, salt: Buffer = randomBytes(SHA1_BYTES)): string {
  const hash = createHmac('sha1', salt).update(name).digest();
  return `${HASH_MAGIC}${salt.toString('base64')}|${hash.toString('base64')}`;
}

/**
 * A plain known_hosts line for one host key: `host keytype base64`, or
 * `[host]:port keytype base64` when port is not 22. Null when the host name cannot be written
 * as a plain, exact pattern (whitespace, commas, wildcards, markers) or the blob is unreadable.
 */
export function formatKnownHostsLine(host: string, port: number, blob: Buffer): string | null {
  const name = lookupName(host, port);
  const bare = port === 22 ? name : name.slice(1, name.lastIndexOf(']'));
  if (bare.length === 0 || !/^[a-z0-9_.:%-]+$/.test(bare)) return null;
  const type = keyBlobType(blob);
  if (type === null) return null;
  return `${name} ${type} ${blob.toString('base64')}`;
}

/**
 * Glob match with OpenSSH's wildcards: `*` any run of characters, `?` exactly one; every
 * other character (including `[`, `]`) is literal. Linear-time in practice, no regex.
 */
export function wildcardMatch(pattern: string, text: string): boolean {
  let p = 0;
  let t = 0;
  let star = -1;
  let resume = 0;
  while (t < text.length) {
    const pc = pattern[p];
    if (pc === '*') {
      star = p++;
      resume = t;
    } else if (pc !== undefined && (pc === '?' || pc === text[t])) {
      p++;
      t++;
    } else if (star >= 0) {
      p = star + 1;
      t = ++resume;
    } else {
      return false;
    }
  }
  while (pattern[p] === '*') p++;
  return p === pattern.length;
}

/**
 * Whether a host field matches a lookup name (see {@link lookupName}): some positive pattern
 * matches and no negated one does (OpenSSH's match_hostname). Case-insensitive.
 */
export function patternsMatch(patterns: readonly HostPattern[], name: string): boolean {
  const lower = name.toLowerCase();
  let positive = false;
  for (const p of patterns) {
    if (p.kind === 'hashed') {
      if (!positive) {
        const digest = createHmac('sha1', p.salt).update(lower).digest();
        positive = digest.length === p.hash.length && timingSafeEqual(digest, p.hash);
      }
    } else if (wildcardMatch(p.pattern, lower)) {
      if (p.negated) return false;
      positive = true;
    }
  }
  return positive;
}

/** The plain and revoked keys that apply to `host:port`; `@cert-authority` lines never match. */
export function findHostKeys(entries: readonly KnownHostEntry[], host: string, port: number): HostKeyMatches {
  return findHostKeysByName(entries, lookupName(host, port));
}

/** {@link findHostKeys} for a name already made by {@link lookupName}. */
export function findHostKeysByName(entries: readonly KnownHostEntry[], name: string): HostKeyMatches {
  const known: KnownHostEntry[] = [];
  const revoked: KnownHostEntry[] = [];
  for (const e of entries) {
    if (e.marker === 'cert-authority') continue;
    if (!patternsMatch(e.patterns, name)) continue;
    (e.marker === 'revoked' ? revoked : known).push(e);
  }
  return { known, revoked };
}

/** Parses a whole known_hosts text; `file` names it in warnings. */
export function parseKnownHosts(text: string, file: string): ParsedKnownHosts {
  const entries: KnownHostEntry[] = [];
  const warnings: string[] = [];
  const lines = text.replace(/^\uFEFF/, '').split('\n');
  lines.forEach((raw, i) => {
    const result = parseKnownHostsLine(raw, file, i + 1);
    if (result === null) return;
    if ('warning' in result) {
      warnings.push(result.warning);
      return;
    }
    entries.push(result.entry);
    if (result.entry.marker === 'cert-authority') {
      warnings.push(`${file}:${i + 1}: @cert-authority lines are not supported (host certificates are not checked); line ignored`);
    }
  });
  return { entries, warnings };
}

/**
 * Parses one line. Null for a blank or comment line; `{ warning }` for a malformed one (the
 * warning names `file:line` and the problem); otherwise `{ entry }`.
 */
export function parseKnownHostsLine(raw: string, file: string, line: number): { entry: KnownHostEntry } | { warning: string } | null {
  const text = raw.replace(/\r$/, '').trim();
  if (text === '' || text.startsWith('#')) return null;
  const bad = (problem: string): { warning: string } => ({ warning: `${file}:${line}: ${problem}; line skipped` });

  const fields = text.split(/[ \t]+/);
  let marker: KnownHostMarker | null = null;
  if (fields[0]?.startsWith('@')) {
    const m = fields.shift() ?? '';
    if (m === '@revoked') marker = 'revoked';
    else if (m === '@cert-authority') marker = 'cert-authority';
    else return bad(`unknown marker ${printable(m)}`);
  }
  const [hostField, keyType, keyBase64] = fields;
  const comment = fields.slice(3).join(' ');
  if (hostField === undefined) return bad('marker without host patterns');
  if (keyType === undefined) return bad('host patterns without a key');
  if (/^\d+$/.test(keyType)) return bad('SSH protocol 1 keys are not supported');
  if (keyBase64 === undefined) return bad(`key type ${printable(keyType)} without key data`);

  const patterns = parseHostField(hostField);
  if (typeof patterns === 'string') return bad(patterns);

  if (keyBase64.length % 4 !== 0 || !BASE64.test(keyBase64)) return bad('key data is not valid base64');
  const key = Buffer.from(keyBase64, 'base64');
  const problem = checkKeyBlob(key, keyType);
  if (problem !== null) return bad(problem);

  return { entry: { file, line, marker, patterns, keyType, key, comment } };
}

/** The host field's patterns, or a problem. */
function parseHostField(field: string): HostPattern[] | string {
  const patterns: HostPattern[] = [];
  for (const item of field.split(',')) {
    if (item === '') continue;
    if (item.startsWith('|')) {
      const hashed = parseHashed(item);
      if (typeof hashed === 'string') return hashed;
      patterns.push(hashed);
      continue;
    }
    const negated = item.startsWith('!');
    const pattern = (negated ? item.slice(1) : item).toLowerCase();
    if (pattern === '') return 'empty negated host pattern "!"';
    if (pattern.startsWith('|')) return 'a hashed host name cannot be negated';
    patterns.push({ kind: 'pattern', pattern, negated });
  }
  if (patterns.length === 0) return 'no host patterns';
  return patterns;
}

function parseHashed(item: string): HostPattern | string {
  if (!item.startsWith(HASH_MAGIC)) return 'hashed host name with an unknown hash type (expected |1|)';
  const parts = item.slice(HASH_MAGIC.length).split('|');
  const [saltB64, hashB64] = parts;
  if (parts.length !== 2 || saltB64 === undefined || hashB64 === undefined) return 'hashed host name is not |1|salt|hash';
  for (const b of [saltB64, hashB64]) {
    if (b.length === 0 || b.length % 4 !== 0 || !BASE64.test(b)) return 'hashed host name has invalid base64';
  }
  const salt = Buffer.from(saltB64, 'base64');
  const hash = Buffer.from(hashB64, 'base64');
  if (salt.length !== SHA1_BYTES || hash.length !== SHA1_BYTES) return `hashed host name: salt and hash must be ${SHA1_BYTES} bytes`;
  return { kind: 'hashed', salt, hash };
}

/** Fields after the type, per key type, for the types whose layout we know. */
const KEY_FIELDS: Readonly<Record<string, number>> = {
  'ssh-ed25519': 1,
  'ssh-rsa': 2,
  'ssh-dss': 4,
  'ecdsa-sha2-nistp256': 2,
  'ecdsa-sha2-nistp384': 2,
  'ecdsa-sha2-nistp521': 2,
  'sk-ssh-ed25519@openssh.com': 2,
  'sk-ecdsa-sha2-nistp256@openssh.com': 3,
};

/** Null when `blob` is a well-formed key of `lineType`, else the problem. */
function checkKeyBlob(blob: Buffer, lineType: string): string | null {
  const fields = readSshStrings(blob);
  if (fields === null || fields.length === 0) return 'key data is not an SSH public key blob';
  const embedded = keyBlobType(blob);
  if (embedded === null) return 'key data is not an SSH public key blob';
  if (embedded !== lineType) return `key type ${printable(lineType)} does not match the key data's type ${printable(embedded)}`;
  const expected = KEY_FIELDS[embedded];
  if (expected !== undefined && fields.length - 1 !== expected) return `key data is not a well-formed ${embedded} key`;
  if (embedded === 'ssh-ed25519' && fields[1]?.length !== 32) return 'key data is not a well-formed ssh-ed25519 key';
  if (embedded.startsWith('ecdsa-sha2-') && fields[1]?.toString('latin1') !== embedded.slice('ecdsa-sha2-'.length)) {
    return `key data is not a well-formed ${embedded} key (curve name differs)`;
  }
  return null;
}

/** Splits a blob into SSH `string`s (uint32 length + bytes); null unless it is exactly that. */
function readSshStrings(blob: Buffer): Buffer[] | null {
  const out: Buffer[] = [];
  let off = 0;
  while (off < blob.length) {
    if (off + 4 > blob.length) return null;
    const len = blob.readUInt32BE(off);
    off += 4;
    if (len > blob.length - off) return null;
    out.push(blob.subarray(off, off + len));
    off += len;
  }
  return out;
}

/** A token quoted for a warning, cut short and stripped of control characters. */
function printable(token: string): string {
  const clean = token.replace(/[^\x20-\x7e]/g, '?');
  return JSON.stringify(clean.length > 40 ? `${clean.slice(0, 40)}...` : clean);
}
