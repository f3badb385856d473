// biome-ignore-all lint/suspicious/noTemplateCurlyInString: these strings are secret references, not templates
import assert from 'node:assert/strict'
import { generateKeyPairSync } from 'node:crypto'
import { test } from 'node:test'
import { isWritError } from '../../src/errors.js'
import { normalizeJoinToken, parseManifests } from '../../src/policy/manifest.js'

const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' })
const PUBLIC_JWK = {
  kid: 'key-1',
  use: 'sig',
  alg: 'ES256',
  ...publicKey.export({ format: 'jwk' }),
}
const PRIVATE_JWK = privateKey.export({ format: 'jwk' })
const CA_PEM_MARKER = '-----BEGIN CERTIFICATE-----'

/** Returns a kubernetes JoinToken manifest as JSON, with `kubernetes` merged over a valid block. */
function joinToken(kubernetes: Record<string, unknown>, extra: Record<string, unknown> = {}) {
  return JSON.stringify({
    apiVersion: 'writ.dev/v1alpha1',
    kind: 'JoinToken',
    metadata: { name: 'cluster-a' },
    spec: {
      bot: 'payments-worker',
      method: 'kubernetes',
      kubernetes: {
        allow: [{ namespace: 'payments', serviceAccount: 'worker' }],
        issuer: 'https://oidc.cluster.example',
        jwks: { keys: [PUBLIC_JWK] },
        ...kubernetes,
      },
      ...extra,
    },
  })
}

function rejects(text: string, message: RegExp): void {
  assert.throws(
    () => parseManifests(text, 'tokens.yaml'),
    (error: unknown) => {
      assert.ok(isWritError(error, 'manifest.invalid'), String(error))
      assert.match(error.message, message)
      return true
    },
  )
}

test('kubernetes join token with static JWKS', () => {
  const [resource] = parseManifests(joinToken({ audience: 'writ.local' }), 'tokens.yaml')
  assert.equal(resource?.spec.method, 'kubernetes')
  const kubernetes = resource?.spec.kubernetes as Record<string, unknown>
  assert.equal(kubernetes.audience, 'writ.local')
  assert.deepEqual(kubernetes.jwks, { keys: [PUBLIC_JWK] })
})

test('kubernetes join token with discovery', () => {
  const forms = [true, { caFile: '/etc/writ/cluster-ca.pem' }]
  for (const discovery of forms) {
    const text = joinToken({ jwks: undefined, discovery })
    const [resource] = parseManifests(text, 'tokens.yaml')
    assert.ok(resource)
    assert.deepEqual((resource.spec.kubernetes as Record<string, unknown>).discovery, discovery)
  }
})

test('kubernetes join token with TokenReview', () => {
  const text = joinToken({
    issuer: undefined,
    jwks: undefined,
    tokenReview: {
      url: 'https://10.0.0.1:6443',
      caFile: '/var/run/secrets/kubernetes.io/serviceaccount/ca.crt',
      bearerToken: '${file:/var/run/secrets/kubernetes.io/serviceaccount/token}',
    },
  })
  const [resource] = parseManifests(text, 'tokens.yaml')
  assert.ok(resource)
})

test('kubernetes join token keeps ttl as expires', () => {
  const [resource] = parseManifests(joinToken({}, { ttl: '24h' }), 'tokens.yaml')
  assert.ok(resource)
  const stored = normalizeJoinToken(resource, Date.parse('2030-01-01T00:00:00Z'))
  assert.equal(stored.spec.expires, '2030-01-02T00:00:00.000Z')
  assert.equal(stored.spec.ttl, undefined)
  assert.equal(stored.spec.tokenHash, undefined)
})

test('kubernetes join token rejection table', () => {
  const review = {
    url: 'https://10.0.0.1:6443',
    bearerToken: '${env:REVIEWER_TOKEN}',
  }
  const cases: Array<{ name: string; text: string; message: RegExp }> = [
    {
      name: 'no verification method',
      text: joinToken({ jwks: undefined }),
      message: /spec\.kubernetes: set exactly one of jwks, discovery and tokenReview.*none is set/,
    },
    {
      name: 'two verification methods',
      text: joinToken({ discovery: true }),
      message: /found jwks and discovery/,
    },
    {
      name: 'missing allow',
      text: joinToken({ allow: undefined }),
      message: /spec\.kubernetes\.allow: missing required field/,
    },
    {
      name: 'empty allow',
      text: joinToken({ allow: [] }),
      message: /spec\.kubernetes\.allow: expected a non-empty list/,
    },
    {
      name: 'allow rule without service account',
      text: joinToken({ allow: [{ namespace: 'payments' }] }),
      message: /spec\.kubernetes\.allow\[0\]\.serviceAccount: missing required field/,
    },
    {
      name: 'invalid namespace',
      text: joinToken({ allow: [{ namespace: 'Payments', serviceAccount: 'worker' }] }),
      message: /allow\[0\]\.namespace: invalid name "Payments"/,
    },
    {
      name: 'invalid service account',
      text: joinToken({ allow: [{ namespace: 'payments', serviceAccount: 'Worker_1' }] }),
      message: /allow\[0\]\.serviceAccount: invalid service account name "Worker_1"/,
    },
    {
      name: 'unknown field in allow rule',
      text: joinToken({ allow: [{ namespace: 'a', serviceAccount: 'b', pod: 'c' }] }),
      message: /allow\[0\]\.pod: unknown field "pod"/,
    },
    {
      name: 'jwks without issuer',
      text: joinToken({ issuer: undefined }),
      message: /spec\.kubernetes\.issuer: missing required field: jwks needs the issuer URL/,
    },
    {
      name: 'private key in jwks',
      text: joinToken({ jwks: { keys: [{ ...PRIVATE_JWK, kid: 'k' }] } }),
      message: /jwks\.keys\[0\]\.d: this is a private key/,
    },
    {
      name: 'broken key in jwks',
      text: joinToken({ jwks: { keys: [{ kty: 'RSA', n: 'AQAB' }] } }),
      message: /jwks\.keys\[0\]: invalid JSON Web Key/,
    },
    {
      name: 'empty jwks',
      text: joinToken({ jwks: { keys: [] } }),
      message: /jwks\.keys: expected a non-empty list/,
    },
    {
      name: 'discovery over http',
      text: joinToken({ jwks: undefined, discovery: true, issuer: 'http://oidc.cluster.example' }),
      message: /issuer: invalid issuer "http:\/\/oidc\.cluster\.example": expected an https URL/,
    },
    {
      name: 'discovery with bad ca',
      text: joinToken({ jwks: undefined, discovery: { ca: 'not a certificate' } }),
      message: new RegExp(`discovery\\.ca: expected PEM certificates \\(${CA_PEM_MARKER}\\)`),
    },
    {
      name: 'discovery with ca and caFile',
      text: joinToken({ jwks: undefined, discovery: { ca: 'x', caFile: '/ca.pem' } }),
      message: /discovery: set at most one of ca and caFile/,
    },
    {
      name: 'discovery as a string',
      text: joinToken({ jwks: undefined, discovery: 'yes' }),
      message: /discovery: expected true or a mapping with ca or caFile, got the string "yes"/,
    },
    {
      name: 'tokenReview with issuer',
      text: joinToken({ jwks: undefined, tokenReview: review }),
      message: /issuer: issuer is not used with tokenReview/,
    },
    {
      name: 'tokenReview with inline bearer token',
      text: joinToken({
        issuer: undefined,
        jwks: undefined,
        tokenReview: { ...review, bearerToken: 'eyJhbGciOiJSUzI1NiJ9.e30.c2ln' },
      }),
      message:
        /tokenReview\.bearerToken: write the token as a \$\{env:NAME\} or \$\{file:PATH\} reference/,
    },
    {
      name: 'tokenReview over http',
      text: joinToken({
        issuer: undefined,
        jwks: undefined,
        tokenReview: { ...review, url: 'http://127.0.0.1:8001' },
      }),
      message: /tokenReview\.url: invalid url "http:\/\/127\.0\.0\.1:8001"/,
    },
    {
      name: 'tokenReview without bearer token',
      text: joinToken({
        issuer: undefined,
        jwks: undefined,
        tokenReview: { url: review.url },
      }),
      message: /tokenReview\.bearerToken: missing required field/,
    },
    {
      name: 'secret on a kubernetes token',
      text: joinToken({}, { token: 'a-long-enough-secret-value' }),
      message: /spec\.token: a kubernetes join token has no token/,
    },
    {
      name: 'expires and ttl together',
      text: joinToken({}, { ttl: '1h', expires: '2030-01-01T00:00:00Z' }),
      message: /set at most one of expires and ttl/,
    },
    {
      name: 'kubernetes block missing',
      text: JSON.stringify({
        apiVersion: 'writ.dev/v1alpha1',
        kind: 'JoinToken',
        metadata: { name: 'cluster-a' },
        spec: { bot: 'payments-worker', method: 'kubernetes' },
      }),
      message: /spec\.kubernetes: missing required field/,
    },
    {
      name: 'kubernetes block on a token join',
      text: JSON.stringify({
        apiVersion: 'writ.dev/v1alpha1',
        kind: 'JoinToken',
        metadata: { name: 'one-time' },
        spec: {
          bot: 'payments-worker',
          method: 'token',
          ttl: '1h',
          token: 'a-long-enough-secret-value',
          kubernetes: { allow: [] },
        },
      }),
      message:
        /spec\.kubernetes: kubernetes settings apply only to a join token with method: kubernetes/,
    },
  ]
  for (const entry of cases) {
    try {
      rejects(entry.text, entry.message)
    } catch (error) {
      throw new Error(`${entry.name}: ${(error as Error).message}`)
    }
  }
})
