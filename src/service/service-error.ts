/** Why the service refused a request; the API maps each to its HTTP status. */
export type ServiceErrorCode =
  /** No such task or batch. */
  | 'not-found'
  /** The request names something that does not exist or cannot be used (e.g. an identity). */
  | 'invalid'
  /** The token may not do this (scope, identity or host not allowed). */
  | 'forbidden'
  /** The queue is full; try again after `retryAfterSeconds`. */
  | 'queue-full'
  /** The service is shutting down and takes no new work. */
  | 'draining'
  /** The store did not answer. */
  | 'unavailable';

/** A refused request: a stable code, one line naming the problem, and the field at fault. */
export class ServiceError extends Error {
  override readonly name = 'ServiceError';
  readonly code: ServiceErrorCode;
  /** The request field at fault, e.g. `identity`. */
  readonly field: string | undefined;
  readonly retryAfterSeconds: number | undefined;

  constructor(code: ServiceErrorCode, message: string, options?: { field?: string; retryAfterSeconds?: number; cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.field = options?.field;
    this.retryAfterSeconds = options?.retryAfterSeconds;
  }
}
