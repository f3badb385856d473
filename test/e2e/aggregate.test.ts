import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { EXPOSED_NAME } from '../../src/gateway/aggregate-names.js'
import { WRIT_DENIED_CODE } from '../../src/gateway/jsonrpc.js'
import {
  auditSearch,
  type ClientTls,
  type GatewaySetup,
  httpsRequest,
  initializeBody,
  readIdentity,
  removeTemporaryDirectories,
  replyJson,
  runWrit,
  startGatewaySetup,
  waitFor,
} from './harness.js'

let setup: GatewaySetup
let tls: ClientTls
let sessionId: string
let nextId = 10

before(async () => {
  setup = await startGatewaySetup('aggregate')
  tls = readIdentity(setup.identity)
  const reply = await httpsRequest(setup.server.address, '/mcp', {
    tls,
    body: initializeBody('2025-06-18'),
  })
  assert.equal(reply.status, 200, reply.body.toString('utf8'))
  sessionId = String(reply.headers['mcp-session-id'])
  const initialized = JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' })
  await post(initialized)
})

after(async () => {
  await setup?.server.stop()
  removeTemporaryDirectories()
})

function post(body: string) {
  return httpsRequest(setup.server.address, '/mcp', {
    tls,
    body,
    headers: { 'mcp-session-id': sessionId, 'mcp-protocol-version': '2025-06-18' },
  })
}

async function call(method: string, params: Record<string, unknown>) {
  const reply = await post(JSON.stringify({ jsonrpc: '2.0', id: nextId++, method, params }))
  assert.equal(reply.status, 200, reply.body.toString('utf8'))
  return replyJson(reply) as {
    result?: Record<string, unknown>
    error?: { code: number; message: string; data?: { reason?: string; requestId?: string } }
  }
}

describe('aggregated /mcp endpoint', () => {
  it('lists allowed tools of every server', async () => {
    const response = await call('tools/list', {})
    const tools = (response.result?.tools ?? []) as Array<{ name: string }>
    const names = tools.map((tool) => tool.name)
    assert.ok(names.includes('notes__read_note'), names.join(' '))
    assert.ok(names.includes('files__read_text_file'), names.join(' '))
    assert.ok(!names.includes('notes__write_note'), 'denied notes tool listed')
    assert.ok(!names.includes('files__write_file'), 'denied files tool listed')
    assert.ok(!names.some((name) => name.startsWith('hidden__')), 'server outside the role listed')
    assert.ok(!names.some((name) => name.startsWith('broken__')), 'failed server listed')
    for (const name of names) assert.match(name, EXPOSED_NAME)
  })

  it('routes calls to filesystem and fixture', async () => {
    const path = join(setup.workspace, 'hello.txt')
    const file = await call('tools/call', { name: 'files__read_text_file', arguments: { path } })
    const content = (file.result?.content ?? []) as Array<{ text?: string }>
    assert.equal(content[0]?.text, 'hello from the e2e workspace\n')
    const note = await call('tools/call', { name: 'notes__read_note', arguments: { id: 3 } })
    const noteContent = (note.result?.content ?? []) as Array<{ text?: string }>
    assert.equal(noteContent[0]?.text, 'called read_note with {"id":3}')
  })

  it('denied call is audited under the real server', async () => {
    const response = await call('tools/call', { name: 'notes__write_note', arguments: {} })
    assert.equal(response.error?.code, WRIT_DENIED_CODE)
    assert.equal(response.error?.data?.reason, 'forbidden')
    assert.match(response.error?.message ?? '', /write_note/)
    const received = readFileSync(setup.recordFile, 'utf8')
    assert.match(received, /"read_note"/)
    assert.doesNotMatch(received, /"write_note"/)
    const events = await auditSearch(setup.dataDir, ['--tool', 'write_note'])
    const event = events.find((item) => item.id === response.error?.data?.requestId)
    assert.ok(event, 'no audit record with the request id of the denial')
    assert.equal(event.server, 'notes')
    assert.equal(event.outcome, 'denied')
    assert.match(event.rule ?? '', /e2e-reader/)
  })

  it('leaves out a server that fails to start', async () => {
    const events = await auditSearch(setup.dataDir)
    const ended = events.find((item) => item.type === 'session.end' && item.server === 'broken')
    assert.ok(ended, 'no session.end record for the broken server')
    assert.equal(ended.reason, 'upstream_closed')
    assert.equal(ended.outcome, 'error')
  })

  // Runs last: the lock ends every session of the bot.
  it('lock ends every upstream session', async () => {
    const locked = await runWrit([
      'lock',
      '--bot',
      'e2e-agent',
      '--message',
      'aggregate test',
      '--data-dir',
      setup.dataDir,
    ])
    assert.equal(locked.code, 0, locked.stderr)
    const ends = await waitFor('the upstream sessions to end', async () => {
      const events = await auditSearch(setup.dataDir)
      const found = events.filter(
        (item) => item.type === 'session.end' && item.reason === 'aggregate_closed',
      )
      return found.length >= 2 ? found : undefined
    })
    assert.deepEqual(ends.map((item) => item.server).sort(), ['files', 'notes'])
    const outer = (await auditSearch(setup.dataDir)).find(
      (item) => item.type === 'session.end' && item.server === '*',
    )
    assert.equal(outer?.outcome, 'denied')
    const reply = await post(JSON.stringify({ jsonrpc: '2.0', id: 99, method: 'ping' }))
    assert.equal(reply.status, 403)
  })
})
