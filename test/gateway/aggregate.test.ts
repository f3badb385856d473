import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { existsSync, readFileSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import {
  CreateMessageRequestSchema,
  ToolListChangedNotificationSchema,
} from '@modelcontextprotocol/sdk/types.js'
import type { AuditEventInput } from '../../src/audit/types.js'
import { AGGREGATE_SERVER, withAggregate } from '../../src/gateway/aggregate.js'
import { assignNames, EXPOSED_NAME, hashedName } from '../../src/gateway/aggregate-names.js'
import { DEFAULT_MAX_BODY_BYTES, type GatewayDeps } from '../../src/gateway/deps.js'
import { createMcpHandler } from '../../src/gateway/mcp-handler.js'
import { silentLogger } from '../../src/log.js'
import { EVERYTHING, FIXTURES, identity, tempFile } from './harness.js'

const FIXTURE = join(FIXTURES, 'aggregate-server.mjs')
const LONG_TOOL = `summarise_${'quarterly_report_'.repeat(4)}for_the_board`
/** The impostor: a literal tool name equal to the shortened name of the tool `x.y`. */
const IMPOSTOR = hashedName({ server: 'notes', name: 'x.y' }).slice('notes__'.length)
/** The name the impostor moves to, claimed by a second literal tool, so both are refused. */
const MOVED = hashedName({ server: 'notes', name: IMPOSTOR })
const SECOND_IMPOSTOR = MOVED.slice('notes__'.length)

interface AggregateGateway {
  url: string
  audit: Array<AuditEventInput & { id: string }>
  close(): Promise<void>
}

/** Denies `write_*` and `get-env` the way a role's deny block would, naming the rule. */
function decideTool(tool: string) {
  if (tool.startsWith('write_') || tool === 'get-env') {
    return { effect: 'deny' as const, reason: 'role_denies_tool', rule: 'reader:deny:write_*' }
  }
  return { effect: 'allow' as const, reason: 'role_grants_tool', rule: 'reader:allow' }
}

async function startAggregateGateway(recordFile: string): Promise<AggregateGateway> {
  const audit: AggregateGateway['audit'] = []
  const servers = {
    notes: {
      stdio: {
        command: process.execPath,
        args: [FIXTURE],
        env: {
          RECORD_FILE: recordFile,
          SERVER_LABEL: 'notes',
          TOOLS: JSON.stringify([
            'read_note',
            'write_note',
            'add_tool',
            LONG_TOOL,
            'x.y',
            IMPOSTOR,
            SECOND_IMPOSTOR,
          ]),
        },
      },
      secrets: [],
    },
    mirror: {
      stdio: {
        command: process.execPath,
        args: [FIXTURE],
        env: { RECORD_FILE: `${recordFile}.mirror`, SERVER_LABEL: 'mirror' },
      },
      secrets: [],
    },
    everything: {
      stdio: { command: process.execPath, args: [EVERYTHING, 'stdio'] },
      secrets: [],
      allow: { sampling: true },
    },
  }
  const allow = { effect: 'allow' as const, reason: 'role_grants', rule: 'reader' }
  const deps: GatewayDeps = {
    getServer: (name) => {
      const config = servers[name as keyof typeof servers]
      return config ? { name, ...config } : undefined
    },
    decideServer: () => ({ effect: 'allow', reason: 'role_grants_server', rule: 'reader' }),
    decideTool: (_identity, _server, tool) => decideTool(tool),
    decideResource: () => allow,
    decidePrompt: () => allow,
    audit: async (event) => {
      const record = { ...event, id: `evt_${audit.length + 1}` }
      audit.push(record)
      return { id: record.id }
    },
    logger: silentLogger,
    clock: Date.now,
    limits: { maxBodyBytes: DEFAULT_MAX_BODY_BYTES },
  }
  const handler = createMcpHandler(
    withAggregate(deps, { allowedServers: () => Object.keys(servers) }),
  )
  const server: Server = createServer((req, res) => {
    if (!(req.url ?? '').startsWith('/mcp')) {
      res.writeHead(404).end()
      return
    }
    void handler.handle(req, res, identity('alice'), AGGREGATE_SERVER, '127.0.0.1:1')
  })
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}/mcp`,
    audit,
    close: async () => {
      await handler.closeAll()
      server.closeAllConnections()
      await new Promise<void>((done) => server.close(() => done()))
    },
  }
}

async function connect(url: string): Promise<Client> {
  const client = new Client({ name: 'aggregate-test', version: '1.0.0' })
  await client.connect(new StreamableHTTPClientTransport(new URL(url)))
  return client
}

let gateway: AggregateGateway
let recordFile: string
let client: Client
let transport: StreamableHTTPClientTransport

before(async () => {
  recordFile = tempFile('notes.jsonl')
  gateway = await startAggregateGateway(recordFile)
  client = new Client({ name: 'aggregate-test', version: '1.0.0' })
  transport = new StreamableHTTPClientTransport(new URL(gateway.url))
  await client.connect(transport)
})

after(async () => {
  await client.close()
  await gateway.close()
})

function recorded(): string {
  return existsSync(recordFile) ? readFileSync(recordFile, 'utf8') : ''
}

function textOf(result: unknown): string {
  const content = (result as { content?: Array<{ text?: string }> }).content ?? []
  return content.map((item) => item.text ?? '').join('')
}

test('tools/list merges allowed tools with server prefixes', async () => {
  const { tools } = await client.listTools()
  const names = tools.map((tool) => tool.name)
  assert.ok(names.includes('notes__read_note'), names.join(' '))
  assert.ok(names.includes('everything__echo'), names.join(' '))
  assert.ok(!names.includes('notes__write_note'), 'denied fixture tool listed')
  assert.ok(!names.includes('everything__get-env'), 'denied everything tool listed')
  for (const name of names) assert.match(name, EXPOSED_NAME)
  assert.equal(new Set(names).size, names.length, 'duplicate exposed names')
})

test('tools/call routes to the owning server', async () => {
  const notes = await client.callTool({ name: 'notes__read_note', arguments: { id: 7 } })
  assert.equal(textOf(notes), 'notes called read_note with {"id":7}')
  const echo = await client.callTool({ name: 'everything__echo', arguments: { message: 'hi' } })
  assert.match(textOf(echo), /hi/)
  const record = gateway.audit.find(
    (event) => event.tool === 'read_note' && event.outcome === 'success',
  )
  assert.equal(record?.server, 'notes')
  assert.equal(record?.method, 'tools/call')
})

test('denied call never reaches upstream', async () => {
  await assert.rejects(
    client.callTool({ name: 'notes__write_note', arguments: { text: 'x' } }),
    (error: Error & { code?: number; data?: { reason?: string } }) => {
      assert.equal(error.code, -32003)
      assert.equal(error.data?.reason, 'forbidden')
      assert.match(error.message, /write_note/)
      return true
    },
  )
  assert.ok(recorded().includes('"read_note"'), 'the upstream log misses allowed calls')
  assert.ok(!recorded().includes('"write_note"'), 'write_note reached the upstream')
  const record = gateway.audit.find(
    (event) => event.tool === 'write_note' && event.outcome === 'denied',
  )
  assert.equal(record?.server, 'notes')
  assert.equal(record?.rule, 'reader:deny:write_*')
})

test('long tool name is shortened stably', async () => {
  const { tools } = await client.listTools()
  const digest = createHash('sha256').update(`notes\0${LONG_TOOL}`).digest('hex').slice(0, 12)
  const long = tools.find((tool) => tool.name.endsWith(`_${digest}`))
  assert.ok(long, `no tool ends with _${digest}`)
  assert.match(long.name, EXPOSED_NAME)
  assert.equal(long.name.length, 64)
  assert.ok(long.name.startsWith('notes__summarise_quarterly'), long.name)
  const result = await client.callTool({ name: long.name, arguments: {} })
  assert.equal(textOf(result), `notes called ${LONG_TOOL} with {}`)
  // A second gateway, as after a restart, exposes the same name.
  const second = await startAggregateGateway(tempFile('notes-2.jsonl'))
  const other = await connect(second.url)
  try {
    const names = (await other.listTools()).tools.map((tool) => tool.name)
    assert.ok(names.includes(long.name), names.join(' '))
  } finally {
    await other.close()
    await second.close()
  }
})

test('impostor name cannot shadow a shortened name', async () => {
  const { tools } = await client.listTools()
  const names = tools.map((tool) => tool.name)
  const shortened = hashedName({ server: 'notes', name: 'x.y' })
  assert.ok(names.includes(shortened), names.join(' '))
  assert.ok(!names.includes(MOVED), 'colliding name listed')
  const real = await client.callTool({ name: shortened, arguments: {} })
  assert.equal(textOf(real), 'notes called x.y with {}')
  await assert.rejects(
    client.callTool({ name: MOVED, arguments: {} }),
    (error: Error & { code?: number; data?: { reason?: string } }) => {
      assert.equal(error.code, -32003)
      assert.equal(error.data?.reason, 'forbidden')
      assert.match(error.message, new RegExp(MOVED))
      return true
    },
  )
  assert.ok(!recorded().includes(`"${IMPOSTOR}"`), 'impostor reached by a call')
  assert.ok(!recorded().includes(`"${SECOND_IMPOSTOR}"`), 'second impostor reached by a call')
  const record = gateway.audit.find((event) => event.reason === 'name_collision')
  assert.equal(record?.rule, 'aggregate/names')
  assert.equal(record?.outcome, 'denied')
  assert.deepEqual(record?.details, { tool: MOVED })
})

test('assignNames refuses names still colliding', () => {
  const moved = hashedName({ server: 's', name: hashedName({ server: 's', name: 'x.y' }).slice(3) })
  const items = [
    { server: 's', name: 'x.y' },
    { server: 's', name: hashedName({ server: 's', name: 'x.y' }).slice(3) },
    { server: 's', name: moved.slice(3) },
  ]
  const forward = assignNames(items)
  const backward = assignNames([...items].reverse())
  assert.deepEqual([...forward.exposed.keys()], [hashedName(items[0]!)])
  assert.deepEqual(
    forward.refused.map((item) => item.name).sort(),
    [items[1]!.name, items[2]!.name].sort(),
  )
  assert.deepEqual([...backward.exposed.keys()], [...forward.exposed.keys()])
  assert.ok(forward.ambiguous.has(moved))
})

test('unknown tool name is rejected', async () => {
  await assert.rejects(
    client.callTool({ name: 'nowhere__read_note', arguments: {} }),
    (error: Error & { code?: number }) => {
      assert.equal(error.code, -32602)
      assert.match(error.message, /nowhere__read_note/)
      return true
    },
  )
  const record = gateway.audit.find((event) => event.reason === 'unknown_name')
  assert.equal(record?.outcome, 'denied')
  assert.equal(record?.server, '*')
  assert.deepEqual(record?.details, { tool: 'nowhere__read_note' })
})

test('resources/read routes by URI', async () => {
  const { resources } = await client.listResources()
  const uris = resources.map((resource) => resource.uri)
  assert.ok(uris.includes('fixture://notes/readme'), uris.join(' '))
  const notes = await client.readResource({ uri: 'fixture://notes/readme' })
  assert.equal(
    (notes.contents[0] as { text?: string }).text,
    'read fixture://notes/readme from notes',
  )
  const listed = uris.find((uri) => uri.startsWith('demo://'))
  assert.ok(listed, 'no everything resource listed')
  const everything = await client.readResource({ uri: listed })
  assert.equal(everything.contents[0]?.uri, listed)
  // A URI no server listed routes through the one server whose template matches it.
  const templated = await client.readResource({ uri: 'demo://resource/dynamic/text/3' })
  assert.equal(templated.contents[0]?.uri, 'demo://resource/dynamic/text/3')
  assert.ok(!recorded().includes('demo://'), 'everything URI reached the notes server')
})

test('resources/read of unknown URI fails', async () => {
  await assert.rejects(
    client.readResource({ uri: 'fixture://nobody/here' }),
    (error: Error & { code?: number }) => {
      assert.equal(error.code, -32002)
      assert.match(error.message, /fixture:\/\/nobody\/here/)
      return true
    },
  )
})

test('prompts/get routes by prefix', async () => {
  const { prompts } = await client.listPrompts()
  assert.ok(prompts.some((prompt) => prompt.name === 'notes__greet'))
  const result = await client.getPrompt({ name: 'notes__greet' })
  const content = result.messages[0]?.content as { text?: string }
  assert.equal(content.text, 'prompt greet from notes')
})

test('list_changed is re-listed and forwarded', { timeout: 30_000 }, async () => {
  let notifications = 0
  let notified: () => void = () => {}
  client.setNotificationHandler(ToolListChangedNotificationSchema, async () => {
    notifications++
    notified()
  })
  const changed = new Promise<void>((done) => {
    notified = done
  })
  // A new tool the caller may not use changes nothing the caller sees, so it is not announced.
  await client.callTool({ name: 'notes__add_tool', arguments: { name: 'write_more' } })
  await client.callTool({ name: 'notes__add_tool', arguments: { name: 'fresh_tool' } })
  await changed
  assert.equal(notifications, 1)
  const names = (await client.listTools()).tools.map((tool) => tool.name)
  assert.ok(names.includes('notes__fresh_tool'), names.join(' '))
  assert.ok(!names.includes('notes__write_more'), 'denied new tool listed')
})

test('sampling request reaches the client', async () => {
  const sampler = new Client(
    { name: 'aggregate-sampler', version: '1.0.0' },
    { capabilities: { sampling: {} } },
  )
  sampler.setRequestHandler(CreateMessageRequestSchema, async () => ({
    role: 'assistant',
    content: { type: 'text', text: 'sampled by the client' },
    model: 'test-model',
  }))
  await sampler.connect(new StreamableHTTPClientTransport(new URL(gateway.url)))
  try {
    const result = await sampler.callTool({
      name: 'everything__trigger-sampling-request',
      arguments: { prompt: 'hello' },
    })
    assert.match(JSON.stringify(result.content), /sampled by the client/)
  } finally {
    await sampler.close()
  }
})

test('resource URI on two servers is refused', async () => {
  const { resources } = await client.listResources()
  const uris = resources.map((resource) => resource.uri)
  assert.ok(uris.includes('fixture://mirror/readme'), uris.join(' '))
  assert.ok(!uris.includes('fixture://shared/common'), 'shared URI listed')
  await assert.rejects(
    client.readResource({ uri: 'fixture://shared/common' }),
    (error: Error & { code?: number; data?: { reason?: string } }) => {
      assert.equal(error.code, -32003)
      assert.equal(error.data?.reason, 'forbidden')
      assert.match(error.message, /fixture:\/\/shared\/common/)
      return true
    },
  )
  const mirrorLog = readFileSync(`${recordFile}.mirror`, 'utf8')
  assert.match(mirrorLog, /resources\/list/)
  assert.ok(!mirrorLog.includes('resources/read'), 'read reached the mirror server')
  const notesReads = recorded()
    .split('\n')
    .filter((line) => line.includes('resources/read') && line.includes('fixture://shared/common'))
  assert.deepEqual(notesReads, [], 'read reached the notes server')
  const record = gateway.audit.find((event) => event.reason === 'resource_collision')
  assert.equal(record?.rule, 'aggregate/names')
  assert.deepEqual(record?.details, { uri: 'fixture://shared/common' })
})

test('progress arrives and cancel releases the call', { timeout: 30_000 }, async () => {
  const controller = new AbortController()
  let progress = 0
  const call = client.callTool(
    { name: 'everything__trigger-long-running-operation', arguments: { duration: 60, steps: 60 } },
    undefined,
    {
      signal: controller.signal,
      onprogress: () => {
        progress++
        controller.abort()
      },
    },
  )
  await assert.rejects(call)
  assert.equal(progress, 1)
  const echo = await client.callTool({ name: 'everything__echo', arguments: { message: 'after' } })
  assert.match(textOf(echo), /after/)
})

/** Sends one raw request on the main client's session and returns the JSON-RPC error. */
async function rawError(method: string, params: Record<string, unknown>) {
  const response = await fetch(gateway.url, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      accept: 'application/json',
      'mcp-session-id': transport.sessionId ?? '',
      'mcp-protocol-version': '2025-06-18',
    },
    body: JSON.stringify({ jsonrpc: '2.0', id: `raw-${method}`, method, params }),
  })
  assert.equal(response.status, 200)
  const body = (await response.json()) as { error?: { code: number; message: string } }
  assert.ok(body.error, `no error for ${method}`)
  return body.error
}

test('invalid requests name the value', async () => {
  const cursor = await rawError('tools/list', { cursor: 'page-7' })
  assert.equal(cursor.code, -32602)
  assert.match(cursor.message, /page-7/)
  const name = await rawError('tools/call', { name: 42 })
  assert.equal(name.code, -32602)
  assert.match(name.message, /params\.name/)
  const uri = await rawError('resources/read', {})
  assert.equal(uri.code, -32602)
  assert.match(uri.message, /params\.uri/)
  const method = await rawError('completion/complete', { ref: { type: 'ref/prompt', name: 'x' } })
  assert.equal(method.code, -32601)
  assert.match(method.message, /completion\/complete/)
})
