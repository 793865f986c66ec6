import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { HostListError } from '../service/host-list.ts';
import { ServiceError, type ServiceErrorCode } from '../service/service-error.ts';
import { StoreCursorError } from '../store/task-store.ts';

/** The `error.code` values of API error responses, each with its HTTP status. */
export const API_ERRORS = {
  'bad-request': 400,
  unauthorized: 401,
  forbidden: 403,
  'not-found': 404,
  conflict: 409,
  'too-large': 413,
  'unsupported-media-type': 415,
  'queue-full': 429,
  internal: 500,
  draining: 503,
  unavailable: 503,
} as const;

/** One of {@link API_ERRORS}. */
export type ApiErrorCode = keyof typeof API_ERRORS;

/** An error the API answers with: `{error: {code, message, field?}}` and the code's status. */
export class ApiError extends Error {
  override readonly name = 'ApiError';
  readonly code: ApiErrorCode;
  readonly field: string | undefined;
  readonly retryAfterSeconds: number | undefined;

  constructor(code: ApiErrorCode, message: string, options?: { field?: string; retryAfterSeconds?: number }) {
    super(message);
    this.code = code;
    this.field = options?.field;
    this.retryAfterSeconds = options?.retryAfterSeconds;
  }
}

const FROM_SERVICE: Record<ServiceErrorCode, ApiErrorCode> = {
  'not-found': 'not-found',
  invalid: 'bad-request',
  forbidden: 'forbidden',
  'queue-full': 'queue-full',
  draining: 'draining',
  unavailable: 'unavailable',
};

/** Fastify's own error codes that are the client's fault, with what they mean. */
const FROM_FASTIFY: Record<string, ApiErrorCode> = {
  FST_ERR_CTP_BODY_TOO_LARGE: 'too-large',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'unsupported-media-type',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'bad-request',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'bad-request',
  FST_ERR_CTP_INVALID_JSON_BODY: 'bad-request',
};

/**
 * Turns anything thrown while handling a request into the JSON error shape. Bad input is
 * always a 4xx naming the problem (and the field, for validation errors); only a bug in
 * leash is a 500, and its message does not leak internals.
 */
export function toApiError(err: unknown): ApiError {
  if (err instanceof ApiError) return err;
  if (err instanceof ServiceError) {
    return new ApiError(FROM_SERVICE[err.code], err.message, {
      ...(err.field === undefined ? {} : { field: err.field }),
      ...(err.retryAfterSeconds === undefined ? {} : { retryAfterSeconds: err.retryAfterSeconds }),
    });
  }
  if (err instanceof HostListError) return new ApiError('bad-request', err.message, { field: 'hosts' });
  if (err instanceof StoreCursorError) return new ApiError('bad-request', `querystring.cursor: ${err.message}`, { field: 'cursor' });
  const fastify = err as Partial<FastifyError> & { validationContext?: string };
  if (fastify.validation) return validationError(fastify.validation, fastify.validationContext ?? 'body');
  if (fastify.code && FROM_FASTIFY[fastify.code]) return new ApiError(FROM_FASTIFY[fastify.code]!, firstLine(fastify.message ?? 'bad request'));
  if (err instanceof SyntaxError) return new ApiError('bad-request', `body is not valid JSON: ${firstLine(err.message)}`);
  if (typeof fastify.statusCode === 'number' && fastify.statusCode >= 400 && fastify.statusCode < 500) {
    return new ApiError('bad-request', firstLine(fastify.message ?? 'bad request'));
  }
  return new ApiError('internal', 'internal error; see the server log');
}

/** Ajv's first error as one line naming the field: `body.timeouts.connectMs must be <= 604800000`. */
function validationError(errors: NonNullable<FastifyError['validation']>, context: string): ApiError {
  const first = errors[0];
  if (!first) return new ApiError('bad-request', `invalid ${context}`);
  const params = first.params as { missingProperty?: string; additionalProperty?: string };
  const segments = first.instancePath.split('/').filter((s) => s.length > 0);
  if (params.missingProperty) segments.push(params.missingProperty);
  if (params.additionalProperty) segments.push(params.additionalProperty);
  const field = segments.join('.');
  const where = field === '' ? context : `${context}.${field}`;
  const message = params.additionalProperty
    ? `${where}: unknown field`
    : params.missingProperty
      ? `${where}: required`
      : `${where}: ${first.message ?? 'is invalid'}`;
  return new ApiError('bad-request', message, field === '' ? undefined : { field });
}

function firstLine(text: string): string {
  return text.split('\n')[0] ?? text;
}

/** Fastify error handler: every error becomes the JSON shape; only 500s are logged as errors. */
export function handleError(err: unknown, request: FastifyRequest, reply: FastifyReply): FastifyReply {
  const apiError = toApiError(err);
  const status = API_ERRORS[apiError.code];
  if (status >= 500 && apiError.code === 'internal') request.log.error({ err }, 'request failed');
  if (apiError.retryAfterSeconds !== undefined) void reply.header('retry-after', String(apiError.retryAfterSeconds));
  return reply.status(status).send({
    error: { code: apiError.code, message: apiError.message, ...(apiError.field === undefined ? {} : { field: apiError.field }) },
  });
}
