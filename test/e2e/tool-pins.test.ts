import assert from 'node:assert/strict'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import type { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { WRIT_DENIED_CODE } from '../../src/gateway/jsonrpc.js'
import {
  addBot,
  auditSearch,
  connectThroughBridge,
  FIXTURES,
  joinOnce,
  removeTemporaryDirectories,
  runWrit,
  startWrit,
  temporaryDirectory,
  type WritServer,
  waitFor,
} from './harness.js'

const root = temporaryDirectory('pins')
const dataDir = join(root, 'data')
const identity = join(root, 'identity')
const recordFile = join(root, 'received.jsonl')
const switchFile = join(root, 'rug-pulled')
let server: WritServer
const clients: Client[] = []

before(async () => {
  const config = join(root, 'config.yaml')
  writeFileSync(recordFile, '')
  writeFileSync(
    config,
    `apiVersion: writ.dev/v1alpha1
kind: McpServer
metadata: { name: weather, labels: { env: pins } }
spec:
  stdio:
    command: ${JSON.stringify(process.execPath)}
    args: [${JSON.stringify(join(FIXTURES, 'rug-pull-server.mjs'))}]
    env:
      RECORD_FILE: ${JSON.stringify(recordFile)}
      RUG_PULL_FILE: ${JSON.stringify(switchFile)}
---
apiVersion: writ.dev/v1alpha1
kind: Role
metadata: { name: forecaster }
spec:
  allow:
    mcpServers: { env: pins }
    tools: ['get_weather', 'add_numbers']
`,
  )
  server = await startWrit(dataDir, ['--config', config])
  const enrollment = await addBot(dataDir, 'forecaster', 'forecaster')
  await joinOnce(server, enrollment, identity)
})

after(async () => {
  for (const client of clients) await client.close()
  await server?.stop()
  removeTemporaryDirectories()
})

/** Opens a new session, so the fixture starts again and reads the switch file. */
async function connect(): Promise<Client> {
  const { client } = await connectThroughBridge(server.address, identity, 'weather')
  clients.push(client)
  return client
}

async function listNames(client: Client): Promise<string[]> {
  const { tools } = await client.listTools()
  return tools.map((tool) => tool.name)
}

function weatherCalls(): number {
  return readFileSync(recordFile, 'utf8')
    .split('\n')
    .filter((line) => line.includes('"tools/call"') && line.includes('"get_weather"')).length
}

interface PinRow {
  tool: string
  state: string
  digest: string
  approvedDigest?: string
}

async function pins(): Promise<PinRow[]> {
  const result = await runWrit(['tools', 'ls', 'weather', '--json', '--data-dir', dataDir])
  assert.equal(result.code, 0, result.stderr)
  return JSON.parse(result.stdout) as PinRow[]
}

test('writ tools approve restores a rug-pulled tool', async () => {
  const first = await connect()
  assert.deepEqual(await listNames(first), ['get_weather'])
  await first.callTool({ name: 'get_weather', arguments: { city: 'Oslo' } })
  assert.equal(weatherCalls(), 1)

  writeFileSync(switchFile, 'pulled\n')
  const second = await connect()
  assert.deepEqual(await listNames(second), [])
  await assert.rejects(
    second.callTool({ name: 'get_weather', arguments: { city: 'Oslo' } }),
    (error: { code?: number; data?: { reason?: string }; message: string }) => {
      assert.equal(error.code, WRIT_DENIED_CODE)
      assert.equal(error.data?.reason, 'quarantined')
      return true
    },
  )
  assert.equal(weatherCalls(), 1)

  const held = await waitFor('the quarantined pin', async () =>
    (await pins()).find((pin) => pin.tool === 'get_weather' && pin.state === 'quarantined'),
  )
  assert.notEqual(held.digest, held.approvedDigest)
  const text = await runWrit(['tools', 'ls', 'weather', '--data-dir', dataDir])
  assert.match(text.stdout, /get_weather\s+quarantined/)
  assert.match(text.stdout, /add_numbers\s+pending\s+\S+\s+-\s+\S*invisible_unicode/)

  const changed = await waitFor('the tool.changed audit event', async () => {
    const events = await auditSearch(dataDir, ['--tool', 'get_weather'])
    return events.find((event) => event.type === 'tool.changed')
  })
  assert.equal(changed.outcome, 'denied')
  assert.equal(changed.details?.previousDigest, held.approvedDigest)
  assert.equal(changed.details?.digest, held.digest)

  const stale = await runWrit([
    'tools',
    'approve',
    'weather',
    'get_weather',
    '--digest',
    String(held.approvedDigest),
    '--data-dir',
    dataDir,
  ])
  assert.equal(stale.code, 1)
  assert.match(stale.stderr, /\[tools\.digest_mismatch\]/)
  assert.ok(stale.stderr.includes(String(held.approvedDigest)), stale.stderr)

  const approve = await runWrit([
    'tools',
    'approve',
    'weather',
    'get_weather',
    '--digest',
    held.digest,
    '--data-dir',
    dataDir,
  ])
  assert.equal(approve.code, 0, approve.stderr)
  assert.match(approve.stdout, /weather\/get_weather approved \(sha256:/)
  await waitFor('get_weather to be listed again', async () =>
    (await listNames(second)).includes('get_weather') ? true : undefined,
  )
  const result = await second.callTool({ name: 'get_weather', arguments: { city: 'Bergen' } })
  assert.deepEqual(result.content, [{ type: 'text', text: 'sunny in Bergen' }])
  assert.equal(weatherCalls(), 2)
  const events = await auditSearch(dataDir, ['--tool', 'get_weather'])
  const approved = events.find((event) => event.type === 'tool.approved')
  assert.equal(approved?.details?.digest, held.digest)
})

test('writ tools approve names an unknown tool', async () => {
  const result = await runWrit([
    'tools',
    'approve',
    'weather',
    'no_such_tool',
    '--data-dir',
    dataDir,
  ])
  assert.equal(result.code, 1)
  assert.match(result.stderr, /"no_such_tool"/)
  assert.match(result.stderr, /\[tools\.pin_not_found\]/)
})

test('writ tools ls names an unknown server', async () => {
  const result = await runWrit(['tools', 'ls', 'nowhere', '--data-dir', dataDir])
  assert.equal(result.code, 1)
  assert.match(result.stderr, /"nowhere"/)
  assert.match(result.stderr, /\[tools\.server_not_found\]/)
})
