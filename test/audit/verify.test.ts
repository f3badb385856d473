import assert from 'node:assert/strict'
import { after, test } from 'node:test'
import Database from 'better-sqlite3'
import { hashEvent } from '../../src/audit/chain.js'
import type { AuditEvent } from '../../src/audit/types.js'
import { verifyAuditChain } from '../../src/audit/verify.js'
import { createAuditWriter } from '../../src/audit/writer.js'
import { isWritError } from '../../src/errors.js'
import { silentLogger } from '../../src/log.js'
import { openSqliteStore } from '../../src/store/sqlite.js'
import type { Store } from '../../src/store/store.js'
import { temporaryPaths, toolCall } from './helpers.js'

const paths = await temporaryPaths('writ-audit-verify-')
after(() => paths.remove())

/** Writes `count` events to a new store; returns the open store, its path and the event ids. */
async function chainOf(count: number): Promise<{ store: Store; path: string; ids: string[] }> {
  const path = paths.path()
  const store = await openSqliteStore(path)
  const writer = createAuditWriter({ store, clock: Date.now, logger: silentLogger })
  const ids: string[] = []
  for (let index = 0; index < count; index += 1) {
    const spiffeId = `spiffe://writ.local/bot/b${index}`
    ids.push((await writer.record(toolCall(spiffeId, 'fs', 'read_file'))).id)
  }
  await writer.close()
  return { store, path, ids }
}

/** Runs one SQL statement on the database file through a separate connection. */
function tamper(path: string, sql: string, ...parameters: unknown[]): void {
  const raw = new Database(path)
  const { changes } = raw.prepare(sql).run(...parameters)
  raw.close()
  assert.equal(changes, 1)
}

test('verify accepts an empty log', async () => {
  const store = await openSqliteStore(paths.path())
  assert.deepEqual(await verifyAuditChain(store), { ok: true, count: 0 })
  await store.close()
})

test('verify accepts a clean chain', async () => {
  const { store } = await chainOf(1200)
  assert.deepEqual(await verifyAuditChain(store), { ok: true, count: 1200 })
  await store.close()
})

test('verify detects an edited event', async () => {
  const { store, path, ids } = await chainOf(6)
  tamper(path, `UPDATE audit SET json = json_set(json, '$.args.path', '/etc/passwd') WHERE seq = 4`)
  assert.deepEqual(await verifyAuditChain(store), {
    ok: false,
    count: 3,
    seq: 4,
    id: ids[3],
    reason: 'hash mismatch: event was modified',
  })
  await store.close()
})

test('verify detects an edited filter column', async () => {
  const edits = [
    `UPDATE audit SET principal = 'spiffe://writ.local/bot/other' WHERE seq = 2`,
    `UPDATE audit SET principal = NULL WHERE seq = 2`,
    `UPDATE audit SET outcome = 'denied' WHERE seq = 2`,
    `UPDATE audit SET tool = 'write_file' WHERE seq = 2`,
    `UPDATE audit SET server = NULL WHERE seq = 2`,
    `UPDATE audit SET time = '2000-01-01T00:00:00.000Z' WHERE seq = 2`,
    `UPDATE audit SET json = json_remove(json, '$.caller') WHERE seq = 2`,
  ]
  for (const edit of edits) {
    const { store, path, ids } = await chainOf(3)
    tamper(path, edit)
    const result = await verifyAuditChain(store)
    assert.equal(result.ok, false, edit)
    assert.equal(!result.ok && result.seq, 2, edit)
    assert.equal(!result.ok && result.id, ids[1], edit)
    assert.equal(!result.ok && result.reason, 'hash mismatch: event was modified', edit)
    await store.close()
  }
})

test('verify detects unparsable event JSON', async () => {
  const { store, path, ids } = await chainOf(3)
  tamper(path, `UPDATE audit SET json = '{"args":' WHERE seq = 3`)
  assert.deepEqual(await verifyAuditChain(store), {
    ok: false,
    count: 2,
    seq: 3,
    id: ids[2],
    reason: 'unreadable event: the stored JSON does not parse',
  })
  await assert.rejects(store.queryAudit({}), (error: unknown) => {
    assert.ok(isWritError(error, 'audit.corrupt_event'))
    assert.ok(error.message.includes(ids[2] as string))
    return true
  })
  await store.close()
})

test('verify detects a deleted event', async () => {
  const { store, path, ids } = await chainOf(8)
  tamper(path, 'DELETE FROM audit WHERE seq = 5')
  assert.deepEqual(await verifyAuditChain(store), {
    ok: false,
    count: 4,
    seq: 6,
    id: ids[5],
    reason: 'sequence gap: expected 5, found 6',
  })
  await store.close()
})

test('verify detects a deleted first event', async () => {
  const { store, path, ids } = await chainOf(3)
  tamper(path, 'DELETE FROM audit WHERE seq = 1')
  assert.deepEqual(await verifyAuditChain(store), {
    ok: false,
    count: 0,
    seq: 2,
    id: ids[1],
    reason: 'sequence gap: expected 1, found 2',
  })
  await store.close()
})

test('verify detects a changed prev_hash', async () => {
  const { store, path, ids } = await chainOf(5)
  tamper(path, `UPDATE audit SET prev_hash = ? WHERE seq = 3`, `sha256:${'f'.repeat(64)}`)
  assert.deepEqual(await verifyAuditChain(store), {
    ok: false,
    count: 2,
    seq: 3,
    id: ids[2],
    reason: "prevHash does not match the previous event's hash",
  })
  await store.close()
})

test('verify detects a replaced hash', async () => {
  const { store, path, ids } = await chainOf(4)
  tamper(path, `UPDATE audit SET hash = ? WHERE seq = 2`, `sha256:${'e'.repeat(64)}`)
  const result = await verifyAuditChain(store)
  assert.equal(!result.ok && result.seq, 2)
  assert.equal(!result.ok && result.id, ids[1])
  assert.equal(!result.ok && result.reason, 'hash mismatch: event was modified')
  await store.close()
})

test('verify detects a rehashed edit', async () => {
  const { store, path, ids } = await chainOf(4)
  // An edit to event 2 with a correctly recomputed hash still breaks event 3's prevHash.
  tamper(path, `UPDATE audit SET json = json_set(json, '$.latencyMs', 9999) WHERE seq = 2`)
  const [edited] = await store.queryAudit({ principal: 'b1' })
  assert.equal(edited?.latencyMs, 9999)
  tamper(path, `UPDATE audit SET hash = ? WHERE seq = 2`, hashEvent(edited as AuditEvent))

  assert.deepEqual(await verifyAuditChain(store), {
    ok: false,
    count: 2,
    seq: 3,
    id: ids[2],
    reason: "prevHash does not match the previous event's hash",
  })
  await store.close()
})

test('verify detects events removed from the end', async () => {
  const { store, path } = await chainOf(5)
  tamper(path, 'DELETE FROM audit WHERE seq = 5')
  const result = await verifyAuditChain(store)
  assert.equal(result.ok, false)
  assert.equal(result.ok ? undefined : result.seq, 5)
  assert.equal(result.count, 4)
  assert.match(result.ok ? '' : result.reason, /events 5 to 5 were removed from the end/)
  await store.close()
})

test('verify detects an emptied log', async () => {
  const { store, path } = await chainOf(3)
  const raw = new Database(path)
  raw.prepare('DELETE FROM audit').run()
  raw.close()
  const result = await verifyAuditChain(store)
  assert.equal(result.ok, false)
  assert.match(result.ok ? '' : result.reason, /events 1 to 3 were removed/)
  await store.close()
})
