import assert from 'node:assert/strict'
import { after, test } from 'node:test'
import { createAuditWriter } from '../../src/audit/writer.js'
import { isWritError } from '../../src/errors.js'
import { createLogger, silentLogger } from '../../src/log.js'
import { openSqliteStore } from '../../src/store/sqlite.js'
import type { Store } from '../../src/store/store.js'
import { temporaryPaths, toolCall } from './helpers.js'

const paths = await temporaryPaths('writ-audit-writer-')
after(() => paths.remove())

const NOW = Date.parse('2025-01-31T12:00:00.000Z')
const clock = () => NOW

/** Wraps a store so each `appendAudit` call is counted, and the first `failures` calls throw. */
function countingStore(store: Store, failures = 0): { store: Store; transactions: () => number } {
  let calls = 0
  const wrapped: Store = Object.create(store)
  wrapped.appendAudit = async (build) => {
    calls += 1
    if (calls <= failures) throw new Error('disk I/O error (injected)')
    return store.appendAudit(build)
  }
  return { store: wrapped, transactions: () => calls }
}

test('writer group-commits concurrent records', async () => {
  const store = await openSqliteStore(paths.path())
  const counted = countingStore(store)
  const writer = createAuditWriter({ store: counted.store, clock, logger: silentLogger })

  const count = 50
  const results = await Promise.all(
    Array.from({ length: count }, (_, index) =>
      writer.record(toolCall('spiffe://writ.local/bot/ci', 'fs', `tool_${index}`)),
    ),
  )

  assert.deepEqual(
    results.map((result) => result.seq),
    Array.from({ length: count }, (_, index) => index + 1),
  )
  assert.equal(new Set(results.map((result) => result.id)).size, count)
  assert.ok(counted.transactions() < count, `${counted.transactions()} transactions`)
  const stored = await store.queryAudit({ limit: 1000 })
  assert.equal(stored.length, count)
  assert.deepEqual(
    stored.map((event) => event.tool),
    results.map((_, index) => `tool_${index}`),
  )
  await writer.close()
  await store.close()
})

test('writer resolves with the committed id and seq', async () => {
  const store = await openSqliteStore(paths.path())
  const writer = createAuditWriter({ store, clock, logger: silentLogger })
  const first = await writer.record({ type: 'join', outcome: 'success' })
  const second = await writer.record({ type: 'session.start', outcome: 'success' })

  assert.equal(first.seq, 1)
  assert.equal(second.seq, 2)
  const events = await store.queryAudit({})
  assert.deepEqual(
    events.map((event) => [event.id, event.seq, event.time]),
    [
      [first.id, 1, '2025-01-31T12:00:00.000Z'],
      [second.id, 2, '2025-01-31T12:00:00.000Z'],
    ],
  )
  assert.equal(events[1]?.prevHash, events[0]?.hash)
  await writer.close()
  await store.close()
})

test('writer stores plain JSON of the input', async () => {
  const store = await openSqliteStore(paths.path())
  const writer = createAuditWriter({ store, clock, logger: silentLogger })
  const details = { when: new Date(NOW), missing: undefined, list: [1, 'two'] }
  await writer.record({ type: 'resource.apply', outcome: 'success', details })
  details.list.push(3)

  const [event] = await store.queryAudit({})
  assert.deepEqual(event?.details, { when: '2025-01-31T12:00:00.000Z', list: [1, 'two'] })
  await writer.close()
  await store.close()
})

test('writer rejects every event of a failed commit', async () => {
  const store = await openSqliteStore(paths.path())
  const counted = countingStore(store, 1)
  const lines: string[] = []
  const logger = createLogger({ sink: (line) => lines.push(line) })
  const writer = createAuditWriter({ store: counted.store, clock, logger })

  const results = await Promise.allSettled([
    writer.record({ type: 'join', outcome: 'success' }),
    writer.record({ type: 'join', outcome: 'denied' }),
  ])
  for (const result of results) {
    assert.equal(result.status, 'rejected')
    const reason = result.status === 'rejected' ? result.reason : undefined
    assert.ok(isWritError(reason, 'audit.commit_failed'))
  }
  assert.equal(lines.length, 1)
  assert.match(lines[0] ?? '', /audit commit failed/)
  assert.match(lines[0] ?? '', /disk I\/O error \(injected\)/)

  const next = await writer.record({ type: 'join', outcome: 'success' })
  assert.equal(next.seq, 1)
  assert.equal((await store.queryAudit({})).length, 1)
  await writer.close()
  await store.close()
})

test('writer close commits pending records', async () => {
  const store = await openSqliteStore(paths.path())
  const writer = createAuditWriter({ store, clock, logger: silentLogger })
  const pending = writer.record({ type: 'session.end', outcome: 'success' })
  await writer.close()

  assert.equal((await pending).seq, 1)
  assert.equal((await store.queryAudit({})).length, 1)
  await store.close()
})

test('writer rejects records after close', async () => {
  const store = await openSqliteStore(paths.path())
  const writer = createAuditWriter({ store, clock, logger: silentLogger })
  await writer.close()

  await assert.rejects(writer.record({ type: 'join', outcome: 'success' }), (error: unknown) => {
    assert.ok(isWritError(error, 'audit.closed'))
    assert.match(error.message, /closed/)
    return true
  })
  assert.equal((await store.queryAudit({})).length, 0)
  await store.close()
})

test('writer flush waits for records in flight', async () => {
  const store = await openSqliteStore(paths.path())
  const writer = createAuditWriter({ store, clock, logger: silentLogger })
  const pending = [1, 2, 3].map(() => writer.record({ type: 'join', outcome: 'success' }))
  await writer.flush()

  assert.equal((await store.queryAudit({})).length, 3)
  await Promise.all(pending)
  await writer.close()
  await store.close()
})
