import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, test } from 'node:test'
import type { Lock } from '../src/authority/locks.js'
import type { PeerIdentity } from '../src/identity/types.js'
import { LOCK_STALE_AFTER_MS, LockCache, watchLocks } from '../src/lock-cache.js'
import { silentLogger } from '../src/log.js'
import { openSqliteStore } from '../src/store/sqlite.js'
import type { Store } from '../src/store/store.js'

const START = Date.parse('2026-03-01T12:00:00Z')
let now = START
let dir: string
let store: Store

beforeEach(async () => {
  now = START
  dir = mkdtempSync(join(tmpdir(), 'writ-lock-cache-'))
  store = await openSqliteStore(join(dir, 'writ.db'), { clock: () => now })
})

afterEach(async () => {
  await store.close()
  rmSync(dir, { recursive: true, force: true })
})

const bot: PeerIdentity = {
  spiffeId: 'spiffe://writ.test/bot/ci-agent',
  name: 'ci-agent',
  serial: '3fa9c2',
  notBefore: new Date(START - 60_000),
  notAfter: new Date(START + 3_600_000),
  claims: {
    version: 1,
    kind: 'bot',
    roles: ['reader'],
    traits: {},
    depth: 0,
    generation: 1,
    accessRequests: [],
  },
}

function botLock(id: string, expires?: string): Lock {
  return {
    id,
    target: { bot: 'ci-agent' },
    message: 'key leaked',
    created: new Date(now).toISOString(),
    createdBy: 'test',
    ...(expires === undefined ? {} : { expires }),
  }
}

test('refresh reports changes', async () => {
  const cache = new LockCache(store, () => now, silentLogger)
  assert.equal(await cache.refresh(), true)
  assert.equal(await cache.refresh(), false)
  await store.putLock(botLock('lock-1'))
  assert.equal(await cache.refresh(), true)
  assert.equal(cache.check(bot)?.lock?.id, 'lock-1')
  assert.deepEqual(await store.deleteLock('lock-1'), botLock('lock-1'))
  assert.equal(await store.deleteLock('lock-1'), undefined)
  assert.equal(await cache.refresh(), true)
  assert.equal(cache.check(bot), undefined)
})

test('expired lock stops refusing', async () => {
  const cache = new LockCache(store, () => now, silentLogger)
  await store.putLock(botLock('lock-2', new Date(START + 1000).toISOString()))
  await cache.refresh()
  assert.equal(cache.check(bot)?.lock?.id, 'lock-2')
  now = START + 1000
  await cache.refresh()
  assert.equal(cache.check(bot), undefined)
})

test('stale cache refuses everyone', async () => {
  const failing: Store = Object.create(store)
  let broken = false
  failing.lockVersion = async () => {
    if (broken) throw new Error('disk I/O error')
    return store.lockVersion()
  }
  const cache = new LockCache(failing, () => now, silentLogger)
  await cache.refresh()
  assert.equal(cache.check(bot), undefined)
  broken = true
  await assert.rejects(cache.refresh(), /disk I\/O error/)
  now += LOCK_STALE_AFTER_MS + 1
  const refusal = cache.check(bot)
  assert.ok(refusal, 'a stale lock list must refuse')
  assert.equal(refusal.lock, undefined)
  assert.match(refusal.message, /could not read its locks/)
  broken = false
  await cache.refresh()
  assert.equal(cache.check(bot), undefined)
})

test('cache never loaded refuses', () => {
  const cache = new LockCache(store, () => now, silentLogger)
  assert.ok(cache.check(bot))
})

test('watchLocks ends covered sessions', async () => {
  const cache = new LockCache(store, () => now, silentLogger)
  await cache.refresh()
  let resolveEnded: (reason: unknown) => void = () => {}
  const ended = new Promise((resolve) => {
    resolveEnded = resolve
  })
  const stop = watchLocks({
    cache,
    logger: silentLogger,
    intervalMs: 10,
    mcp: {
      closeSessions(select) {
        const end = select(bot)
        if (end !== undefined) resolveEnded(end)
        return Promise.resolve(end === undefined ? 0 : 1)
      },
    },
  })
  // The poll timer is unref'd, so this deadline also keeps the event loop alive while waiting.
  let deadline: NodeJS.Timeout | undefined
  const timedOut = new Promise((_resolve, reject) => {
    deadline = setTimeout(() => reject(new Error('no session was ended within 5 s')), 5000)
  })
  try {
    await store.putLock(botLock('lock-3'))
    const end = (await Promise.race([ended, timedOut])) as {
      reason: string
      denial: { reason: string; message: string }
    }
    assert.equal(end.reason, 'locked')
    assert.equal(end.denial.reason, 'locked')
    assert.match(end.denial.message, /lock lock-3\): key leaked/)
  } finally {
    clearTimeout(deadline)
    stop()
  }
})
