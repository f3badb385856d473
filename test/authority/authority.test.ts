import assert from 'node:assert/strict'
import { X509Certificate } from 'node:crypto'
import { join } from 'node:path'
import { afterEach, beforeEach, test } from 'node:test'
import Database from 'better-sqlite3'
import { type AgentKeys, createCsrPem, generateAgentKeys } from '../../src/agent/keys.js'
import type { JoinResult } from '../../src/authority/authority.js'
import { isWritError } from '../../src/errors.js'
import { pemToDer } from '../../src/identity/pem.js'
import type { PeerIdentity } from '../../src/identity/types.js'
import { identityFromCertificate, verifySvid } from '../../src/identity/verify.js'
import { FIXED_NOW } from '../identity/test-pki.js'
import { type AuthorityFixture, openAuthorityFixture } from './authority-fixture.js'

const PEER = '127.0.0.1:50000'
const TOKEN = 'secret-join-token-value-1'
const HINT = 'create a new one with writ bots add'

let fixture: AuthorityFixture
beforeEach(async () => {
  fixture = await openAuthorityFixture(() => FIXED_NOW)
})
afterEach(() => fixture.close())

async function joinWith(token: string, keys?: AgentKeys): Promise<JoinResult> {
  const csrPem = createCsrPem(keys ?? (await generateAgentKeys()), { commonName: 'writ-agent' })
  return fixture.authority.join({ token, csrPem }, PEER)
}

function identityOf(result: JoinResult): PeerIdentity {
  return identityFromCertificate(pemToDer(result.certificate, ['CERTIFICATE'], 'test'))
}

async function rejectsWith(promise: Promise<unknown>, code: string, message: string) {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(isWritError(error), `expected a WritError, got ${String(error)}`)
    assert.equal(error.code, code)
    assert.equal(error.message, message)
    return true
  })
}

/** Sets up role `reader` (maxTtl 30m) and bot `ci-agent`, and returns a fresh join. */
async function joinedBot(): Promise<{ result: JoinResult; identity: PeerIdentity }> {
  await fixture.addRole('reader', '30m')
  await fixture.addBot('ci-agent', ['reader'])
  await fixture.addToken(TOKEN, 'ci-agent')
  const result = await joinWith(TOKEN)
  return { result, identity: identityOf(result) }
}

test('join issues a bot certificate', async () => {
  await fixture.addRole('reader', '30m')
  await fixture.addBot('ci-agent', ['reader'])
  await fixture.addToken(TOKEN, 'ci-agent')
  const keys = await generateAgentKeys()
  const result = await joinWith(TOKEN, keys)

  assert.equal(result.spiffeId, 'spiffe://writ.test/bot/ci-agent')
  assert.equal(result.bundle, fixture.ca.bundlePem)
  assert.equal(result.notAfter.getTime(), FIXED_NOW + 30 * 60_000)
  const leaf = new X509Certificate(result.certificate)
  assert.ok(leaf.checkPrivateKey(keys.privateKey))
  assert.equal(leaf.subject, 'CN=ci-agent')

  const verified = verifySvid(result.certificate, result.bundle, FIXED_NOW, 'writ.test')
  assert.ok(verified.ok, verified.ok ? '' : verified.reason)
  const claims = verified.identity.claims
  assert.equal(claims.kind, 'bot')
  assert.deepEqual(claims.roles, ['reader'])
  assert.deepEqual(claims.traits, {})
  assert.equal(claims.depth, 0)
  assert.equal(claims.generation, 1)
  assert.deepEqual(claims.accessRequests, [])
  assert.match(
    claims.botInstance ?? '',
    /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/,
  )
})

test('join records the certificate', async () => {
  const { identity } = await joinedBot()
  const db = new Database(join(fixture.dir, 'writ.db'), { readonly: true })
  try {
    const row = db.prepare('SELECT * FROM certificates WHERE serial = ?').get(identity.serial) as
      | Record<string, unknown>
      | undefined
    assert.ok(row, `no certificates row for serial ${identity.serial}`)
    assert.equal(row.spiffe_id, 'spiffe://writ.test/bot/ci-agent')
    assert.equal(row.kind, 'bot')
    assert.equal(row.generation, 1)
    assert.equal(row.bot_instance, identity.claims.botInstance)
    assert.equal(row.not_after, identity.notAfter.getTime())
  } finally {
    db.close()
  }
})

test('join ignores the subject and SAN the CSR requests', async () => {
  await fixture.addRole('reader', '30m')
  await fixture.addBot('ci-agent', ['reader'])
  await fixture.addToken(TOKEN, 'ci-agent')
  const csrPem = createCsrPem(await generateAgentKeys(), {
    commonName: 'admin',
    spiffeId: 'spiffe://writ.test/user/admin',
  })
  const result = await fixture.authority.join({ token: TOKEN, csrPem }, PEER)
  assert.equal(result.spiffeId, 'spiffe://writ.test/bot/ci-agent')
  assert.equal(
    new X509Certificate(result.certificate).subjectAltName,
    'URI:spiffe://writ.test/bot/ci-agent',
  )
  assert.equal(identityOf(result).name, 'ci-agent')
})

test('join lifetime is the smallest of bot ttl and role maxTtl', async () => {
  await fixture.addRole('slow', '30m')
  await fixture.addRole('fast', '20m')
  await fixture.addRole('open')
  const cases: [bot: string, roles: string[], ttl: string | undefined, seconds: number][] = [
    ['short', ['slow', 'fast'], '10m', 600],
    ['capped', ['slow', 'fast'], '2h', 1200],
    ['default', ['open'], undefined, 3600],
    ['long', ['open'], '3h', 3 * 3600],
    ['none', [], undefined, 3600],
  ]
  for (const [bot, roles, ttl, seconds] of cases) {
    await fixture.addBot(bot, roles, ttl)
    await fixture.addToken(`token-${bot}`, bot)
    const result = await joinWith(`token-${bot}`)
    assert.equal(result.notAfter.getTime(), FIXED_NOW + seconds * 1000, `lifetime of bot ${bot}`)
  }
})

test('join audits success without the token', async () => {
  await fixture.addRole('reader', '30m')
  await fixture.addBot('ci-agent', ['reader'])
  const tokenName = await fixture.addToken(TOKEN, 'ci-agent')
  const result = await joinWith(TOKEN)
  const identity = identityOf(result)

  const caller = {
    spiffeId: 'spiffe://writ.test/bot/ci-agent',
    kind: 'bot',
    roles: ['reader'],
    serial: identity.serial,
  }
  const [joined, issued, ...rest] = fixture.audit.events
  assert.equal(rest.length, 0)
  assert.equal(joined?.type, 'join')
  assert.equal(joined?.outcome, 'success')
  assert.deepEqual(joined?.caller, caller)
  assert.equal(joined?.peer, PEER)
  assert.equal(joined?.details?.token, tokenName)
  assert.equal(issued?.type, 'certificate.issue')
  assert.equal(issued?.outcome, 'success')
  assert.deepEqual(issued?.caller, caller)
  assert.equal(issued?.peer, PEER)
  assert.equal(issued?.details?.serial, identity.serial)
  assert.equal(issued?.details?.generation, 1)

  const recorded = JSON.stringify(fixture.audit.events) + fixture.logLines.join('\n')
  assert.equal(recorded.includes(TOKEN), false, 'the token value reached the audit log or logs')
  assert.ok(fixture.logLines.some((line) => line.includes('"msg":"bot joined"')))
})

test('join rejects a reused token', async () => {
  const { result } = await joinedBot()
  assert.ok(result.certificate)
  const tokenName = fixture.audit.events[0]?.details?.token
  await assert.rejects(joinWith(TOKEN), (error: unknown) => {
    assert.ok(isWritError(error, 'join.token_used'))
    assert.equal(error.message, `join token has already been used; ${HINT}`)
    assert.equal(error.fields.auditId, 'audit-3')
    return true
  })
  const denied = fixture.audit.events.at(-1)
  assert.equal(denied?.type, 'join')
  assert.equal(denied?.outcome, 'denied')
  assert.equal(denied?.reason, 'token_used')
  assert.equal(denied?.peer, PEER)
  assert.equal(denied?.details?.token, tokenName)
  const recorded = JSON.stringify(fixture.audit.events) + fixture.logLines.join('\n')
  assert.equal(recorded.includes(TOKEN), false, 'the token value reached the audit log or logs')
})

test('join rejects an unknown token', async () => {
  await rejectsWith(
    joinWith('never-issued'),
    'join.token_unknown',
    `join token is not known to this Writ server; check the token or ${HINT}`,
  )
  const denied = fixture.audit.events.at(-1)
  assert.equal(denied?.type, 'join')
  assert.equal(denied?.outcome, 'denied')
  assert.equal(denied?.reason, 'token_unknown')
  assert.deepEqual(denied?.details, {})
  assert.equal(JSON.stringify(fixture.audit.events).includes('never-issued'), false)
})

test('join rejects an expired token', async () => {
  await fixture.addBot('ci-agent', [])
  const tokenName = await fixture.addToken(TOKEN, 'ci-agent', -1)
  await rejectsWith(joinWith(TOKEN), 'join.token_expired', `join token has expired; ${HINT}`)
  const denied = fixture.audit.events.at(-1)
  assert.equal(denied?.reason, 'token_expired')
  assert.equal(denied?.details?.token, tokenName)
})

test('join accepts a token only once under concurrency', async () => {
  await fixture.addBot('ci-agent', [])
  await fixture.addToken(TOKEN, 'ci-agent')
  const outcomes = await Promise.allSettled([joinWith(TOKEN), joinWith(TOKEN), joinWith(TOKEN)])
  const fulfilled = outcomes.filter((outcome) => outcome.status === 'fulfilled')
  const codes = outcomes.flatMap((outcome) =>
    outcome.status === 'rejected' ? [(outcome.reason as { code?: string }).code] : [],
  )
  assert.equal(fulfilled.length, 1)
  assert.deepEqual(codes, ['join.token_used', 'join.token_used'])
})

test('join with a bad CSR keeps the token', async () => {
  await fixture.addBot('ci-agent', [])
  await fixture.addToken(TOKEN, 'ci-agent')
  const badCsr = '-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n'
  await rejectsWith(
    fixture.authority.join({ token: TOKEN, csrPem: badCsr }, PEER),
    'csr.invalid',
    'the CSR is not a valid PKCS#10 structure',
  )
  assert.equal(fixture.audit.events.at(-1)?.reason, 'csr_invalid')
  const result = await joinWith(TOKEN)
  assert.equal(result.spiffeId, 'spiffe://writ.test/bot/ci-agent')
})

test('join rejects a token whose bot is gone', async () => {
  await fixture.addToken(TOKEN, 'ci-agent')
  await rejectsWith(
    joinWith(TOKEN),
    'join.bot_not_found',
    'bot "ci-agent" does not exist; add it again with writ bots add',
  )
  assert.equal(fixture.audit.events.at(-1)?.reason, 'bot_not_found')
})

test('join rejects a bot with a missing role', async () => {
  await fixture.addBot('ci-agent', ['ghost'])
  await fixture.addToken(TOKEN, 'ci-agent')
  await rejectsWith(
    joinWith(TOKEN),
    'join.role_not_found',
    'role "ghost" of bot "ci-agent" does not exist; create the role or remove it from the bot',
  )
})

test('renew issues the next generation', async () => {
  const { identity } = await joinedBot()
  await fixture.addRole('writer', '15m')
  await fixture.addBot('ci-agent', ['reader', 'writer'])
  const keys = await generateAgentKeys()
  const renewed = await fixture.authority.renew(
    identity,
    createCsrPem(keys, { commonName: 'ci-agent', spiffeId: identity.spiffeId }),
    PEER,
  )
  const next = identityOf(renewed)
  assert.equal(renewed.spiffeId, identity.spiffeId)
  assert.equal(next.spiffeId, identity.spiffeId)
  assert.equal(next.name, 'ci-agent')
  assert.notEqual(next.serial, identity.serial)
  assert.equal(next.claims.generation, 2)
  assert.equal(next.claims.botInstance, identity.claims.botInstance)
  assert.deepEqual(next.claims.roles, ['reader', 'writer'])
  assert.equal(renewed.notAfter.getTime(), FIXED_NOW + 15 * 60_000)
  assert.ok(new X509Certificate(renewed.certificate).checkPrivateKey(keys.privateKey))

  const event = fixture.audit.events.at(-1)
  assert.equal(event?.type, 'certificate.renew')
  assert.equal(event?.outcome, 'success')
  assert.equal(event?.caller?.serial, identity.serial)
  assert.equal(event?.details?.serial, next.serial)
  assert.equal(event?.details?.previousSerial, identity.serial)
  assert.equal(event?.details?.generation, 2)
})

test('renew accepts a CSR without SAN', async () => {
  const { identity } = await joinedBot()
  const csrPem = createCsrPem(await generateAgentKeys(), { commonName: 'anything' })
  const renewed = await fixture.authority.renew(identity, csrPem, PEER)
  assert.equal(renewed.spiffeId, identity.spiffeId)
})

test('renew rejects a CSR for another ID', async () => {
  const { identity } = await joinedBot()
  const csrPem = createCsrPem(await generateAgentKeys(), {
    commonName: 'ci-agent',
    spiffeId: 'spiffe://writ.test/bot/other',
  })
  await rejectsWith(
    fixture.authority.renew(identity, csrPem, PEER),
    'csr.invalid',
    "the CSR requests spiffe://writ.test/bot/other, but the caller is spiffe://writ.test/bot/ci-agent; request the caller's own ID or none",
  )
  const denied = fixture.audit.events.at(-1)
  assert.equal(denied?.type, 'certificate.renew')
  assert.equal(denied?.outcome, 'denied')
  assert.equal(denied?.reason, 'csr_invalid')
  assert.equal(denied?.caller?.serial, identity.serial)
})

test('renew rejects a deleted bot', async () => {
  const { identity } = await joinedBot()
  assert.equal(await fixture.store.deleteResource('Bot', 'ci-agent'), true)
  const csrPem = createCsrPem(await generateAgentKeys(), { commonName: 'ci-agent' })
  await rejectsWith(
    fixture.authority.renew(identity, csrPem, PEER),
    'renew.bot_not_found',
    'bot "ci-agent" does not exist; add it again with writ bots add',
  )
  assert.equal(fixture.audit.events.at(-1)?.reason, 'bot_not_found')
})

test('renew rejects a user certificate', async () => {
  const { identity } = await joinedBot()
  const user: PeerIdentity = {
    ...identity,
    spiffeId: 'spiffe://writ.test/user/alice',
    name: 'alice',
    claims: { ...identity.claims, kind: 'user' },
  }
  const csrPem = createCsrPem(await generateAgentKeys(), { commonName: 'alice' })
  await rejectsWith(
    fixture.authority.renew(user, csrPem, PEER),
    'renew.forbidden',
    'spiffe://writ.test/user/alice cannot renew here: it is a user certificate and only bots renew',
  )
  assert.equal(fixture.audit.events.at(-1)?.reason, 'forbidden')
})

test('renew rejects a task certificate', async () => {
  const { identity } = await joinedBot()
  const task: PeerIdentity = {
    ...identity,
    spiffeId: `${identity.spiffeId}/task/t-1`,
    claims: { ...identity.claims, depth: 1, task: { id: 't-1', reason: 'triage' } },
  }
  const csrPem = createCsrPem(await generateAgentKeys(), { commonName: 'ci-agent' })
  await rejectsWith(
    fixture.authority.renew(task, csrPem, PEER),
    'renew.forbidden',
    'spiffe://writ.test/bot/ci-agent/task/t-1 cannot renew here: task and delegated certificates are not renewed; request a new one',
  )
})

test('renew rejects a bot of another trust domain', async () => {
  const { identity } = await joinedBot()
  const foreign: PeerIdentity = { ...identity, spiffeId: 'spiffe://other.test/bot/ci-agent' }
  const csrPem = createCsrPem(await generateAgentKeys(), { commonName: 'ci-agent' })
  await rejectsWith(
    fixture.authority.renew(foreign, csrPem, PEER),
    'renew.forbidden',
    'spiffe://other.test/bot/ci-agent cannot renew here: the ID is not spiffe://writ.test/bot/<name>',
  )
})
