import assert from 'node:assert/strict'
import { generateKeyPairSync, type KeyObject } from 'node:crypto'
import { test } from 'node:test'
import { calculateJwkThumbprint, exportJWK, type JWK, SignJWT } from 'jose'
import type { JwtBundle } from '../../src/agent/workload-api-jwt.js'
import { validateJwtSvid } from '../../src/agent/workload-api-validate.js'
import { isWritError } from '../../src/errors.js'

const NOW = Date.parse('2026-03-01T12:00:00Z')
const SECONDS = NOW / 1000
const SUBJECT = 'spiffe://writ.local/bot/ci-agent'
const clock = () => NOW

interface TestKey {
  privateKey: KeyObject
  jwk: JWK
  kid: string
}

async function makeKey(): Promise<TestKey> {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' })
  const jwk = await exportJWK(publicKey)
  const kid = await calculateJwkThumbprint(jwk)
  return { privateKey, jwk: { ...jwk, kid }, kid }
}

const signer = await makeKey()
const stranger = await makeKey()

function bundles(...keys: JWK[]): Map<string, JwtBundle> {
  return new Map([['spiffe://writ.local', { keys }]])
}

/** Signs a token with `key`, starting from valid JWT-SVID claims that `change` may edit. */
function sign(
  key: TestKey,
  change: { header?: Record<string, unknown>; claims?: Record<string, unknown> } = {},
): Promise<string> {
  const claims: Record<string, unknown> = {
    sub: SUBJECT,
    aud: ['reports'],
    exp: SECONDS + 300,
    iat: SECONDS,
    ...change.claims,
  }
  for (const [name, value] of Object.entries(claims)) if (value === undefined) delete claims[name]
  return new SignJWT(claims)
    .setProtectedHeader({ alg: 'ES256', kid: key.kid, typ: 'JWT', ...change.header })
    .sign(key.privateKey)
}

async function rejects(promise: Promise<unknown>, code: string, message: RegExp): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(isWritError(error, code), `expected ${code}, got ${String(error)}`)
    assert.match(error.message, message)
    return true
  })
}

test('valid token returns ID and claims', async () => {
  const token = await sign(signer)
  const result = await validateJwtSvid(token, 'reports', bundles(signer.jwk), clock)
  assert.equal(result.spiffeId, SUBJECT)
  assert.deepEqual(result.claims.aud, ['reports'])
  assert.equal(result.claims.exp, SECONDS + 300)
})

test('SPIFFE bundle key with use jwt-svid is accepted', async () => {
  const token = await sign(signer)
  const key = { ...signer.jwk, use: 'jwt-svid' }
  const result = await validateJwtSvid(token, 'reports', bundles(key), clock)
  assert.equal(result.spiffeId, SUBJECT)
})

test('token without kid tries every key', async () => {
  const token = await sign(signer, { header: { kid: undefined } })
  const { kid: _a, ...first } = stranger.jwk
  const { kid: _b, ...second } = signer.jwk
  const result = await validateJwtSvid(token, 'reports', bundles(first, second), clock)
  assert.equal(result.spiffeId, SUBJECT)
})

test('other audience is rejected', async () => {
  const token = await sign(signer)
  await rejects(
    validateJwtSvid(token, 'billing', bundles(signer.jwk), clock),
    'jwt_svid.invalid',
    /audience "billing"/,
  )
})

test('expired token is rejected', async () => {
  const token = await sign(signer, { claims: { exp: SECONDS - 120 } })
  await rejects(
    validateJwtSvid(token, 'reports', bundles(signer.jwk), clock),
    'jwt_svid.invalid',
    /expired/,
  )
})

test('token without exp is rejected', async () => {
  const token = await sign(signer, { claims: { exp: undefined } })
  await rejects(
    validateJwtSvid(token, 'reports', bundles(signer.jwk), clock),
    'jwt_svid.invalid',
    /"exp"/,
  )
})

test('token without aud is rejected', async () => {
  const token = await sign(signer, { claims: { aud: undefined } })
  await rejects(
    validateJwtSvid(token, 'reports', bundles(signer.jwk), clock),
    'jwt_svid.invalid',
    /"aud"/,
  )
})

test('HS256 token is rejected', async () => {
  const token = await new SignJWT({ sub: SUBJECT, aud: 'reports', exp: SECONDS + 60 })
    .setProtectedHeader({ alg: 'HS256' })
    .sign(new TextEncoder().encode('a shared secret of enough length!!'))
  await rejects(
    validateJwtSvid(token, 'reports', bundles(signer.jwk), clock),
    'jwt_svid.invalid',
    /"alg" header "HS256"/,
  )
})

test('typ other than JWT or JOSE is rejected', async () => {
  const token = await sign(signer, { header: { typ: 'at+jwt' } })
  await rejects(
    validateJwtSvid(token, 'reports', bundles(signer.jwk), clock),
    'jwt_svid.invalid',
    /"typ" header is "at\+jwt"/,
  )
})

test('subject that is not a SPIFFE ID is rejected', async () => {
  const token = await sign(signer, { claims: { sub: 'ci-agent' } })
  await rejects(
    validateJwtSvid(token, 'reports', bundles(signer.jwk), clock),
    'jwt_svid.invalid',
    /"sub" claim is not a SPIFFE ID/,
  )
})

test('foreign trust domain is untrusted', async () => {
  const token = await sign(signer, { claims: { sub: 'spiffe://other.example/bot/x' } })
  await rejects(
    validateJwtSvid(token, 'reports', bundles(signer.jwk), clock),
    'jwt_svid.invalid',
    /no JWT bundle is known for the trust domain other\.example/,
  )
})

test('unknown kid asks for a bundle refresh', async () => {
  const token = await sign(stranger)
  await rejects(
    validateJwtSvid(token, 'reports', bundles(signer.jwk), clock),
    'jwt_svid.key_unknown',
    new RegExp(`kid "${stranger.kid}"`),
  )
})

test('signature by another key is rejected', async () => {
  const token = await sign(stranger, { header: { kid: signer.kid } })
  await rejects(
    validateJwtSvid(token, 'reports', bundles(signer.jwk), clock),
    'jwt_svid.invalid',
    /signature does not verify/,
  )
})

test('malformed token is rejected', async () => {
  await rejects(
    validateJwtSvid('a.b', 'reports', bundles(signer.jwk), clock),
    'jwt_svid.invalid',
    /not a JWS/,
  )
})
