import assert from 'node:assert/strict'
import { X509Certificate } from 'node:crypto'
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, test } from 'node:test'
import { type CertificateAuthority, loadOrCreateCa } from '../../src/authority/ca.js'
import { CA_STATE_META_KEY, parseCaState } from '../../src/authority/ca-state.js'
import {
  beginRotation,
  CA_STATE_PICKUP_MS,
  describeRotation,
  finishRotation,
  finishRotationIfDue,
  type RotationHost,
  switchSigning,
} from '../../src/authority/rotation.js'
import { isWritError, type WritError } from '../../src/errors.js'
import { createCsr, generateKeyPair } from '../../src/identity/keys.js'
import { openSqliteStore } from '../../src/store/sqlite.js'
import type { Store } from '../../src/store/store.js'
import { botClaims, FIXED_NOW } from '../identity/test-pki.js'
import { AuditStub } from './authority-fixture.js'

const directories: string[] = []
const stores: Store[] = []
after(async () => {
  for (const store of stores) await store.close()
  for (const dir of directories) rmSync(dir, { recursive: true, force: true })
})

interface Fixture {
  host: RotationHost & { audit: AuditStub }
  advance(ms: number): void
  now(): number
  /** Issues and records a bot certificate, as the authority does. */
  issue(ttlSeconds?: number): Promise<{ certPem: string; notAfter: Date }>
}

async function openFixture(): Promise<Fixture> {
  let now = FIXED_NOW
  const clock = () => now
  const dataDir = mkdtempSync(join(tmpdir(), 'writ-rotation-'))
  directories.push(dataDir)
  const store = await openSqliteStore(join(dataDir, 'writ.db'), { clock })
  stores.push(store)
  const ca = await loadOrCreateCa(dataDir, { trustDomain: 'writ.test', clock, stateStore: store })
  const audit = new AuditStub()
  const host = { dataDir, trustDomain: 'writ.test', store, ca, audit, clock }
  return {
    host,
    advance: (ms) => {
      now += ms
    },
    now: () => now,
    issue: (ttlSeconds = 600) => issueRecorded(host, ttlSeconds),
  }
}

async function issueRecorded(host: RotationHost, ttlSeconds: number) {
  const issued = await host.ca.issue({
    csrPem: await createCsr(await generateKeyPair(), { commonName: 'ignored' }),
    spiffeId: 'spiffe://writ.test/bot/rotating',
    commonName: 'rotating',
    ttlSeconds,
    claims: botClaims(),
  })
  await host.store.recordCertificate({
    serial: issued.serial,
    spiffeId: 'spiffe://writ.test/bot/rotating',
    kind: 'bot',
    notBefore: issued.notBefore.getTime(),
    notAfter: issued.notAfter.getTime(),
  })
  return issued
}

function caOf(ca: CertificateAuthority, generation: number): X509Certificate {
  const found = ca.trusted.find((trusted) => trusted.generation === generation)
  assert.ok(found, `CA ${generation} is not trusted`)
  return new X509Certificate(found.certPem)
}

function signedBy(certPem: string, issuer: X509Certificate): boolean {
  return new X509Certificate(certPem).verify(issuer.publicKey)
}

function expectCode(code: string) {
  return (error: unknown) => {
    assert.ok(isWritError(error), `expected a WritError, got ${String(error)}`)
    assert.equal(error.code, code, error.message)
    return true
  }
}

test('init adds a CA and keeps the signer', async () => {
  const { host } = await openFixture()
  const pinBefore = host.ca.pin
  const state = await beginRotation(host)

  assert.equal(state.sequence, 2)
  assert.deepEqual(state.trusted, [1, 2])
  assert.equal(state.signing, 1)
  assert.equal(host.ca.pin, pinBefore)
  assert.equal(host.ca.trusted.length, 2)
  assert.equal(host.ca.bundlePem, host.ca.trusted.map((ca) => ca.certPem).join(''))
  assert.equal(statSync(join(host.dataDir, 'ca-2_key.pem')).mode & 0o777, 0o600)
  assert.equal(statSync(join(host.dataDir, 'ca-2.pem')).mode & 0o777, 0o600)
  assert.match(caOf(host.ca, 2).subject, /CN=Writ CA writ\.test #2/)
  const issued = await issueRecorded(host, 600)
  assert.ok(signedBy(issued.certPem, caOf(host.ca, 1)))
  const event = host.audit.events.at(-1)
  assert.equal(event?.type, 'ca.rotate')
  assert.equal(event?.reason, 'added')
  assert.equal(event?.details?.toPin, host.ca.trusted[1]?.pin)
  assert.equal(event?.details?.fromPin, pinBefore)
})

test('second init is rejected', async () => {
  const { host } = await openFixture()
  await beginRotation(host)
  await assert.rejects(beginRotation(host), (error: WritError) => {
    expectCode('ca.rotation_in_progress')(error)
    assert.equal(
      error.message,
      'a CA rotation from CA 1 to CA 2 is already in phase added; complete it with writ ca rotate switch',
    )
    return true
  })
})

test('switch waits for older certificates', async () => {
  const fixture = await openFixture()
  const { host } = fixture
  const old = await fixture.issue(600)
  await beginRotation(host)
  fixture.advance(10_000)

  await assert.rejects(switchSigning(host), (error: WritError) => {
    expectCode('ca.rotation_too_early')(error)
    const allowedAt = old.notAfter.toISOString()
    assert.equal(error.fields.allowedAt, allowedAt)
    assert.match(error.message, new RegExp(`before ${allowedAt}`))
    return true
  })

  fixture.advance(old.notAfter.getTime() - fixture.now())
  await switchSigning(host)
  assert.equal(host.ca.state.signing, 2)
  assert.equal(host.ca.pin, host.ca.trusted[1]?.pin)
  const issued = await fixture.issue(600)
  assert.ok(signedBy(issued.certPem, caOf(host.ca, 2)))
  const server = await host.ca.serverCertificate(['127.0.0.1'])
  assert.ok(signedBy(server.certPem, caOf(host.ca, 2)))
})

test('switch waits for the pickup margin', async () => {
  const fixture = await openFixture()
  await beginRotation(fixture.host)
  await assert.rejects(switchSigning(fixture.host), expectCode('ca.rotation_too_early'))
  fixture.advance(CA_STATE_PICKUP_MS)
  await switchSigning(fixture.host)
  assert.equal(fixture.host.ca.state.rotation?.phase, 'switched')
})

test('switch with force skips the wait', async () => {
  const fixture = await openFixture()
  await fixture.issue(3600)
  await beginRotation(fixture.host)
  await switchSigning(fixture.host, { force: true })
  assert.equal(fixture.host.ca.state.signing, 2)
  assert.equal(fixture.host.audit.events.at(-1)?.details?.forced, true)
})

test('finish retires the old CA', async () => {
  const fixture = await openFixture()
  const { host } = fixture
  await beginRotation(host)
  fixture.advance(CA_STATE_PICKUP_MS)
  await switchSigning(host)
  const signedByOld = await fixture.issue(120)
  fixture.advance(1000)

  await assert.rejects(finishRotation(host), (error: WritError) => {
    expectCode('ca.rotation_too_early')(error)
    assert.equal(error.fields.allowedAt, signedByOld.notAfter.toISOString())
    assert.match(error.message, /only the old CA validates them/)
    return true
  })
  fixture.advance(signedByOld.notAfter.getTime() - fixture.now())
  const state = await finishRotation(host)

  assert.deepEqual(state.trusted, [2])
  assert.deepEqual(state.retired, [1])
  assert.equal(state.sequence, 3)
  assert.equal(state.rotation, undefined)
  assert.equal(host.ca.bundlePem, host.ca.trusted[0]?.certPem)
  assert.equal(host.ca.trusted[0]?.generation, 2)
  assert.equal(existsSync(join(host.dataDir, 'ca_key.pem')), false)
  assert.equal(existsSync(join(host.dataDir, 'ca.pem')), true)
  const event = host.audit.events.at(-1)
  assert.equal(event?.reason, 'retired')
  assert.equal(event?.details?.automatic, false)
  assert.match(String(event?.details?.fromPin), /^sha256:/)
})

test('finish in wrong phase is rejected', async () => {
  const fixture = await openFixture()
  await assert.rejects(finishRotation(fixture.host), (error: WritError) => {
    expectCode('ca.rotation_phase')(error)
    assert.equal(
      error.message,
      'cannot finish the CA: no rotation is in progress; start one with writ ca rotate init',
    )
    return true
  })
  await beginRotation(fixture.host)
  await assert.rejects(finishRotation(fixture.host, { force: true }), (error: WritError) => {
    expectCode('ca.rotation_phase')(error)
    assert.equal(
      error.message,
      'cannot finish the CA: CA 2 does not sign yet; run writ ca rotate switch first',
    )
    return true
  })
})

test('switch in wrong phase is rejected', async () => {
  const fixture = await openFixture()
  await assert.rejects(switchSigning(fixture.host), (error: WritError) => {
    expectCode('ca.rotation_phase')(error)
    assert.match(error.message, /no rotation is in progress/)
    return true
  })
  await beginRotation(fixture.host)
  await switchSigning(fixture.host, { force: true })
  await assert.rejects(switchSigning(fixture.host, { force: true }), (error: WritError) => {
    expectCode('ca.rotation_phase')(error)
    assert.equal(
      error.message,
      'cannot switch the CA: CA 2 already signs; run writ ca rotate finish next',
    )
    return true
  })
})

test('another process picks up the state', async () => {
  const fixture = await openFixture()
  const { host } = fixture
  const other = await loadOrCreateCa(host.dataDir, {
    trustDomain: 'writ.test',
    clock: fixture.now,
    stateStore: host.store,
  })
  await beginRotation(host)
  assert.equal(other.trusted.length, 1)
  assert.equal(await other.refresh(), true)
  assert.equal(other.trusted.length, 2)
  assert.equal(await other.refresh(), false)

  await switchSigning(host, { force: true })
  // Issuing re-reads the state, so it signs with the new CA without an explicit refresh.
  const issued = await other.issue({
    csrPem: await createCsr(await generateKeyPair(), { commonName: 'ignored' }),
    spiffeId: 'spiffe://writ.test/bot/other',
    commonName: 'other',
    ttlSeconds: 60,
    claims: botClaims(),
  })
  assert.ok(signedBy(issued.certPem, caOf(host.ca, 2)))
  assert.equal(other.pin, host.ca.pin)
})

test('reload after finish uses the new CA', async () => {
  const fixture = await openFixture()
  await beginRotation(fixture.host)
  await switchSigning(fixture.host, { force: true })
  await finishRotation(fixture.host, { force: true })
  const reloaded = await loadOrCreateCa(fixture.host.dataDir, {
    trustDomain: 'writ.test',
    clock: fixture.now,
    stateStore: fixture.host.store,
  })
  assert.equal(reloaded.pin, fixture.host.ca.pin)
  assert.deepEqual(
    reloaded.trusted.map((ca) => ca.generation),
    [2],
  )

  const next = await beginRotation(fixture.host)
  assert.deepEqual(next.trusted, [2, 3])
  assert.equal(next.rotation?.from, 2)
})

test('automatic finish waits for the grace period', async () => {
  const fixture = await openFixture()
  const { host } = fixture
  await beginRotation(host, { graceSeconds: 60 })
  fixture.advance(CA_STATE_PICKUP_MS)
  await switchSigning(host)
  const status = await describeRotation(host)
  assert.equal(status.rotation?.automaticFinishAt, new Date(fixture.now() + 60_000).toISOString())

  fixture.advance(30_000)
  assert.equal(await finishRotationIfDue(host), false)
  assert.equal(host.ca.trusted.length, 2)
  fixture.advance(31_000)
  assert.equal(await finishRotationIfDue(host), true)
  assert.deepEqual(host.ca.state.trusted, [2])
  assert.equal(host.audit.events.at(-1)?.details?.automatic, true)
  assert.equal(await finishRotationIfDue(host), false)
})

test('automatic finish needs a grace period', async () => {
  const fixture = await openFixture()
  await beginRotation(fixture.host)
  await switchSigning(fixture.host, { force: true })
  fixture.advance(86_400_000)
  assert.equal(await finishRotationIfDue(fixture.host), false)
  assert.equal(fixture.host.ca.state.rotation?.phase, 'switched')
})

test('concurrent state change is detected', async () => {
  const fixture = await openFixture()
  const { store } = fixture.host
  let reads = 0
  const racing: Store = Object.create(store)
  racing.getMeta = async (key: string) => {
    if (key === CA_STATE_META_KEY && ++reads === 2) return '{"changed":true}'
    return store.getMeta(key)
  }
  await assert.rejects(beginRotation({ ...fixture.host, store: racing }), (error: WritError) => {
    expectCode('ca.rotation_conflict')(error)
    assert.match(error.message, /writ ca status/)
    return true
  })
})

test('status reports phase and pins', async () => {
  const fixture = await openFixture()
  const stable = await describeRotation(fixture.host)
  assert.equal(stable.phase, 'stable')
  assert.equal(stable.trusted.length, 1)
  assert.equal(stable.trusted[0]?.pin, fixture.host.ca.pin)
  assert.equal(stable.rotation, undefined)

  await beginRotation(fixture.host)
  const added = await describeRotation(fixture.host)
  assert.equal(added.phase, 'added')
  assert.equal(added.sequence, 2)
  assert.deepEqual(
    added.trusted.map((ca) => [ca.generation, ca.signing]),
    [
      [1, true],
      [2, false],
    ],
  )
  assert.equal(
    added.rotation?.nextStepAllowedAt,
    new Date(fixture.now() + CA_STATE_PICKUP_MS).toISOString(),
  )
})

test('CA state with a missing CA file', async () => {
  const fixture = await openFixture()
  const state = { version: 1, sequence: 2, signing: 1, trusted: [1, 5], retired: [] }
  await fixture.host.store.setMeta(CA_STATE_META_KEY, JSON.stringify(state))
  await assert.rejects(fixture.host.ca.refresh(), (error: WritError) => {
    expectCode('ca.incomplete')(error)
    assert.match(error.message, /ca-5\.pem is missing/)
    return true
  })
})

test('CA state parsing rejects bad values', () => {
  const cases: Array<[string, string]> = [
    ['{', 'the value is not JSON'],
    ['{"version":2}', 'version 2 is not 1'],
    ['{"version":1,"sequence":0,"signing":1,"trusted":[1]}', 'sequence is not a positive integer'],
    ['{"version":1,"sequence":1,"signing":2,"trusted":[1]}', 'the signing CA 2 is not in trusted'],
    ['{"version":1,"sequence":1,"signing":1,"trusted":[1,1]}', 'trusted repeats a CA'],
    [
      '{"version":1,"sequence":2,"signing":1,"trusted":[1,2],"rotation":{"phase":"switched","from":1,"to":2,"addedAt":5,"switchedAt":6}}',
      'rotation.phase switched needs CA 2 to sign',
    ],
    [
      '{"version":1,"sequence":2,"signing":1,"trusted":[1,2],"rotation":{"phase":"done","from":1,"to":2,"addedAt":5}}',
      'rotation.phase "done" is not added or switched',
    ],
  ]
  for (const [text, reason] of cases) {
    assert.throws(
      () => parseCaState(text),
      (error: WritError) => {
        expectCode('ca.state_invalid')(error)
        assert.equal(error.fields.reason, reason, text)
        assert.match(error.message, /key ca_state/)
        return true
      },
    )
  }
})
