import type { Credentials } from '../ssh/credentials.ts';
import type { HostKeyVerifier } from '../ssh/host-key-verifier.ts';
import { KeyFileError, readPrivateKey } from '../ssh/credentials.ts';

/** A named credential as configured: which user, and where its secrets come from. */
export interface IdentitySpec {
  /** Remote user; a task may still name its own. */
  readonly user?: string;
  /** Private key file. */
  readonly keyPath?: string;
  /** Environment variable holding the key's passphrase. */
  readonly passphraseEnv?: string;
  /** Use ssh-agent (`SSH_AUTH_SOCK`). */
  readonly agent?: boolean;
  /** Environment variable holding the password. */
  readonly passwordEnv?: string;
}

/** An identity ready to use: the secrets are loaded once, at start-up, and stay in memory. */
export interface Identity {
  readonly name: string;
  readonly user: string | null;
  readonly credentials: Credentials;
  /** Host keys trusted for this identity's targets instead of the service's (the demo target's own key). */
  readonly hostKeys?: HostKeyVerifier;
}

/** An identity that cannot be loaded; names the identity and the problem, never a secret. */
export class IdentityError extends Error {
  override readonly name = 'IdentityError';
  readonly identity: string;

  constructor(identity: string, message: string, options?: { cause?: unknown }) {
    super(`identity ${JSON.stringify(identity)}: ${message}`, options);
    this.identity = identity;
  }
}

/**
 * The named credentials the service runs tasks with (issue "leash serve": identities).
 * Loading reads every key file and every secret from the environment at start-up, so a
 * broken identity stops the service from starting rather than failing tasks later.
 */
export class Identities {
  readonly #byName = new Map<string, Identity>();

  /** Loads every identity; the first one that cannot be loaded rejects with {@link IdentityError}. */
  static async load(specs: Readonly<Record<string, IdentitySpec>>, env: NodeJS.ProcessEnv): Promise<Identities> {
    const identities = new Identities();
    for (const [name, spec] of Object.entries(specs)) identities.add(await loadIdentity(name, spec, env));
    return identities;
  }

  /** Adds (or replaces) an identity, e.g. the built-in `demo`. */
  add(identity: Identity): void {
    this.#byName.set(identity.name, identity);
  }

  get(name: string): Identity | undefined {
    return this.#byName.get(name);
  }

  names(): string[] {
    return [...this.#byName.keys()];
  }
}

async function loadIdentity(name: string, spec: IdentitySpec, env: NodeJS.ProcessEnv): Promise<Identity> {
  const secret = (variable: string | undefined, what: string): string | null => {
    if (variable === undefined) return null;
    const value = env[variable];
    if (value === undefined) throw new IdentityError(name, `environment variable ${variable} (${what}) is not set`);
    return value;
  };
  const keys = [];
  if (spec.keyPath !== undefined) {
    try {
      keys.push(await readPrivateKey(spec.keyPath, secret(spec.passphraseEnv, 'passphrase') ?? undefined));
    } catch (err) {
      if (err instanceof KeyFileError) throw new IdentityError(name, err.message, { cause: err });
      throw err;
    }
  }
  let agentSocket: string | null = null;
  if (spec.agent === true) {
    agentSocket = env.SSH_AUTH_SOCK ?? null;
    if (agentSocket === null) throw new IdentityError(name, 'agent: true but SSH_AUTH_SOCK is not set');
  }
  const password = secret(spec.passwordEnv, 'password');
  if (keys.length === 0 && agentSocket === null && password === null) {
    throw new IdentityError(name, 'no credentials: give keyPath, agent: true or passwordEnv');
  }
  return { name, user: spec.user ?? null, credentials: { keys, agentSocket, password } };
}
