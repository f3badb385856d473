/**
 * The one base error for failures caused by input, remote parties or the environment.
 * Callers branch on `code` (a stable, dotted identifier such as `join.token_used`), never on the
 * message. Misuse by the calling program throws a plain `TypeError` instead.
 *
 * @example
 *   throw new WritError('ca.ttl_over_limit', 'requested TTL 2h exceeds the 1h maximum', {
 *     requested: 7200, maximum: 3600,
 *   })
 */
export class WritError extends Error {
  readonly code: string
  readonly fields: Readonly<Record<string, unknown>>

  constructor(
    code: string,
    message: string,
    fields: Record<string, unknown> = {},
    options?: { cause?: unknown },
  ) {
    super(message, options)
    this.name = 'WritError'
    this.code = code
    this.fields = fields
  }
}

/** Reports whether a value is a WritError, optionally with the given code. */
export function isWritError(value: unknown, code?: string): value is WritError {
  return value instanceof WritError && (code === undefined || value.code === code)
}
