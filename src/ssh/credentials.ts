import { readFile } from 'node:fs/promises';
import ssh2 from 'ssh2';
import type { ParsedKey } from 'ssh2';

/** A private key read and parsed once (ssh2 would otherwise parse it on every connect). */
export interface PrivateKey {
  /** Where it came from, for messages (never the key itself). */
  readonly path: string;
  readonly parsed: ParsedKey;
}

/**
 * How leash authenticates, tried in this order: the given private keys (the intended key
 * first, so an agent full of keys does not trip sshd's MaxAuthTries, SSH-PITFALLS 4), the
 * ssh-agent, then the password. Secrets live only here and are never printed.
 */
export interface Credentials {
  readonly keys: readonly PrivateKey[];
  /** Path of the ssh-agent socket (`SSH_AUTH_SOCK`), or null. */
  readonly agentSocket: string | null;
  readonly password: string | null;
}

/** Why a key file could not be used. */
export type KeyFileProblem = 'missing' | 'unreadable' | 'passphrase-required' | 'bad-passphrase' | 'invalid';

/** A key file that cannot be used; a configuration error, reported before any connection. */
export class KeyFileError extends Error {
  override readonly name = 'KeyFileError';
  readonly path: string;
  readonly problem: KeyFileProblem;

  constructor(path: string, problem: KeyFileProblem, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.path = path;
    this.problem = problem;
  }
}

/**
 * Reads and parses a private key file (OpenSSH, PEM or PPK; ed25519, ecdsa, rsa). Throws
 * {@link KeyFileError} with problem `passphrase-required` when it is encrypted and no
 * passphrase was given, so that the caller can ask for one.
 */
export async function readPrivateKey(path: string, passphrase?: string): Promise<PrivateKey> {
  let data: Buffer;
  try {
    data = await readFile(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new KeyFileError(path, 'missing', `key file ${path}: no such file`, { cause: err });
    throw new KeyFileError(path, 'unreadable', `key file ${path}: cannot read (${code ?? String(err)})`, { cause: err });
  }
  const parsed = ssh2.utils.parseKey(data, passphrase) as ParsedKey | ParsedKey[] | Error;
  const key: ParsedKey | Error | undefined = Array.isArray(parsed) ? parsed[0] : parsed;
  if (key instanceof Error || key === undefined) {
    const reason = key instanceof Error ? key.message : 'no key found';
    if (/no passphrase given/i.test(reason)) {
      throw new KeyFileError(path, 'passphrase-required', `key file ${path} is encrypted and no passphrase was given`);
    }
    if (/passphrase/i.test(reason) || passphrase !== undefined) {
      throw new KeyFileError(path, 'bad-passphrase', `key file ${path}: cannot decrypt (wrong passphrase?)`);
    }
    throw new KeyFileError(path, 'invalid', `key file ${path}: not a private key ssh2 can use (${reason})`);
  }
  if (!key.isPrivateKey()) {
    throw new KeyFileError(path, 'invalid', `key file ${path} holds a public key, not a private key`);
  }
  return { path, parsed: key };
}

/** Names of the methods credentials offer, for "auth-failed" messages: `publickey (PATH)`, `agent`, `password`. */
export function describeMethods(credentials: Credentials): string[] {
  const methods = credentials.keys.map((k) => `publickey (${k.path})`);
  if (credentials.agentSocket) methods.push('agent');
  if (credentials.password !== null) methods.push('password');
  return methods;
}
