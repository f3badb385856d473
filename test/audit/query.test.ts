import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import type { AuditEvent } from '../../src/audit/types.js'
import { type AuditWriter, createAuditWriter } from '../../src/audit/writer.js'
import { isWritError } from '../../src/errors.js'
import { silentLogger } from '../../src/log.js'
import { openSqliteStore } from '../../src/store/sqlite.js'
import type { Store } from '../../src/store/store.js'
import { caller, temporaryPaths, toolCall } from './helpers.js'

const paths = await temporaryPaths('writ-audit-query-')
after(() => paths.remove())

const NOW = Date.parse('2025-01-31T12:00:00.000Z')
const MINUTE = 60_000
let clockTime = NOW
const clock = () => clockTime

let store: Store
let writer: AuditWriter

const ANA = 'spiffe://writ.local/user/ana'
const CI = 'spiffe://writ.local/bot/ci'
const CI_NIGHTLY = 'spiffe://writ.local/bot/ci-nightly'

before(async () => {
  store = await openSqliteStore(paths.path(), { clock })
  writer = createAuditWriter({ store, clock, logger: silentLogger })
  // seq 1: 3 hours ago, seq 2: 90 minutes ago, seq 3-5: 10 minutes ago, seq 6: now.
  clockTime = NOW - 180 * MINUTE
  await writer.record({ type: 'join', outcome: 'success', caller: caller(CI) })
  clockTime = NOW - 90 * MINUTE
  await writer.record(toolCall(ANA, 'fs', 'read_file'))
  clockTime = NOW - 10 * MINUTE
  await writer.record(toolCall(CI, 'fs', 'write_file', 'denied'))
  await writer.record(toolCall(CI_NIGHTLY, 'memory', 'read_graph'))
  await writer.record({ type: 'auth.refused', outcome: 'denied', reason: 'certificate_expired' })
  clockTime = NOW
  await writer.record(toolCall(ANA, 'memory', 'write_file', 'error'))
})

after(async () => {
  await writer.close()
  await store.close()
})

function seqs(events: AuditEvent[]): number[] {
  return events.map((event) => event.seq)
}

test('query without filters returns all in order', async () => {
  assert.deepEqual(seqs(await store.queryAudit({})), [1, 2, 3, 4, 5, 6])
})

test('query returns stored event fields', async () => {
  const [event] = await store.queryAudit({ tool: 'read_file' })
  assert.ok(event)
  assert.equal(event.type, 'mcp.request')
  assert.equal(event.caller?.spiffeId, ANA)
  assert.equal(event.server, 'fs')
  assert.equal(event.time, new Date(NOW - 90 * MINUTE).toISOString())
  assert.deepEqual(event.args, { path: '/tmp/file.txt' })
  assert.match(event.id, /^ev_[0-9a-f]{32}$/)
  assert.match(event.hash, /^sha256:[0-9a-f]{64}$/)
})

test('query limit keeps the newest events', async () => {
  assert.deepEqual(seqs(await store.queryAudit({ limit: 2 })), [5, 6])
})

test('query rejects a limit below one', async () => {
  await assert.rejects(store.queryAudit({ limit: 0 }), (error: unknown) => {
    assert.ok(isWritError(error, 'audit.invalid_limit'))
    assert.match(error.message, /limit 0/)
    return true
  })
})

test('query filters by principal', async () => {
  assert.deepEqual(seqs(await store.queryAudit({ principal: CI })), [1, 3])
  assert.deepEqual(seqs(await store.queryAudit({ principal: 'ci' })), [1, 3])
  assert.deepEqual(seqs(await store.queryAudit({ principal: 'bot/ci-nightly' })), [4])
  assert.deepEqual(seqs(await store.queryAudit({ principal: 'ana' })), [2, 6])
  assert.deepEqual(seqs(await store.queryAudit({ principal: 'an' })), [])
})

test('query filters by server and tool', async () => {
  assert.deepEqual(seqs(await store.queryAudit({ server: 'memory' })), [4, 6])
  assert.deepEqual(seqs(await store.queryAudit({ tool: 'write_file' })), [3, 6])
  assert.deepEqual(seqs(await store.queryAudit({ server: 'fs', tool: 'write_file' })), [3])
})

test('query filters by outcome and type', async () => {
  assert.deepEqual(seqs(await store.queryAudit({ outcome: 'denied' })), [3, 5])
  assert.deepEqual(seqs(await store.queryAudit({ outcome: 'error' })), [6])
  assert.deepEqual(seqs(await store.queryAudit({ type: 'auth.refused' })), [5])
  assert.deepEqual(seqs(await store.queryAudit({ type: 'mcp.request', outcome: 'denied' })), [3])
})

test('query since accepts a duration', async () => {
  assert.deepEqual(seqs(await store.queryAudit({ since: '15m' })), [3, 4, 5, 6])
  assert.deepEqual(seqs(await store.queryAudit({ since: '2h' })), [2, 3, 4, 5, 6])
  assert.deepEqual(seqs(await store.queryAudit({ since: '1h30m' })), [2, 3, 4, 5, 6])
  assert.deepEqual(seqs(await store.queryAudit({ since: '1d' })), [1, 2, 3, 4, 5, 6])
})

test('query since accepts an ISO time', async () => {
  const since = new Date(NOW - 90 * MINUTE).toISOString()
  assert.deepEqual(seqs(await store.queryAudit({ since })), [2, 3, 4, 5, 6])
  assert.deepEqual(seqs(await store.queryAudit({ since: '2025-01-31T11:55:00+00:00' })), [6])
  assert.deepEqual(seqs(await store.queryAudit({ since: '2025-02-01' })), [])
})

test('query rejects an invalid since', async () => {
  for (const since of ['yesterday', '15 minutes', '0m', '2025-13-45', '']) {
    await assert.rejects(store.queryAudit({ since }), (error: unknown) => {
      assert.ok(isWritError(error, 'audit.invalid_since'), `code for ${since}`)
      assert.ok(error.message.includes(`"${since}"`), `message for ${since}`)
      return true
    })
  }
})
