import assert from 'node:assert/strict'
import { mkdtempSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import { createLocalJWKSet, decodeProtectedHeader, jwtVerify } from 'jose'
import {
  createIdentityJwtMinter,
  type IdentityJwtMinter,
  MAX_IDENTITY_JWT_TTL_SECONDS,
} from '../../src/authority/identity-jwt.js'
import { type JwtSvidKey, loadOrCreateJwtSvidKey } from '../../src/authority/jwt-svid.js'
import { jwksDocument } from '../../src/authority/well-known.js'
import { isWritError } from '../../src/errors.js'
import type { PeerIdentity } from '../../src/identity/types.js'
import { botClaims } from '../identity/test-pki.js'

let dir: string
let key: JwtSvidKey
let now = Date.parse('2030-01-02T03:04:05.678Z')
let mint: IdentityJwtMinter

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'writ-identity-jwt-'))
  key = await loadOrCreateJwtSvidKey(dir)
  mint = createIdentityJwtMinter({ key, trustDomain: 'writ.test', clock: () => now })
})

after(() => rmSync(dir, { recursive: true, force: true }))

function identity(overrides: Partial<PeerIdentity> = {}): PeerIdentity {
  return {
    spiffeId: 'spiffe://writ.test/bot/ci-agent',
    name: 'ci-agent',
    serial: '4a1b',
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + 3_600_000),
    claims: botClaims({ roles: ['reader', 'writer'] }),
    ...overrides,
  }
}

/** Verifies a token against the published JWK Set, at the frozen time. */
async function verify(token: string, audience: string) {
  const keys = createLocalJWKSet(jwksDocument(key))
  return jwtVerify(token, keys, {
    audience,
    issuer: 'spiffe://writ.test',
    algorithms: ['ES256'],
    currentDate: new Date(now),
  })
}

test('signing key file is private', () => {
  assert.equal(statSync(join(dir, 'jwt_svid_key.pem')).mode & 0o777, 0o600)
})

test('identity JWT carries the caller', async () => {
  const signed = await mint(identity(), 'tracker')
  const { payload, protectedHeader } = await verify(signed.token, 'tracker')
  assert.equal(protectedHeader.alg, 'ES256')
  assert.equal(protectedHeader.kid, key.kid)
  assert.equal(protectedHeader.typ, 'JWT')
  assert.equal(payload.sub, 'spiffe://writ.test/bot/ci-agent')
  assert.equal(payload.aud, 'tracker')
  assert.equal(payload.iss, 'spiffe://writ.test')
  assert.equal(payload.kind, 'bot')
  assert.deepEqual(payload.roles, ['reader', 'writer'])
  assert.equal(payload.task, undefined)
  assert.match(String(payload.jti), /^[0-9a-f-]{36}$/)
  assert.equal(payload.iat, Math.floor(now / 1000))
  assert.equal((payload.exp as number) - (payload.iat as number), MAX_IDENTITY_JWT_TTL_SECONDS)
  assert.equal(signed.expiresAt, (payload.exp as number) * 1000)
  assert.equal(signed.issuedAt, (payload.iat as number) * 1000)
})

test('identity JWT for another audience fails', async () => {
  const signed = await mint(identity(), 'tracker')
  await assert.rejects(verify(signed.token, 'files'), { code: 'ERR_JWT_CLAIM_VALIDATION_FAILED' })
})

test('identity JWT expires with the TTL', async () => {
  const signed = await mint(identity(), 'tracker', 120)
  const { payload } = await verify(signed.token, 'tracker')
  assert.equal((payload.exp as number) - (payload.iat as number), 120)
  const later = now
  now += 121_000
  try {
    await assert.rejects(verify(signed.token, 'tracker'), { code: 'ERR_JWT_EXPIRED' })
  } finally {
    now = later
  }
})

test('identity JWT never outlives the certificate', async () => {
  const notAfter = new Date(now + 90_000)
  const signed = await mint(identity({ notAfter }), 'tracker')
  const { payload } = await verify(signed.token, 'tracker')
  assert.equal(payload.exp, Math.floor(notAfter.getTime() / 1000))
})

test('identity JWT names the task', async () => {
  const claims = botClaims({ task: { id: 't-42', reason: 'triage issue 7' }, depth: 1 })
  const signed = await mint(
    identity({ spiffeId: 'spiffe://writ.test/bot/ci-agent/task/t-42', claims }),
    'tracker',
  )
  const { payload } = await verify(signed.token, 'tracker')
  assert.deepEqual(payload.task, { id: 't-42', reason: 'triage issue 7' })
  assert.equal(decodeProtectedHeader(signed.token).kid, key.kid)
})

test('identity JWT for an expired certificate', async () => {
  const notAfter = new Date(now - 1000)
  await assert.rejects(mint(identity({ notAfter }), 'tracker'), (error: unknown) => {
    assert.ok(isWritError(error, 'gateway.identity_jwt_expired'))
    assert.equal(
      error.message,
      `cannot sign an identity JWT for spiffe://writ.test/bot/ci-agent: its certificate expired at ${notAfter.toISOString()}`,
    )
    return true
  })
})

test('identity JWT TTL over the maximum', async () => {
  await assert.rejects(mint(identity(), 'tracker', 301), {
    name: 'TypeError',
    message: 'ttlSeconds must be an integer from 1 to 300, got 301',
  })
})
