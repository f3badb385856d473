import assert from 'node:assert/strict'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import type { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { WRIT_DENIED_CODE } from '../../src/gateway/jsonrpc.js'
import {
  auditSearch,
  connectThroughBridge,
  type GatewaySetup,
  RECORDING_SERVER,
  removeTemporaryDirectories,
  runWrit,
  startGatewaySetup,
  waitFor,
} from './harness.js'

type DeniedError = { code?: number; message: string; data?: { reason?: string } }

let setup: GatewaySetup
const clients: Client[] = []

before(async () => {
  setup = await startGatewaySetup('limits', ['--rate-limit', '3'])
})

after(async () => {
  for (const client of clients) await client.close()
  await setup?.server.stop()
  removeTemporaryDirectories()
})

async function connect(server: string): Promise<Client> {
  const { client } = await connectThroughBridge(setup.server.address, setup.identity, server)
  clients.push(client)
  return client
}

async function deniedCall(client: Client, args: Record<string, unknown>): Promise<DeniedError> {
  const error = await client.callTool({ name: 'read_note', arguments: args }).then(
    () => undefined,
    (failure: DeniedError) => failure,
  )
  assert.ok(error, `call with ${JSON.stringify(args)} was not denied`)
  return error
}

describe('writ start --rate-limit', () => {
  it('denies calls over the limit', async () => {
    const notes = await connect('notes')
    for (let n = 1; n <= 3; n++) {
      await notes.callTool({ name: 'read_note', arguments: { n } })
    }
    const error = await deniedCall(notes, { n: 4 })
    assert.equal(error.code, WRIT_DENIED_CODE)
    assert.equal(error.data?.reason, 'rate_limited')
    assert.match(error.message, /at most 3 tool calls per minute/)
    const received = readFileSync(setup.recordFile, 'utf8')
    assert.match(received, /"arguments":\{"n":3\}/)
    assert.doesNotMatch(received, /"arguments":\{"n":4\}/)
    const events = await auditSearch(setup.dataDir, ['--tool', 'read_note'])
    const denied = events.filter((event) => event.rule === 'guard/rate-limit')
    assert.equal(denied.length, 1)
    assert.equal(denied[0]?.outcome, 'denied')
    assert.equal(denied[0]?.caller?.spiffeId, setup.spiffeId)
  })
})

describe('role limits', () => {
  it('apply once the role is updated', async () => {
    const manifest = join(setup.dataDir, '..', 'role-limits.yaml')
    writeFileSync(
      manifest,
      `apiVersion: writ.dev/v1alpha1
kind: Role
metadata: { name: e2e-reader }
spec:
  maxTtl: 1h
  limits: { callsPerMinute: 1 }
  allow:
    mcpServers: { env: e2e }
    tools: ['read_*', 'list_*', 'emoji', 'leak_secret']
  deny:
    tools: ['write_*']
---
apiVersion: writ.dev/v1alpha1
kind: McpServer
metadata: { name: notes-two, labels: { env: e2e } }
spec:
  stdio:
    command: ${JSON.stringify(process.execPath)}
    args: [${JSON.stringify(RECORDING_SERVER)}]
`,
    )
    const applied = await runWrit(['apply', '-f', manifest, '--data-dir', setup.dataDir])
    assert.equal(applied.code, 0, applied.stderr)
    // Once the new server is listed, Writ has loaded the policy with the role's limits.
    const ls = [
      'mcp',
      'ls',
      '--json',
      '--server',
      setup.server.address,
      '--identity',
      setup.identity,
    ]
    await waitFor('the updated policy', async () => {
      const listed = await runWrit(ls)
      return listed.stdout.includes('"notes-two"') ? true : undefined
    })
    const notesTwo = await connect('notes-two')
    await notesTwo.callTool({ name: 'read_note', arguments: { role: 1 } })
    const error = await deniedCall(notesTwo, { role: 2 })
    assert.equal(error.data?.reason, 'rate_limited')
    assert.match(error.message, /at most 1 tool calls per minute/)
  })
})
