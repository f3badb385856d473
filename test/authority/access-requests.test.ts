import assert from 'node:assert/strict'
import { afterEach, beforeEach, test } from 'node:test'
import { createCsrPem, generateAgentKeys } from '../../src/agent/keys.js'
import {
  type AccessRequestService,
  type AccessRequestView,
  createAccessRequestService,
  PENDING_REQUEST_LIFETIME_MS,
} from '../../src/authority/access-requests.js'
import { isWritError } from '../../src/errors.js'
import { pemToDer } from '../../src/identity/pem.js'
import type { PeerIdentity, WritClaims } from '../../src/identity/types.js'
import { identityFromCertificate } from '../../src/identity/verify.js'
import { createLogger } from '../../src/log.js'
import { API_VERSION } from '../../src/policy/resource.js'
import { type AuthorityFixture, openAuthorityFixture } from './authority-fixture.js'

const PEER = '127.0.0.1:50000'
const HOUR = 3_600_000
const DEV = 'spiffe://writ.test/bot/dev-bot'
const LEAD = 'spiffe://writ.test/bot/lead-bot'

let now = Date.now()
let fixture: AuthorityFixture
let service: AccessRequestService

beforeEach(async () => {
  now = Date.now()
  fixture = await openAuthorityFixture(() => now)
  service = createAccessRequestService({
    ca: fixture.ca,
    store: fixture.store,
    audit: fixture.audit,
    clock: () => now,
    logger: createLogger({ level: 'error', sink: () => {} }),
  })
  await putRole('dev', { requests: { roles: ['deployer'], maxDuration: '2h' } })
  await putRole('lead', { review: { roles: ['deployer'] }, requests: { roles: ['deployer'] } })
  await putRole('deployer', { maxTtl: '90m' })
  await putRole('root', {})
  await fixture.store.putResource({
    apiVersion: API_VERSION,
    kind: 'Bot',
    metadata: { name: 'dev-bot' },
    spec: { roles: ['dev'], ttl: '2h' },
  })
})

afterEach(() => fixture.close())

async function putRole(name: string, spec: Record<string, unknown>): Promise<void> {
  await fixture.store.putResource({
    apiVersion: API_VERSION,
    kind: 'Role',
    metadata: { name },
    spec,
  })
}

function caller(spiffeId: string, roles: string[], extra: Partial<WritClaims> = {}): PeerIdentity {
  const name = spiffeId.split('/')[4] as string
  return {
    spiffeId,
    name,
    serial: 'abc123',
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + 3 * HOUR),
    claims: {
      version: 1,
      kind: 'bot',
      roles,
      traits: {},
      depth: 0,
      botInstance: 'instance-1',
      generation: 3,
      accessRequests: [],
      ...extra,
    },
  }
}

const dev = () => caller(DEV, ['dev'])
const lead = () => caller(LEAD, ['lead'])

async function rejectsWith(promise: Promise<unknown>, code: string, message: RegExp) {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(isWritError(error), `expected a WritError, got ${String(error)}`)
    assert.equal(error.code, code)
    assert.match(error.message, message)
    assert.match(String(error.fields.auditId), /^audit-\d+$/)
    return true
  })
}

async function created(ttl?: string): Promise<AccessRequestView> {
  const input = { roles: ['deployer'], reason: 'deploy 1.2', ...(ttl ? { ttl } : {}) }
  return service.create(dev(), input, PEER)
}

async function approved(): Promise<AccessRequestView> {
  const request = await created()
  return service.decide(lead(), request.id, 'approve', 'looks fine', PEER)
}

async function csrFor(spiffeId?: string): Promise<string> {
  const keys = await generateAgentKeys()
  return createCsrPem(keys, { commonName: 'dev-bot', ...(spiffeId ? { spiffeId } : {}) })
}

/** Certificate times have whole-second precision. */
function wholeSeconds(ms: number): number {
  return Math.floor(ms / 1000) * 1000
}

function lastEvent() {
  return fixture.audit.events.at(-1)
}

test('create stores a pending request', async () => {
  const request = await created()
  assert.match(request.id, /^[0-9a-f-]{36}$/)
  assert.equal(request.status, 'pending')
  assert.equal(request.requester, DEV)
  assert.deepEqual(request.roles, ['deployer'])
  assert.equal(request.ttl, '1h')
  assert.equal(request.reviewable, false)
  const event = lastEvent()
  assert.equal(event?.type, 'request.create')
  assert.equal(event?.outcome, 'success')
  assert.equal(event?.caller?.spiffeId, DEV)
  assert.equal(event?.details?.requestId, request.id)
  assert.equal(event?.details?.reason, 'deploy 1.2')
})

test('create keeps requested ttl', async () => {
  assert.equal((await created('2h')).ttl, '2h')
})

test('create rejects ttl over maximum', async () => {
  await rejectsWith(created('3h'), 'access.ttl_too_long', /requested TTL 3h exceeds the 2h/)
  assert.equal(lastEvent()?.outcome, 'denied')
  assert.equal(lastEvent()?.reason, 'ttl_too_long')
})

test('create rejects invalid ttl', async () => {
  await rejectsWith(created('soon'), 'access.invalid', /invalid ttl "soon"/)
})

test('create rejects unrequestable role', async () => {
  await rejectsWith(
    service.create(dev(), { roles: ['root'], reason: 'please' }, PEER),
    'access.not_requestable',
    /allows requesting role "root"/,
  )
  assert.equal(lastEvent()?.type, 'request.create')
  assert.equal(lastEvent()?.reason, 'not_requestable')
  assert.deepEqual(lastEvent()?.details?.roles, ['root'])
})

test('create rejects missing reason', async () => {
  await rejectsWith(
    service.create(dev(), { roles: ['deployer'], reason: '  ' }, PEER),
    'access.invalid',
    /reason is required/,
  )
})

test('create rejects multi-line reason', async () => {
  await rejectsWith(
    service.create(dev(), { roles: ['deployer'], reason: 'ok\n\u001b[2Jfake' }, PEER),
    'access.invalid',
    /reason contains control characters/,
  )
})

test('create rejects malformed roles', async () => {
  await rejectsWith(
    service.create(dev(), { roles: 'deployer', reason: 'x' }, PEER),
    'access.invalid',
    /roles must be a non-empty list of role names, got "deployer"/,
  )
})

test('task certificate cannot create', async () => {
  const task = caller(`${DEV}/task/t1`, ['dev'], { task: { id: 't1', reason: 'x' }, depth: 1 })
  await rejectsWith(
    service.create(task, { roles: ['deployer'], reason: 'x' }, PEER),
    'access.forbidden',
    /dev-bot\/task\/t1 is a task or delegated certificate and cannot request access/,
  )
})

test('requester cannot approve own request', async () => {
  const request = await created()
  await rejectsWith(
    service.decide(caller(DEV, ['dev', 'lead']), request.id, 'approve', 'me', PEER),
    'access.self_review',
    /cannot approve access request .* because it is its own request/,
  )
  assert.equal(lastEvent()?.type, 'request.approve')
  assert.equal(lastEvent()?.reason, 'self_review')
})

test("requester's task cannot review", async () => {
  const request = await created()
  const task = caller(`${DEV}/task/t1`, ['dev', 'lead'], { task: { id: 't1', reason: 'x' } })
  await rejectsWith(
    service.decide(task, request.id, 'deny', 'me', PEER),
    'access.self_review',
    /own request/,
  )
})

test('reviewer without review role rejected', async () => {
  const request = await created()
  const peerDev = caller('spiffe://writ.test/bot/other-dev', ['dev'])
  await rejectsWith(
    service.decide(peerDev, request.id, 'approve', 'ok', PEER),
    'access.review_forbidden',
    /no role of the reviewer \(dev\) allows reviewing role "deployer"/,
  )
})

test('approve sets the grant expiry', async () => {
  const request = await created('2h')
  now += 60_000
  const decided = await service.decide(lead(), request.id, 'approve', 'go ahead', PEER)
  assert.equal(decided.status, 'approved')
  assert.equal(decided.reviewer, LEAD)
  assert.equal(decided.reviewReason, 'go ahead')
  assert.equal(decided.expires, new Date(now + 2 * HOUR).toISOString())
  const event = lastEvent()
  assert.equal(event?.type, 'request.approve')
  assert.equal(event?.outcome, 'success')
  assert.equal(event?.details?.reviewer, LEAD)
  assert.equal(event?.details?.requester, DEV)
})

test('approve twice rejected', async () => {
  const request = await approved()
  await rejectsWith(
    service.decide(lead(), request.id, 'approve', 'again', PEER),
    'access.already_decided',
    /was already approved by spiffe:\/\/writ.test\/bot\/lead-bot; each request is decided once/,
  )
  await rejectsWith(
    service.decide(lead(), request.id, 'deny', 'changed my mind', PEER),
    'access.already_decided',
    /already approved/,
  )
})

test('concurrent reviews decide once', async () => {
  const request = await created()
  const other = caller('spiffe://writ.test/user/carol', ['lead'], { kind: 'user' })
  const results = await Promise.allSettled([
    service.decide(lead(), request.id, 'approve', 'yes', PEER),
    service.decide(other, request.id, 'deny', 'no', PEER),
  ])
  assert.equal(results.filter((result) => result.status === 'fulfilled').length, 1)
  const rejected = results.find((result) => result.status === 'rejected')
  assert.ok(isWritError(rejected?.reason, 'access.already_decided'))
})

test('unreviewed request expires', async () => {
  const request = await created()
  now += PENDING_REQUEST_LIFETIME_MS
  await rejectsWith(
    service.decide(lead(), request.id, 'approve', 'late', PEER),
    'access.expired',
    /expired unreviewed/,
  )
  const [listed] = await service.list(dev())
  assert.equal(listed?.status, 'expired')
})

test('unknown request id rejected', async () => {
  await rejectsWith(
    service.decide(lead(), 'no-such-request', 'approve', 'ok', PEER),
    'access.request_not_found',
    /access request no-such-request does not exist/,
  )
})

test('list shows own and reviewable requests', async () => {
  const request = await created()
  const own = await service.list(dev())
  assert.deepEqual(
    own.map((item) => [item.id, item.reviewable]),
    [[request.id, false]],
  )
  const reviewable = await service.list(lead())
  assert.deepEqual(
    reviewable.map((item) => [item.id, item.reviewable]),
    [[request.id, true]],
  )
  assert.deepEqual(await service.list(caller('spiffe://writ.test/bot/x', ['root'])), [])
})

test('assume issues certificate with grant', async () => {
  const request = await approved()
  const result = await service.assume(dev(), request.id, await csrFor(DEV), PEER)
  const identity = identityFromCertificate(pemToDer(result.certificate, ['CERTIFICATE'], 'test'))
  assert.equal(identity.spiffeId, DEV)
  assert.deepEqual(identity.claims.roles, ['dev', 'deployer'])
  assert.deepEqual(identity.claims.accessRequests, [request.id])
  assert.equal(identity.claims.generation, 3)
  assert.equal(identity.claims.botInstance, 'instance-1')
  // The grant lasts 1h, less than the deployer maxTtl of 90m and the bot ttl of 2h.
  assert.ok(identity.notAfter.getTime() <= Date.parse(request.expires as string))
  assert.equal(identity.notAfter.getTime(), wholeSeconds(now + HOUR))
  const event = lastEvent()
  assert.equal(event?.type, 'request.assume')
  assert.equal(event?.outcome, 'success')
  assert.equal(event?.details?.reviewer, LEAD)
  assert.equal(event?.details?.serial, identity.serial)
})

test('assumed certificate capped by role maxTtl', async () => {
  const request = await created('2h')
  await service.decide(lead(), request.id, 'approve', 'ok', PEER)
  const result = await service.assume(dev(), request.id, await csrFor(), PEER)
  assert.equal(result.notAfter.getTime(), wholeSeconds(now + 90 * 60_000))
})

test('assumed certificate capped by caller certificate', async () => {
  const request = await approved()
  const shortLived = { ...dev(), notAfter: new Date(now + 10 * 60_000) }
  const result = await service.assume(shortLived, request.id, await csrFor(), PEER)
  assert.equal(result.notAfter.getTime(), wholeSeconds(now + 10 * 60_000))
})

test('assumed certificate capped by bot ttl', async () => {
  await fixture.store.putResource({
    apiVersion: API_VERSION,
    kind: 'Bot',
    metadata: { name: 'dev-bot' },
    spec: { roles: ['dev'], ttl: '20m' },
  })
  const request = await approved()
  const result = await service.assume(dev(), request.id, await csrFor(), PEER)
  assert.equal(result.notAfter.getTime(), wholeSeconds(now + 20 * 60_000))
})

test('assume before approval rejected', async () => {
  const request = await created()
  await rejectsWith(
    service.assume(dev(), request.id, await csrFor(), PEER),
    'access.not_approved',
    /is still pending review; only an approved request can be assumed/,
  )
  assert.equal(lastEvent()?.type, 'request.assume')
  assert.equal(lastEvent()?.reason, 'not_approved')
})

test('assume of denied request rejected', async () => {
  const request = await created()
  await service.decide(lead(), request.id, 'deny', 'no deploys on Friday', PEER)
  await rejectsWith(
    service.assume(dev(), request.id, await csrFor(), PEER),
    'access.not_approved',
    /was denied by spiffe:\/\/writ.test\/bot\/lead-bot: no deploys on Friday/,
  )
})

test('assume of expired grant rejected', async () => {
  const request = await approved()
  now += HOUR
  await rejectsWith(
    service.assume(dev(), request.id, await csrFor(), PEER),
    'access.expired',
    /access request .* expired at/,
  )
  const [listed] = await service.list(dev())
  assert.equal(listed?.status, 'expired')
})

test('assume by another principal rejected', async () => {
  const request = await approved()
  await rejectsWith(
    service.assume(
      caller('spiffe://writ.test/bot/other-dev', ['dev']),
      request.id,
      await csrFor(),
      PEER,
    ),
    'access.not_requester',
    /belongs to spiffe:\/\/writ.test\/bot\/dev-bot, not to spiffe:\/\/writ.test\/bot\/other-dev/,
  )
})

test('assume with foreign CSR ID rejected', async () => {
  const request = await approved()
  await rejectsWith(
    service.assume(dev(), request.id, await csrFor(LEAD), PEER),
    'csr.invalid',
    /the CSR requests spiffe:\/\/writ.test\/bot\/lead-bot/,
  )
})

test('assume of deleted role rejected', async () => {
  const request = await approved()
  await fixture.store.deleteResource('Role', 'deployer')
  await rejectsWith(
    service.assume(dev(), request.id, await csrFor(), PEER),
    'access.role_not_found',
    /role "deployer" of access request .* no longer exists/,
  )
})
