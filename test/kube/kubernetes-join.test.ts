// biome-ignore-all lint/suspicious/noTemplateCurlyInString: these strings are secret references, not templates
import assert from 'node:assert/strict'
import { after, afterEach, before, beforeEach, test } from 'node:test'
import { createCsrPem, generateAgentKeys } from '../../src/agent/keys.js'
import type { JoinResult } from '../../src/authority/authority.js'
import { isWritError } from '../../src/errors.js'
import { JWKS_REFRESH_COOLDOWN_MS } from '../../src/kube/signing-keys.js'
import { API_VERSION } from '../../src/policy/resource.js'
import { type AuthorityFixture, openAuthorityFixture } from '../authority/authority-fixture.js'
import { FakeApiServer, type TokenRequest } from '../fixtures/kube/fake-apiserver.js'

const PEER = '127.0.0.1:50000'
const AUDIENCE = 'writ.test'
const REVIEWER_VARIABLE = 'WRIT_TEST_KUBE_REVIEWER_TOKEN'

let cluster: FakeApiServer
let fixture: AuthorityFixture
let now = Date.now()

before(async () => {
  cluster = await FakeApiServer.start()
  process.env[REVIEWER_VARIABLE] = cluster.reviewerToken
})
after(async () => {
  delete process.env[REVIEWER_VARIABLE]
  await cluster.close()
})
beforeEach(async () => {
  now = Date.now()
  fixture = await openAuthorityFixture(() => now)
  await fixture.addRole('worker-role', '30m')
  await fixture.addBot('payments-worker', ['worker-role'])
})
afterEach(() => fixture.close())

const ALLOW = [{ namespace: 'payments', serviceAccount: 'worker' }]

/** Stores JoinToken `name` with `method: kubernetes` and the given `spec.kubernetes` fields. */
async function addKubernetesToken(
  name: string,
  kubernetes: Record<string, unknown>,
  extra: Record<string, unknown> = {},
) {
  await fixture.store.putResource({
    apiVersion: API_VERSION,
    kind: 'JoinToken',
    metadata: { name },
    spec: { bot: 'payments-worker', method: 'kubernetes', kubernetes, ...extra },
  })
}

const staticKeys = () => ({ allow: ALLOW, issuer: cluster.issuer, jwks: cluster.jwks() })
const discovery = () => ({ allow: ALLOW, issuer: cluster.issuer, discovery: { ca: cluster.caPem } })
const tokenReview = () => ({
  allow: ALLOW,
  tokenReview: {
    url: cluster.url,
    caFile: cluster.caFile,
    bearerToken: `\${env:${REVIEWER_VARIABLE}}`,
  },
})

function issue(overrides: Partial<TokenRequest> = {}): Promise<string> {
  return cluster.issueToken({
    namespace: 'payments',
    serviceAccount: 'worker',
    audiences: [AUDIENCE],
    ...overrides,
  })
}

async function joinWith(tokenName: string, serviceAccountToken: string): Promise<JoinResult> {
  const csrPem = createCsrPem(await generateAgentKeys(), { commonName: 'writ-agent' })
  return fixture.authority.join(
    { method: 'kubernetes', token: tokenName, serviceAccountToken, csrPem },
    PEER,
  )
}

async function rejectsWith(
  promise: Promise<unknown>,
  code: string,
  reason: string | undefined,
  message: RegExp,
) {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(isWritError(error), `expected a WritError, got ${String(error)}`)
    assert.equal(error.code, code)
    assert.equal(error.fields.reason, reason)
    assert.match(error.message, message)
    return true
  })
}

test('static JWKS join issues a bot certificate', async () => {
  await addKubernetesToken('cluster-static', staticKeys())
  const result = await joinWith('cluster-static', await issue({ pod: 'worker-abc' }))
  assert.equal(result.spiffeId, 'spiffe://writ.test/bot/payments-worker')

  const [joined, issued] = fixture.audit.events
  assert.equal(joined?.type, 'join')
  assert.equal(joined?.outcome, 'success')
  assert.equal(joined?.details?.token, 'cluster-static')
  assert.equal(joined?.details?.method, 'kubernetes')
  assert.equal(joined?.details?.namespace, 'payments')
  assert.equal(joined?.details?.serviceAccount, 'worker')
  assert.equal(joined?.details?.pod, 'worker-abc')
  assert.equal(issued?.type, 'certificate.issue')
})

test('kubernetes join token is reusable', async () => {
  await addKubernetesToken('cluster-static', staticKeys())
  const first = await joinWith('cluster-static', await issue())
  const second = await joinWith('cluster-static', await issue())
  assert.equal(first.spiffeId, second.spiffeId)
  assert.notEqual(first.certificate, second.certificate)
})

test('discovery join caches the key set', async () => {
  await addKubernetesToken('cluster-discovery', discovery())
  const before = cluster.hits.get('/.well-known/openid-configuration') ?? 0
  await joinWith('cluster-discovery', await issue())
  await joinWith('cluster-discovery', await issue())
  assert.equal(cluster.hits.get('/.well-known/openid-configuration'), before + 1)
})

test('discovery refetches keys for a new kid', async () => {
  await addKubernetesToken('cluster-discovery', discovery())
  await joinWith('cluster-discovery', await issue())
  const fetches = cluster.hits.get('/openid/v1/jwks') ?? 0
  cluster.rotateKey()

  // Within the cooldown, an unknown key ID does not trigger a fetch.
  await rejectsWith(
    joinWith('cluster-discovery', await issue()),
    'join.kubernetes_invalid',
    'signature_invalid',
    /no key of the cluster matches the token's key ID/,
  )
  assert.equal(cluster.hits.get('/openid/v1/jwks'), fetches)

  now += JWKS_REFRESH_COOLDOWN_MS
  const result = await joinWith('cluster-discovery', await issue())
  assert.equal(result.spiffeId, 'spiffe://writ.test/bot/payments-worker')
  assert.equal(cluster.hits.get('/openid/v1/jwks'), fetches + 1)
})

test('TokenReview join sends the audience', async () => {
  await addKubernetesToken('cluster-review', tokenReview())
  const token = await issue({ pod: 'worker-review' })
  await joinWith('cluster-review', token)
  const review = cluster.reviews.at(-1)
  assert.deepEqual(review?.request, {
    apiVersion: 'authentication.k8s.io/v1',
    kind: 'TokenReview',
    spec: { token, audiences: [AUDIENCE] },
  })
  assert.equal(review?.authorization, `Bearer ${cluster.reviewerToken}`)
  assert.equal(fixture.audit.events[0]?.details?.pod, 'worker-review')
})

test('TokenReview rejects a deleted pod', async () => {
  await addKubernetesToken('cluster-review', tokenReview())
  const token = await issue({ pod: 'worker-gone' })
  cluster.deletePod('payments', 'worker-gone')
  await rejectsWith(
    joinWith('cluster-review', token),
    'join.kubernetes_invalid',
    'review_refused',
    /token "cluster-review" rejected \(review_refused\).*pod "payments\/worker-gone".*no longer exists/,
  )
  const denied = fixture.audit.events.at(-1)
  assert.equal(denied?.outcome, 'denied')
  assert.equal(denied?.reason, 'kubernetes_invalid')
  assert.equal(denied?.details?.check, 'review_refused')
  assert.equal(denied?.details?.token, 'cluster-review')
})

test('TokenReview with a bad reviewer token', async () => {
  await addKubernetesToken('cluster-review', {
    ...tokenReview(),
    tokenReview: { url: cluster.url, ca: cluster.caPem, bearerToken: 'Bearer-less-${env:HOME}' },
  })
  await rejectsWith(
    joinWith('cluster-review', await issue()),
    'join.kubernetes_unavailable',
    undefined,
    /join token "cluster-review" cannot verify service account tokens now/,
  )
  const logged = fixture.logLines.find((line) =>
    line.includes('kubernetes join verification failed'),
  )
  assert.ok(logged, 'the cause was not logged')
  assert.match(logged, /HTTP 401: Unauthorized/)
  assert.ok(!logged.includes(cluster.reviewerToken))
})

test('TokenReview with an unset variable', async () => {
  await addKubernetesToken('cluster-review', {
    ...tokenReview(),
    tokenReview: { url: cluster.url, bearerToken: '${env:WRIT_TEST_UNSET_VARIABLE}' },
  })
  await rejectsWith(
    joinWith('cluster-review', await issue()),
    'join.kubernetes_unavailable',
    undefined,
    /cannot verify service account tokens now/,
  )
  assert.ok(
    fixture.logLines.some((line) =>
      line.includes('environment variable WRIT_TEST_UNSET_VARIABLE is not set'),
    ),
  )
})

test('discovery of an unreachable issuer', async () => {
  const closed = await FakeApiServer.start()
  const issuer = closed.issuer
  await closed.close()
  await addKubernetesToken('cluster-gone', { allow: ALLOW, issuer, discovery: true })
  await rejectsWith(
    joinWith('cluster-gone', await issue()),
    'join.kubernetes_unavailable',
    undefined,
    /join token "cluster-gone" cannot verify/,
  )
  assert.ok(fixture.logLines.some((line) => line.includes('ECONNREFUSED')))
})

test('kubernetes join rejection table', async () => {
  await addKubernetesToken('cluster-static', staticKeys())
  await addKubernetesToken('cluster-old', staticKeys(), { expires: '2020-01-01T00:00:00Z' })
  const oneTimeName = await fixture.addToken('one-time-secret-value', 'payments-worker')

  const nowSeconds = Math.floor(now / 1000)
  const cases: Array<{
    name: string
    token: string
    jwt: string
    reason: string
    message: RegExp
  }> = [
    {
      name: 'wrong audience',
      token: 'cluster-static',
      jwt: await issue({ audiences: ['https://kubernetes.default.svc'] }),
      reason: 'audience_mismatch',
      message: /audience "https:\/\/kubernetes\.default\.svc", expected "writ\.test"/,
    },
    {
      name: 'expired token',
      token: 'cluster-static',
      jwt: await issue({ issuedAt: nowSeconds - 7200, lifetimeSeconds: 3600 }),
      reason: 'expired',
      message: /the token expired at/,
    },
    {
      name: 'namespace not allowed',
      token: 'cluster-static',
      jwt: await issue({ namespace: 'default' }),
      reason: 'not_allowed',
      message: /service account "worker" in namespace "default" is not in the allow list/,
    },
    {
      name: 'service account not allowed',
      token: 'cluster-static',
      jwt: await issue({ serviceAccount: 'admin' }),
      reason: 'not_allowed',
      message: /service account "admin" in namespace "payments"/,
    },
    {
      name: 'foreign key, cluster kid',
      token: 'cluster-static',
      jwt: await issue({ signer: 'foreign-same-kid' }),
      reason: 'signature_invalid',
      message: /the signature does not verify with key/,
    },
    {
      name: 'foreign key, own kid',
      token: 'cluster-static',
      jwt: await issue({ signer: 'foreign' }),
      reason: 'signature_invalid',
      message: /no key of the cluster matches the token's key ID/,
    },
    {
      name: 'other issuer',
      token: 'cluster-static',
      jwt: await issue({ issuer: 'https://other-cluster.example' }),
      reason: 'issuer_mismatch',
      message: /issued by "https:\/\/other-cluster\.example"/,
    },
    {
      name: 'not a JWT',
      token: 'cluster-static',
      jwt: 'not-a-jwt',
      reason: 'token_malformed',
      message: /not a compact JWT/,
    },
    {
      name: 'JWT with a broken header',
      token: 'cluster-static',
      jwt: 'e30.e30.c2ln',
      reason: 'token_malformed',
      message: /not a valid compact JWS/,
    },
    {
      name: 'unknown join token',
      token: 'no-such-token',
      jwt: await issue(),
      reason: 'token_unknown',
      message: /join token "no-such-token" does not exist or does not use method kubernetes/,
    },
    {
      name: 'one-time join token',
      token: oneTimeName,
      jwt: await issue(),
      reason: 'token_unknown',
      message: /does not use method kubernetes/,
    },
    {
      name: 'invalid join token name',
      token: 'Bad Name',
      jwt: await issue(),
      reason: 'token_unknown',
      message: /the join token name is not a valid resource name/,
    },
    {
      name: 'expired join token',
      token: 'cluster-old',
      jwt: await issue(),
      reason: 'token_expired',
      message: /join token "cluster-old" expired at 2020-01-01T00:00:00Z/,
    },
  ]
  for (const entry of cases) {
    const before = fixture.audit.events.length
    try {
      await rejectsWith(
        joinWith(entry.token, entry.jwt),
        'join.kubernetes_invalid',
        entry.reason,
        entry.message,
      )
    } catch (error) {
      throw new Error(`${entry.name}: ${(error as Error).message}`)
    }
    const denied = fixture.audit.events[before]
    assert.equal(denied?.type, 'join', entry.name)
    assert.equal(denied?.outcome, 'denied', entry.name)
    assert.equal(denied?.details?.check, entry.reason, entry.name)
  }
  assert.ok(!JSON.stringify(fixture.audit.events).includes('eyJ'), 'a token reached the audit log')
})
