import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { test } from 'node:test'
import { GENESIS_HASH, hashEvent } from '../../src/audit/chain.js'
import type { AuditEvent } from '../../src/audit/types.js'

const event: Omit<AuditEvent, 'hash'> = {
  type: 'join',
  outcome: 'success',
  id: 'ev_1',
  seq: 1,
  time: '2025-01-31T12:00:00.000Z',
  prevHash: GENESIS_HASH,
  details: { token: 'ci-token', nested: { b: 2, a: 1 } },
}

test('genesis hash is sha256 of zeros', () => {
  assert.equal(GENESIS_HASH, `sha256:${'0'.repeat(64)}`)
})

test('hashEvent follows the documented rule', () => {
  const canonical =
    '{"details":{"nested":{"a":1,"b":2},"token":"ci-token"},"id":"ev_1","outcome":"success",' +
    `"prevHash":"${GENESIS_HASH}","seq":1,"time":"2025-01-31T12:00:00.000Z","type":"join"}`
  const expected = createHash('sha256').update(`${GENESIS_HASH}\n${canonical}`).digest('hex')
  assert.equal(hashEvent(event), `sha256:${expected}`)
})

test('hashEvent ignores the hash field and key order', () => {
  const reversed = Object.fromEntries(Object.entries(event).reverse()) as typeof event
  assert.deepEqual(Object.keys(reversed).reverse(), Object.keys(event))
  assert.equal(hashEvent({ ...reversed, hash: 'sha256:stale' }), hashEvent(event))
})

test('hashEvent changes with any field', () => {
  assert.notEqual(hashEvent({ ...event, outcome: 'denied' }), hashEvent(event))
  assert.notEqual(hashEvent({ ...event, seq: 2 }), hashEvent(event))
  assert.notEqual(hashEvent({ ...event, prevHash: `sha256:${'1'.repeat(64)}` }), hashEvent(event))
})
