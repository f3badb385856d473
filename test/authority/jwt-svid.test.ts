import assert from 'node:assert/strict'
import { mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, test } from 'node:test'
import { createLocalJWKSet, decodeJwt, decodeProtectedHeader, jwtVerify } from 'jose'
import {
  createJwtSvidIssuer,
  JWT_SVID_KEY_FILE,
  JWT_SVID_TTL_SECONDS,
  loadOrCreateJwtSvidKey,
  MAX_JWT_SVID_AUDIENCES,
} from '../../src/authority/jwt-svid.js'
import { isWritError } from '../../src/errors.js'
import type { PeerIdentity } from '../../src/identity/types.js'

const root = await mkdtemp(join(tmpdir(), 'writ-jwt-svid-'))
after(() => rm(root, { recursive: true, force: true }))

const NOW = Date.parse('2026-03-01T12:00:00Z')
const HOUR_MS = 3_600_000

function caller(notAfter = new Date(NOW + HOUR_MS)): PeerIdentity {
  return {
    spiffeId: 'spiffe://writ.local/bot/ci-agent',
    name: 'ci-agent',
    serial: '1f',
    notBefore: new Date(NOW - 60_000),
    notAfter,
    claims: {
      version: 1,
      kind: 'bot',
      roles: ['reader'],
      traits: {},
      depth: 0,
      generation: 1,
      accessRequests: [],
    },
  }
}

const key = await loadOrCreateJwtSvidKey(join(root, 'data'))
const issuer = createJwtSvidIssuer({ key, clock: () => NOW })

test('issued token carries the JWT-SVID claims', async () => {
  const issued = await issuer.issue(caller(), { audience: ['reports'] })
  const header = decodeProtectedHeader(issued.token)
  assert.deepEqual(Object.keys(header).sort(), ['alg', 'kid', 'typ'])
  assert.equal(header.alg, 'ES256')
  assert.equal(header.kid, key.kid)
  assert.equal(header.typ, 'JWT')
  const payload = decodeJwt(issued.token)
  assert.equal(payload.sub, 'spiffe://writ.local/bot/ci-agent')
  assert.deepEqual(payload.aud, ['reports'])
  assert.equal(payload.iat, NOW / 1000)
  assert.equal(payload.exp, NOW / 1000 + JWT_SVID_TTL_SECONDS)
  assert.equal(payload.jti, issued.id)
  assert.equal(issued.expiresAt.getTime(), NOW + JWT_SVID_TTL_SECONDS * 1000)
})

test('issued token verifies with the bundle', async () => {
  const issued = await issuer.issue(caller(), { audience: ['reports', 'billing'] })
  const bundle = issuer.bundle()
  assert.equal(bundle.keys.length, 1)
  assert.equal(bundle.keys[0]?.d, undefined)
  const { payload } = await jwtVerify(issued.token, createLocalJWKSet(bundle), {
    audience: 'billing',
    currentDate: new Date(NOW),
  })
  assert.deepEqual(payload.aud, ['reports', 'billing'])
})

test('token never outlives the certificate', async () => {
  const notAfter = new Date(NOW + 90_000)
  const issued = await issuer.issue(caller(notAfter), { audience: ['reports'] })
  assert.equal(issued.expiresAt.getTime(), notAfter.getTime())
  assert.equal(decodeJwt(issued.token).exp, notAfter.getTime() / 1000)
})

test('duplicate audience values collapse', async () => {
  const issued = await issuer.issue(caller(), { audience: ['reports', 'reports'] })
  assert.deepEqual(decodeJwt(issued.token).aud, ['reports'])
})

test('issue rejects bad audience lists', async () => {
  const cases: Array<[unknown, RegExp]> = [
    [[], /non-empty list/],
    ['reports', /non-empty list/],
    [Array.from({ length: MAX_JWT_SVID_AUDIENCES + 1 }, (_, i) => `a${i}`), /lists 11 values/],
    [['reports', 7], /invalid audience value 7/],
    [[''], /invalid audience value ""/],
    [['x'.repeat(513)], /invalid audience value "x{10}/],
  ]
  for (const [audience, message] of cases) {
    await assert.rejects(
      issuer.issue(caller(), { audience: audience as string[] }),
      (error: unknown) => {
        assert.ok(isWritError(error, 'jwt_svid.invalid_request'), String(error))
        assert.match(error.message, message)
        return true
      },
      JSON.stringify(audience).slice(0, 40),
    )
  }
})

test('issue rejects another SPIFFE ID', async () => {
  const other = 'spiffe://writ.local/bot/someone-else'
  await assert.rejects(issuer.issue(caller(), { audience: ['a'], spiffeId: other }), (error) => {
    assert.ok(isWritError(error, 'jwt_svid.forbidden'))
    assert.ok(error.message.includes(other))
    return true
  })
})

test('issue rejects an expired certificate', async () => {
  await assert.rejects(
    issuer.issue(caller(new Date(NOW - 1000)), { audience: ['a'] }),
    (error: unknown) => {
      assert.ok(isWritError(error, 'jwt_svid.certificate_expired'))
      assert.match(error.message, /spiffe:\/\/writ\.local\/bot\/ci-agent/)
      return true
    },
  )
})

test('signing key persists with mode 0600', async () => {
  const dataDir = join(root, 'persist')
  const first = await loadOrCreateJwtSvidKey(dataDir)
  const second = await loadOrCreateJwtSvidKey(dataDir)
  assert.equal(second.kid, first.kid)
  assert.equal((await stat(join(dataDir, JWT_SVID_KEY_FILE))).mode & 0o777, 0o600)
})

test('unreadable key file is reported', async () => {
  const dataDir = join(root, 'broken')
  await mkdir(dataDir, { recursive: true })
  const path = join(dataDir, JWT_SVID_KEY_FILE)
  await writeFile(path, 'not a key\n')
  await assert.rejects(loadOrCreateJwtSvidKey(dataDir), (error: unknown) => {
    assert.ok(isWritError(error, 'jwt_svid.key_invalid'))
    assert.ok(error.message.includes(path))
    return true
  })
})
