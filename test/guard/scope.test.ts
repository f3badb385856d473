import assert from 'node:assert/strict'
import { type ChildProcess, spawn } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import type { AuditEventInput } from '../../src/audit/types.js'
import { DEFAULT_MAX_BODY_BYTES, type UpstreamConfig } from '../../src/gateway/deps.js'
import { createMcpHandler, type McpHandler } from '../../src/gateway/mcp-handler.js'
import type { PeerIdentity } from '../../src/identity/types.js'
import { silentLogger } from '../../src/log.js'
import { parseManifests } from '../../src/policy/manifest.js'
import { compilePolicy } from '../../src/policy/policy.js'
import { FIXTURES, identity, initializeBody, post, tempFile } from '../gateway/harness.js'

const SCOPE_SERVER = join(FIXTURES, 'scope-recording-server.mjs')
const HTTP_SERVER = join(FIXTURES, 'http-recording-server.mjs')

const ROLES = `
apiVersion: writ.dev/v1alpha1
kind: Role
metadata: { name: writer }
spec:
  allow:
    mcpServers: { '*': '*' }
    tools: ['write_file', 'read_file', 'whoami']
    args:
      - tools: ['write_file', 'read_file']
        rule: "isWithin(args.path, '/workspace')"
    resources: ['file:///workspace/*']
    prompts: ['summarize']
---
apiVersion: writ.dev/v1alpha1
kind: Role
metadata: { name: admin }
spec:
  allow:
    mcpServers: { '*': '*' }
    tools: ['*']
    resources: ['*']
    prompts: ['*']
`

type Audit = Array<AuditEventInput & { id: string }>

interface Gateway {
  url: string
  audit: Audit
  close(): Promise<void>
}

/** Starts the gateway on 127.0.0.1 with the roles above compiled into a real policy. */
async function startScopedGateway(upstream: Omit<UpstreamConfig, 'name'>): Promise<Gateway> {
  const roles = parseManifests(ROLES, 'roles.yaml')
  const servers = parseManifests(
    'apiVersion: writ.dev/v1alpha1\nkind: McpServer\nmetadata: { name: files }\nspec: { stdio: { command: x } }\n',
    'servers.yaml',
  )
  const policy = compilePolicy(roles, servers)
  const audit: Audit = []
  const handler: McpHandler = createMcpHandler({
    getServer: (name) => (name === 'files' ? { name, ...upstream } : undefined),
    decideServer: (caller, server) => policy.decideServer(caller.claims, server),
    decideTool: (caller, server, tool) => policy.decideTool(caller.claims, server, tool),
    decideArguments: (caller, server, tool, args) =>
      policy.decideArguments(caller, server, tool, args),
    decideResource: (caller, server, uri) => policy.decideResource(caller.claims, server, uri),
    decidePrompt: (caller, server, name) => policy.decidePrompt(caller.claims, server, name),
    audit: async (event) => {
      const record = { ...event, id: `evt_${audit.length + 1}` }
      audit.push(record)
      return { id: record.id }
    },
    logger: silentLogger,
    clock: Date.now,
    limits: { maxBodyBytes: DEFAULT_MAX_BODY_BYTES },
  })
  const caller: PeerIdentity = identity('alice')
  caller.claims.roles = ['writer']
  const server: Server = createServer((req, res) => {
    void handler.handle(req, res, caller, 'files', '127.0.0.1:1')
  })
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}/mcp/files`,
    audit,
    close: async () => {
      await handler.closeAll()
      server.closeAllConnections()
      await new Promise<void>((done) => server.close(() => done()))
    },
  }
}

/** A scripted MCP client: initializes a session and sends one request at a time. */
class Client {
  #session = ''
  #nextId = 10

  constructor(
    readonly url: string,
    readonly headers: Record<string, string> = {},
  ) {}

  async start(): Promise<void> {
    const reply = await post(this.url, initializeBody('2025-06-18'), this.headers)
    assert.equal(reply.status, 200, JSON.stringify(reply.body))
    this.#session = reply.headers.get('mcp-session-id') ?? ''
    const initialized = JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' })
    await post(this.url, initialized, this.sessionHeaders())
  }

  sessionHeaders(): Record<string, string> {
    return {
      ...this.headers,
      'mcp-session-id': this.#session,
      'mcp-protocol-version': '2025-06-18',
    }
  }

  async request(method: string, params: Record<string, unknown>): Promise<JsonReply> {
    const id = this.#nextId++
    return this.raw(JSON.stringify({ jsonrpc: '2.0', id, method, params }))
  }

  async raw(body: string): Promise<JsonReply> {
    const reply = await post(this.url, body, this.sessionHeaders())
    return reply.body as JsonReply
  }
}

interface JsonReply {
  id: number
  result?: Record<string, unknown>
  error?: { code: number; message: string; data?: { reason?: string; requestId?: string } }
}

function recorded(file: string): Array<{ method?: string; params?: Record<string, unknown> }> {
  if (!existsSync(file)) return []
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => JSON.parse(line))
}

function auditOf(audit: Audit, requestId: string | undefined) {
  const record = audit.find((event) => event.id === requestId)
  assert.ok(record, `no audit record ${requestId}`)
  return record
}

describe('scope guard with a hostile stdio upstream', () => {
  let gateway: Gateway
  let client: Client
  const recordFile = tempFile('scope-upstream.jsonl')

  before(async () => {
    gateway = await startScopedGateway({
      stdio: { command: process.execPath, args: [SCOPE_SERVER], env: { RECORD_FILE: recordFile } },
      secrets: [],
    })
    client = new Client(gateway.url)
    await client.start()
  })

  after(async () => {
    await gateway.close()
  })

  test('argument rule blocks path traversal', async () => {
    const reply = await client.request('tools/call', {
      name: 'write_file',
      arguments: { path: '/workspace/../etc/cron.d/evil', content: 'x' },
    })
    assert.equal(reply.error?.data?.reason, 'forbidden')
    assert.match(reply.error?.message ?? '', /arguments of tool "write_file" are not allowed/)
    const record = auditOf(gateway.audit, reply.error?.data?.requestId)
    assert.equal(record.outcome, 'denied')
    assert.equal(record.rule, 'role/writer/allow/args[0]')
    assert.equal(record.tool, 'write_file')
    const calls = recorded(recordFile).filter((line) => line.method === 'tools/call')
    assert.equal(
      calls.some((line) => JSON.stringify(line).includes('cron.d')),
      false,
      'the upstream received the traversal',
    )
  })

  test('argument rule forwards contained path', async () => {
    const reply = await client.request('tools/call', {
      name: 'write_file',
      arguments: { path: '/workspace/notes/a.txt', content: 'x' },
    })
    assert.equal(reply.error, undefined, JSON.stringify(reply))
    const calls = recorded(recordFile).filter((line) => line.method === 'tools/call')
    assert.ok(calls.some((line) => JSON.stringify(line).includes('/workspace/notes/a.txt')))
  })

  test('role claims in arguments ignored', async () => {
    const reply = await client.request('tools/call', {
      name: 'write_file',
      arguments: { path: '/etc/shadow', role: 'admin', roles: ['admin'] },
      _meta: { roles: ['admin'], role: 'admin', spiffeId: 'spiffe://writ.test/user/root' },
    })
    assert.equal(reply.error?.data?.reason, 'forbidden')
    assert.equal(
      auditOf(gateway.audit, reply.error?.data?.requestId).rule,
      'role/writer/allow/args[0]',
    )
    const other = await client.request('tools/call', {
      name: 'delete_everything',
      arguments: { role: 'admin' },
      _meta: { roles: ['admin'] },
    })
    assert.equal(other.error?.data?.reason, 'forbidden')
    assert.equal(auditOf(gateway.audit, other.error?.data?.requestId).rule, 'default-deny')
    const text = readFileSync(recordFile, 'utf8')
    assert.equal(text.includes('/etc/shadow'), false, 'the upstream received /etc/shadow')
    assert.equal(text.includes('delete_everything'), false, 'the upstream received the call')
  })

  test('duplicate keys forward checked value', async () => {
    const body =
      '{"jsonrpc":"2.0","id":900,"method":"tools/call","params":{"name":"write_file",' +
      '"arguments":{"path":"/etc/passwd","path":"/workspace/dup.txt"}}}'
    const reply = await client.raw(body)
    assert.equal(reply.error, undefined, JSON.stringify(reply))
    const forwarded = recorded(recordFile).find((line) => (line as { id?: unknown }).id === 900)
    assert.deepEqual(forwarded?.params?.arguments, { path: '/workspace/dup.txt' })
  })

  test('resources/list hides denied resources', async () => {
    const reply = await client.request('resources/list', {})
    const uris = ((reply.result?.resources ?? []) as Array<{ uri: string }>).map((item) => item.uri)
    assert.deepEqual(uris, ['file:///workspace/notes.txt'])
  })

  test('resources/templates/list hides denied templates', async () => {
    const reply = await client.request('resources/templates/list', {})
    const templates = (reply.result?.resourceTemplates ?? []) as Array<{ uriTemplate: string }>
    assert.deepEqual(
      templates.map((item) => item.uriTemplate),
      ['file:///workspace/{path}'],
    )
  })

  test('resources/read of denied resource refused', async () => {
    for (const uri of [
      'file:///etc/passwd',
      'file:///workspace/../etc/passwd',
      'secret://vault/root-token',
    ]) {
      const reply = await client.request('resources/read', { uri })
      assert.equal(reply.error?.data?.reason, 'forbidden', uri)
      const record = auditOf(gateway.audit, reply.error?.data?.requestId)
      assert.equal(record.method, 'resources/read')
      assert.equal(record.outcome, 'denied')
      assert.ok(['default-deny', 'unsafe-uri'].includes(record.rule ?? ''), record.rule)
      assert.deepEqual(record.details, { uri })
    }
    const reads = recorded(recordFile).filter((line) => line.method === 'resources/read')
    assert.deepEqual(reads, [])
  })

  test('resources/read of allowed resource forwarded', async () => {
    const reply = await client.request('resources/read', { uri: 'file:///workspace/notes.txt' })
    assert.equal(reply.error, undefined, JSON.stringify(reply))
    const record = gateway.audit.findLast((event) => event.method === 'resources/read')
    assert.equal(record?.outcome, 'success')
    assert.equal(record?.rule, 'role/writer/allow/resources[0]')
  })

  test('resources/subscribe of denied resource refused', async () => {
    const reply = await client.request('resources/subscribe', { uri: 'file:///etc/passwd' })
    assert.equal(reply.error?.data?.reason, 'forbidden')
    const subscribes = recorded(recordFile).filter((line) => line.method === 'resources/subscribe')
    assert.deepEqual(subscribes, [])
  })

  test('prompts/list hides denied prompts', async () => {
    const reply = await client.request('prompts/list', {})
    const names = ((reply.result?.prompts ?? []) as Array<{ name: string }>).map(
      (item) => item.name,
    )
    assert.deepEqual(names, ['summarize'])
  })

  test('prompts/get of denied prompt refused', async () => {
    const reply = await client.request('prompts/get', { name: 'steal_credentials' })
    assert.equal(reply.error?.data?.reason, 'forbidden')
    assert.match(reply.error?.message ?? '', /prompt "steal_credentials" is not allowed/)
    const record = auditOf(gateway.audit, reply.error?.data?.requestId)
    assert.equal(record.rule, 'default-deny')
    assert.deepEqual(record.details, { prompt: 'steal_credentials' })
    const completion = await client.request('completion/complete', {
      ref: { type: 'ref/prompt', name: 'steal_credentials' },
      argument: { name: 'x', value: '' },
    })
    assert.equal(completion.error?.data?.reason, 'forbidden')
    const lines = recorded(recordFile)
    assert.equal(JSON.stringify(lines).includes('steal_credentials'), false)
  })

  test('prompts/get of allowed prompt forwarded', async () => {
    const reply = await client.request('prompts/get', { name: 'summarize' })
    assert.equal(reply.error, undefined, JSON.stringify(reply))
    const gets = recorded(recordFile).filter((line) => line.method === 'prompts/get')
    assert.equal(gets.length, 1)
  })
})

describe('identity headers and an HTTP upstream', () => {
  let child: ChildProcess
  let gateway: Gateway
  const recordFile = tempFile('http-upstream.jsonl')
  const HOSTILE_HEADERS: Record<string, string> = {
    authorization: 'Bearer stolen-admin-token',
    cookie: 'session=admin',
    'x-forwarded-for': '10.0.0.1',
    'x-forwarded-user': 'admin',
    'x-forwarded-host': 'internal.example',
    'x-writ-identity': 'forged.jwt.value',
    'x-writ-role': 'admin',
    'x-user': 'admin',
    'x-remote-user': 'admin',
    'x-spiffe-id': 'spiffe://writ.test/user/admin',
    'x-client-cert': 'forged',
  }

  before(async () => {
    child = spawn(process.execPath, [HTTP_SERVER], {
      env: { ...process.env, RECORD_FILE: recordFile },
      stdio: ['ignore', 'pipe', 'inherit'],
    })
    const url = await new Promise<string>((resolve, reject) => {
      child.once('error', reject)
      child.stdout?.once('data', (chunk: Buffer) => resolve(JSON.parse(String(chunk)).listening))
    })
    gateway = await startScopedGateway({ http: { url, allowPrivateNetwork: true }, secrets: [] })
  })

  after(async () => {
    await gateway.close()
    child.kill('SIGTERM')
  })

  test('client identity headers not forwarded', async () => {
    const client = new Client(gateway.url, HOSTILE_HEADERS)
    await client.start()
    const reply = await client.request('tools/call', { name: 'whoami', arguments: {} })
    assert.equal(reply.error, undefined, JSON.stringify(reply))
    const records = recorded(recordFile) as Array<{ headers?: Record<string, string> }>
    assert.ok(records.length >= 3, `the upstream recorded ${records.length} requests`)
    for (const record of records) {
      assert.ok(record.headers, 'the upstream fixture recorded no headers')
      const names = Object.keys(record.headers ?? {})
      for (const header of Object.keys(HOSTILE_HEADERS)) {
        assert.equal(names.includes(header), false, `${header} reached the upstream`)
      }
      const values = JSON.stringify(record.headers)
      assert.equal(
        values.includes('admin'),
        false,
        `a forged value reached the upstream: ${values}`,
      )
    }
  })
})
