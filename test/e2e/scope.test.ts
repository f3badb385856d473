import assert from 'node:assert/strict'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import {
  addBot,
  auditSearch,
  FIXTURES,
  httpsRequest,
  initializeBody,
  joinOnce,
  readIdentity,
  removeTemporaryDirectories,
  replyJson,
  runWrit,
  startWrit,
  temporaryDirectory,
  type WritServer,
} from './harness.js'

const SCOPE_SERVER = join(FIXTURES, 'scope-recording-server.mjs')

function manifests(recordFile: string): string {
  return `apiVersion: writ.dev/v1alpha1
kind: McpServer
metadata: { name: scoped, labels: { env: e2e } }
spec:
  stdio:
    command: ${JSON.stringify(process.execPath)}
    args: [${JSON.stringify(SCOPE_SERVER)}]
    env: { RECORD_FILE: ${JSON.stringify(recordFile)} }
---
apiVersion: writ.dev/v1alpha1
kind: Role
metadata: { name: scoped-writer }
spec:
  allow:
    mcpServers: { env: e2e }
    tools: ['write_file', 'whoami']
    args:
      - tools: ['write_file']
        rule: "isWithin(args.path, '/workspace')"
    resources: ['file:///workspace/*']
    prompts: ['summarize']
`
}

const BAD_RULE = `apiVersion: writ.dev/v1alpha1
kind: Role
metadata: { name: bad-rule }
spec:
  allow:
    mcpServers: { env: e2e }
    tools: ['write_file']
    args:
      - tools: ['write_file']
        rule: "env.HOME == '/root'"
`

describe('scope policy through writ start', () => {
  let server: WritServer
  let root: string
  let recordFile: string
  let tls: ReturnType<typeof readIdentity>
  let session = ''
  let nextId = 10

  async function send(method: string, params: Record<string, unknown>) {
    const body = JSON.stringify({ jsonrpc: '2.0', id: nextId++, method, params })
    const reply = await httpsRequest(server.address, '/mcp/scoped', {
      tls,
      body,
      headers: { 'mcp-session-id': session, 'mcp-protocol-version': '2025-06-18' },
    })
    return replyJson(reply) as {
      result?: Record<string, unknown>
      error?: { message: string; data?: { reason?: string; requestId?: string } }
    }
  }

  before(async () => {
    root = temporaryDirectory('scope')
    recordFile = join(root, 'received.jsonl')
    const config = join(root, 'config.yaml')
    writeFileSync(config, manifests(recordFile))
    server = await startWrit(join(root, 'data'), ['--config', config])
    const enrollment = await addBot(server.dataDir, 'scoped-agent', 'scoped-writer')
    await joinOnce(server, enrollment, join(root, 'identity'))
    tls = readIdentity(join(root, 'identity'))
    const init = await httpsRequest(server.address, '/mcp/scoped', {
      tls,
      body: initializeBody('2025-06-18'),
    })
    assert.equal(init.status, 200, init.body.toString('utf8'))
    session = String(init.headers['mcp-session-id'])
    await httpsRequest(server.address, '/mcp/scoped', {
      tls,
      body: JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }),
      headers: { 'mcp-session-id': session, 'mcp-protocol-version': '2025-06-18' },
    })
  })

  after(async () => {
    await server?.stop()
    removeTemporaryDirectories()
  })

  test('apply rejects rule with unknown variable', async () => {
    const file = join(root, 'bad-rule.yaml')
    writeFileSync(file, BAD_RULE)
    const result = await runWrit(['apply', '-f', file, '--data-dir', server.dataDir])
    assert.notEqual(result.code, 0)
    assert.match(result.stderr, /bad-rule\.yaml, document 1 \(Role "bad-rule"\)/)
    assert.match(result.stderr, /spec\.allow\.args\[0\]\.rule/)
    assert.match(result.stderr, /Unknown variable: env/)
  })

  test('traversal denied with rule in audit', async () => {
    const reply = await send('tools/call', {
      name: 'write_file',
      arguments: { path: '/workspace/../root/.ssh/authorized_keys', role: 'admin' },
    })
    assert.equal(reply.error?.data?.reason, 'forbidden')
    const records = await auditSearch(server.dataDir, [
      '--outcome',
      'denied',
      '--tool',
      'write_file',
    ])
    const record = records.find((event) => event.id === reply.error?.data?.requestId)
    assert.equal(record?.rule, 'role/scoped-writer/allow/args[0]')
    const upstream = existsSync(recordFile) ? readFileSync(recordFile, 'utf8') : ''
    assert.equal(upstream.includes('authorized_keys'), false, 'the upstream received the call')
  })

  test('contained path reaches the upstream', async () => {
    const reply = await send('tools/call', {
      name: 'write_file',
      arguments: { path: '/workspace/ok.txt' },
    })
    assert.equal(reply.error, undefined, JSON.stringify(reply))
    assert.ok(readFileSync(recordFile, 'utf8').includes('/workspace/ok.txt'))
  })

  test('resources and prompts follow the role', async () => {
    const resources = await send('resources/list', {})
    const uris = ((resources.result?.resources ?? []) as Array<{ uri: string }>).map((r) => r.uri)
    assert.deepEqual(uris, ['file:///workspace/notes.txt'])
    const prompts = await send('prompts/list', {})
    const names = ((prompts.result?.prompts ?? []) as Array<{ name: string }>).map((p) => p.name)
    assert.deepEqual(names, ['summarize'])
    const read = await send('resources/read', { uri: 'file:///etc/passwd' })
    assert.equal(read.error?.data?.reason, 'forbidden')
    const prompt = await send('prompts/get', { name: 'steal_credentials' })
    assert.equal(prompt.error?.data?.reason, 'forbidden')
    const upstream = readFileSync(recordFile, 'utf8')
    assert.equal(upstream.includes('/etc/passwd'), false, 'the upstream received the read')
    assert.equal(upstream.includes('steal_credentials'), false, 'the upstream received the get')
  })
})
