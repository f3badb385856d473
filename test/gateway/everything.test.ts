import assert from 'node:assert/strict'
import { type ChildProcess, spawn } from 'node:child_process'
import { createServer } from 'node:net'
import { after, before, test } from 'node:test'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import {
  CreateMessageRequestSchema,
  ElicitRequestSchema,
  LoggingMessageNotificationSchema,
  ToolListChangedNotificationSchema,
} from '@modelcontextprotocol/sdk/types.js'
import { EVERYTHING, startGateway, type TestGateway } from './harness.js'

let gateway: TestGateway
let httpUpstream: ChildProcess

async function freePort(): Promise<number> {
  const probe = createServer()
  await new Promise<void>((done) => probe.listen(0, '127.0.0.1', done))
  const { port } = probe.address() as { port: number }
  await new Promise((done) => probe.close(done))
  return port
}

before(async () => {
  const port = await freePort()
  httpUpstream = spawn(process.execPath, [EVERYTHING, 'streamableHttp'], {
    env: { PATH: process.env.PATH, PORT: String(port) },
    stdio: ['ignore', 'ignore', 'pipe'],
  })
  await new Promise<void>((done) => {
    httpUpstream.stderr!.on('data', (chunk: Buffer) => {
      if (chunk.toString().includes('listening')) done()
    })
  })
  gateway = await startGateway({
    servers: {
      everything: {
        stdio: { command: process.execPath, args: [EVERYTHING, 'stdio'] },
        secrets: [],
        allow: { sampling: true, elicitation: true },
      },
      remote: {
        // The upstream listens on loopback, which the gateway refuses unless allowed.
        http: { url: `http://127.0.0.1:${port}/mcp`, allowPrivateNetwork: true },
        secrets: [],
        allow: { sampling: true, elicitation: true },
      },
    },
    allowTool: (tool) => tool !== 'get-env',
  })
})

after(async () => {
  await gateway.close()
  httpUpstream.kill()
})

async function connect(server: string, onList?: () => void): Promise<Client> {
  const client = new Client(
    { name: 'test', version: '1.0.0' },
    { capabilities: { sampling: {}, elicitation: {} } },
  )
  client.setRequestHandler(CreateMessageRequestSchema, async () => ({
    role: 'assistant',
    content: { type: 'text', text: 'sampled answer' },
    model: 'test-model',
  }))
  client.setRequestHandler(ElicitRequestSchema, async () => ({
    action: 'accept',
    content: { name: 'Ada' },
  }))
  if (onList) client.setNotificationHandler(ToolListChangedNotificationSchema, async () => onList())
  await client.connect(new StreamableHTTPClientTransport(new URL(gateway.url(server))))
  return client
}

for (const server of ['everything', 'remote']) {
  test(`${server}: filtered list and call`, async () => {
    const client = await connect(server)
    const { tools } = await client.listTools()
    const names = tools.map((tool) => tool.name)
    assert.ok(names.includes('echo'))
    assert.ok(!names.includes('get-env'))
    const result = await client.callTool({ name: 'echo', arguments: { message: 'hi' } })
    assert.deepEqual(result.content, [{ type: 'text', text: 'Echo: hi' }])
    await client.close()
  })

  test(`${server}: progress reaches its session`, async () => {
    const [first, second] = await Promise.all([connect(server), connect(server)])
    const seen: Record<string, number[]> = { first: [], second: [] }
    const run = (client: Client, key: string) =>
      client.callTool(
        { name: 'trigger-long-running-operation', arguments: { duration: 0.3, steps: 3 } },
        undefined,
        { onprogress: (progress) => seen[key]!.push(progress.progress) },
      )
    await Promise.all([run(first, 'first'), run(second, 'second')])
    assert.deepEqual(seen.first, [1, 2, 3])
    assert.deepEqual(seen.second, [1, 2, 3])
    await Promise.all([first.close(), second.close()])
  })

  test(`${server}: sampling round trip`, async () => {
    const client = await connect(server)
    const result = await client.callTool({
      name: 'trigger-sampling-request',
      arguments: { prompt: 'hello', maxTokens: 5 },
    })
    const text = (result.content as Array<{ text: string }>)[0]!.text
    assert.match(text, /sampled answer/)
    await client.close()
  })

  test(`${server}: elicitation round trip`, async () => {
    const client = await connect(server)
    const result = await client.callTool({ name: 'trigger-elicitation-request', arguments: {} })
    assert.match(JSON.stringify(result.content), /Ada/)
    await client.close()
  })

  test(`${server}: logging and list_changed`, async () => {
    let listChanged = false
    const client = await connect(server, () => {
      listChanged = true
    })
    const logged = new Promise<unknown>((done) =>
      client.setNotificationHandler(LoggingMessageNotificationSchema, async (note) =>
        done(note.params),
      ),
    )
    await client.setLoggingLevel('debug')
    await client.callTool({ name: 'toggle-simulated-logging', arguments: {} })
    const params = (await logged) as { level: string }
    assert.equal(typeof params.level, 'string')
    await client.callTool({ name: 'toggle-simulated-logging', arguments: {} })
    // An HTTP upstream sends list_changed right after initialized, before any GET stream can open,
    // so only the stdio upstream delivers it reliably.
    if (server === 'everything') assert.equal(listChanged, true)
    await client.close()
  })
}
