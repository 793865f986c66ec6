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
 * Credentials for every host of a run, gathered before any connection: keys given with
 * `-i` (each must load), then the keys of the host's ssh config IdentityFiles (absent ones
 * skipped, as ssh does; any other problem is a usage error), and only when neither names a
 * key the defaults OpenSSH would try (skipped when absent or locked); then the agent, and a
 * password from the environment or a prompt — never from the command line, where any user
 * of the machine could read it in the process list.
 *
 * Hosts with the same key list get the same {@link Credentials} object: the connection pool
 * shares connections only between tasks whose credentials are the same object.
 */
export class CredentialSets {
  readonly #flags: CredentialFlags;
  readonly #sources: SecretSources;
  readonly #explicit: readonly PrivateKey[];
  readonly #agentSocket: string | null;
  readonly #password: string | null;
  #defaults: readonly PrivateKey[] | null = null;
  /** Config keys by path; null: absent. */
  readonly #configKeys = new Map<string, PrivateKey | null>();
  /** By the paths of their keys. */
  readonly #sets = new Map<string, Credentials>();

  private constructor(flags: CredentialFlags, sources: SecretSources, explicit: PrivateKey[], agentSocket: string | null, password: string | null) {
    this.#flags = flags;
    this.#sources = sources;
    this.#explicit = explicit;
    this.#agentSocket = agentSocket;
    this.#password = password;
  }

  /** Loads the `-i` keys and the password (asking for it when told to); the rest on demand. */
  static async load(flags: CredentialFlags, sources: SecretSources): Promise<CredentialSets> {
    const explicit: PrivateKey[] = [];
    for (const keyPath of flags.identities) {
      const key = await loadKey(keyPath, 'explicit', flags, sources);
      if (key) explicit.push(key);
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
    return new CredentialSets(flags, sources, explicit, agentSocket, password);
  }

  /** The credentials for a host whose ssh config lists `identityFiles` (call one at a time: it may prompt). */
  async forHost(identityFiles: readonly string[]): Promise<Credentials> {
    const keys = [...this.#explicit];
    for (const keyPath of identityFiles) {
      if (!this.#configKeys.has(keyPath)) this.#configKeys.set(keyPath, await loadKey(keyPath, 'config', this.#flags, this.#sources));
      const key = this.#configKeys.get(keyPath);
      if (key && !keys.some((k) => k.path === key.path)) keys.push(key);
    }
    if (this.#explicit.length === 0 && identityFiles.length === 0) {
      if (this.#defaults === null) {
        const home = this.#sources.env.HOME ?? os.homedir();
        const defaults: PrivateKey[] = [];
        for (const name of DEFAULT_KEYS) {
          const key = await loadKey(path.join(home, '.ssh', name), 'default', this.#flags, this.#sources);
          if (key) defaults.push(key);
        }
        this.#defaults = defaults;
      }
      keys.push(...this.#defaults);
    }
    const id = keys.map((k) => k.path).join('\u0000');
    let set = this.#sets.get(id);
    if (set === undefined) {
      set = { keys, agentSocket: this.#agentSocket, password: this.#password };
      this.#sets.set(id, set);
    }
    return set;
  }
}

/** `explicit` (-i): every problem is an error; `config` (IdentityFile): absent is skipped quietly; `default`: skipped with a warning unless absent. */
type KeySource = 'explicit' | 'config' | 'default';

async function loadKey(keyPath: string, source: KeySource, flags: CredentialFlags, sources: SecretSources): Promise<PrivateKey | null> {
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
        if (source !== 'default') throw new UsageError(`${retry.message}${origin(source)}`);
        sources.warn(`warning: skipping ${retry.message}`);
        return null;
      }
    }
    // A config's IdentityFile that does not exist is skipped, as ssh does.
    if (source === 'config' && err.problem === 'missing') return null;
    if (source !== 'default') {
      const hint = err.problem === 'passphrase-required' ? ` (set ${flags.passphraseEnv} or run on a terminal)` : '';
      throw new UsageError(`${err.message}${origin(source)}${hint}`);
    }
    // Default keys are a convenience, as in OpenSSH: absent ones are skipped quietly.
    if (err.problem !== 'missing') sources.warn(`warning: skipping ${err.message}`);
    return null;
  }
}

function origin(source: KeySource): string {
  return source === 'config' ? ' (IdentityFile in the ssh config)' : '';
}
