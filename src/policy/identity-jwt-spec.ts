/**
 * The `http.identityJwt` option of an McpServer: the gateway sends the caller's identity to the
 * upstream as a short-lived ES256 JWT in a request header.
 *
 *   identityJwt: true                                  # Authorization: Bearer <jwt>, 5 minutes
 *   identityJwt: { header: X-Writ-Identity, ttl: 2m }  # X-Writ-Identity: <jwt>, 2 minutes
 */
import { MAX_IDENTITY_JWT_TTL_SECONDS } from '../authority/identity-jwt.js'
import type { IdentityJwtConfig } from '../gateway/deps.js'
import { parseDuration } from '../lib/duration.js'
import {
  expectDuration,
  expectKnownFields,
  expectMapping,
  expectString,
  FieldError,
  type FieldPath,
} from './fields.js'

/** The manifest form of `http.identityJwt`. */
export type IdentityJwtSpec = boolean | { header?: string; ttl?: string }

/** The header that carries the JWT when the manifest names none. */
export const DEFAULT_IDENTITY_JWT_HEADER = 'Authorization'

const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/

/**
 * Validates `http.identityJwt`. `headers` are the static headers of the same server: the JWT's
 * header may not also be set there, because one of the two values would be lost.
 */
export function validateIdentityJwt(
  value: unknown,
  path: FieldPath,
  headers: Record<string, unknown> | undefined,
): void {
  if (typeof value === 'boolean') {
    if (value) checkHeaderFree(DEFAULT_IDENTITY_JWT_HEADER, path, headers)
    return
  }
  const spec = expectMapping(value, path)
  expectKnownFields(spec, path, ['header', 'ttl'])
  let header = DEFAULT_IDENTITY_JWT_HEADER
  if (spec.header !== undefined) {
    header = expectString(spec.header, [...path, 'header'])
    if (!HEADER_NAME.test(header)) {
      throw new FieldError(
        [...path, 'header'],
        `invalid HTTP header name ${JSON.stringify(header)}`,
      )
    }
  }
  checkHeaderFree(header, path, headers)
  if (spec.ttl !== undefined) {
    const ttl = expectDuration(spec.ttl, [...path, 'ttl'])
    if (parseDuration(ttl) > MAX_IDENTITY_JWT_TTL_SECONDS) {
      throw new FieldError(
        [...path, 'ttl'],
        `identity JWT lifetime ${ttl} exceeds the 5m maximum; use 5m or less`,
      )
    }
  }
}

/** Converts a validated `http.identityJwt` into gateway settings; undefined when it is off. */
export function resolveIdentityJwt(
  spec: IdentityJwtSpec | undefined,
): IdentityJwtConfig | undefined {
  if (spec === undefined || spec === false) return undefined
  const options = spec === true ? {} : spec
  return {
    header: options.header ?? DEFAULT_IDENTITY_JWT_HEADER,
    ttlSeconds:
      options.ttl === undefined
        ? MAX_IDENTITY_JWT_TTL_SECONDS
        : parseDuration(options.ttl, 'identityJwt.ttl'),
  }
}

function checkHeaderFree(
  header: string,
  path: FieldPath,
  headers: Record<string, unknown> | undefined,
): void {
  const clash = Object.keys(headers ?? {}).find(
    (name) => name.toLowerCase() === header.toLowerCase(),
  )
  if (clash !== undefined) {
    throw new FieldError(
      path,
      `the identity JWT goes in header ${header}, which http.headers also sets as ${JSON.stringify(clash)}; remove one or set identityJwt.header to another name`,
    )
  }
}
