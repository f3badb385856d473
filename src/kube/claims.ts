/**
 * Pure checks on the claims of a projected service-account token and on TokenReview results.
 * A projected token carries `iss`, `sub` (`system:serviceaccount:<namespace>:<name>`), `aud`,
 * `exp`, `iat`, `nbf` and a `kubernetes.io` claim naming the namespace, the service account and,
 * for a token bound to a pod, the pod. No I/O happens here; the verifier supplies the clock.
 */
import type { KubernetesAllowRule } from './join-spec.js'

/** How far clocks may disagree when `exp`, `nbf` and `iat` are compared: 30 seconds. */
export const CLOCK_LEEWAY_SECONDS = 30

/** The reason a service-account token was rejected, as `join.kubernetes_invalid` carries it. */
export type KubernetesRejection =
  | 'token_unknown'
  | 'token_expired'
  | 'token_malformed'
  | 'signature_invalid'
  | 'issuer_mismatch'
  | 'audience_mismatch'
  | 'expired'
  | 'not_yet_valid'
  | 'issued_in_future'
  | 'claims_invalid'
  | 'not_allowed'
  | 'review_refused'

/** The workload a verified token names. */
export interface KubernetesWorkload {
  namespace: string
  serviceAccount: string
  serviceAccountUid?: string
  /** Set when the token is bound to a pod, as projected volume tokens are. */
  pod?: string
  podUid?: string
}

export type ClaimCheck =
  | { ok: true; workload: KubernetesWorkload }
  | { ok: false; reason: KubernetesRejection; message: string }

export interface ExpectedClaims {
  issuer: string
  audience: string
  /** Seconds since the epoch. */
  now: number
}

const SERVICE_ACCOUNT_PREFIX = 'system:serviceaccount:'

/**
 * Checks the claims of a token whose signature already verified: issuer, audience, lifetime and
 * the `kubernetes.io` claim, which must agree with `sub`.
 *
 * @example
 *   checkTokenClaims(payload, { issuer: 'https://k8s.example', audience: 'writ.local', now: 1.7e9 })
 */
export function checkTokenClaims(payload: unknown, expected: ExpectedClaims): ClaimCheck {
  if (typeof payload !== 'object' || payload === null || Array.isArray(payload)) {
    return reject('token_malformed', 'the token payload is not a JSON object')
  }
  const claims = payload as Record<string, unknown>
  if (claims.iss !== expected.issuer) {
    return reject(
      'issuer_mismatch',
      `the token was issued by ${describe(claims.iss)}, expected ${JSON.stringify(expected.issuer)}`,
    )
  }
  const audienceCheck = checkAudience(claims.aud, expected.audience)
  if (audienceCheck) return audienceCheck
  const timeCheck = checkLifetime(claims, expected.now)
  if (timeCheck) return timeCheck
  return readWorkload(claims)
}

function checkAudience(aud: unknown, audience: string): ClaimCheck | undefined {
  const audiences = typeof aud === 'string' ? [aud] : aud
  if (!Array.isArray(audiences) || !audiences.every((item) => typeof item === 'string')) {
    return reject('audience_mismatch', `the token has no valid aud claim, expected "${audience}"`)
  }
  if (audiences.includes(audience)) return undefined
  return reject(
    'audience_mismatch',
    `the token is for audience ${audiences.map((item) => JSON.stringify(item)).join(', ') || 'none'}, ` +
      `expected "${audience}"; set audience: ${audience} on the projected token volume`,
  )
}

function checkLifetime(claims: Record<string, unknown>, now: number): ClaimCheck | undefined {
  const { exp, nbf, iat } = claims
  if (typeof exp !== 'number') {
    return reject(
      'expired',
      'the token has no exp claim, as legacy secret-based tokens do; mount a projected token',
    )
  }
  if (now >= exp + CLOCK_LEEWAY_SECONDS) {
    return reject('expired', `the token expired at ${isoTime(exp)}`)
  }
  if (nbf !== undefined && (typeof nbf !== 'number' || now + CLOCK_LEEWAY_SECONDS < nbf)) {
    return reject('not_yet_valid', `the token is not valid before ${describeTime(nbf)}`)
  }
  if (iat !== undefined && (typeof iat !== 'number' || now + CLOCK_LEEWAY_SECONDS < iat)) {
    return reject(
      'issued_in_future',
      `the token claims to be issued at ${describeTime(iat)}, in the future`,
    )
  }
  return undefined
}

function readWorkload(claims: Record<string, unknown>): ClaimCheck {
  const kube = objectField(claims, 'kubernetes.io')
  const namespace = kube?.namespace
  const account = kube ? objectField(kube, 'serviceaccount') : undefined
  if (typeof namespace !== 'string' || typeof account?.name !== 'string') {
    return reject(
      'claims_invalid',
      'the token has no kubernetes.io claim with namespace and serviceaccount.name',
    )
  }
  const expectedSubject = `${SERVICE_ACCOUNT_PREFIX}${namespace}:${account.name}`
  if (claims.sub !== expectedSubject) {
    return reject(
      'claims_invalid',
      `the token subject ${describe(claims.sub)} does not match its kubernetes.io claim (${expectedSubject})`,
    )
  }
  const workload: KubernetesWorkload = { namespace, serviceAccount: account.name }
  if (typeof account.uid === 'string') workload.serviceAccountUid = account.uid
  const pod = objectField(kube as Record<string, unknown>, 'pod')
  if (typeof pod?.name === 'string') workload.pod = pod.name
  if (typeof pod?.uid === 'string') workload.podUid = pod.uid
  return { ok: true, workload }
}

/**
 * Reads the result of a TokenReview (`status` of an `authentication.k8s.io/v1` TokenReview):
 * the token must be authenticated, valid for `audience`, and name a service account.
 * A review that sets `spec.audiences` and gets back no `status.audiences` only proves the token
 * is valid for the API server itself, so that counts as the wrong audience.
 */
export function checkReviewStatus(status: unknown, audience: string): ClaimCheck {
  const review =
    typeof status === 'object' && status !== null ? (status as Record<string, unknown>) : {}
  if (review.authenticated !== true) {
    const error =
      typeof review.error === 'string' && review.error !== '' ? review.error : 'no reason given'
    return reject('review_refused', `the Kubernetes API did not authenticate the token: ${error}`)
  }

  const audiences = Array.isArray(review.audiences) ? review.audiences : []
  if (!audiences.includes(audience)) {
    return reject(
      'audience_mismatch',
      `the Kubernetes API did not confirm audience "${audience}" for the token; ` +
        `set audience: ${audience} on the projected token volume`,
    )
  }

  const user = objectField(review, 'user')
  const parsed = parseServiceAccountUsername(user?.username)
  if (!parsed) {
    return reject(
      'claims_invalid',
      `the token belongs to ${describe(user?.username)}, which is not a service account`,
    )
  }

  const workload: KubernetesWorkload = { ...parsed }
  if (typeof user?.uid === 'string' && user.uid !== '') workload.serviceAccountUid = user.uid
  const extra = user ? objectField(user, 'extra') : undefined
  const podName = firstString(extra?.['authentication.kubernetes.io/pod-name'])
  const podUid = firstString(extra?.['authentication.kubernetes.io/pod-uid'])
  if (podName !== undefined) workload.pod = podName
  if (podUid !== undefined) workload.podUid = podUid
  return { ok: true, workload }
}

/** Splits `system:serviceaccount:<namespace>:<name>`; returns undefined for any other user. */
export function parseServiceAccountUsername(
  username: unknown,
): { namespace: string; serviceAccount: string } | undefined {
  if (typeof username !== 'string' || !username.startsWith(SERVICE_ACCOUNT_PREFIX)) return undefined
  const parts = username.slice(SERVICE_ACCOUNT_PREFIX.length).split(':')
  if (parts.length !== 2 || parts[0] === '' || parts[1] === '') return undefined
  return { namespace: parts[0] as string, serviceAccount: parts[1] as string }
}

/**
 * Checks the workload against the allow rules: some rule must name both its namespace and its
 * service account exactly.
 */
export function checkAllowed(
  workload: KubernetesWorkload,
  allow: KubernetesAllowRule[],
): ClaimCheck {
  const allowed = allow.some(
    (rule) =>
      rule.namespace === workload.namespace && rule.serviceAccount === workload.serviceAccount,
  )
  if (allowed) return { ok: true, workload }
  return reject(
    'not_allowed',
    `service account "${workload.serviceAccount}" in namespace "${workload.namespace}" is not ` +
      'in the allow list of this join token',
  )
}

function reject(reason: KubernetesRejection, message: string): ClaimCheck {
  return { ok: false, reason, message }
}

function objectField(
  object: Record<string, unknown>,
  key: string,
): Record<string, unknown> | undefined {
  const value = object[key]
  return typeof value === 'object' && value !== null && !Array.isArray(value)
    ? (value as Record<string, unknown>)
    : undefined
}

function firstString(value: unknown): string | undefined {
  const first = Array.isArray(value) ? value[0] : undefined
  return typeof first === 'string' && first !== '' ? first : undefined
}

function describe(value: unknown): string {
  return typeof value === 'string' ? JSON.stringify(value) : `no valid value (${typeof value})`
}

function describeTime(value: unknown): string {
  return typeof value === 'number' ? isoTime(value) : describe(value)
}

function isoTime(seconds: number): string {
  const date = new Date(seconds * 1000)
  return Number.isNaN(date.getTime()) ? String(seconds) : date.toISOString()
}
