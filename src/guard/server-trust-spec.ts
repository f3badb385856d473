/**
 * The McpServer manifest fields read by the content guard: `spec.allow` (which server-initiated
 * requests reach the client) and `spec.external` or the label `external: 'true'` (a server outside
 * the operator's control, to which no secret may be sent).
 */

import type { ServerRequestAllowances } from '../gateway/deps.js'
import { expectKnownFields, expectMapping, FieldError, type FieldPath } from '../policy/fields.js'
import type { Resource } from '../policy/resource.js'

const ALLOWANCE_KEYS = ['sampling', 'elicitation', 'roots'] as const

/**
 * Validates `spec.allow`: a mapping of `sampling`, `elicitation` and `roots` to booleans.
 *
 * @example validateServerAllowances({ sampling: true }, ['spec', 'allow'])
 */
export function validateServerAllowances(value: unknown, path: FieldPath): ServerRequestAllowances {
  const allow = expectMapping(value, path)
  expectKnownFields(allow, path, ALLOWANCE_KEYS)
  for (const key of ALLOWANCE_KEYS) expectOptionalBoolean(allow[key], [...path, key])
  return allow as ServerRequestAllowances
}

/** Validates `spec.external`: a boolean. */
export function validateExternal(value: unknown, path: FieldPath): boolean {
  expectOptionalBoolean(value, path)
  return value as boolean
}

function expectOptionalBoolean(value: unknown, path: FieldPath): void {
  if (value === undefined || typeof value === 'boolean') return
  throw new FieldError(path, `expected true or false, got ${JSON.stringify(value)}`)
}

/**
 * Returns the guard fields of an upstream config from an McpServer resource. A server is
 * external when `spec.external` is true or its label `external` is `'true'`.
 */
export function serverTrustConfig(resource: Resource): {
  external?: boolean
  allow?: ServerRequestAllowances
} {
  const spec = resource.spec as { external?: unknown; allow?: unknown }
  const config: { external?: boolean; allow?: ServerRequestAllowances } = {}
  if (spec.external === true || resource.metadata.labels?.external === 'true') {
    config.external = true
  }
  if (typeof spec.allow === 'object' && spec.allow !== null) {
    config.allow = { ...(spec.allow as ServerRequestAllowances) }
  }
  return config
}
