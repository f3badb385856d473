import assert from 'node:assert/strict'
import { test } from 'node:test'
import { isWritError } from '../../src/errors.js'
import type { IdentityJwtConfig, MintIdentityJwt } from '../../src/gateway/deps.js'
import { createSessionIdentityJwt } from '../../src/gateway/identity-jwt.js'
import type { PeerIdentity } from '../../src/identity/types.js'
import { identity } from './harness.js'

/** A minter that returns numbered tokens valid for `ttlSeconds` from the fake clock. */
function countingMinter(clock: () => number) {
  const calls: Array<{ serial: string; audience: string; ttlSeconds: number }> = []
  const mint: MintIdentityJwt = async (caller, audience, ttlSeconds) => {
    calls.push({ serial: caller.serial, audience, ttlSeconds })
    const issuedAt = clock()
    return { token: `token-${calls.length}`, issuedAt, expiresAt: issuedAt + ttlSeconds * 1000 }
  }
  return { mint, calls }
}

function setup(config: IdentityJwtConfig = { header: 'Authorization', ttlSeconds: 300 }) {
  let now = 1_000_000
  const clock = () => now
  let current: PeerIdentity = identity('alice', 'serial-1')
  const minter = countingMinter(clock)
  const jwt = createSessionIdentityJwt({
    config,
    audience: 'tracker',
    mint: minter.mint,
    clock,
    secrets: ['static-secret'],
    identity: () => current,
  })
  return {
    jwt,
    calls: minter.calls,
    advance: (ms: number) => {
      now += ms
    },
    renew: (serial: string) => {
      current = identity('alice', serial)
    },
  }
}

test('session JWT goes in Authorization', async () => {
  const { jwt, calls } = setup()
  assert.deepEqual(await jwt.headers(), { Authorization: 'Bearer token-1' })
  assert.deepEqual(calls, [{ serial: 'serial-1', audience: 'tracker', ttlSeconds: 300 }])
})

test('session JWT in a custom header', async () => {
  const { jwt, calls } = setup({ header: 'X-Writ-Identity', ttlSeconds: 120 })
  assert.deepEqual(await jwt.headers(), { 'X-Writ-Identity': 'token-1' })
  assert.equal(calls[0]?.ttlSeconds, 120)
})

test('session JWT is reused until refresh', async () => {
  const { jwt, calls, advance } = setup()
  await jwt.headers()
  advance(199_000)
  assert.deepEqual(await jwt.headers(), { Authorization: 'Bearer token-1' })
  assert.equal(calls.length, 1)
  // A third of the 300 s lifetime is left 200 s after signing.
  advance(1000)
  assert.deepEqual(await jwt.headers(), { Authorization: 'Bearer token-2' })
  assert.equal(calls.length, 2)
})

test('session JWT follows a renewal', async () => {
  const { jwt, calls, renew } = setup()
  await jwt.headers()
  renew('serial-2')
  assert.deepEqual(await jwt.headers(), { Authorization: 'Bearer token-2' })
  assert.equal(calls[1]?.serial, 'serial-2')
})

test('concurrent requests share one signing', async () => {
  const { jwt, calls } = setup()
  const headers = await Promise.all([jwt.headers(), jwt.headers(), jwt.headers()])
  assert.equal(calls.length, 1)
  for (const value of headers) assert.deepEqual(value, { Authorization: 'Bearer token-1' })
})

test('session redactor hides recent tokens', async () => {
  const { jwt, advance } = setup()
  assert.equal(jwt.redactor.text('no token yet, static-secret'), 'no token yet, [REDACTED]')
  await jwt.headers()
  advance(250_000)
  await jwt.headers()
  const echoed = { content: [{ type: 'text', text: 'saw Bearer token-1 then token-2' }] }
  assert.equal(
    jwt.redactor.json(echoed),
    '{"content":[{"type":"text","text":"saw Bearer [REDACTED] then [REDACTED]"}]}',
  )
})

test('session JWT without a signing key', () => {
  assert.throws(
    () =>
      createSessionIdentityJwt({
        config: { header: 'Authorization', ttlSeconds: 300 },
        audience: 'tracker',
        mint: undefined,
        clock: Date.now,
        secrets: [],
        identity: () => identity(),
      }),
    (error: unknown) => {
      assert.ok(isWritError(error, 'gateway.identity_jwt_unavailable'))
      assert.equal(
        error.message,
        'MCP server "tracker" sets http.identityJwt, but this gateway has no JWT signing key',
      )
      return true
    },
  )
})
