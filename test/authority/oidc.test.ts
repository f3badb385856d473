import assert from 'node:assert/strict'
import { before, test } from 'node:test'
import {
  createLocalJWKSet,
  exportJWK,
  generateKeyPair,
  type CryptoKey as JoseKey,
  type JWTPayload,
  type JWTVerifyGetKey,
  SignJWT,
} from 'jose'
import {
  mapClaimsToRoles,
  pkceChallenge,
  usernameFromClaims,
  validateIdToken,
} from '../../src/authority/oidc.js'
import { isWritError } from '../../src/errors.js'

const ISSUER = 'https://idp.example.test'
const CLIENT_ID = 'writ'
const NONCE = 'n-0S6_WzA2Mj'
const NOW = 1_800_000_000_000

let privateKey: JoseKey
let keys: JWTVerifyGetKey

before(async () => {
  const pair = await generateKeyPair('ES256')
  privateKey = pair.privateKey
  const jwk = { ...(await exportJWK(pair.publicKey)), kid: 'test-key', alg: 'ES256' }
  keys = createLocalJWKSet({ keys: [jwk] })
})

async function idToken(overrides: JWTPayload = {}, key: JoseKey = privateKey) {
  const seconds = Math.floor(NOW / 1000)
  const claims: JWTPayload = {
    iss: ISSUER,
    aud: CLIENT_ID,
    sub: 'user-123',
    nonce: NONCE,
    iat: seconds,
    exp: seconds + 300,
    ...overrides,
  }
  return new SignJWT(claims).setProtectedHeader({ alg: 'ES256', kid: 'test-key' }).sign(key)
}

const expected = () => ({ issuer: ISSUER, clientId: CLIENT_ID, nonce: NONCE, keys, now: NOW })

function rejectsWith(pattern: RegExp) {
  return (error: unknown) => {
    assert.ok(isWritError(error, 'sso.id_token_invalid'), String(error))
    assert.match(error.message, pattern)
    return true
  }
}

test('validateIdToken accepts a valid token', async () => {
  const payload = await validateIdToken(await idToken(), expected())
  assert.equal(payload.sub, 'user-123')
})

test('validateIdToken rejects another issuer', async () => {
  const token = await idToken({ iss: 'https://evil.example.test' })
  await assert.rejects(
    validateIdToken(token, expected()),
    rejectsWith(/names issuer "https:\/\/evil\.example\.test", not the configured/),
  )
})

test('validateIdToken rejects another audience', async () => {
  const token = await idToken({ aud: 'someone-else' })
  await assert.rejects(validateIdToken(token, expected()), rejectsWith(/claim aud/))
})

test('validateIdToken rejects several audiences without azp', async () => {
  const token = await idToken({ aud: [CLIENT_ID, 'other'] })
  await assert.rejects(validateIdToken(token, expected()), rejectsWith(/azp/))
})

test('validateIdToken rejects a wrong nonce', async () => {
  const token = await idToken({ nonce: 'replayed-nonce' })
  await assert.rejects(validateIdToken(token, expected()), rejectsWith(/nonce/))
})

test('validateIdToken rejects a missing nonce', async () => {
  const token = await idToken({ nonce: undefined })
  await assert.rejects(validateIdToken(token, expected()), rejectsWith(/nonce/))
})

test('validateIdToken rejects an expired token', async () => {
  const seconds = Math.floor(NOW / 1000)
  const token = await idToken({ iat: seconds - 7200, exp: seconds - 3600 })
  await assert.rejects(validateIdToken(token, expected()), rejectsWith(/expired/))
})

test('validateIdToken rejects a token signed by another key', async () => {
  const other = await generateKeyPair('ES256')
  const token = await idToken({}, other.privateKey)
  await assert.rejects(validateIdToken(token, expected()), rejectsWith(/signature/))
})

test('validateIdToken rejects a symmetric signature', async () => {
  const secret = new TextEncoder().encode('the client secret the server holds!')
  const seconds = Math.floor(NOW / 1000)
  const token = await new SignJWT({
    iss: ISSUER,
    aud: CLIENT_ID,
    sub: 'user-123',
    nonce: NONCE,
    iat: seconds,
    exp: seconds + 300,
  })
    .setProtectedHeader({ alg: 'HS256' })
    .sign(secret)
  await assert.rejects(validateIdToken(token, expected()), rejectsWith(/asymmetric/))
})

test('mapClaimsToRoles matches strings and lists', () => {
  const mappings = [
    { claim: 'groups', value: 'admins', roles: ['admin', 'reader'] },
    { claim: 'groups', value: 'devs', roles: ['reader', 'writer'] },
    { claim: 'department', value: 'ops', roles: ['ops'] },
  ]
  assert.deepEqual(mapClaimsToRoles({ groups: ['devs', 'admins'] }, mappings), [
    'admin',
    'reader',
    'writer',
  ])
  assert.deepEqual(mapClaimsToRoles({ department: 'ops' }, mappings), ['ops'])
  assert.deepEqual(mapClaimsToRoles({ groups: 'admins-not' }, mappings), [])
  assert.deepEqual(mapClaimsToRoles({}, mappings), [])
})

test('usernameFromClaims lowercases a valid name', () => {
  assert.equal(usernameFromClaims({ preferred_username: 'Alice' }, 'preferred_username'), 'alice')
})

test('usernameFromClaims names a bad claim value', () => {
  assert.throws(
    () => usernameFromClaims({ email: 'alice@example.com' }, 'email'),
    (error: unknown) =>
      isWritError(error, 'sso.username_invalid') &&
      error.message.includes('"alice@example.com"') &&
      error.message.includes('email claim'),
  )
  assert.throws(
    () => usernameFromClaims({}, 'preferred_username'),
    (error: unknown) =>
      isWritError(error, 'sso.username_invalid') && error.message.includes('is missing'),
  )
})

test('pkceChallenge matches RFC 7636 appendix B', () => {
  assert.equal(
    pkceChallenge('dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk'),
    'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM',
  )
})
