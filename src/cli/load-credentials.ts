import os from 'node:os';
import path from 'node:path';
import { KeyFileError, readPrivateKey, type Credentials, type PrivateKey } from '../ssh/credentials.ts';
import { promptSecret } from './secret-prompt.ts';
import { UsageError } from './usage-error.ts';

/** What to authenticate with, from `leash run` flags. */
export interface CredentialFlags {
  readonly identities: readonly string[];
  readonly passphraseEnv: string;
  readonly useAgent: boolean;
  readonly passwordEnv: string;
  readonly askPassword: boolean;
}

/** Where secrets may come from: the environment, and a terminal when there is one. */
export interface SecretSources {
  readonly env: NodeJS.ProcessEnv;
  readonly interactive: boolean;
  readonly signal: AbortSignal;
  /** Prints a one-line warning. */
  readonly warn: (line: string) => void;
}

const DEFAULT_KEYS = ['id_ed25519', 'id_ecdsa', 'id_rsa'];
const DEFAULT_PASSWORD_ENV = 'LEASH_PASSWORD';

/**
 * Gathers credentials once, before any connection: keys given with `-i` (each must load),
 * else the default keys OpenSSH would try (skipped when absent or locked), the agent, and a
 * password from the environment or a prompt — never from the command line, where any user
 * of the machine could read it in the process list.
 */
export async function loadCredentials(flags: CredentialFlags, sources: SecretSources): Promise<Credentials> {
  const keys: PrivateKey[] = [];
  const explicit = flags.identities.length > 0;
  const paths = explicit ? flags.identities : DEFAULT_KEYS.map((name) => path.join(sources.env.HOME ?? os.homedir(), '.ssh', name));
  for (const keyPath of paths) {
    const key = await loadKey(keyPath, explicit, flags, sources);
    if (key) keys.push(key);
  }

  const agentSocket = flags.useAgent ? (sources.env.SSH_AUTH_SOCK ?? null) : null;

  let password: string | null = sources.env[flags.passwordEnv] ?? null;
  if (password === null && flags.passwordEnv !== DEFAULT_PASSWORD_ENV) {
    throw new UsageError(`--password-env ${flags.passwordEnv}: that environment variable is not set`);
  }
  if (password === null && flags.askPassword) {
    if (!sources.interactive) throw new UsageError('--ask-password needs a terminal; use --password-env NAME instead');
    password = await promptSecret('Password: ', sources.signal);
  }
  return { keys, agentSocket, password };
}

async function loadKey(keyPath: string, explicit: boolean, flags: CredentialFlags, sources: SecretSources): Promise<PrivateKey | null> {
  const fromEnv = sources.env[flags.passphraseEnv];
  try {
    return await readPrivateKey(keyPath, fromEnv);
  } catch (err) {
    if (!(err instanceof KeyFileError)) throw err;
    if (err.problem === 'passphrase-required' && sources.interactive) {
      const passphrase = await promptSecret(`Passphrase for ${keyPath}: `, sources.signal);
      try {
        return await readPrivateKey(keyPath, passphrase);
      } catch (retry) {
        if (!(retry instanceof KeyFileError)) throw retry;
        if (explicit) throw new UsageError(retry.message);
        sources.warn(`warning: skipping ${retry.message}`);
        return null;
      }
    }
    if (explicit) {
      const hint = err.problem === 'passphrase-required' ? ` (set ${flags.passphraseEnv} or run on a terminal)` : '';
      throw new UsageError(`${err.message}${hint}`);
    }
    // Default keys are a convenience, as in OpenSSH: absent ones are skipped quietly.
    if (err.problem !== 'missing') sources.warn(`warning: skipping ${err.message}`);
    return null;
  }
}
