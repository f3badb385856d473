import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import { WRIT_DENIED_CODE } from '../../src/gateway/jsonrpc.js'
import {
  FIXTURES,
  initializeBody,
  post,
  startGateway,
  type TestGateway,
  tempFile,
} from './harness.js'

let gateway: TestGateway
let url: string
const recordFile = tempFile('raw.jsonl')

/** Returns every line the recording upstream received so far. */
function received(): string {
  try {
    return readFileSync(recordFile, 'utf8')
  } catch {
    return ''
  }
}

before(async () => {
  gateway = await startGateway({
    servers: {
      notes: {
        stdio: {
          command: process.execPath,
          args: [join(FIXTURES, 'recording-server.mjs')],
          env: { RECORD_FILE: recordFile },
        },
        secrets: [],
      },
    },
    allowTool: () => true,
    maxBodyBytes: 2048,
    maxSessionsPerPrincipal: 12,
  })
  url = gateway.url('notes')
})

after(() => gateway.close())

async function open(version: string): Promise<string> {
  const reply = await post(url, initializeBody(version))
  assert.equal(reply.status, 200)
  const id = reply.headers.get('mcp-session-id')
  assert.ok(id !== null && id.length >= 22)
  return id
}

const ping = (id: number) => ({ jsonrpc: '2.0', id, method: 'ping' })

test('invalid JSON gets -32700', async () => {
  const reply = await post(url, '{"jsonrpc":')
  assert.equal(reply.status, 400)
  assert.equal((reply.body as { error: { code: number } }).error.code, -32700)
})

test('oversized body gets 413', async () => {
  const reply = await post(url, JSON.stringify({ pad: 'x'.repeat(4096) }))
  assert.equal(reply.status, 413)
  const error = (
    reply.body as { error: { code: number; message: string; data: { reason: string } } }
  ).error
  assert.equal(error.code, WRIT_DENIED_CODE)
  assert.equal(error.data.reason, 'too_large')
  assert.match(error.message, /2048-byte limit/)
})

test('unknown session gets 404', async () => {
  const reply = await post(url, JSON.stringify(ping(1)), { 'mcp-session-id': 'no-such-session' })
  assert.equal(reply.status, 404)
})

test('missing session id gets 400', async () => {
  const reply = await post(url, JSON.stringify(ping(1)))
  assert.equal(reply.status, 400)
})

test('other certificate gets 404', async () => {
  const session = await open('2025-06-18')
  const reply = await post(url, JSON.stringify(ping(2)), {
    'mcp-session-id': session,
    'x-test-serial': 'ffff',
  })
  assert.equal(reply.status, 404)
})

test('batch rejected under 2025-06-18', async () => {
  const session = await open('2025-06-18')
  const reply = await post(url, JSON.stringify([ping(2), ping(3)]), { 'mcp-session-id': session })
  assert.equal(reply.status, 400)
  const error = (reply.body as { error: { code: number; message: string } }).error
  assert.equal(error.code, -32600)
  assert.match(error.message, /batches were removed in protocol revision 2025-06-18/)
})

test('batch accepted under 2025-03-26', async () => {
  const session = await open('2025-03-26')
  const reply = await post(url, JSON.stringify([ping(2), ping(3)]), { 'mcp-session-id': session })
  assert.equal(reply.status, 200)
  const ids = (reply.body as Array<{ id: number; result: unknown }>).map((item) => item.id).sort()
  assert.deepEqual(ids, [2, 3])
})

test('notification only gets 202', async () => {
  const session = await open('2025-06-18')
  const body = JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' })
  const reply = await post(url, body, { 'mcp-session-id': session })
  assert.equal(reply.status, 202)
})

test('unknown fields survive', async () => {
  const reply = await post(url, initializeBody('2025-06-18'))
  assert.equal((reply.body as { result: { extraField: string } }).result.extraField, 'kept')
})

test('second GET stream gets 409', async () => {
  const session = await open('2025-06-18')
  const headers = { accept: 'text/event-stream', 'mcp-session-id': session }
  const controller = new AbortController()
  const first = await fetch(url, { headers, signal: controller.signal })
  assert.equal(first.status, 200)
  const second = await fetch(url, { headers })
  assert.equal(second.status, 409)
  controller.abort()
})

test('deep nesting rejected, server survives', async () => {
  const session = await open('2025-06-18')
  const depth = 500
  const body = `{"jsonrpc":"2.0","id":5,"method":"tools/list","params":{"x":${'['.repeat(depth)}${']'.repeat(depth)}}}`
  const reply = await post(url, body, { 'mcp-session-id': session })
  assert.equal(reply.status, 400)
  const error = (reply.body as { error: { code: number; message: string } }).error
  assert.equal(error.code, -32600)
  assert.match(error.message, /deeper than 128 levels/)
  const alive = await post(url, JSON.stringify(ping(6)), { 'mcp-session-id': session })
  assert.equal(alive.status, 200)
})

test('tools/call notification never forwarded', async () => {
  const session = await open('2025-06-18')
  const call = {
    jsonrpc: '2.0',
    method: 'tools/call',
    params: { name: 'write_note', arguments: { marker: 'notif-7d1' } },
  }
  const reply = await post(url, JSON.stringify(call), { 'mcp-session-id': session })
  assert.equal(reply.status, 400)
  const error = (reply.body as { error: { code: number; message: string } }).error
  assert.equal(error.code, -32600)
  assert.match(error.message, /must be sent as a request with an id/)
  assert.ok(!received().includes('notif-7d1'))
})

test('method case variants rejected', async () => {
  const session = await open('2025-06-18')
  for (const method of ['TOOLS/CALL', 'tools/call ', 'Tools/List']) {
    const call = {
      jsonrpc: '2.0',
      id: 9,
      method,
      params: { name: 'write_note', arguments: { marker: 'case-3e9' } },
    }
    const reply = await post(url, JSON.stringify(call), { 'mcp-session-id': session })
    assert.equal(reply.status, 400, method)
    const error = (reply.body as { error: { code: number; message: string } }).error
    assert.equal(error.code, -32600, method)
    assert.match(error.message, /invalid method name/, method)
  }
  assert.ok(!received().includes('case-3e9'))
})

test('duplicate request id rejected', async () => {
  const session = await open('2025-03-26')
  const list = { jsonrpc: '2.0', id: 7, method: 'tools/list' }
  const call = {
    jsonrpc: '2.0',
    id: 7,
    method: 'tools/call',
    params: { name: 'read_note', arguments: { marker: 'dup-5a2' } },
  }
  const reply = await post(url, JSON.stringify([list, call]), { 'mcp-session-id': session })
  assert.equal(reply.status, 200)
  const items = reply.body as Array<{
    id: number
    result?: unknown
    error?: { code: number; message: string }
  }>
  assert.equal(items.length, 2)
  const rejected = items.find((item) => item.error !== undefined)
  assert.ok(rejected, JSON.stringify(items))
  assert.equal(rejected.error?.code, -32600)
  assert.match(rejected.error?.message ?? '', /already in use/)
  assert.ok(items.some((item) => item.result !== undefined))
  assert.ok(!received().includes('dup-5a2'))
})

test('session cap per principal', async () => {
  const opened: string[] = []
  let refused: Awaited<ReturnType<typeof post>> | undefined
  for (let attempt = 0; attempt < 20 && refused === undefined; attempt++) {
    const reply = await post(url, initializeBody('2025-06-18'))
    if (reply.status === 200) opened.push(reply.headers.get('mcp-session-id') as string)
    else refused = reply
  }
  assert.ok(refused, 'no session was refused')
  assert.equal(refused.status, 429)
  const error = (
    refused.body as { error: { code: number; message: string; data: { reason: string } } }
  ).error
  assert.equal(error.code, WRIT_DENIED_CODE)
  assert.equal(error.data.reason, 'rate_limited')
  assert.match(error.message, /limit 12/)
  for (const session of opened)
    await fetch(url, { method: 'DELETE', headers: { 'mcp-session-id': session } })
  const after = await post(url, initializeBody('2025-06-18'))
  assert.equal(after.status, 200)
})
