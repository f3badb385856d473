import assert from 'node:assert/strict'
import { test } from 'node:test'
import { backoffDelay, DEFAULT_BACKOFF, renewalTime, sleep } from '../../src/agent/schedule.js'

test('renewalTime leaves a third of the lifetime', () => {
  assert.equal(renewalTime(new Date(0), new Date(3_600_000)), 2_400_000)
  assert.equal(renewalTime(new Date(1_000), new Date(7_000)), 5_000)
})

test('renewalTime counts from receipt', () => {
  // notBefore backdated 60 s, 30 s TTL: due 20 s after receipt, not at once.
  assert.equal(renewalTime(new Date(0), new Date(90_000), 60_000), 80_000)
  assert.equal(renewalTime(new Date(5_000), new Date(8_000), 1_000), 7_000)
})

test('backoffDelay doubles up to the cap', () => {
  const top = () => 0.999999
  const steps = [1, 2, 3, 4, 5, 6, 7, 8].map((attempt) =>
    backoffDelay(attempt, DEFAULT_BACKOFF, top),
  )
  assert.deepEqual(steps, [1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000])
})

test('backoffDelay jitters within half a step', () => {
  assert.equal(
    backoffDelay(3, DEFAULT_BACKOFF, () => 0),
    2000,
  )
  assert.equal(
    backoffDelay(3, DEFAULT_BACKOFF, () => 0.5),
    3000,
  )
  assert.equal(
    backoffDelay(20, DEFAULT_BACKOFF, () => 0),
    30000,
  )
})

test('sleep ends when the signal aborts', async () => {
  const controller = new AbortController()
  const pending = sleep(3_600_000, controller.signal)
  controller.abort()
  await pending
  await sleep(3_600_000, controller.signal)
})
