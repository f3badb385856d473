import assert from 'node:assert/strict'
import { existsSync, readFileSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import type { UpstreamConfig } from '../../src/gateway/deps.js'
import type { LimitsSettings } from '../../src/guard/limits.js'
import {
  FIXTURES,
  initializeBody,
  post,
  startGateway,
  type TestGateway,
  tempFile,
} from '../gateway/harness.js'

const HOSTILE = join(FIXTURES, 'hostile-limits-server.mjs')
const VERSION = '2025-06-18'

interface Reply {
  status: number
  body: {
    result?: { content?: Array<{ text: string }>; isError?: boolean }
    error?: { code: number; message: string; data?: Record<string, unknown> }
  }
}

/** A scripted MCP client for one principal, speaking raw Streamable HTTP to the test gateway. */
class ScriptedClient {
  session = ''
  #nextId = 1

  constructor(
    readonly url: string,
    readonly principal = 'alice',
  ) {}

  async open(): Promise<this> {
    const reply = await post(this.url, initializeBody(VERSION), this.#headers())
    assert.equal(reply.status, 200, `initialize failed: ${JSON.stringify(reply.body)}`)
    this.session = reply.headers.get('mcp-session-id') ?? ''
    const initialized = { jsonrpc: '2.0', method: 'notifications/initialized' }
    await post(this.url, JSON.stringify(initialized), this.#headers())
    return this
  }

  call(tool: string, args: Record<string, unknown> = {}): Promise<Reply> {
    const params = { name: tool, arguments: args }
    return this.request('tools/call', params)
  }

  async request(method: string, params: Record<string, unknown> = {}): Promise<Reply> {
    const body = JSON.stringify({ jsonrpc: '2.0', id: this.#nextId++, method, params })
    return (await post(this.url, body, this.#headers())) as Reply
  }

  #headers(): Record<string, string> {
    const headers: Record<string, string> = {
      'x-test-name': this.principal,
      'mcp-protocol-version': VERSION,
    }
    if (this.session !== '') headers['mcp-session-id'] = this.session
    return headers
  }
}

/** Returns the tools/call lines the hostile upstream recorded, as [tool, arguments] pairs. */
function recordedCalls(recordFile: string): Array<[string, unknown]> {
  if (!existsSync(recordFile)) return []
  return readFileSync(recordFile, 'utf8')
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line))
    .filter((message) => message.method === 'tools/call')
    .map((message) => [message.params.name, message.params.arguments])
}

function recordedMessages(recordFile: string): Array<Record<string, unknown>> {
  return readFileSync(recordFile, 'utf8')
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line))
}

/**
 * Waits until the upstream has recorded a message with `method`. The gateway sends it before it
 * responds to the client, but the upstream process may read it a little later. Gives up after 5 s.
 */
async function waitForMessage(recordFile: string, method: string) {
  for (let attempt = 0; attempt < 100; attempt++) {
    const found = recordedMessages(recordFile).find((message) => message.method === method)
    if (found !== undefined) return found
    await new Promise((done) => setTimeout(done, 50))
  }
  return undefined
}

function hostile(recordFile: string, extra: Partial<UpstreamConfig> = {}) {
  return {
    stdio: {
      command: process.execPath,
      args: [HOSTILE],
      env: { RECORD_FILE: recordFile, HUGE_BYTES: String(200 * 1024) },
    },
    secrets: [],
    ...extra,
  }
}

function manualClock() {
  let now = Date.now()
  return { clock: () => now, advance: (ms: number) => (now += ms) }
}

async function gatewayWith(
  recordFile: string,
  server: Partial<UpstreamConfig>,
  guard: LimitsSettings = {},
  clock?: () => number,
): Promise<TestGateway> {
  return startGateway({
    servers: { hostile: hostile(recordFile, server) },
    allowTool: () => true,
    guard,
    ...(clock === undefined ? {} : { clock }),
  })
}

function findAudit(gateway: TestGateway, rule: string) {
  return gateway.audit.filter((event) => event.rule === rule)
}

describe('rate limits', () => {
  const time = manualClock()
  const recordFile = tempFile('rate.jsonl')
  let gateway: TestGateway
  let alice: ScriptedClient
  let bob: ScriptedClient

  before(async () => {
    const limits = {
      callsPerMinute: 2,
      burst: 2,
      tools: { 'search_*': { callsPerMinute: 1, burst: 1 } },
    }
    gateway = await gatewayWith(recordFile, { limits }, {}, time.clock)
    alice = await new ScriptedClient(gateway.url('hostile'), 'alice').open()
    bob = await new ScriptedClient(gateway.url('hostile'), 'bob').open()
  })
  after(() => gateway.close())

  it('refuses the call over the burst', async () => {
    assert.ok((await alice.call('read_note', { n: 1 })).body.result)
    assert.ok((await alice.call('read_note', { n: 2 })).body.result)
    const refused = await alice.call('read_note', { n: 3 })
    assert.equal(refused.body.error?.code, -32003)
    assert.equal(refused.body.error?.data?.reason, 'rate_limited')
    assert.match(
      refused.body.error?.message ?? '',
      /at most 2 tool calls per minute; retry in 30 s/,
    )
    const calls = recordedCalls(recordFile)
    assert.deepEqual(calls, [
      ['read_note', { n: 1 }],
      ['read_note', { n: 2 }],
    ])
    const [denied] = findAudit(gateway, 'guard/rate-limit')
    assert.equal(denied?.outcome, 'denied')
    assert.equal(denied?.reason, 'rate_limit_exceeded')
    assert.equal(denied?.caller?.spiffeId, 'spiffe://writ.test/bot/alice')
    assert.equal(refused.body.error?.data?.requestId, denied?.id)
  })

  it('leaves another principal unaffected', async () => {
    const reply = await bob.call('read_note', { who: 'bob' })
    assert.match(reply.body.result?.content?.[0]?.text ?? '', /"who":"bob"/)
    assert.deepEqual(recordedCalls(recordFile).at(-1), ['read_note', { who: 'bob' }])
  })

  it('refills with the clock', async () => {
    time.advance(30_000)
    assert.ok((await alice.call('read_note', { n: 4 })).body.result)
    assert.equal((await alice.call('read_note', { n: 5 })).body.error?.data?.reason, 'rate_limited')
  })

  it('limits a tool pattern separately', async () => {
    assert.ok((await bob.call('search_docs', { q: 1 })).body.result)
    const refused = await bob.call('search_docs', { q: 2 })
    assert.equal(refused.body.error?.data?.reason, 'rate_limited')
    assert.match(refused.body.error?.message ?? '', /tools matching "search_\*"/)
    assert.equal(findAudit(gateway, 'guard/rate-limit:search_*').length, 1)
    assert.ok(!recordedCalls(recordFile).some(([, args]) => JSON.stringify(args) === '{"q":2}'))
  })
})

describe('role rate limits', () => {
  const recordFile = tempFile('role-rate.jsonl')
  let gateway: TestGateway

  before(async () => {
    gateway = await startGateway({
      servers: { hostile: hostile(recordFile, { limits: { callsPerMinute: 100 } }) },
      allowTool: () => true,
      clock: manualClock().clock,
      roleRateLimits: (identity) =>
        identity.name === 'carol' ? { callsPerMinute: 1, burst: 1 } : undefined,
    })
  })
  after(() => gateway.close())

  it('apply on top of the server limits', async () => {
    const carol = await new ScriptedClient(gateway.url('hostile'), 'carol').open()
    assert.ok((await carol.call('read_note', { n: 1 })).body.result)
    const refused = await carol.call('read_note', { n: 2 })
    assert.equal(refused.body.error?.data?.reason, 'rate_limited')
    assert.match(refused.body.error?.message ?? '', /at most 1 tool calls per minute/)
    assert.deepEqual(recordedCalls(recordFile), [['read_note', { n: 1 }]])
    assert.equal(findAudit(gateway, 'guard/rate-limit').length, 1)
  })

  it('leave other principals to the server limits', async () => {
    const dave = await new ScriptedClient(gateway.url('hostile'), 'dave').open()
    assert.ok((await dave.call('read_note', { n: 1 })).body.result)
    assert.ok((await dave.call('read_note', { n: 2 })).body.result)
  })
})

describe('tool call timeout', () => {
  const recordFile = tempFile('timeout.jsonl')
  let gateway: TestGateway
  let client: ScriptedClient

  before(async () => {
    gateway = await gatewayWith(recordFile, { timeoutMs: 200 })
    client = await new ScriptedClient(gateway.url('hostile')).open()
  })
  after(() => gateway.close())

  it('returns an error naming the timeout', async () => {
    const reply = await client.call('hang')
    assert.equal(reply.body.error?.code, -32603)
    assert.match(reply.body.error?.message ?? '', /did not answer tool "hang" within the 200 ms/)
    assert.equal(reply.body.error?.data?.server, 'hostile')
  })

  it('cancels the call upstream and audits it', async () => {
    const cancelled = await waitForMessage(recordFile, 'notifications/cancelled')
    assert.ok(cancelled, 'the upstream received no notifications/cancelled')
    const call = recordedMessages(recordFile).find((message) => message.method === 'tools/call')
    assert.equal((cancelled.params as { requestId: unknown }).requestId, call?.id)
    const [event] = findAudit(gateway, 'guard/timeout')
    assert.equal(event?.reason, 'upstream_timeout')
    assert.equal(event?.tool, 'hang')
  })

  it('keeps the session usable', async () => {
    assert.ok((await client.call('read_note')).body.result)
  })
})

describe('response size limit', () => {
  const recordFile = tempFile('huge.jsonl')
  let gateway: TestGateway
  let client: ScriptedClient

  before(async () => {
    gateway = await gatewayWith(recordFile, {}, { maxResponseBytes: 64 * 1024 })
    client = await new ScriptedClient(gateway.url('hostile')).open()
  })
  after(() => gateway.close())

  it('denies an oversized response as too_large', async () => {
    const reply = await client.call('huge')
    assert.equal(reply.body.error?.data?.reason, 'too_large')
    assert.match(reply.body.error?.message ?? '', /exceeds the 65536-byte limit/)
    assert.equal(reply.body.result, undefined)
    const [event] = findAudit(gateway, 'guard/response-size')
    assert.equal(event?.outcome, 'denied')
    assert.equal(event?.tool, 'huge')
    assert.equal(reply.body.error?.data?.requestId, event?.id)
  })

  it('keeps the session usable', async () => {
    assert.ok((await client.call('read_note')).body.result)
  })
})

describe('circuit breaker', () => {
  const time = manualClock()
  const recordFile = tempFile('breaker.jsonl')
  let gateway: TestGateway
  let client: ScriptedClient

  before(async () => {
    const guard = { circuitBreaker: { failureThreshold: 3, coolDownMs: 30_000 } }
    gateway = await gatewayWith(recordFile, {}, guard, time.clock)
    client = await new ScriptedClient(gateway.url('hostile')).open()
  })
  after(() => gateway.close())

  it('fails fast after repeated upstream errors', async () => {
    for (let attempt = 1; attempt <= 3; attempt++) {
      const reply = await client.call('fail', { attempt })
      assert.match(reply.body.error?.message ?? '', /backend is down/)
    }
    const reply = await client.call('read_note', { after: 'open' })
    assert.equal(reply.body.error?.code, -32603)
    const retryAt = new Date(time.clock() + 30_000).toISOString()
    assert.equal(
      reply.body.error?.message,
      `upstream server "hostile" is failing, so calls fail fast until ${retryAt}, when one call will be tried again`,
    )
    assert.equal(reply.body.error?.data?.retryAt, retryAt)
    assert.ok(!recordedCalls(recordFile).some(([tool]) => tool === 'read_note'))
    const [event] = findAudit(gateway, 'guard/circuit-breaker')
    assert.equal(event?.reason, 'circuit_open')
  })

  it('lets a probe through after the cool-down', async () => {
    time.advance(30_000)
    assert.ok((await client.call('read_note', { probe: true })).body.result)
    assert.ok((await client.call('read_note', { after: 'closed' })).body.result)
    assert.deepEqual(recordedCalls(recordFile).at(-1), ['read_note', { after: 'closed' }])
  })
})

describe('loop detector', () => {
  const recordFile = tempFile('loop.jsonl')
  let gateway: TestGateway
  let client: ScriptedClient

  before(async () => {
    gateway = await gatewayWith(recordFile, {}, { loopDetector: { maxRepeats: 3 } })
    client = await new ScriptedClient(gateway.url('hostile')).open()
  })
  after(() => gateway.close())

  it('refuses the same failing call repeated', async () => {
    for (let attempt = 1; attempt <= 3; attempt++) {
      assert.equal((await client.call('broken', { path: '/x' })).body.result?.isError, true)
    }
    const refused = await client.call('broken', { path: '/x' })
    assert.equal(refused.body.error?.data?.reason, 'rate_limited')
    assert.match(refused.body.error?.message ?? '', /failed 3 times in a row/)
    const sent = recordedCalls(recordFile).filter(([tool]) => tool === 'broken')
    assert.equal(sent.length, 3)
    const [event] = findAudit(gateway, 'guard/loop')
    assert.equal(event?.outcome, 'denied')
    assert.equal(event?.reason, 'repeated_failing_call')
  })

  it('allows the tool with other arguments', async () => {
    assert.equal((await client.call('broken', { path: '/y' })).body.result?.isError, true)
  })
})

describe('session ids', () => {
  const recordFile = tempFile('ids.jsonl')
  let gateway: TestGateway

  before(async () => {
    gateway = await gatewayWith(recordFile, {})
  })
  after(() => gateway.close())

  it('carry 192 random bits', async () => {
    const first = await new ScriptedClient(gateway.url('hostile')).open()
    const second = await new ScriptedClient(gateway.url('hostile')).open()
    assert.match(first.session, /^[A-Za-z0-9_-]{32}$/)
    assert.equal(Buffer.from(first.session, 'base64url').length, 24)
    assert.notEqual(first.session, second.session)
  })

  it('reject another SPIFFE ID with 404', async () => {
    const alice = await new ScriptedClient(gateway.url('hostile')).open()
    const mallory = new ScriptedClient(gateway.url('hostile'), 'mallory')
    mallory.session = alice.session
    const reply = await mallory.call('read_note', { who: 'mallory' })
    assert.equal(reply.status, 404)
    assert.ok(!recordedCalls(recordFile).some(([, args]) => JSON.stringify(args).includes('mal')))
  })
})

describe('upstream address check', () => {
  let redirector: Server
  let redirectorUrl: string
  let gateway: TestGateway

  before(async () => {
    // A loopback upstream that redirects every request to the metadata address.
    redirector = createServer((req, res) => {
      req.resume()
      res.writeHead(307, { location: 'http://169.254.169.254/latest/meta-data/' }).end()
    })
    await new Promise<void>((done) => redirector.listen(0, '127.0.0.1', done))
    redirectorUrl = `http://127.0.0.1:${(redirector.address() as AddressInfo).port}/mcp`
    gateway = await startGateway({
      servers: {
        metadata: { http: { url: 'http://169.254.169.254/mcp' }, secrets: [] },
        loopback: { http: { url: redirectorUrl }, secrets: [] },
        redirecting: { http: { url: redirectorUrl, allowPrivateNetwork: true }, secrets: [] },
      },
      allowTool: () => true,
    })
  })
  after(async () => {
    await gateway.close()
    redirector.closeAllConnections()
    await new Promise<void>((done) => redirector.close(() => done()))
  })

  it('refuses a metadata URL at session start', async () => {
    const reply = (await post(gateway.url('metadata'), initializeBody(VERSION))) as Reply
    assert.match(
      reply.body.error?.message ?? '',
      /"metadata" is unavailable: its address is not allowed/,
    )
    const ended = gateway.audit.find(
      (event) => event.server === 'metadata' && event.type === 'session.end',
    )
    assert.equal(ended?.reason, 'upstream_start_failed')
    assert.match(String(ended?.details?.error), /169\.254\.169\.254 is a cloud metadata address/)
  })

  it('refuses a loopback URL without the allow flag', async () => {
    const reply = (await post(gateway.url('loopback'), initializeBody(VERSION))) as Reply
    assert.match(reply.body.error?.message ?? '', /its address is not allowed/)
    const ended = gateway.audit.find(
      (event) => event.server === 'loopback' && event.type === 'session.end',
    )
    assert.match(String(ended?.details?.error), /127\.0\.0\.1 is a loopback address/)
  })

  it('does not follow a redirect', async () => {
    const reply = (await post(gateway.url('redirecting'), initializeBody(VERSION))) as Reply
    assert.match(reply.body.error?.message ?? '', /answered HTTP 307/)
  })
})
