import assert from 'node:assert/strict'
import { test } from 'node:test'
import {
  CLOCK_LEEWAY_SECONDS,
  checkAllowed,
  checkReviewStatus,
  checkTokenClaims,
  type KubernetesRejection,
  parseServiceAccountUsername,
} from '../../src/kube/claims.js'

const NOW = 1_900_000_000
const ISSUER = 'https://oidc.cluster.example'
const AUDIENCE = 'writ.test'

/** Returns the claims of a projected token bound to pod `worker-7d9f` of `payments/worker`. */
function projectedClaims(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    aud: [AUDIENCE],
    exp: NOW + 600,
    iat: NOW - 60,
    nbf: NOW - 60,
    iss: ISSUER,
    jti: '0b7c6f5e-7c2f-4f4e-9d1a-3c2b1a0f9e8d',
    sub: 'system:serviceaccount:payments:worker',
    'kubernetes.io': {
      namespace: 'payments',
      pod: { name: 'worker-7d9f', uid: 'pod-uid-1' },
      serviceaccount: { name: 'worker', uid: 'sa-uid-1' },
    },
    ...overrides,
  }
}

const expected = { issuer: ISSUER, audience: AUDIENCE, now: NOW }

test('checkTokenClaims accepts a projected token', () => {
  const result = checkTokenClaims(projectedClaims(), expected)
  assert.deepEqual(result, {
    ok: true,
    workload: {
      namespace: 'payments',
      serviceAccount: 'worker',
      serviceAccountUid: 'sa-uid-1',
      pod: 'worker-7d9f',
      podUid: 'pod-uid-1',
    },
  })
})

test('checkTokenClaims accepts a string aud', () => {
  const result = checkTokenClaims(projectedClaims({ aud: AUDIENCE }), expected)
  assert.equal(result.ok, true)
})

test('checkTokenClaims allows clock leeway', () => {
  const edge = CLOCK_LEEWAY_SECONDS - 1
  const cases = [
    projectedClaims({ exp: NOW - edge }),
    projectedClaims({ nbf: NOW + edge }),
    projectedClaims({ iat: NOW + edge, nbf: NOW }),
  ]
  for (const claims of cases) {
    const result = checkTokenClaims(claims, expected)
    assert.equal(result.ok, true, JSON.stringify(result))
  }
})

test('checkTokenClaims rejection table', () => {
  const cases: Array<{
    name: string
    payload: unknown
    reason: KubernetesRejection
    message: RegExp
  }> = [
    {
      name: 'payload not an object',
      payload: ['not', 'claims'],
      reason: 'token_malformed',
      message: /payload is not a JSON object/,
    },
    {
      name: 'other issuer',
      payload: projectedClaims({ iss: 'https://other.example' }),
      reason: 'issuer_mismatch',
      message: /issued by "https:\/\/other\.example", expected "https:\/\/oidc\.cluster\.example"/,
    },
    {
      name: 'missing issuer',
      payload: projectedClaims({ iss: undefined }),
      reason: 'issuer_mismatch',
      message: /issued by no valid value/,
    },
    {
      name: 'other audience',
      payload: projectedClaims({ aud: ['https://kubernetes.default.svc'] }),
      reason: 'audience_mismatch',
      message: /audience "https:\/\/kubernetes\.default\.svc", expected "writ\.test"/,
    },
    {
      name: 'empty audience list',
      payload: projectedClaims({ aud: [] }),
      reason: 'audience_mismatch',
      message: /audience none, expected "writ\.test"/,
    },
    {
      name: 'audience of wrong type',
      payload: projectedClaims({ aud: 42 }),
      reason: 'audience_mismatch',
      message: /no valid aud claim/,
    },
    {
      name: 'expired beyond leeway',
      payload: projectedClaims({ exp: NOW - CLOCK_LEEWAY_SECONDS }),
      reason: 'expired',
      message: /expired at 2030-03-17T17:46:10\.000Z/,
    },
    {
      name: 'legacy token without exp',
      payload: projectedClaims({ exp: undefined }),
      reason: 'expired',
      message: /no exp claim/,
    },
    {
      name: 'not yet valid',
      payload: projectedClaims({ nbf: NOW + CLOCK_LEEWAY_SECONDS + 1 }),
      reason: 'not_yet_valid',
      message: /not valid before/,
    },
    {
      name: 'nbf of wrong type',
      payload: projectedClaims({ nbf: 'soon' }),
      reason: 'not_yet_valid',
      message: /not valid before "soon"/,
    },
    {
      name: 'issued in the future',
      payload: projectedClaims({ iat: NOW + CLOCK_LEEWAY_SECONDS + 1, nbf: NOW }),
      reason: 'issued_in_future',
      message: /in the future/,
    },
    {
      name: 'no kubernetes.io claim',
      payload: projectedClaims({ 'kubernetes.io': undefined }),
      reason: 'claims_invalid',
      message: /no kubernetes\.io claim/,
    },
    {
      name: 'no service account name',
      payload: projectedClaims({ 'kubernetes.io': { namespace: 'payments', serviceaccount: {} } }),
      reason: 'claims_invalid',
      message: /namespace and serviceaccount\.name/,
    },
    {
      name: 'subject disagrees with claim',
      payload: projectedClaims({ sub: 'system:serviceaccount:payments:admin' }),
      reason: 'claims_invalid',
      message: /subject "system:serviceaccount:payments:admin" does not match/,
    },
  ]
  for (const entry of cases) {
    const result = checkTokenClaims(entry.payload, expected)
    assert.equal(result.ok, false, `${entry.name}: expected a rejection`)
    if (result.ok) continue
    assert.equal(result.reason, entry.reason, entry.name)
    assert.match(result.message, entry.message, entry.name)
  }
})

test('checkTokenClaims without pod binding', () => {
  const claims = projectedClaims({
    'kubernetes.io': { namespace: 'payments', serviceaccount: { name: 'worker', uid: 'u' } },
  })
  const result = checkTokenClaims(claims, expected)
  assert.deepEqual(result, {
    ok: true,
    workload: { namespace: 'payments', serviceAccount: 'worker', serviceAccountUid: 'u' },
  })
})

test('checkAllowed matches namespace and account', () => {
  const allow = [
    { namespace: 'payments', serviceAccount: 'worker' },
    { namespace: 'batch', serviceAccount: 'runner' },
  ]
  const cases = [
    { namespace: 'payments', serviceAccount: 'worker', ok: true },
    { namespace: 'batch', serviceAccount: 'runner', ok: true },
    { namespace: 'payments', serviceAccount: 'runner', ok: false },
    { namespace: 'default', serviceAccount: 'worker', ok: false },
  ]
  for (const { ok, ...workload } of cases) {
    const result = checkAllowed(workload, allow)
    assert.equal(result.ok, ok, JSON.stringify(workload))
    if (!result.ok) {
      assert.equal(result.reason, 'not_allowed')
      assert.match(
        result.message,
        new RegExp(`"${workload.serviceAccount}" in namespace "${workload.namespace}"`),
      )
    }
  }
})

/** Returns a successful TokenReview status as the API server sends it for a pod-bound token. */
function reviewStatus(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    authenticated: true,
    user: {
      username: 'system:serviceaccount:payments:worker',
      uid: 'sa-uid-1',
      groups: ['system:serviceaccounts', 'system:serviceaccounts:payments', 'system:authenticated'],
      extra: {
        'authentication.kubernetes.io/pod-name': ['worker-7d9f'],
        'authentication.kubernetes.io/pod-uid': ['pod-uid-1'],
      },
    },
    audiences: [AUDIENCE],
    ...overrides,
  }
}

test('checkReviewStatus accepts an authenticated review', () => {
  assert.deepEqual(checkReviewStatus(reviewStatus(), AUDIENCE), {
    ok: true,
    workload: {
      namespace: 'payments',
      serviceAccount: 'worker',
      serviceAccountUid: 'sa-uid-1',
      pod: 'worker-7d9f',
      podUid: 'pod-uid-1',
    },
  })
})

test('checkReviewStatus rejection table', () => {
  const cases: Array<{
    name: string
    status: unknown
    reason: KubernetesRejection
    message: RegExp
  }> = [
    {
      name: 'not authenticated, with error',
      status: { user: {}, error: 'pod "payments/worker-7d9f" not found' },
      reason: 'review_refused',
      message: /did not authenticate the token: pod "payments\/worker-7d9f" not found/,
    },
    {
      name: 'not authenticated, no error',
      status: { authenticated: false, user: {} },
      reason: 'review_refused',
      message: /no reason given/,
    },
    {
      name: 'status missing',
      status: undefined,
      reason: 'review_refused',
      message: /did not authenticate/,
    },
    {
      name: 'no audiences confirmed',
      status: reviewStatus({ audiences: [] }),
      reason: 'audience_mismatch',
      message: /did not confirm audience "writ\.test"/,
    },
    {
      name: 'other audience confirmed',
      status: reviewStatus({ audiences: ['https://kubernetes.default.svc'] }),
      reason: 'audience_mismatch',
      message: /audience "writ\.test"/,
    },
    {
      name: 'user not a service account',
      status: reviewStatus({ user: { username: 'kubernetes-admin' } }),
      reason: 'claims_invalid',
      message: /"kubernetes-admin", which is not a service account/,
    },
  ]
  for (const entry of cases) {
    const result = checkReviewStatus(entry.status, AUDIENCE)
    assert.equal(result.ok, false, `${entry.name}: expected a rejection`)
    if (result.ok) continue
    assert.equal(result.reason, entry.reason, entry.name)
    assert.match(result.message, entry.message, entry.name)
  }
})

test('parseServiceAccountUsername splits the name', () => {
  assert.deepEqual(parseServiceAccountUsername('system:serviceaccount:payments:worker'), {
    namespace: 'payments',
    serviceAccount: 'worker',
  })
  for (const username of [
    'system:serviceaccount:payments',
    'system:serviceaccount::worker',
    'system:serviceaccount:payments:worker:extra',
    'system:node:node-1',
    42,
  ]) {
    assert.equal(parseServiceAccountUsername(username), undefined, String(username))
  }
})
