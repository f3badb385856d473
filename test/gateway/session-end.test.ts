import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import type { AuditEventInput } from '../../src/audit/types.js'
import { DEFAULT_MAX_BODY_BYTES, type GatewayDeps } from '../../src/gateway/deps.js'
import { WRIT_DENIED_CODE } from '../../src/gateway/jsonrpc.js'
import { createMcpHandler, type McpHandler } from '../../src/gateway/mcp-handler.js'
import type { PeerIdentity } from '../../src/identity/types.js'
import { silentLogger } from '../../src/log.js'
import { FIXTURES, initializeBody, tempFile } from './harness.js'

const INSTANCE = '1b4e28ba-2fa1-4d3b-a3f5-ef19b5a7633b'
const recordFile = tempFile('hanging.jsonl')

/** Identities the test server hands to the handler, chosen by the `x-test-identity` header. */
const identities = new Map<string, PeerIdentity>()
const audit: Array<AuditEventInput & { id: string }> = []
let handler: McpHandler
let server: Server
let url = ''

function register(key: string, name: string, lifetimeMs: number, serial: string): PeerIdentity {
  const identity: PeerIdentity = {
    spiffeId: `spiffe://writ.test/bot/${name}`,
    name,
    serial,
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + lifetimeMs),
    claims: {
      version: 1,
      kind: 'bot',
      roles: ['reader'],
      traits: {},
      depth: 0,
      botInstance: INSTANCE,
      generation: 1,
      accessRequests: [],
    },
  }
  identities.set(key, identity)
  return identity
}

before(async () => {
  const deps: GatewayDeps = {
    getServer: (name) =>
      name === 'slow'
        ? {
            name,
            stdio: {
              command: process.execPath,
              args: [join(FIXTURES, 'hanging-server.mjs')],
              env: { RECORD_FILE: recordFile },
            },
            secrets: [],
          }
        : undefined,
    decideServer: () => ({ effect: 'allow', reason: 'role_grants_server' }),
    decideTool: () => ({ effect: 'allow', reason: 'role_grants_tool' }),
    audit: async (event) => {
      const record = { ...event, id: `evt_${audit.length + 1}` }
      audit.push(record)
      return { id: record.id }
    },
    logger: silentLogger,
    clock: Date.now,
    limits: { maxBodyBytes: DEFAULT_MAX_BODY_BYTES },
  }
  handler = createMcpHandler(deps)
  server = createServer((req, res) => {
    const identity = identities.get(String(req.headers['x-test-identity']))
    if (identity === undefined) {
      res.writeHead(401).end()
      return
    }
    void handler.handle(req, res, identity, 'slow', '127.0.0.1:1')
  })
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done))
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/mcp/slow`
})

after(async () => {
  await handler.closeAll()
  server.closeAllConnections()
  await new Promise<void>((done) => server.close(() => done()))
})

function headers(key: string, session?: string): Record<string, string> {
  return {
    'content-type': 'application/json',
    accept: 'application/json, text/event-stream',
    'x-test-identity': key,
    ...(session === undefined ? {} : { 'mcp-session-id': session }),
  }
}

async function openSession(key: string): Promise<string> {
  const reply = await fetch(url, {
    method: 'POST',
    headers: headers(key),
    body: initializeBody('2025-06-18'),
  })
  await reply.text()
  const session = reply.headers.get('mcp-session-id')
  assert.ok(session, `initialize answered ${reply.status} without a session id`)
  await fetch(url, {
    method: 'POST',
    headers: headers(key, session),
    body: JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }),
  })
  return session
}

/** Opens the GET stream; `closed` resolves with its full text once the server ends it. */
async function openStream(key: string, session: string): Promise<{ closed: Promise<string> }> {
  const reply = await fetch(url, {
    headers: { accept: 'text/event-stream', 'x-test-identity': key, 'mcp-session-id': session },
  })
  assert.equal(reply.status, 200)
  return { closed: reply.text() }
}

/** Sends a request and resolves with the JSON-RPC messages of the reply. */
async function call(key: string, session: string, body: unknown): Promise<unknown[]> {
  const reply = await fetch(url, {
    method: 'POST',
    headers: headers(key, session),
    body: JSON.stringify(body),
  })
  const text = await reply.text()
  if ((reply.headers.get('content-type') ?? '').startsWith('text/event-stream')) {
    return text
      .split('\n')
      .filter((line) => line.startsWith('data:'))
      .map((line) => JSON.parse(line.slice(5)))
  }
  return text === '' ? [] : [JSON.parse(text)]
}

function slowCall(id: number) {
  return {
    jsonrpc: '2.0',
    id,
    method: 'tools/call',
    params: { name: 'read_slowly', arguments: { marker: `slow-${id}` } },
  }
}

/** Waits until the hanging server has recorded the call, so it is in flight upstream. */
async function waitForRecord(marker: string): Promise<void> {
  for (let attempt = 0; attempt < 200; attempt++) {
    if (readFileSync(recordFile, { encoding: 'utf8', flag: 'a+' }).includes(marker)) return
    await new Promise((resolve) => setTimeout(resolve, 25))
  }
  throw new Error(`the upstream never received ${marker}`)
}

function errorOf(messages: unknown[]): {
  code: number
  message: string
  data: Record<string, unknown>
} {
  assert.equal(messages.length, 1, JSON.stringify(messages))
  const error = (messages[0] as { error?: unknown }).error
  assert.ok(error, `expected an error response, got ${JSON.stringify(messages[0])}`)
  return error as { code: number; message: string; data: Record<string, unknown> }
}

test('closeSessions ends a locked session', async () => {
  register('locked', 'locked-bot', 3_600_000, 'aa01')
  register('bystander', 'other-bot', 3_600_000, 'bb01')
  const session = await openSession('locked')
  const otherSession = await openSession('bystander')
  const stream = await openStream('locked', session)
  const inFlight = call('locked', session, slowCall(7))
  await waitForRecord('slow-7')

  const ended = await handler.closeSessions((identity) =>
    identity.spiffeId.endsWith('/locked-bot')
      ? {
          reason: 'locked',
          denial: { reason: 'locked', message: 'locked by test', details: { lockId: 'lock-1' } },
        }
      : undefined,
  )
  assert.equal(ended, 1)

  const error = errorOf(await inFlight)
  assert.equal(error.code, WRIT_DENIED_CODE)
  assert.equal(error.data.reason, 'locked')
  assert.equal(error.message, 'locked by test')
  const endEvent = audit.find((event) => event.type === 'session.end' && event.reason === 'locked')
  assert.ok(endEvent, 'no session.end event with reason locked')
  assert.equal(error.data.requestId, endEvent.id)
  assert.equal(endEvent.outcome, 'denied')
  assert.equal(endEvent.details?.lockId, 'lock-1')
  assert.equal(endEvent.sessionId, session)

  assert.equal(typeof (await stream.closed), 'string')
  const later = await fetch(url, {
    method: 'POST',
    headers: headers('locked', session),
    body: JSON.stringify({ jsonrpc: '2.0', id: 8, method: 'ping' }),
  })
  assert.equal(later.status, 404)
  await later.text()

  const pong = await call('bystander', otherSession, { jsonrpc: '2.0', id: 9, method: 'ping' })
  assert.deepEqual(pong, [{ jsonrpc: '2.0', id: 9, result: {} }])
})

test('session ends when certificate expires', async () => {
  register('short', 'short-bot', 1500, 'cc01')
  const session = await openSession('short')
  const stream = await openStream('short', session)
  const inFlight = call('short', session, slowCall(11))
  await waitForRecord('slow-11')

  const error = errorOf(await inFlight)
  assert.equal(error.code, WRIT_DENIED_CODE)
  assert.equal(error.data.reason, 'expired')
  assert.match(error.message, /client certificate expired at /)
  await stream.closed
  const endEvent = audit.find(
    (event) => event.type === 'session.end' && event.sessionId === session,
  )
  assert.equal(endEvent?.reason, 'certificate_expired')
  assert.equal(endEvent?.details?.serial, 'cc01')
})

test('renewed certificate moves the deadline', async () => {
  const first = register('renewing', 'renewing-bot', 1500, 'dd01')
  const renewed = register('renewed', 'renewing-bot', 3_600_000, 'dd02')
  assert.equal(renewed.claims.botInstance, first.claims.botInstance)
  const session = await openSession('renewing')
  const pong = await call('renewed', session, { jsonrpc: '2.0', id: 21, method: 'ping' })
  assert.deepEqual(pong, [{ jsonrpc: '2.0', id: 21, result: {} }])

  // Past the first certificate's expiry, the session still responds to the renewed one.
  await new Promise((resolve) => setTimeout(resolve, 2000))
  const later = await call('renewed', session, { jsonrpc: '2.0', id: 22, method: 'ping' })
  assert.deepEqual(later, [{ jsonrpc: '2.0', id: 22, result: {} }])
  const ended = audit.find((event) => event.type === 'session.end' && event.sessionId === session)
  assert.equal(ended, undefined)
})
