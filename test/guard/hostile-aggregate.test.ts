import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { CreateMessageRequestSchema, McpError } from '@modelcontextprotocol/sdk/types.js'
import type { AuditEventInput } from '../../src/audit/types.js'
import { AGGREGATE_SERVER, withAggregate } from '../../src/gateway/aggregate.js'
import {
  DEFAULT_MAX_BODY_BYTES,
  type GatewayDeps,
  type UpstreamConfig,
} from '../../src/gateway/deps.js'
import { WRIT_DENIED_CODE } from '../../src/gateway/jsonrpc.js'
import { createMcpHandler, type McpHandler } from '../../src/gateway/mcp-handler.js'
import { silentLogger } from '../../src/log.js'
import { FIXTURES, identity, tempFile } from '../gateway/harness.js'
import { fakeSecrets } from './fake-secrets.js'

const secrets = fakeSecrets()
const HOSTILE = join(FIXTURES, 'hostile-server.mjs')
const records = { hostile: tempFile('hostile.log'), tracker: tempFile('tracker.log') }
const audit: Array<AuditEventInput & { id: string }> = []
let handler: McpHandler
let server: Server
let url: string

function hostile(record: string, extra: Partial<UpstreamConfig>): UpstreamConfig {
  return {
    name: '',
    stdio: {
      command: process.execPath,
      args: [HOSTILE],
      env: { RECORD_FILE: record, HOSTILE_SECRETS: JSON.stringify(secrets) },
    },
    secrets: [],
    ...extra,
  }
}

before(async () => {
  const servers: Record<string, UpstreamConfig> = {
    hostile: hostile(records.hostile, {}),
    tracker: hostile(records.tracker, { external: true }),
  }
  const allow = { effect: 'allow' as const, reason: 'role_grants', rule: 'reader' }
  const deps: GatewayDeps = {
    getServer: (name) => (servers[name] ? { ...servers[name]!, name } : undefined),
    decideServer: () => allow,
    decideTool: () => allow,
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
  handler = createMcpHandler(withAggregate(deps, { allowedServers: () => Object.keys(servers) }))
  server = createServer((req, res) => {
    void handler.handle(req, res, identity('alice'), AGGREGATE_SERVER, '127.0.0.1:1')
  })
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done))
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/mcp`
})

after(async () => {
  await handler.closeAll()
  server.closeAllConnections()
  await new Promise<void>((done) => server.close(() => done()))
})

async function connect(): Promise<{ client: Client; sampled: unknown[] }> {
  const sampled: unknown[] = []
  const client = new Client(
    { name: 'guard-test', version: '1.0.0' },
    { capabilities: { sampling: {} } },
  )
  client.setRequestHandler(CreateMessageRequestSchema, async (request) => {
    sampled.push(request.params)
    return { role: 'assistant', content: { type: 'text', text: 'sampled' }, model: 'test' }
  })
  await client.connect(new StreamableHTTPClientTransport(new URL(url)))
  await client.listTools()
  return { client, sampled }
}

async function callText(client: Client, name: string): Promise<string> {
  const result = await client.callTool({ name, arguments: {} })
  return (result.content as Array<{ text: string }>)[0]!.text
}

test('aggregate: result scrubbed', async () => {
  const { client } = await connect()
  const text = await callText(client, 'hostile__leak')
  const ansi = await callText(client, 'hostile__ansi')
  await client.close()

  assert.match(text, /\[REDACTED:aws-access-key\]/)
  assert.ok(!text.includes(secrets.awsAccessKey))
  assert.ok(readFileSync(records.hostile, 'utf8').includes(secrets.awsAccessKey))
  assert.equal(ansi, 'red clip link done')
  const record = audit.find((event) => event.tool === 'leak' && event.rule === 'guard/scrub')
  assert.ok(record, 'no scrub audit record')
  assert.equal(record.server, 'hostile')
  assert.ok(!JSON.stringify(audit).includes(secrets.awsAccessKey))
})

test('aggregate: sampling denied without allow', async () => {
  const { client, sampled } = await connect()
  const text = await callText(client, 'hostile__sample')
  await client.close()

  assert.equal(sampled.length, 0)
  assert.match(text, new RegExp(`"code":${WRIT_DENIED_CODE}`))
  const record = audit.find((event) => event.rule === 'guard/server-request/sampling')
  assert.ok(record, 'no sampling audit record')
  assert.equal(record.outcome, 'denied')
})

test('aggregate: secret egress refused', async () => {
  const { client } = await connect()
  const marker = 'aggregate-egress-marker'
  const error = await client
    .callTool({ name: 'tracker__echo', arguments: { note: `${marker} ${secrets.slackToken}` } })
    .then(
      () => assert.fail('the call succeeded'),
      (caught: unknown) => caught,
    )
  await client.close()

  assert.ok(error instanceof McpError)
  assert.equal(error.code, WRIT_DENIED_CODE)
  assert.ok(!readFileSync(records.tracker, 'utf8').includes(marker))
  const record = audit.find((event) => event.rule === 'guard/secret-egress/slack-token')
  assert.ok(record, 'no egress audit record')
  assert.equal(record.server, 'tracker')
  assert.ok(!JSON.stringify(audit).includes(secrets.slackToken))
})
