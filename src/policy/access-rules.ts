/**
 * Just-in-time access rules: which roles the holders of a role may request (`spec.requests`) and
 * which requested roles they may approve or deny (`spec.review`). The functions here do no I/O,
 * because the authority reads the Role manifests and passes them in.
 */
import { formatDuration, parseDuration } from '../lib/duration.js'
import {
  expectDuration,
  expectKnownFields,
  expectMapping,
  expectName,
  expectPresent,
  FieldError,
  type FieldPath,
} from './fields.js'
import type { RoleSpec } from './specs.js'

/** The maximum grant duration of a `spec.requests` block that sets no `maxDuration`: one hour. */
export const DEFAULT_MAX_REQUEST_SECONDS = 3600

/** The grant duration used when a request names no TTL, shortened to the maximum if that is less. */
export const DEFAULT_REQUEST_SECONDS = 3600

/** Role specs by role name, as stored. */
export type RoleIndex = ReadonlyMap<string, RoleSpec>

/** The outcome of a check: allowed with the grant duration, or rejected with a code and message. */
export type RequestCheck =
  | { ok: true; ttlSeconds: number }
  | { ok: false; code: string; message: string; fields: Record<string, unknown> }

export type ReviewCheck =
  | { ok: true }
  | { ok: false; code: string; message: string; fields: Record<string, unknown> }

/**
 * Validates the `requests` and `review` blocks of a Role spec, throwing a `FieldError` at the
 * first invalid field. Requested and reviewed roles need not exist yet, as with a Bot's roles.
 */
export function validateAccessOptions(spec: Record<string, unknown>, path: FieldPath): void {
  if (spec.requests !== undefined) {
    const requestsPath = [...path, 'requests']
    const requests = expectMapping(spec.requests, requestsPath)
    expectKnownFields(requests, requestsPath, ['roles', 'maxDuration'])
    expectRoleNames(requests, requestsPath)
    if (requests.maxDuration !== undefined) {
      expectDuration(requests.maxDuration, [...requestsPath, 'maxDuration'])
    }
  }
  if (spec.review !== undefined) {
    const reviewPath = [...path, 'review']
    const review = expectMapping(spec.review, reviewPath)
    expectKnownFields(review, reviewPath, ['roles'])
    expectRoleNames(review, reviewPath)
  }
}

function expectRoleNames(block: Record<string, unknown>, path: FieldPath): void {
  const rolesPath = [...path, 'roles']
  const roles = expectPresent(block, 'roles', path, 'a list of role names')
  if (!Array.isArray(roles) || roles.length === 0) {
    throw new FieldError(rolesPath, 'expected a non-empty list of role names')
  }
  roles.forEach((role, index) => {
    expectName(role, [...rolesPath, index])
  })
}

/**
 * Returns each role that holders of `held` may request, with the longest grant in seconds. When
 * several held roles allow the same role, the longest `maxDuration` among them applies. Held
 * names without a Role manifest grant nothing.
 */
export function requestableRoles(roles: RoleIndex, held: readonly string[]): Map<string, number> {
  const limits = new Map<string, number>()
  for (const name of held) {
    const requests = roles.get(name)?.requests
    if (!requests) continue
    const maxSeconds =
      requests.maxDuration === undefined
        ? DEFAULT_MAX_REQUEST_SECONDS
        : parseDuration(requests.maxDuration, `requests.maxDuration of role "${name}"`)
    for (const requestable of requests.roles) {
      limits.set(requestable, Math.max(limits.get(requestable) ?? 0, maxSeconds))
    }
  }
  return limits
}

/** Returns the requested roles that holders of `held` may approve or deny. */
export function reviewableRoles(roles: RoleIndex, held: readonly string[]): Set<string> {
  const reviewable = new Set<string>()
  for (const name of held) {
    for (const role of roles.get(name)?.review?.roles ?? []) reviewable.add(role)
  }
  return reviewable
}

/**
 * Checks that holders of `held` may request every role in `requested` for `ttlSeconds` (or the
 * default) and returns the grant duration. The duration may not exceed the smallest limit among
 * the requested roles.
 */
export function checkRequest(
  roles: RoleIndex,
  held: readonly string[],
  requested: readonly string[],
  ttlSeconds?: number,
): RequestCheck {
  const limits = requestableRoles(roles, held)
  let maxSeconds = Number.POSITIVE_INFINITY
  for (const role of requested) {
    if (!roles.has(role)) {
      return reject(
        'access.role_not_found',
        `role "${role}" does not exist; request a role listed by writ get roles`,
        { role },
      )
    }
    if (held.includes(role)) {
      return reject(
        'access.invalid',
        `the caller already holds role "${role}"; request only roles it lacks`,
        { role },
      )
    }
    const limit = limits.get(role)
    if (limit === undefined) {
      const allowed = [...limits.keys()].sort()
      const hint = allowed.length > 0 ? `they allow ${allowed.join(', ')}` : 'they allow none'
      return reject(
        'access.not_requestable',
        `no role of the caller (${held.join(', ') || 'none'}) allows requesting role "${role}"; ${hint}`,
        { role, held: [...held] },
      )
    }
    maxSeconds = Math.min(maxSeconds, limit)
  }
  if (ttlSeconds === undefined) {
    return { ok: true, ttlSeconds: Math.min(DEFAULT_REQUEST_SECONDS, maxSeconds) }
  }
  if (ttlSeconds > maxSeconds) {
    return reject(
      'access.ttl_too_long',
      `requested TTL ${formatDuration(ttlSeconds)} exceeds the ${formatDuration(maxSeconds)} maximum for role ${requested.join(', ')}; request a shorter --ttl`,
      { requested: ttlSeconds, maximum: maxSeconds },
    )
  }
  return { ok: true, ttlSeconds }
}

/** Checks that holders of `held` may approve or deny a request for every role in `requested`. */
export function checkReview(
  roles: RoleIndex,
  held: readonly string[],
  requested: readonly string[],
): ReviewCheck {
  const reviewable = reviewableRoles(roles, held)
  const missing = requested.filter((role) => !reviewable.has(role))
  if (missing.length === 0) return { ok: true }
  return reject(
    'access.review_forbidden',
    `no role of the reviewer (${held.join(', ') || 'none'}) allows reviewing role ${missing.map((role) => `"${role}"`).join(', ')}`,
    { roles: missing, held: [...held] },
  )
}

/**
 * Returns the SPIFFE ID of the principal behind a certificate: the ID itself for a person or bot,
 * and the parent's ID for a task certificate, whose path is the parent's plus `/task/<id>`.
 *
 * @example principalOf('spiffe://writ.local/bot/ci/task/7f3a') // 'spiffe://writ.local/bot/ci'
 */
export function principalOf(spiffeId: string): string {
  const match = /^(spiffe:\/\/[^/]+\/[^/]+\/[^/]+)\/task\//.exec(spiffeId)
  return match ? (match[1] as string) : spiffeId
}

function reject(
  code: string,
  message: string,
  fields: Record<string, unknown>,
): { ok: false; code: string; message: string; fields: Record<string, unknown> } {
  return { ok: false, code, message, fields }
}
