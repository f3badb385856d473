import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { WRIT_DENIED_CODE } from '../../src/gateway/jsonrpc.js'
import { FIXTURES, startGateway, type TestGateway, tempFile } from './harness.js'

const recordFile = tempFile('received.jsonl')
const SECRET = 'sk-test-4f9a8b7c6d5e'
let gateway: TestGateway

before(async () => {
  gateway = await startGateway({
    servers: {
      notes: {
        stdio: {
          command: process.execPath,
          args: [join(FIXTURES, 'recording-server.mjs')],
          env: { RECORD_FILE: recordFile, FIXTURE_SECRET: SECRET },
        },
        secrets: [SECRET],
      },
      broken: {
        stdio: { command: process.execPath, args: [join(FIXTURES, 'exit-at-start.mjs')] },
        secrets: [],
      },
    },
    allowTool: (tool) => tool !== 'write_note',
  })
})

after(() => gateway.close())

async function connect(server: string): Promise<Client> {
  const client = new Client({ name: 'test', version: '1.0.0' })
  await client.connect(new StreamableHTTPClientTransport(new URL(gateway.url(server))))
  return client
}

test('tools/list hides denied tools', async () => {
  const client = await connect('notes')
  const { tools } = await client.listTools()
  assert.deepEqual(
    tools.map((tool) => tool.name),
    ['read_note', 'leak_secret', 'emoji'],
  )
  await client.close()
})

test('denied call never reaches upstream', async () => {
  const client = await connect('notes')
  await assert.rejects(
    client.callTool({ name: 'write_note', arguments: { text: 'x' } }),
    (error: { code?: number; data?: { reason?: string; requestId?: string }; message: string }) => {
      assert.equal(error.code, WRIT_DENIED_CODE)
      assert.equal(error.data?.reason, 'forbidden')
      assert.match(error.message, /tool "write_note" is not allowed/)
      const record = gateway.audit.find((event) => event.id === error.data?.requestId)
      assert.equal(record?.outcome, 'denied')
      assert.equal(record?.rule, 'reader:deny')
      return true
    },
  )
  await client.close()
  const received = readFileSync(recordFile, 'utf8')
  assert.ok(received.includes('"initialize"'))
  assert.ok(!received.includes('write_note'))
})

test('allowed call is audited with digest', async () => {
  const client = await connect('notes')
  const result = await client.callTool({ name: 'read_note', arguments: { b: 2, a: 1 } })
  assert.deepEqual(result.content, [{ type: 'text', text: 'called read_note with {"b":2,"a":1}' }])
  const record = gateway.audit.findLast((event) => event.tool === 'read_note')
  assert.equal(record?.outcome, 'success')
  assert.match(record?.argsDigest ?? '', /^sha256:[0-9a-f]{64}$/)
  assert.deepEqual(record?.args, { b: 2, a: 1 })
  await client.close()
})

test('secrets redacted in results', async () => {
  const client = await connect('notes')
  const result = await client.callTool({ name: 'leak_secret', arguments: {} })
  assert.deepEqual(result.content, [{ type: 'text', text: 'the key is [REDACTED]' }])
  await client.close()
})

test('split emoji arrives intact', async () => {
  const client = await connect('notes')
  const result = await client.callTool({ name: 'emoji', arguments: {} })
  assert.deepEqual(result.content, [{ type: 'text', text: 'ok 😀🎉 done' }])
  await client.close()
})

test('non-JSON stdout line is skipped', async () => {
  const client = await connect('notes')
  // The fixture writes a non-JSON line before its initialize response; the session still works.
  assert.deepEqual(await client.ping(), {})
  await client.close()
})

test('upstream exiting at start names server', async () => {
  const client = new Client({ name: 'test', version: '1.0.0' })
  const transport = new StreamableHTTPClientTransport(new URL(gateway.url('broken')))
  await assert.rejects(client.connect(transport), (error: Error) => {
    assert.match(error.message, /upstream server "broken" is unavailable: it exited with code 3/)
    assert.doesNotMatch(error.message, /cannot open database/)
    return true
  })
})

test('delete ends session and audits', async () => {
  const client = await connect('notes')
  const transport = client.transport as StreamableHTTPClientTransport
  const sessionId = transport.sessionId
  await transport.terminateSession()
  await client.close()
  const ended = gateway.audit.find(
    (event) => event.type === 'session.end' && event.sessionId === sessionId,
  )
  assert.equal(ended?.reason, 'client_deleted')
})
