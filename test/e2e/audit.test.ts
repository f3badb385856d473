import assert from 'node:assert/strict'
import { cpSync } from 'node:fs'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import Database from 'better-sqlite3'
import {
  type AuditRecord,
  auditSearch,
  connectThroughBridge,
  type GatewaySetup,
  httpsRequest,
  initializeBody,
  readIdentity,
  removeTemporaryDirectories,
  runWrit,
  startGatewaySetup,
  temporaryDirectory,
} from './harness.js'

let setup: GatewaySetup

before(async () => {
  setup = await startGatewaySetup('audit')
  const { client } = await connectThroughBridge(setup.server.address, setup.identity, 'notes')
  try {
    await client.callTool({ name: 'read_note', arguments: { id: 1 } })
    await client.callTool({ name: 'write_note', arguments: { text: 'x' } }).catch(() => {})
  } finally {
    await client.close()
  }
  // One rejected connection, so the log also has an event without a caller.
  const tls = { ca: readIdentity(setup.identity).ca }
  await httpsRequest(setup.server.address, '/mcp/notes', {
    tls,
    body: initializeBody('2025-06-18'),
  })
})

after(async () => {
  await setup?.server.stop()
  removeTemporaryDirectories()
})

function search(...filters: string[]): Promise<AuditRecord[]> {
  return auditSearch(setup.dataDir, filters)
}

describe('writ audit search', () => {
  it('records joins, issuance, sessions and calls', async () => {
    const types = new Set((await search()).map((event) => event.type))
    for (const type of [
      'join',
      'certificate.issue',
      'session.start',
      'mcp.request',
      'auth.refused',
    ]) {
      assert.ok(types.has(type), `no ${type} event; types seen: ${[...types].join(', ')}`)
    }
  })

  it('events form a hash chain', async () => {
    const events = await search()
    for (let index = 1; index < events.length; index++) {
      assert.equal(events[index]?.seq, (events[index - 1]?.seq ?? 0) + 1)
      assert.equal(events[index]?.prevHash, events[index - 1]?.hash)
    }
  })

  it('--principal filters by SPIFFE ID', async () => {
    const events = await search('--principal', setup.spiffeId)
    assert.ok(events.some((event) => event.tool === 'read_note'))
    for (const event of events) assert.equal(event.caller?.spiffeId, setup.spiffeId)
  })

  it('--principal takes a principal name', async () => {
    const byName = await search('--principal', 'e2e-agent')
    const byId = await search('--principal', setup.spiffeId)
    assert.deepEqual(
      byName.map((event) => event.id),
      byId.map((event) => event.id),
    )
  })

  it('--principal prefix stops at path boundary', async () => {
    const parent = await search('--principal', 'spiffe://writ.local/bot')
    assert.ok(
      parent.some((event) => event.caller?.spiffeId === setup.spiffeId),
      'writ audit search --help promises prefix matching at a path boundary, but ' +
        '--principal spiffe://writ.local/bot found no event of spiffe://writ.local/bot/e2e-agent',
    )
    const partial = await search('--principal', 'spiffe://writ.local/bot/e2e')
    assert.deepEqual(partial, [], 'a prefix inside a path segment matched')
  })

  it('--server filters by server', async () => {
    const events = await search('--server', 'notes')
    assert.ok(events.length > 0)
    for (const event of events) assert.equal(event.server, 'notes')
  })

  it('--tool filters by tool', async () => {
    const events = await search('--tool', 'write_note')
    assert.equal(events.length, 1)
    assert.equal(events[0]?.outcome, 'denied')
    assert.equal(events[0]?.caller?.spiffeId, setup.spiffeId)
    assert.match(events[0]?.argsDigest ?? '', /^sha256:[0-9a-f]{64}$/)
  })

  it('--outcome denied filters by outcome', async () => {
    const events = await search('--outcome', 'denied')
    assert.ok(events.some((event) => event.tool === 'write_note'))
    assert.ok(events.some((event) => event.type === 'auth.refused'))
    for (const event of events) assert.equal(event.outcome, 'denied')
  })

  it('filters combine', async () => {
    const events = await search('--server', 'notes', '--outcome', 'success', '--tool', 'read_note')
    assert.equal(events.length, 1)
    assert.equal(events[0]?.tool, 'read_note')
  })

  it('--since takes a duration or a time', async () => {
    const recent = await search('--since', '10m')
    assert.ok(recent.length > 0)
    const tenMinutesAgo = Date.now() - 10 * 60_000
    for (const event of recent) assert.ok(Date.parse(event.time) >= tenMinutesAgo, event.time)
    assert.deepEqual(await search('--since', '2099-01-01T00:00:00Z'), [])
  })

  it('text output shows one line per event', async () => {
    const result = await runWrit([
      'audit',
      'search',
      '--data-dir',
      setup.dataDir,
      '--tool',
      'write_note',
    ])
    assert.equal(result.code, 0, result.stderr)
    const lines = result.stdout.trim().split('\n')
    assert.equal(lines.length, 1)
    assert.match(lines[0] ?? '', /denied/)
    assert.match(lines[0] ?? '', /write_note/)
    assert.match(lines[0] ?? '', /spiffe:\/\/writ\.local\/bot\/e2e-agent/)
  })

  it('invalid --outcome names the value', async () => {
    const result = await runWrit([
      'audit',
      'search',
      '--data-dir',
      setup.dataDir,
      '--outcome',
      'maybe',
    ])
    assert.equal(result.code, 2)
    assert.match(result.stderr, /invalid --outcome "maybe"/)
  })

  it('invalid --since names the value', async () => {
    const result = await runWrit([
      'audit',
      'search',
      '--data-dir',
      setup.dataDir,
      '--since',
      'yesterday',
    ])
    assert.notEqual(result.code, 0)
    assert.match(result.stderr, /"yesterday"/)
  })
})

describe('writ audit verify', () => {
  it('reports an intact chain', async () => {
    const result = await runWrit(['audit', 'verify', '--data-dir', setup.dataDir])
    assert.equal(result.code, 0, result.stdout + result.stderr)
    assert.match(result.stdout, /^audit chain intact: \d+ events verified$/m)
    const json = await runWrit(['audit', 'verify', '--data-dir', setup.dataDir, '--json'])
    assert.equal(json.code, 0)
    assert.equal(JSON.parse(json.stdout).ok, true)
  })

  it('names an edited event', async () => {
    await setup.server.stop()
    const gapDir = join(temporaryDirectory('audit-gap'), 'data')
    cpSync(setup.dataDir, gapDir, { recursive: true })

    const db = new Database(join(setup.dataDir, 'writ.db'))
    try {
      const row = db
        .prepare("SELECT seq, id FROM audit WHERE tool = 'write_note' AND outcome = 'denied'")
        .get() as { seq: number; id: string }
      assert.ok(row, 'no denied write_note row to edit')
      db.prepare(
        "UPDATE audit SET outcome = 'success', json = json_set(json, '$.outcome', 'success') WHERE seq = ?",
      ).run(row.seq)
      db.close()

      const result = await runWrit(['audit', 'verify', '--data-dir', setup.dataDir])
      assert.equal(result.code, 1, result.stdout)
      assert.match(result.stdout, /audit chain broken/)
      assert.ok(
        result.stdout.includes(`event seq ${row.seq}, id ${row.id}`),
        `verify does not name event seq ${row.seq} (${row.id}): ${result.stdout}`,
      )
    } finally {
      if (db.open) db.close()
    }

    const copy = new Database(join(gapDir, 'writ.db'))
    const middle = copy.prepare("SELECT seq FROM audit WHERE tool = 'read_note'").get() as {
      seq: number
    }
    copy.prepare('DELETE FROM audit WHERE seq = ?').run(middle.seq)
    copy.close()
    const gap = await runWrit(['audit', 'verify', '--data-dir', gapDir])
    assert.equal(gap.code, 1, gap.stdout)
    assert.match(
      gap.stdout,
      new RegExp(`event seq ${middle.seq + 1}\\b`),
      `verify does not name the event after the gap: ${gap.stdout}`,
    )
  })
})
