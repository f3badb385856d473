import assert from 'node:assert/strict'
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, test } from 'node:test'
import { Worker } from 'node:worker_threads'
import Database from 'better-sqlite3'
import { isWritError } from '../../src/errors.js'
import { API_VERSION, type Resource } from '../../src/policy/resource.js'
import { MIGRATIONS } from '../../src/store/migrations.js'
import { openSqliteStore } from '../../src/store/sqlite.js'

const root = await mkdtemp(join(tmpdir(), 'writ-store-'))
after(() => rm(root, { recursive: true, force: true }))

let fileCounter = 0
function freshPath(): string {
  fileCounter += 1
  return join(root, `store-${fileCounter}.db`)
}

function role(name: string, tools: string[] = ['read']): Resource {
  return { apiVersion: API_VERSION, kind: 'Role', metadata: { name }, spec: { tools } }
}

const EXPIRES = Date.parse('2030-01-01T00:00:00.000Z')

function joinToken(name: string, tokenHash: string, expires = EXPIRES): Resource {
  return {
    apiVersion: API_VERSION,
    kind: 'JoinToken',
    metadata: { name },
    spec: { bot: 'ci', method: 'token', expires: new Date(expires).toISOString(), tokenHash },
  }
}

test('store file is created with mode 0600', async () => {
  const path = freshPath()
  const store = await openSqliteStore(path)
  await store.close()
  assert.equal((await stat(path)).mode & 0o777, 0o600)
})

test('reopening applies each migration once', async () => {
  const path = freshPath()
  await (await openSqliteStore(path)).close()
  const store = await openSqliteStore(path)
  await store.putResource(role('after-reopen'))
  await store.close()
  await (await openSqliteStore(path)).close()

  const raw = new Database(path, { readonly: true })
  const versions = raw.prepare('SELECT version FROM schema_migrations ORDER BY version').all()
  const userVersion = raw.pragma('user_version', { simple: true })
  raw.close()
  assert.deepEqual(
    versions,
    MIGRATIONS.map((migration) => ({ version: migration.version })),
  )
  assert.equal(userVersion, MIGRATIONS.length)
})

test('store uses WAL journal mode', async () => {
  const path = freshPath()
  await (await openSqliteStore(path)).close()
  const raw = new Database(path, { readonly: true })
  const mode = raw.pragma('journal_mode', { simple: true })
  raw.close()
  assert.equal(mode, 'wal')
})

test('open rejects a file that is not a database', async () => {
  const path = freshPath()
  await writeFile(path, 'this is plain text, not SQLite, and it is long enough to have a header')
  await assert.rejects(openSqliteStore(path), (error: unknown) => {
    assert.ok(isWritError(error, 'store.open_failed'))
    assert.match(error.message, new RegExp(path.replaceAll('.', '\\.')))
    return true
  })
})

test('open rejects a path in a missing directory', async () => {
  const path = join(root, 'missing-dir', 'writ.db')
  await assert.rejects(openSqliteStore(path), (error: unknown) => {
    assert.ok(isWritError(error, 'store.open_failed'))
    assert.ok(error.message.includes(path))
    return true
  })
})

test('open rejects a schema newer than this build', async () => {
  const path = freshPath()
  await (await openSqliteStore(path)).close()
  const raw = new Database(path)
  raw
    .prepare('INSERT INTO schema_migrations (version, name, applied) VALUES (?, ?, ?)')
    .run(999, 'from the future', new Date().toISOString())
  raw.close()
  await assert.rejects(openSqliteStore(path), (error: unknown) => {
    assert.ok(isWritError(error, 'store.schema_too_new'))
    assert.ok(error.message.includes('999'))
    return true
  })
})

test('resources put, get, list and delete', async () => {
  const store = await openSqliteStore(freshPath())
  assert.equal(await store.policyVersion(), 0)

  await store.putResource(role('writer', ['write']))
  await store.putResource(role('reader'))
  assert.equal(await store.policyVersion(), 2)
  assert.deepEqual(await store.getResource('Role', 'reader'), role('reader'))
  assert.equal(await store.getResource('Bot', 'reader'), undefined)
  assert.deepEqual(
    (await store.listResources('Role')).map((resource) => resource.metadata.name),
    ['reader', 'writer'],
  )
  assert.deepEqual(await store.listResources('Bot'), [])

  await store.putResource(role('reader', ['read', 'list']))
  assert.equal(await store.policyVersion(), 3)
  assert.deepEqual(await store.getResource('Role', 'reader'), role('reader', ['read', 'list']))
  assert.equal((await store.listResources('Role')).length, 2)

  assert.equal(await store.deleteResource('Role', 'reader'), true)
  assert.equal(await store.policyVersion(), 4)
  assert.equal(await store.getResource('Role', 'reader'), undefined)

  assert.equal(await store.deleteResource('Role', 'reader'), false)
  assert.equal(await store.policyVersion(), 4)
  await store.close()
})

test('policy version is visible from a second connection', async () => {
  const path = freshPath()
  const first = await openSqliteStore(path)
  const second = await openSqliteStore(path)
  const before = await second.policyVersion()

  await first.putResource(role('shared'))
  assert.equal(await second.policyVersion(), before + 1)
  assert.deepEqual(await second.getResource('Role', 'shared'), role('shared'))

  await second.deleteResource('Role', 'shared')
  assert.equal(await first.policyVersion(), before + 2)
  await first.close()
  await second.close()
})

test('join token is consumed once', async () => {
  const store = await openSqliteStore(freshPath())
  const token = joinToken('ci-token', 'a'.repeat(64))
  await store.putResource(token)

  const now = EXPIRES - 60_000
  assert.deepEqual(await store.consumeJoinToken('a'.repeat(64), now), { ok: true, token })
  assert.deepEqual(await store.consumeJoinToken('a'.repeat(64), now), {
    ok: false,
    reason: 'token_used',
    token,
  })
  await store.close()
})

test('join token stays used after the manifest is applied again', async () => {
  const store = await openSqliteStore(freshPath())
  const token = joinToken('reapplied', 'b'.repeat(64))
  await store.putResource(token)
  assert.equal((await store.consumeJoinToken('b'.repeat(64), 0)).ok, true)

  await store.putResource(token)
  const again = await store.consumeJoinToken('b'.repeat(64), 0)
  assert.equal(again.ok, false)
  assert.equal(again.ok === false && again.reason, 'token_used')
  await store.close()
})

test('join token with an unknown hash is refused', async () => {
  const store = await openSqliteStore(freshPath())
  await store.putResource(joinToken('known', 'c'.repeat(64)))
  assert.deepEqual(await store.consumeJoinToken('d'.repeat(64), 0), {
    ok: false,
    reason: 'token_unknown',
  })
  await store.close()
})

test('join token at its expiry time is refused', async () => {
  const store = await openSqliteStore(freshPath())
  const token = joinToken('expiring', 'e'.repeat(64))
  await store.putResource(token)
  assert.deepEqual(await store.consumeJoinToken('e'.repeat(64), EXPIRES), {
    ok: false,
    reason: 'token_expired',
    token,
  })
  // A refused expired token is not marked used.
  assert.equal((await store.consumeJoinToken('e'.repeat(64), EXPIRES - 1)).ok, true)
  await store.close()
})

test('join token with an unparsable expiry is refused', async () => {
  const store = await openSqliteStore(freshPath())
  const token = joinToken('broken', 'f'.repeat(64))
  token.spec.expires = 'next tuesday'
  await store.putResource(token)
  const result = await store.consumeJoinToken('f'.repeat(64), 0)
  assert.equal(result.ok === false && result.reason, 'token_expired')
  await store.close()
})

test('join token consumed by racing threads succeeds once', async () => {
  const path = freshPath()
  const store = await openSqliteStore(path)
  await store.putResource(joinToken('raced', '1'.repeat(64)))
  await store.close()

  const moduleUrl = new URL('../../src/store/sqlite.js', import.meta.url).href
  const gate = new Int32Array(new SharedArrayBuffer(4))
  const source = `
    const { parentPort, workerData } = await import('node:worker_threads')
    const { openSqliteStore } = await import(workerData.moduleUrl)
    const store = await openSqliteStore(workerData.path)
    parentPort.postMessage('ready')
    Atomics.wait(workerData.gate, 0, 0)
    const result = await store.consumeJoinToken(workerData.tokenHash, 0)
    await store.close()
    parentPort.postMessage(result.ok ? 'ok' : result.reason)
  `
  const workerCount = 6
  const workers = Array.from(
    { length: workerCount },
    () =>
      new Worker(source, {
        eval: true,
        workerData: { moduleUrl, path, gate, tokenHash: '1'.repeat(64) },
      }),
  )
  const ready = workers.map((worker) => nextMessage(worker))
  await Promise.all(ready)
  const results = workers.map((worker) => nextMessage(worker))
  Atomics.store(gate, 0, 1)
  Atomics.notify(gate, 0)
  const outcomes = (await Promise.all(results)).sort()

  assert.equal(outcomes.filter((outcome) => outcome === 'ok').length, 1)
  assert.equal(outcomes.filter((outcome) => outcome === 'token_used').length, workerCount - 1)
})

function nextMessage(worker: Worker): Promise<unknown> {
  return new Promise((resolve, reject) => {
    worker.once('message', resolve)
    worker.once('error', reject)
  })
}

test('certificates are recorded', async () => {
  const path = freshPath()
  const store = await openSqliteStore(path)
  await store.recordCertificate({
    serial: '0a1b',
    spiffeId: 'spiffe://writ.local/bot/ci',
    kind: 'bot',
    notBefore: 1000,
    notAfter: 2000,
    botInstance: 'inst-1',
    generation: 2,
    parentSerial: '09ff',
  })
  await store.recordCertificate({
    serial: '0a1c',
    spiffeId: 'spiffe://writ.local/user/ana',
    kind: 'user',
    notBefore: 1000,
    notAfter: 2000,
  })
  await store.close()

  const raw = new Database(path, { readonly: true })
  const rows = raw
    .prepare(
      'SELECT serial, spiffe_id, bot_instance, generation, parent_serial FROM certificates ORDER BY serial',
    )
    .all()
  raw.close()
  assert.deepEqual(rows, [
    {
      serial: '0a1b',
      spiffe_id: 'spiffe://writ.local/bot/ci',
      bot_instance: 'inst-1',
      generation: 2,
      parent_serial: '09ff',
    },
    {
      serial: '0a1c',
      spiffe_id: 'spiffe://writ.local/user/ana',
      bot_instance: null,
      generation: null,
      parent_serial: null,
    },
  ])
})

test('meta values are stored and replaced', async () => {
  const path = freshPath()
  const store = await openSqliteStore(path)
  assert.equal(await store.getMeta('trust_domain'), undefined)
  await store.setMeta('trust_domain', 'writ.local')
  await store.setMeta('trust_domain', 'example.org')
  await store.close()

  const reopened = await openSqliteStore(path)
  assert.equal(await reopened.getMeta('trust_domain'), 'example.org')
  await reopened.close()
})

test('close is idempotent', async () => {
  const store = await openSqliteStore(freshPath())
  await store.close()
  await store.close()
  await assert.rejects(store.policyVersion())
})
