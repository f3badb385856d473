import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, test } from 'node:test'
import {
  ADDRESS_THROTTLE,
  addFailure,
  addressThrottleKey,
  lockedUntil,
  loginCounterRules,
  USER_THROTTLE,
  userThrottleKey,
} from '../../src/authority/login-throttle.js'
import { openSqliteStore } from '../../src/store/sqlite.js'

const MINUTE = 60_000
const T0 = 1_800_000_000_000

test('lockedUntil allows the free failures', () => {
  let state: ReturnType<typeof addFailure> | undefined
  for (let failure = 1; failure < USER_THROTTLE.freeFailures; failure++) {
    state = addFailure(state, T0, USER_THROTTLE)
    assert.equal(lockedUntil(state, T0, USER_THROTTLE), 0, `after ${failure} failures`)
  }
})

test('lockedUntil doubles the lock per failure', () => {
  let state: ReturnType<typeof addFailure> | undefined
  for (let failure = 1; failure <= USER_THROTTLE.freeFailures; failure++) {
    state = addFailure(state, T0, USER_THROTTLE)
  }
  assert.equal(lockedUntil(state, T0, USER_THROTTLE), T0 + MINUTE)
  state = addFailure(state, T0 + MINUTE, USER_THROTTLE)
  assert.equal(lockedUntil(state, T0 + MINUTE, USER_THROTTLE), T0 + 3 * MINUTE)
  state = addFailure(state, T0 + 3 * MINUTE, USER_THROTTLE)
  assert.equal(lockedUntil(state, T0 + 3 * MINUTE, USER_THROTTLE), T0 + 7 * MINUTE)
})

test('lockedUntil caps the lock at the maximum', () => {
  const state = { failures: 100, lastFailureAt: T0 }
  assert.equal(lockedUntil(state, T0, USER_THROTTLE), T0 + USER_THROTTLE.maxLockMs)
})

test('lockedUntil ends when the lock has passed', () => {
  const state = { failures: USER_THROTTLE.freeFailures, lastFailureAt: T0 }
  assert.equal(lockedUntil(state, T0 + MINUTE, USER_THROTTLE), 0)
})

test('addFailure starts over after the reset period', () => {
  const stale = { failures: 50, lastFailureAt: T0 }
  const next = addFailure(stale, T0 + USER_THROTTLE.resetAfterMs, USER_THROTTLE)
  assert.deepEqual(next, { failures: 1, lastFailureAt: T0 + USER_THROTTLE.resetAfterMs })
})

const directories: string[] = []
after(() => {
  for (const directory of directories) rmSync(directory, { recursive: true, force: true })
})

async function openStore() {
  const directory = mkdtempSync(join(tmpdir(), 'writ-throttle-'))
  directories.push(directory)
  return openSqliteStore(join(directory, 'writ.db'))
}

test('takeLoginAttempt locks a user after the free failures', async () => {
  const store = await openStore()
  try {
    const rules = loginCounterRules('alice', '127.0.0.1')
    for (let attempt = 1; attempt <= USER_THROTTLE.freeFailures; attempt++) {
      assert.equal(await store.takeLoginAttempt(rules, T0), undefined, `attempt ${attempt}`)
    }
    const locked = await store.takeLoginAttempt(rules, T0 + 1000)
    assert.deepEqual(locked, { key: userThrottleKey('alice'), until: T0 + MINUTE })
    // A refused attempt does not count, so the lock does not grow while it is refused.
    const again = await store.takeLoginAttempt(rules, T0 + 2000)
    assert.equal(again?.until, T0 + MINUTE)
    assert.equal(await store.takeLoginAttempt(rules, T0 + MINUTE), undefined)
  } finally {
    await store.close()
  }
})

test('takeLoginAttempt counts names case-insensitively', async () => {
  const store = await openStore()
  try {
    for (let attempt = 0; attempt < USER_THROTTLE.freeFailures; attempt++) {
      const name = attempt % 2 === 0 ? 'Alice' : 'alice'
      await store.takeLoginAttempt(loginCounterRules(name, '127.0.0.1'), T0)
    }
    const locked = await store.takeLoginAttempt(loginCounterRules('ALICE', '127.0.0.1'), T0)
    assert.equal(locked?.key, 'user:alice')
  } finally {
    await store.close()
  }
})

test('takeLoginAttempt locks an address across names', async () => {
  const store = await openStore()
  try {
    for (let attempt = 0; attempt < ADDRESS_THROTTLE.freeFailures; attempt++) {
      const rules = loginCounterRules(`user-${attempt}`, '192.0.2.7')
      assert.equal(await store.takeLoginAttempt(rules, T0), undefined, `attempt ${attempt}`)
    }
    const fresh = loginCounterRules('someone-new', '192.0.2.7')
    const locked = await store.takeLoginAttempt(fresh, T0)
    assert.deepEqual(locked, { key: addressThrottleKey('192.0.2.7'), until: T0 + MINUTE })
    const elsewhere = loginCounterRules('someone-new', '192.0.2.8')
    assert.equal(await store.takeLoginAttempt(elsewhere, T0), undefined)
  } finally {
    await store.close()
  }
})

test('releaseLoginAttempt resets the user and forgives one address failure', async () => {
  const store = await openStore()
  try {
    const rules = loginCounterRules('bob', '127.0.0.1')
    for (let attempt = 1; attempt < USER_THROTTLE.freeFailures; attempt++) {
      await store.takeLoginAttempt(rules, T0)
    }
    await store.releaseLoginAttempt([userThrottleKey('bob')], [addressThrottleKey('127.0.0.1')])
    // The user counter is gone, so five more failures are free again.
    for (let attempt = 1; attempt <= USER_THROTTLE.freeFailures; attempt++) {
      assert.equal(await store.takeLoginAttempt(rules, T0), undefined, `attempt ${attempt}`)
    }
    assert.notEqual(await store.takeLoginAttempt(rules, T0), undefined)
  } finally {
    await store.close()
  }
})
