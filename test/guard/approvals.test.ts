// Approval holds and flow policy, end to end inside one gateway: a scripted MCP client, recording
// stdio upstreams, a real SQLite store in a data directory, and the built `writ approvals` CLI
// deciding from another process.
import assert from 'node:assert/strict'
import { existsSync, readFileSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import type { AuditEventInput } from '../../src/audit/types.js'
import { DEFAULT_MAX_BODY_BYTES, type GatewayDeps } from '../../src/gateway/deps.js'
import { createMcpHandler, type McpHandler } from '../../src/gateway/mcp-handler.js'
import { createCallGuard } from '../../src/guard/approvals.js'
import { compileCallRules } from '../../src/guard/call-rules.js'
import { type Host, openHost } from '../../src/host.js'
import { silentLogger } from '../../src/log.js'
import type { Resource } from '../../src/policy/resource.js'
import type { ToolApprovalRecord } from '../../src/store/store.js'
import { removeTemporaryDirectories, runWrit, temporaryDirectory, waitFor } from '../e2e/harness.js'
import { FIXTURES, identity, initializeBody, post } from '../gateway/harness.js'

const RECORDING = join(FIXTURES, 'recording-server.mjs')

after(removeTemporaryDirectories)

function role(name: string, spec: Record<string, unknown>): Resource {
  return { apiVersion: 'writ.dev/v1alpha1', kind: 'Role', metadata: { name }, spec }
}

function server(name: string, labels: Record<string, string>): Resource {
  return {
    apiVersion: 'writ.dev/v1alpha1',
    kind: 'McpServer',
    metadata: { name, labels },
    spec: { stdio: { command: process.execPath, args: [RECORDING] } },
  }
}

interface Rig {
  host: Host
  dataDir: string
  audit: Array<AuditEventInput & { id: string }>
  records: Record<string, string>
  handler: McpHandler
  url(server: string): string
  close(): Promise<void>
}

/**
 * Starts a gateway whose callers hold the role `reader` (see `identity()`), with the approval and
 * flow guard on a real store. Every server is a recording stdio upstream with its own log file.
 */
async function startRig(options: {
  roles: Resource[]
  servers: Resource[]
  maxPendingPerPrincipal?: number
}): Promise<Rig> {
  const dataDir = temporaryDirectory('writ-approvals-')
  const host = await openHost(dataDir)
  const rules = compileCallRules(options.roles, options.servers)
  const records: Record<string, string> = {}
  for (const resource of options.servers) {
    records[resource.metadata.name] = join(dataDir, `${resource.metadata.name}.jsonl`)
  }
  const audit: Rig['audit'] = []
  const deps: GatewayDeps = {
    getServer: (name) => {
      const record = records[name]
      if (record === undefined) return undefined
      return {
        name,
        stdio: { command: process.execPath, args: [RECORDING], env: { RECORD_FILE: record } },
        secrets: [],
      }
    },
    decideServer: () => ({ effect: 'allow', reason: 'role_grants_server', rule: 'reader' }),
    decideTool: () => ({ effect: 'allow', reason: 'role_grants_tool', rule: 'reader:allow' }),
    audit: async (event) => {
      const record = await host.audit.record(event)
      audit.push({ ...event, id: record.id })
      return { id: record.id }
    },
    logger: silentLogger,
    clock: Date.now,
    limits: { maxBodyBytes: DEFAULT_MAX_BODY_BYTES },
    callGuard: createCallGuard({
      store: host.store,
      rules: () => rules,
      clock: Date.now,
      logger: silentLogger,
      pollMs: 50,
      ...(options.maxPendingPerPrincipal === undefined
        ? {}
        : { maxPendingPerPrincipal: options.maxPendingPerPrincipal }),
    }),
  }
  const handler: McpHandler = createMcpHandler(deps)
  const http: Server = createServer((req, res) => {
    const match = /^\/mcp\/([^/?]+)/.exec(req.url ?? '')
    if (!match) {
      res.writeHead(404).end()
      return
    }
    const serial = String(req.headers['x-test-serial'] ?? '1a2b')
    void handler.handle(req, res, identity('alice', serial), match[1] as string, '127.0.0.1:1')
  })
  await new Promise<void>((done) => http.listen(0, '127.0.0.1', done))
  const { port } = http.address() as AddressInfo
  return {
    host,
    dataDir,
    audit,
    records,
    handler,
    url: (name) => `http://127.0.0.1:${port}/mcp/${name}`,
    async close() {
      await handler.closeAll()
      http.closeAllConnections()
      await new Promise<void>((done) => http.close(() => done()))
      await host.close()
    },
  }
}

/**
 * Opens an MCP session and returns a function that calls a tool on it. `serial` picks the
 * certificate serial the gateway sees; `signal` lets the client close a call's request.
 */
async function connect(url: string, serial = '1a2b') {
  const init = await post(url, initializeBody('2025-06-18'), { 'x-test-serial': serial })
  assert.equal(init.status, 200)
  const session = init.headers.get('mcp-session-id') as string
  const headers = {
    'mcp-session-id': session,
    'mcp-protocol-version': '2025-06-18',
    'x-test-serial': serial,
  }
  const note = JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' })
  assert.equal((await post(url, note, headers)).status, 202)
  let next = 10
  return async function call(tool: string, args: Record<string, unknown>) {
    const id = next++
    const body = JSON.stringify({
      jsonrpc: '2.0',
      id,
      method: 'tools/call',
      params: { name: tool, arguments: args },
    })
    const reply = await post(url, body, headers)
    return reply.body as {
      result?: { content: Array<{ text: string }> }
      error?: { code: number; message: string; data?: { reason?: string; requestId?: string } }
    }
  }
}

/** Returns the `tools/call` lines the upstream logged, as parsed messages. */
function upstreamCalls(record: string): Array<{ params: { name: string; arguments: unknown } }> {
  if (!existsSync(record)) return []
  return readFileSync(record, 'utf8')
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => JSON.parse(line))
    .filter((message) => message.method === 'tools/call')
}

async function waitForPending(rig: Rig, count: number): Promise<ToolApprovalRecord[]> {
  return waitFor(`${count} pending approvals`, async () => {
    const pending = await rig.host.store.listToolApprovals({ limit: 50, pendingOnly: true })
    return pending.length >= count ? pending : undefined
  })
}

const deployRoles = [
  role('reader', {
    allow: {
      mcpServers: { env: 'prod' },
      tools: ['*'],
      approval: { tools: ['write_*'], ttl: '5m' },
    },
  }),
]
const deployServers = [server('notes', { env: 'prod' })]

describe('approval hold', () => {
  let rig: Rig
  before(async () => {
    rig = await startRig({ roles: deployRoles, servers: deployServers })
  })
  after(async () => {
    await rig.close()
  })

  test('approved call reaches upstream once', async () => {
    const call = await connect(rig.url('notes'))
    const args = { path: 'a.txt', text: 'v1' }
    const reply = call('write_note', args)
    const [pending] = await waitForPending(rig, 1)
    assert.equal(pending?.tool, 'write_note')
    assert.deepEqual(upstreamCalls(rig.records.notes as string), [])

    const listed = await runWrit(['approvals', 'ls', '--json', '--data-dir', rig.dataDir])
    assert.equal(listed.code, 0, listed.stderr)
    const shown = JSON.parse(listed.stdout) as Array<{ id: string; args: unknown }>
    assert.equal(shown[0]?.id, pending?.id)
    assert.deepEqual(shown[0]?.args, args)

    const approve = ['approvals', 'approve', pending?.id as string, '--reason', 'ship it']
    const approved = await runWrit([...approve, '--data-dir', rig.dataDir])
    assert.equal(approved.code, 0, approved.stderr)

    const response = await reply
    assert.equal(response.error, undefined)
    assert.match(response.result?.content[0]?.text ?? '', /called write_note/)
    const calls = upstreamCalls(rig.records.notes as string)
    assert.equal(calls.length, 1)
    assert.deepEqual(calls[0]?.params.arguments, args)

    const event = rig.audit.find((e) => e.tool === 'write_note' && e.outcome === 'success')
    const approval = event?.details?.approval as Record<string, unknown> | undefined
    assert.equal(event?.rule, 'role/reader/allow/approval/tools[0]')
    assert.equal(approval?.id, pending?.id)
    assert.match(String(approval?.approvedBy), /^cli/)
    assert.equal(approval?.reason, 'ship it')

    // The approval was used once: the identical call is held again.
    const again = call('write_note', args)
    const [second] = await waitForPending(rig, 1)
    assert.notEqual(second?.id, pending?.id)
    const deny = ['approvals', 'deny', second?.id as string, '--reason', 'once is enough']
    assert.equal((await runWrit([...deny, '--data-dir', rig.dataDir])).code, 0)
    const refused = await again
    assert.equal(refused.error?.data?.reason, 'forbidden')
    assert.match(refused.error?.message ?? '', /once is enough/)
    assert.equal(upstreamCalls(rig.records.notes as string).length, 1)
  })

  test('lock during hold cancels the approval', async () => {
    const call = await connect(rig.url('notes'))
    const before = upstreamCalls(rig.records.notes as string).length
    const reply = call('write_note', { path: 'locked.txt', text: 'held' })
    const [pending] = await waitForPending(rig, 1)
    const ended = await rig.handler.closeSessions(() => ({
      reason: 'locked',
      denial: {
        reason: 'locked',
        message: 'locked by an operator (lock lock-test): key leaked',
        details: { lockId: 'lock-test' },
      },
    }))
    assert.ok(ended >= 1)
    const refused = await reply
    assert.equal(refused.error?.data?.reason, 'locked')
    assert.match(refused.error?.message ?? '', /lock-test/)

    const approve = ['approvals', 'approve', pending?.id as string, '--reason', 'after lock']
    const late = await runWrit([...approve, '--data-dir', rig.dataDir])
    assert.equal(late.code, 1)
    assert.match(late.stderr, /no longer pending \(denied\)/)
    assert.equal(upstreamCalls(rig.records.notes as string).length, before)
    const event = rig.audit.find(
      (e) => e.tool === 'write_note' && String(e.reason).includes('the session ended (locked)'),
    )
    assert.ok(event, 'no audit record for the call ended by the lock')
  })

  test('changed arguments need new approval', async () => {
    const call = await connect(rig.url('notes'))
    const before = upstreamCalls(rig.records.notes as string).length
    const first = call('write_note', { path: 'b.txt', text: 'safe' })
    const [pending] = await waitForPending(rig, 1)
    const approve = ['approvals', 'approve', pending?.id as string, '--reason', 'ok']
    assert.equal((await runWrit([...approve, '--data-dir', rig.dataDir])).code, 0)
    assert.equal((await first).error, undefined)

    const changed = call('write_note', { path: 'b.txt', text: 'rm -rf /' })
    const [other] = await waitForPending(rig, 1)
    assert.notEqual(other?.id, pending?.id)
    assert.notEqual(other?.argsDigest, pending?.argsDigest)
    const deny = ['approvals', 'deny', other?.id as string, '--reason', 'not this']
    assert.equal((await runWrit([...deny, '--data-dir', rig.dataDir])).code, 0)
    const refused = await changed
    assert.equal(refused.error?.data?.reason, 'forbidden')

    const calls = upstreamCalls(rig.records.notes as string)
    assert.equal(calls.length, before + 1)
    assert.deepEqual(calls.at(-1)?.params.arguments, { path: 'b.txt', text: 'safe' })
    const denied = rig.audit.find((e) => e.outcome === 'denied' && e.tool === 'write_note')
    assert.equal(denied?.rule, 'role/reader/allow/approval/tools[0]')
    assert.match(String(denied?.reason), /denied by cli/)
  })

  test('approval is bound to the caller', async () => {
    const url = rig.url('notes')
    const init = await post(url, initializeBody('2025-06-18'))
    const headers = {
      'content-type': 'application/json',
      accept: 'application/json',
      'mcp-session-id': init.headers.get('mcp-session-id') as string,
    }
    const args = { path: 'late.txt' }
    const body = JSON.stringify({
      jsonrpc: '2.0',
      id: 1,
      method: 'tools/call',
      params: { name: 'write_note', arguments: args },
    })
    // The client gives up waiting and closes its request; the approval stays pending.
    const abort = new AbortController()
    const closed = fetch(url, { method: 'POST', headers, body, signal: abort.signal }).catch(
      (error: unknown) => error,
    )
    const [pending] = await waitForPending(rig, 1)
    abort.abort()
    await closed
    const left = await waitFor('the abandoned call in the audit log', () =>
      rig.audit.find((event) => /client left/.test(String(event.reason))),
    )
    assert.equal(left.outcome, 'denied')
    assert.equal(left.rule, 'role/reader/allow/approval/tools[0]')
    const approve = ['approvals', 'approve', pending?.id as string, '--reason', 'later']
    assert.equal((await runWrit([...approve, '--data-dir', rig.dataDir])).code, 0)
    const before = upstreamCalls(rig.records.notes as string).length

    // Another certificate of the same SPIFFE ID cannot use the approval.
    const stranger = await connect(url, 'ffff')
    const strangerReply = stranger('write_note', args)
    const [other] = await waitForPending(rig, 1)
    assert.notEqual(other?.id, pending?.id)
    assert.equal(other?.binding, 'serial:ffff')
    const deny = ['approvals', 'deny', other?.id as string, '--reason', 'wrong caller']
    assert.equal((await runWrit([...deny, '--data-dir', rig.dataDir])).code, 0)
    assert.equal((await strangerReply).error?.data?.reason, 'forbidden')
    assert.equal(upstreamCalls(rig.records.notes as string).length, before)

    // The original caller's identical retry uses the approval without a new hold.
    const call = await connect(url)
    const retry = await call('write_note', args)
    assert.equal(retry.error, undefined)
    const calls = upstreamCalls(rig.records.notes as string)
    assert.equal(calls.length, before + 1)
    assert.deepEqual(calls.at(-1)?.params.arguments, args)
    const used = await rig.host.store.getToolApproval(pending?.id as string)
    assert.equal(used?.state, 'used')
  })

  test('unheld tool passes without approval', async () => {
    const call = await connect(rig.url('notes'))
    const reply = await call('read_note', { path: 'c.txt' })
    assert.equal(reply.error, undefined)
    const pending = await rig.host.store.listToolApprovals({ limit: 5, pendingOnly: true })
    assert.equal(pending.length, 0)
  })
})

describe('approval expiry and flood', () => {
  test('expired approval gives needs_approval', async () => {
    const roles = [
      role('reader', {
        allow: {
          mcpServers: { env: 'prod' },
          tools: ['*'],
          approval: { tools: ['write_*'], ttl: '1s' },
        },
      }),
    ]
    const rig = await startRig({ roles, servers: deployServers })
    try {
      const call = await connect(rig.url('notes'))
      const reply = await call('write_note', { path: 'late.txt' })
      assert.equal(reply.error?.data?.reason, 'needs_approval')
      const [record] = await rig.host.store.listToolApprovals({ limit: 1 })
      assert.match(reply.error?.message ?? '', new RegExp(record?.id ?? 'missing'))
      assert.deepEqual(upstreamCalls(rig.records.notes as string), [])
      const event = rig.audit.find((e) => e.tool === 'write_note')
      assert.equal(event?.outcome, 'denied')
      assert.match(String(event?.reason), /expired without a decision/)

      const ls = ['approvals', 'ls', '--json', '--data-dir', rig.dataDir]
      assert.deepEqual(JSON.parse((await runWrit(ls)).stdout), [])
      const all = JSON.parse((await runWrit([...ls, '--all'])).stdout) as Array<{ id: string }>
      assert.equal(all[0]?.id, record?.id)

      // An expired approval can no longer be approved.
      const approve = ['approvals', 'approve', record?.id as string, '--reason', 'too late']
      const late = await runWrit([...approve, '--data-dir', rig.dataDir])
      assert.equal(late.code, 1)
      assert.match(late.stderr, new RegExp(`${record?.id}.*no longer pending`))
    } finally {
      await rig.close()
    }
  })

  test('flood of approvals is rate limited', async () => {
    const rig = await startRig({
      roles: deployRoles,
      servers: deployServers,
      maxPendingPerPrincipal: 2,
    })
    try {
      const call = await connect(rig.url('notes'))
      const held = [call('write_note', { n: 1 }), call('write_note', { n: 2 })]
      const pending = await waitForPending(rig, 2)
      const third = await call('write_note', { n: 3 })
      assert.equal(third.error?.data?.reason, 'rate_limited')
      assert.match(third.error?.message ?? '', /limit 2/)
      const limited = rig.audit.find((e) => e.outcome === 'denied' && e.tool === 'write_note')
      assert.match(String(limited?.reason), /approval limit reached/)
      for (const record of pending) {
        const deny = ['approvals', 'deny', record.id, '--reason', 'flood']
        assert.equal((await runWrit([...deny, '--data-dir', rig.dataDir])).code, 0)
      }
      for (const reply of await Promise.all(held)) {
        assert.equal(reply.error?.data?.reason, 'forbidden')
      }
      assert.deepEqual(upstreamCalls(rig.records.notes as string), [])
    } finally {
      await rig.close()
    }
  })
})

describe('flow policy', () => {
  const servers = [
    server('web', { env: 'prod', 'writ.dev/flow': 'untrusted' }),
    server('mail', { env: 'prod', 'writ.dev/flow': 'external' }),
  ]

  test('external call after untrusted read is refused', async () => {
    const roles = [
      role('reader', {
        allow: { mcpServers: { env: 'prod' }, tools: ['*'] },
        flow: { onTaintedSink: 'deny' },
      }),
    ]
    const rig = await startRig({ roles, servers })
    try {
      const mail = await connect(rig.url('mail'))
      // Before any untrusted content, the external server is reachable.
      assert.equal((await mail('write_note', { to: 'ops' })).error, undefined)

      const web = await connect(rig.url('web'))
      assert.equal((await web('read_note', { url: 'https://attacker.invalid' })).error, undefined)
      const refused = await mail('write_note', { to: 'attacker', body: 'secrets' })
      assert.equal(refused.error?.data?.reason, 'forbidden')
      assert.match(refused.error?.message ?? '', /untrusted/)

      const calls = upstreamCalls(rig.records.mail as string)
      assert.equal(calls.length, 1)
      assert.deepEqual(calls[0]?.params.arguments, { to: 'ops' })
      const event = rig.audit.find((e) => e.outcome === 'denied' && e.server === 'mail')
      assert.equal(event?.rule, 'flow/untrusted-to-external')
      assert.equal(
        (event?.details as { setting?: string } | undefined)?.setting,
        'role/reader/flow/onTaintedSink',
      )
    } finally {
      await rig.close()
    }
  })

  test('external call after untrusted read is held', async () => {
    const roles = [role('reader', { allow: { mcpServers: { env: 'prod' }, tools: ['*'] } })]
    const rig = await startRig({ roles, servers })
    try {
      const web = await connect(rig.url('web'))
      assert.equal((await web('read_note', { url: 'https://attacker.invalid' })).error, undefined)
      const mail = await connect(rig.url('mail'))
      const reply = mail('write_note', { to: 'attacker' })
      const [pending] = await waitForPending(rig, 1)
      assert.equal(pending?.rule, 'flow/untrusted-to-external')
      assert.equal(pending?.server, 'mail')
      const deny = ['approvals', 'deny', pending?.id as string, '--reason', 'exfiltration']
      assert.equal((await runWrit([...deny, '--data-dir', rig.dataDir])).code, 0)
      assert.equal((await reply).error?.data?.reason, 'forbidden')
      assert.deepEqual(upstreamCalls(rig.records.mail as string), [])
      const event = rig.audit.find((e) => e.outcome === 'denied' && e.server === 'mail')
      assert.equal(event?.rule, 'flow/untrusted-to-external')
    } finally {
      await rig.close()
    }
  })
})

describe('approvals command errors', () => {
  let rig: Rig
  before(async () => {
    rig = await startRig({ roles: deployRoles, servers: deployServers })
  })
  after(async () => {
    await rig.close()
  })

  test('unknown approval id is not found', async () => {
    const id = `apr_${'0'.repeat(32)}`
    const result = await runWrit([
      'approvals',
      'approve',
      id,
      '--reason',
      'x',
      '--data-dir',
      rig.dataDir,
    ])
    assert.equal(result.code, 1)
    assert.match(result.stderr, new RegExp(`approval "${id}" not found`))
  })

  test('malformed approval id is a usage error', async () => {
    const result = await runWrit([
      'approvals',
      'deny',
      'nope',
      '--reason',
      'x',
      '--data-dir',
      rig.dataDir,
    ])
    assert.equal(result.code, 2)
    assert.match(result.stderr, /invalid approval id "nope"/)
  })

  test('missing reason is a usage error', async () => {
    const id = `apr_${'0'.repeat(32)}`
    const result = await runWrit(['approvals', 'approve', id, '--data-dir', rig.dataDir])
    assert.equal(result.code, 2)
    assert.match(result.stderr, /--reason/)
  })

  test('decided approval cannot be decided again', async () => {
    const call = await connect(rig.url('notes'))
    const reply = call('write_note', { twice: true })
    const [pending] = await waitForPending(rig, 1)
    const id = pending?.id as string
    const deny = ['approvals', 'deny', id, '--reason', 'no', '--data-dir', rig.dataDir]
    assert.equal((await runWrit(deny)).code, 0)
    await reply
    const approve = ['approvals', 'approve', id, '--reason', 'yes', '--data-dir', rig.dataDir]
    const second = await runWrit(approve)
    assert.equal(second.code, 1)
    assert.match(second.stderr, new RegExp(`approval "${id}" is no longer pending \\(denied\\)`))
  })
})
