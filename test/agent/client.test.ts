import assert from 'node:assert/strict'
import { X509Certificate } from 'node:crypto'
import { after, before, test } from 'node:test'
import { joinWithToken, renew } from '../../src/agent/client.js'
import { generateAgentKeys } from '../../src/agent/keys.js'
import { isWritError } from '../../src/errors.js'
import { createTestCa, serialOf } from './test-ca.js'
import { TestAuthority } from './test-server.js'

let authority: TestAuthority
before(async () => {
  authority = await TestAuthority.start()
})
after(() => authority.stop())

/** Asserts a rejection with the given code and exact message. */
async function rejectsWith(promise: Promise<unknown>, code: string, message: string | RegExp) {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(isWritError(error), `expected a WritError, got ${String(error)}`)
    assert.equal(error.code, code)
    if (typeof message === 'string') assert.equal(error.message, message)
    else assert.match(error.message, message)
    return true
  })
}

test('join returns an SVID for the key', async () => {
  authority.addToken('token-join', 'ci-agent')
  const keys = await generateAgentKeys()
  const identity = await joinWithToken({
    server: authority.address,
    token: 'token-join',
    caPin: authority.ca.pin.toUpperCase().replace('SHA256', 'sha256'),
    keys,
  })
  assert.equal(identity.spiffeId, 'spiffe://writ.test/bot/ci-agent')
  assert.equal(identity.bundlePem, authority.ca.certPem)
  assert.equal(identity.keyPem, keys.privateKeyPem)
  const leaf = new X509Certificate(identity.certPem)
  assert.ok(leaf.checkPrivateKey(keys.privateKey))
  assert.equal(identity.serial, serialOf(identity.certPem))
  assert.deepEqual(authority.joins.at(-1), 'token-join')
})

test('join with a wrong pin sends no token', async () => {
  authority.addToken('token-pin', 'ci-agent')
  const otherPin = createTestCa('Other CA').pin
  const joinsBefore = authority.joins.length
  await rejectsWith(
    joinWithToken({
      server: authority.address,
      token: 'token-pin',
      caPin: otherPin,
      keys: await generateAgentKeys(),
    }),
    'agent.ca_pin_mismatch',
    `CA pin mismatch: expected ${otherPin}, the server at ${authority.address} presented ${authority.ca.pin}`,
  )
  assert.equal(authority.joins.length, joinsBefore)
})

test('join rejects a malformed pin', async () => {
  await rejectsWith(
    joinWithToken({
      server: authority.address,
      token: 'x',
      caPin: 'abc',
      keys: await generateAgentKeys(),
    }),
    'agent.ca_pin_invalid',
    'invalid CA pin "abc": expected sha256: followed by 64 hex digits (the SHA-256 of the CA public key)',
  )
})

test('join explains each token error', async () => {
  authority.addToken('token-used', 'ci-agent')
  authority.addToken('token-old', 'ci-agent', Date.now() - 1000)
  const join = async (token: string) =>
    joinWithToken({
      server: authority.address,
      token,
      caPin: authority.ca.pin,
      keys: await generateAgentKeys(),
    })
  await join('token-used')

  await rejectsWith(
    join('token-used'),
    'join.token_used',
    'join token has already been used; create a new one with writ bots add',
  )
  await rejectsWith(
    join('token-old'),
    'join.token_expired',
    'join token has expired; create a new one with writ bots add',
  )
  await rejectsWith(
    join('token-never-made'),
    'join.token_unknown',
    `join token is not known to the Writ server at ${authority.address}; check the token or create a new one with writ bots add`,
  )
})

test('join names an unreachable server', async () => {
  const gone = await TestAuthority.start()
  await gone.stop()
  await rejectsWith(
    joinWithToken({
      server: gone.address,
      token: 'x',
      caPin: gone.ca.pin,
      keys: await generateAgentKeys(),
    }),
    'agent.server_unreachable',
    `failed to connect to the Writ server at ${gone.address} (ECONNREFUSED); check --server and that the server is running`,
  )
})

test('join rejects a server certificate for another host', async () => {
  const elsewhere = await TestAuthority.start({ serverNames: { dns: ['elsewhere.test'] } })
  elsewhere.addToken('token-host', 'ci-agent')
  try {
    await rejectsWith(
      joinWithToken({
        server: elsewhere.address,
        token: 'token-host',
        caPin: elsewhere.ca.pin,
        keys: await generateAgentKeys(),
      }),
      'agent.server_certificate_invalid',
      /^the Writ server at 127\.0\.0\.1:\d+ presented an invalid certificate: .*127\.0\.0\.1/,
    )
    assert.equal(elsewhere.joins.length, 0)
  } finally {
    await elsewhere.stop()
  }
})

test('renew presents the current certificate', async () => {
  authority.addToken('token-renew', 'renewer')
  const firstKeys = await generateAgentKeys()
  const current = await joinWithToken({
    server: authority.address,
    token: 'token-renew',
    caPin: authority.ca.pin,
    keys: firstKeys,
  })
  const nextKeys = await generateAgentKeys()
  const next = await renew({ server: authority.address, current, keys: nextKeys })
  assert.equal(authority.renewals.at(-1), current.serial)
  assert.notEqual(next.serial, current.serial)
  assert.equal(next.spiffeId, current.spiffeId)
  assert.ok(new X509Certificate(next.certPem).checkPrivateKey(nextKeys.privateKey))
})

test('renew passes on a rejection code', async () => {
  authority.addToken('token-locked', 'locked-bot')
  const current = await joinWithToken({
    server: authority.address,
    token: 'token-locked',
    caPin: authority.ca.pin,
    keys: await generateAgentKeys(),
  })
  authority.failures.push({ status: 403, code: 'lock.active' })
  await rejectsWith(
    renew({ server: authority.address, current, keys: await generateAgentKeys() }),
    'lock.active',
    `the Writ server at ${authority.address} rejected the request with HTTP 403: queued failure`,
  )
  authority.failures.push({ status: 503 })
  await rejectsWith(
    renew({ server: authority.address, current, keys: await generateAgentKeys() }),
    'agent.server_error',
    `the Writ server at ${authority.address} failed with HTTP 503: queued failure`,
  )
})
