import assert from 'node:assert/strict'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js'
import { EVERYTHING, FIXTURES, startGateway, type TestGateway } from './harness.js'

let gateway: TestGateway

before(async () => {
  gateway = await startGateway({
    servers: {
      everything: {
        stdio: { command: process.execPath, args: [EVERYTHING, 'stdio'] },
        secrets: [],
      },
    },
    allowTool: (tool) => tool !== 'get-env',
  })
})

after(() => gateway.close())

test('stdio bridge end to end', async () => {
  const bridge = join(import.meta.dirname, '../../src/gateway/bridge.js')
  const transport = new StdioClientTransport({
    command: process.execPath,
    args: [join(FIXTURES, 'bridge-runner.mjs'), bridge, gateway.url('everything')],
  })
  const client = new Client({ name: 'bridge-test', version: '1.0.0' })
  await client.connect(transport)
  const { tools } = await client.listTools()
  assert.ok(tools.some((tool) => tool.name === 'echo'))
  assert.ok(!tools.some((tool) => tool.name === 'get-env'))
  const result = await client.callTool({ name: 'echo', arguments: { message: 'via bridge' } })
  assert.deepEqual(result.content, [{ type: 'text', text: 'Echo: via bridge' }])
  await assert.rejects(client.callTool({ name: 'get-env', arguments: {} }), /not allowed/)
  await client.close()
})
