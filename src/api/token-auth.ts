import { createHash, timingSafeEqual } from 'node:crypto';
import { ApiError } from './api-errors.ts';

/** What a token may do. `run` includes `read`; `admin` includes both, and /debug. */
export type Scope = 'read' | 'run' | 'admin';

/** An API token as configured (its secret resolved at start-up). */
export interface ApiToken {
  readonly name: string;
  readonly secret: string;
  readonly scopes: readonly Scope[];
  /** Identities it may run tasks with; absent: any. */
  readonly identities?: readonly string[];
  /** Host name patterns (`*`, `?`) it may run tasks on; absent: any. */
  readonly hosts?: readonly string[];
}

const IMPLIED: Record<Scope, readonly Scope[]> = { read: ['read'], run: ['run', 'read'], admin: ['admin', 'run', 'read'] };

/** Who is calling, and what they may do. */
export class Caller {
  /** The token's name (the audit log's "who"); null when the API runs without tokens. */
  readonly name: string | null;
  readonly #scopes: ReadonlySet<Scope>;
  readonly #identities: readonly string[] | null;
  readonly #hosts: readonly RegExp[] | null;

  constructor(token: ApiToken | null) {
    this.name = token?.name ?? null;
    this.#scopes = new Set((token?.scopes ?? ['admin']).flatMap((s) => IMPLIED[s]));
    this.#identities = token?.identities ?? null;
    this.#hosts = token?.hosts ? token.hosts.map(globToRegExp) : null;
  }

  /** Throws 403 unless the caller has `scope`. */
  require(scope: Scope): void {
    if (!this.#scopes.has(scope)) throw new ApiError('forbidden', `token ${JSON.stringify(this.name)} lacks the "${scope}" scope`);
  }

  /** Throws 403 unless the caller may run tasks as `identity` on `host`. */
  mayRun(identity: string | null, host: string): void {
    this.require('run');
    if (this.#identities && (identity === null || !this.#identities.includes(identity))) {
      throw new ApiError('forbidden', `token ${JSON.stringify(this.name)} may not use identity ${JSON.stringify(identity)}`, { field: 'identity' });
    }
    if (this.#hosts && !this.#hosts.some((p) => p.test(host))) {
      throw new ApiError('forbidden', `token ${JSON.stringify(this.name)} may not run tasks on ${JSON.stringify(host)}`, { field: 'host' });
    }
  }
}

/**
 * Bearer-token authentication (`Authorization: Bearer TOKEN`). Secrets are compared as
 * SHA-256 digests in constant time and never logged or echoed. With no tokens configured
 * every caller is anonymous with every scope — allowed only on loopback (checked at
 * start-up).
 */
export class TokenAuth {
  readonly #tokens: ReadonlyArray<{ token: ApiToken; digest: Buffer }>;

  constructor(tokens: readonly ApiToken[]) {
    this.#tokens = tokens.map((token) => ({ token, digest: sha256(token.secret) }));
  }

  get enabled(): boolean {
    return this.#tokens.length > 0;
  }

  /** The caller for an Authorization header; 401 when a token is needed and missing or wrong. */
  authenticate(authorization: string | undefined): Caller {
    if (!this.enabled) return new Caller(null);
    const m = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? '');
    if (!m) throw new ApiError('unauthorized', 'missing bearer token: send "Authorization: Bearer TOKEN"');
    const presented = sha256(m[1]!);
    let found: ApiToken | null = null;
    // Compare against every token, so the time taken says nothing about which matched.
    for (const { token, digest } of this.#tokens) if (timingSafeEqual(presented, digest)) found = token;
    if (!found) throw new ApiError('unauthorized', 'unknown bearer token');
    return new Caller(found);
  }
}

function sha256(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}

/** `web*.example.com` → a case-insensitive whole-name match. */
function globToRegExp(pattern: string): RegExp {
  const body = pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replaceAll('*', '.*').replaceAll('?', '.');
  return new RegExp(`^${body}$`, 'i');
}
