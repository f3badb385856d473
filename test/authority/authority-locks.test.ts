import assert from 'node:assert/strict'
import { afterEach, beforeEach, describe, test } from 'node:test'
import { createCsrPem, generateAgentKeys } from '../../src/agent/keys.js'
import type { JoinResult } from '../../src/authority/authority.js'
import { createLock, removeLock } from '../../src/authority/lock-service.js'
import type { Lock, LockTarget } from '../../src/authority/locks.js'
import { isWritError } from '../../src/errors.js'
import { pemToDer } from '../../src/identity/pem.js'
import type { PeerIdentity } from '../../src/identity/types.js'
import { identityFromCertificate } from '../../src/identity/verify.js'
import { FIXED_NOW } from '../identity/test-pki.js'
import { type AuthorityFixture, openAuthorityFixture } from './authority-fixture.js'

const PEER = '127.0.0.1:50000'
const TOKEN = 'secret-join-token-value-1'

let fixture: AuthorityFixture
let now = FIXED_NOW
let tokenName = ''

beforeEach(async () => {
  now = FIXED_NOW
  fixture = await openAuthorityFixture(() => now)
  await fixture.addRole('reader', '30m')
  await fixture.addBot('ci-agent', ['reader'])
  tokenName = await fixture.addToken(TOKEN, 'ci-agent')
})
afterEach(() => fixture.close())

function lockDeps() {
  return { store: fixture.store, audit: fixture.audit, clock: () => now }
}

function lockOn(target: LockTarget, ttlSeconds?: number): Promise<Lock> {
  return createLock(lockDeps(), {
    target,
    message: 'key leaked',
    createdBy: 'test',
    ...(ttlSeconds === undefined ? {} : { ttlSeconds }),
  })
}

async function join(): Promise<PeerIdentity> {
  const csrPem = createCsrPem(await generateAgentKeys(), { commonName: 'writ-agent' })
  return identityOf(await fixture.authority.join({ token: TOKEN, csrPem }, PEER))
}

async function renew(identity: PeerIdentity): Promise<PeerIdentity> {
  const csrPem = createCsrPem(await generateAgentKeys(), {
    commonName: 'ci-agent',
    spiffeId: identity.spiffeId,
  })
  return identityOf(await fixture.authority.renew(identity, csrPem, PEER))
}

function identityOf(result: JoinResult): PeerIdentity {
  return identityFromCertificate(pemToDer(result.certificate, ['CERTIFICATE'], 'test'))
}

async function rejectsWith(promise: Promise<unknown>, code: string, ...parts: string[]) {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(isWritError(error), `expected a WritError, got ${String(error)}`)
    assert.equal(error.code, code)
    for (const part of parts) {
      assert.ok(error.message.includes(part), `message does not name ${part}: ${error.message}`)
    }
    return true
  })
}

describe('join under a lock', () => {
  test('token lock refuses join', async () => {
    const lock = await lockOn({ token: tokenName })
    await rejectsWith(join(), 'join.locked', lock.id, 'key leaked', tokenName)
    const refusal = fixture.audit.events.at(-1)
    assert.equal(refusal?.type, 'join')
    assert.equal(refusal?.outcome, 'denied')
    assert.equal(refusal?.reason, 'locked')
    assert.equal(refusal?.details?.lockId, lock.id)
  })

  test('bot lock refuses join', async () => {
    const lock = await lockOn({ bot: 'ci-agent' })
    await rejectsWith(join(), 'join.locked', lock.id, 'bot "ci-agent"')
  })

  test('role lock refuses join', async () => {
    const lock = await lockOn({ role: 'reader' })
    await rejectsWith(join(), 'join.locked', lock.id)
  })

  test('lock on another token allows join', async () => {
    await lockOn({ token: 'other-token' })
    const identity = await join()
    assert.equal(identity.spiffeId, 'spiffe://writ.test/bot/ci-agent')
  })
})

describe('renewal under a lock', () => {
  const targets: [name: string, target: (identity: PeerIdentity) => LockTarget][] = [
    ['bot', () => ({ bot: 'ci-agent' })],
    ['bot instance', (identity) => ({ botInstance: identity.claims.botInstance as string })],
    ['role', () => ({ role: 'reader' })],
    ['serial', (identity) => ({ serial: identity.serial })],
  ]
  for (const [name, target] of targets) {
    test(`${name} lock refuses renewal`, async () => {
      const identity = await join()
      const lock = await lockOn(target(identity))
      await rejectsWith(renew(identity), 'renew.locked', lock.id, 'key leaked')
      const refusal = fixture.audit.events.at(-1)
      assert.equal(refusal?.type, 'certificate.renew')
      assert.equal(refusal?.reason, 'locked')
      assert.equal(refusal?.details?.lockId, lock.id)
    })
  }

  test('expired lock allows renewal', async () => {
    const identity = await join()
    await lockOn({ bot: 'ci-agent' }, 60)
    await rejectsWith(renew(identity), 'renew.locked')
    now += 61_000
    const renewed = await renew(identity)
    assert.equal(renewed.claims.generation, 2)
  })

  test('unlock allows renewal', async () => {
    const identity = await join()
    const lock = await lockOn({ bot: 'ci-agent' })
    await rejectsWith(renew(identity), 'renew.locked')
    await removeLock(lockDeps(), lock.id, 'test')
    const removal = fixture.audit.events.at(-1)
    assert.equal(removal?.type, 'lock.remove')
    assert.equal(removal?.details?.lockId, lock.id)
    assert.equal((await renew(identity)).claims.generation, 2)
  })

  test('unknown lock id is not found', async () => {
    await rejectsWith(
      removeLock(lockDeps(), 'lock-missing', 'test'),
      'lock.not_found',
      'lock-missing',
    )
  })
})

describe('renewal generations', () => {
  test('renewal increments generation', async () => {
    const first = await join()
    const second = await renew(first)
    const third = await renew(second)
    assert.equal(first.claims.generation, 1)
    assert.equal(second.claims.generation, 2)
    assert.equal(third.claims.generation, 3)
    assert.equal(third.claims.botInstance, first.claims.botInstance)
  })

  test('copied certificate renewal locks the instance', async () => {
    const original = await join()
    const instance = original.claims.botInstance as string
    const renewed = await renew(original)

    await rejectsWith(renew(original), 'renew.generation_stale', 'generation 1', instance)
    const locks = await fixture.store.listLocks()
    assert.equal(locks.length, 1)
    const lock = locks[0] as Lock
    assert.deepEqual(lock.target, { botInstance: instance })
    assert.equal(lock.createdBy, 'authority')

    const created = fixture.audit.events.find((event) => event.type === 'lock.create')
    assert.ok(created, 'no lock.create event')
    assert.equal(created.reason, 'generation_stale')
    assert.equal(created.details?.lockId, lock.id)
    assert.equal(created.caller?.serial, original.serial)
    const refusal = fixture.audit.events.at(-1)
    assert.equal(refusal?.type, 'certificate.renew')
    assert.equal(refusal?.outcome, 'denied')
    assert.equal(refusal?.reason, 'generation_stale')
    assert.equal(refusal?.details?.lockId, lock.id)

    // The newest certificate is locked too: which holder is the original cannot be told apart.
    await rejectsWith(renew(renewed), 'renew.locked', lock.id)
  })

  test('stale renewal certificate is not recorded', async () => {
    const original = await join()
    await renew(original)
    await rejectsWith(renew(original), 'renew.generation_stale')
    const latest = await fixture.store.recordRenewal(
      {
        serial: 'ffff',
        spiffeId: original.spiffeId,
        kind: 'bot',
        notBefore: now,
        notAfter: now + 1000,
        botInstance: original.claims.botInstance as string,
        generation: 2,
      },
      1,
    )
    assert.deepEqual(latest, { ok: false, latest: 2 })
  })

  test('concurrent renewals from one certificate', async () => {
    const original = await join()
    const results = await Promise.allSettled([renew(original), renew(original)])
    const fulfilled = results.filter((result) => result.status === 'fulfilled')
    const rejected = results.filter((result) => result.status === 'rejected')
    assert.equal(fulfilled.length, 1)
    assert.equal(rejected.length, 1)
    const reason = (rejected[0] as PromiseRejectedResult).reason
    assert.ok(isWritError(reason, 'renew.generation_stale'), String(reason))
  })
})
