import ssh2 from 'ssh2';
import type { ParsedKey } from 'ssh2';

/** Key types leash generates. */
export type EphemeralKeyType = 'ed25519' | 'ecdsa' | 'rsa';

/** A freshly generated key pair, in every form callers need. */
export interface EphemeralKeyPair {
  /** The private key as OpenSSH text (for ssh2's parseKey or a key file). Never log it. */
  readonly privateKey: string;
  readonly publicKey: ParsedKey;
  /** The public key in SSH wire format. */
  readonly publicBlob: Buffer;
  /** `ssh-ed25519 AAAA...`, as in authorized_keys and known_hosts. */
  readonly publicLine: string;
}

/**
 * Generates a throwaway key pair (demo target, tests). ssh2 1.17's keygen strips a leading
 * zero byte from an ed25519 public key, so about one pair in 256 does not parse
 * (mscdex/ssh2#1390, #1513): draw again until both halves parse and agree.
 */
export function generateKeyPair(type: EphemeralKeyType = 'ed25519'): EphemeralKeyPair {
  for (let attempt = 0; attempt < 16; attempt++) {
    const pair =
      type === 'rsa'
        ? ssh2.utils.generateKeyPairSync('rsa', { bits: 2048 })
        : type === 'ecdsa'
          ? ssh2.utils.generateKeyPairSync('ecdsa', { bits: 256 })
          : ssh2.utils.generateKeyPairSync('ed25519');
    const publicKey = parseSingleKey(pair.public);
    const privateKey = parseSingleKey(pair.private);
    if (publicKey && privateKey?.isPrivateKey() && privateKey.getPublicSSH().equals(publicKey.getPublicSSH())) {
      const publicBlob = publicKey.getPublicSSH();
      return { privateKey: pair.private, publicKey, publicBlob, publicLine: `${publicKey.type} ${publicBlob.toString('base64')}` };
    }
  }
  throw new Error(`cannot generate a usable ${type} key pair`);
}

/** The one key in `data`, or undefined when it does not parse. */
export function parseSingleKey(data: string | Buffer): ParsedKey | undefined {
  const parsed = ssh2.utils.parseKey(data) as ParsedKey | ParsedKey[] | Error;
  const key = Array.isArray(parsed) ? parsed[0] : parsed;
  return key instanceof Error ? undefined : key;
}
