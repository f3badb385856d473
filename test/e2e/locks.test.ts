import assert from 'node:assert/strict'
import { type ChildProcess, spawn } from 'node:child_process'
import { X509Certificate } from 'node:crypto'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { request } from 'node:https'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import type { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { WRIT_DENIED_CODE } from '../../src/gateway/jsonrpc.js'
import {
  addBot,
  auditSearch,
  CLI,
  certificateSerial,
  connectThroughBridge,
  FIXTURES,
  type GatewaySetup,
  httpsRequest,
  initializeBody,
  joinOnce,
  readIdentity,
  removeTemporaryDirectories,
  runWrit,
  startGatewaySetup,
  stopProcess,
  temporaryDirectory,
  waitFor,
} from './harness.js'

/** A lock must end live sessions within 1 s; the test allows 1.5 s for process scheduling. */
const LOCK_DEADLINE_MS = 1500
const HANGING_SERVER = join(FIXTURES, 'hanging-server.mjs')

let setup: GatewaySetup
let slowRecord: string
const clients: Client[] = []
let agent: ChildProcess | undefined

type DeniedError = { code?: number; message: string; data?: { reason?: string } }

before(async () => {
  setup = await startGatewaySetup('locks')
  const root = temporaryDirectory('locks-slow')
  slowRecord = join(root, 'slow.jsonl')
  const manifest = join(root, 'slow.yaml')
  writeFileSync(
    manifest,
    `apiVersion: writ.dev/v1alpha1
kind: McpServer
metadata: { name: slow, labels: { env: e2e } }
spec:
  stdio:
    command: ${JSON.stringify(process.execPath)}
    args: [${JSON.stringify(HANGING_SERVER)}]
    env:
      RECORD_FILE: ${JSON.stringify(slowRecord)}
`,
  )
  const applied = await runWrit(['apply', '-f', manifest, '--data-dir', setup.dataDir])
  assert.equal(applied.code, 0, applied.stderr)
  // The server reads manifest changes every 250 ms; wait until it serves the new server.
  await waitFor('the gateway to serve slow', async () => {
    const reply = await httpsRequest(setup.server.address, '/mcp/slow', {
      tls: readIdentity(setup.identity),
      body: initializeBody('2025-06-18'),
    })
    return reply.status === 200 ? true : undefined
  })
})

after(async () => {
  for (const client of clients) await client.close().catch(() => {})
  if (agent) await stopProcess(agent)
  await setup?.server.stop()
  removeTemporaryDirectories()
})

async function connect(identity: string, server: string): Promise<Client> {
  const { client } = await connectThroughBridge(setup.server.address, identity, server)
  clients.push(client)
  return client
}

/** Opens an MCP session on `server` with raw HTTPS and returns its id. */
async function openRawSession(identity: string, server: string): Promise<string> {
  const tls = readIdentity(identity)
  const reply = await httpsRequest(setup.server.address, `/mcp/${server}`, {
    tls,
    body: initializeBody('2025-06-18'),
  })
  assert.equal(reply.status, 200, reply.body.toString('utf8'))
  const session = String(reply.headers['mcp-session-id'])
  const initialized = await httpsRequest(setup.server.address, `/mcp/${server}`, {
    tls,
    headers: { 'mcp-session-id': session },
    body: JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }),
  })
  assert.equal(initialized.status, 202)
  return session
}

/** Opens the session's GET stream; `closed` resolves once the server ends it. */
function openEventStream(
  identity: string,
  server: string,
  session: string,
): Promise<{ closed: Promise<void> }> {
  const tls = readIdentity(identity)
  const url = new URL(`/mcp/${server}`, `https://${setup.server.address}`)
  return new Promise((opened, fail) => {
    const outgoing = request(
      url,
      {
        method: 'GET',
        agent: false,
        ca: tls.ca,
        cert: tls.cert,
        key: tls.key,
        headers: { accept: 'text/event-stream', 'mcp-session-id': session },
      },
      (response) => {
        if (response.statusCode !== 200) {
          fail(new Error(`GET stream answered ${response.statusCode}`))
          return
        }
        const closed = new Promise<void>((done) => response.once('close', () => done()))
        response.resume()
        opened({ closed })
      },
    )
    outgoing.on('error', fail)
    outgoing.end()
  })
}

/** Resolves with the promise's value, or fails when it takes longer than `ms`. */
async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const deadline = new Promise<never>((_, fail) => {
    timer = setTimeout(() => fail(new Error(`${what} did not happen within ${ms} ms`)), ms)
  })
  try {
    return await Promise.race([promise, deadline])
  } finally {
    clearTimeout(timer)
  }
}

/** Resolves with the error a call rejected with; fails if it succeeded. */
async function rejection(call: Promise<unknown>): Promise<DeniedError> {
  try {
    const result = await call
    throw new Error(`the call succeeded: ${JSON.stringify(result)}`)
  } catch (error) {
    return error as DeniedError
  }
}

async function waitForRecord(file: string, marker: string): Promise<void> {
  await waitFor(`the upstream to receive ${marker}`, () =>
    existsSync(file) && readFileSync(file, 'utf8').includes(marker) ? true : undefined,
  )
}

describe('writ lock on a live bot', () => {
  let lockId = ''

  it('lock ends sessions within a second', async () => {
    const notes = await connect(setup.identity, 'notes')
    const before = await notes.callTool({ name: 'read_note', arguments: { phase: 'before' } })
    assert.deepEqual(before.content, [
      { type: 'text', text: 'called read_note with {"phase":"before"}' },
    ])
    const slow = await connect(setup.identity, 'slow')
    const inFlight = rejection(
      slow.callTool({ name: 'read_slowly', arguments: { marker: 'in-flight-1' } }),
    )
    await waitForRecord(slowRecord, 'in-flight-1')
    const session = await openRawSession(setup.identity, 'notes')
    const stream = await openEventStream(setup.identity, 'notes', session)

    const locked = await runWrit([
      'lock',
      '--bot',
      'e2e-agent',
      '--message',
      'suspected key leak',
      '--data-dir',
      setup.dataDir,
    ])
    assert.equal(locked.code, 0, locked.stderr)
    lockId = locked.stdout.trim()
    assert.match(lockId, /^lock-[0-9a-f]{12}$/)

    await within(stream.closed, LOCK_DEADLINE_MS, 'the GET stream closing')
    const error = await within(inFlight, LOCK_DEADLINE_MS, 'the in-flight call failing')
    assert.equal(error.code, WRIT_DENIED_CODE)
    assert.equal(error.data?.reason, 'locked')
    assert.match(error.message, new RegExp(`lock ${lockId}\\): suspected key leak`))
  })

  it('later call is refused', async () => {
    const notes = clients[0] as Client
    const error = await rejection(
      notes.callTool({ name: 'read_note', arguments: { marker: 'after-lock' } }),
    )
    assert.equal(error.code, WRIT_DENIED_CODE)
    assert.equal(error.data?.reason, 'locked')
    assert.match(error.message, new RegExp(lockId))
    const received = readFileSync(setup.recordFile, 'utf8')
    assert.ok(received.includes('"before"'), 'the call before the lock is missing upstream')
    assert.ok(!received.includes('after-lock'), 'the call after the lock reached the upstream')
  })

  it('new session is refused', async () => {
    const reply = await httpsRequest(setup.server.address, '/mcp/notes', {
      tls: readIdentity(setup.identity),
      body: initializeBody('2025-06-18'),
    })
    assert.equal(reply.status, 403)
    const body = JSON.parse(reply.body.toString('utf8')) as { error: DeniedError }
    assert.equal(body.error.data?.reason, 'locked')
  })

  it('locks lists the lock', async () => {
    const listed = await runWrit(['locks', '--json', '--data-dir', setup.dataDir])
    assert.equal(listed.code, 0, listed.stderr)
    const locks = JSON.parse(listed.stdout) as Array<Record<string, unknown>>
    const lock = locks.find((candidate) => candidate.id === lockId)
    assert.ok(lock, `${lockId} missing from ${listed.stdout}`)
    assert.deepEqual(lock.target, { bot: 'e2e-agent' })
    assert.equal(lock.message, 'suspected key leak')
    assert.equal(lock.expires, undefined)
    assert.match(String(lock.createdBy), /^cli/)

    const text = await runWrit(['locks', '--data-dir', setup.dataDir])
    assert.match(text.stdout, new RegExp(`${lockId}\\s+bot "e2e-agent"\\s+never`))
  })

  it('lock and refusals are audited', async () => {
    const events = await auditSearch(setup.dataDir, ['--limit', '1000'])
    const created = events.find((event) => event.type === 'lock.create')
    assert.equal(created?.details?.lockId, lockId)
    const ended = events.filter(
      (event) => event.type === 'session.end' && event.details?.lockId === lockId,
    )
    assert.ok(ended.length >= 3, `expected three sessions ended by the lock, got ${ended.length}`)
    for (const event of ended) assert.equal(event.reason, 'locked')
    const refused = events.filter(
      (event) => event.type === 'auth.refused' && event.details?.lockId === lockId,
    )
    assert.ok(refused.length >= 1, 'no auth.refused event names the lock')
  })

  it('renewal names the lock', async () => {
    const renewal = await runWrit([
      'agent',
      '--server',
      setup.server.address,
      '--dest',
      setup.identity,
      '--oneshot',
    ])
    assert.notEqual(renewal.code, 0)
    assert.match(renewal.stderr, new RegExp(lockId))
    assert.match(renewal.stderr, /suspected key leak/)
  })

  it('unlock restores access for a new certificate', async () => {
    const unlocked = await runWrit(['unlock', lockId, '--data-dir', setup.dataDir])
    assert.equal(unlocked.code, 0, unlocked.stderr)
    assert.match(unlocked.stdout, new RegExp(`${lockId} removed`))
    const listed = await runWrit(['locks', '--json', '--data-dir', setup.dataDir])
    assert.deepEqual(JSON.parse(listed.stdout), [])

    const identity = join(temporaryDirectory('locks-rejoin'), 'identity')
    await joinOnce(setup.server, await addBot(setup.dataDir, 'e2e-agent', 'e2e-reader'), identity)
    await waitFor('the gateway to drop the lock', async () => {
      const reply = await httpsRequest(setup.server.address, '/v1/mcp/servers', {
        tls: readIdentity(identity),
        method: 'GET',
      })
      return reply.status === 200 ? true : undefined
    })
    const notes = await connect(identity, 'notes')
    const result = await notes.callTool({ name: 'read_note', arguments: { phase: 'unlocked' } })
    assert.deepEqual(result.content, [
      { type: 'text', text: 'called read_note with {"phase":"unlocked"}' },
    ])
    const events = await auditSearch(setup.dataDir, ['--limit', '1000'])
    const removed = events.find((event) => event.type === 'lock.remove')
    assert.equal(removed?.details?.lockId, lockId)
  })
})

describe('writ lock input errors', () => {
  const cases: [name: string, args: string[], code: string, named: string][] = [
    ['no target', ['--message', 'x'], 'lock.invalid_target', 'none was given'],
    [
      'two targets',
      ['--bot', 'a', '--user', 'b', '--message', 'x'],
      'lock.invalid_target',
      '--user and --bot',
    ],
    ['bad bot name', ['--bot', 'bad name', '--message', 'x'], 'lock.invalid_target', '"bad name"'],
    ['bad serial', ['--serial', 'xyz', '--message', 'x'], 'lock.invalid_target', '"xyz"'],
    ['missing message', ['--bot', 'e2e-agent'], 'lock.message_missing', '--message'],
    ['bad ttl', ['--bot', 'a', '--ttl', '5x', '--message', 'x'], 'duration.invalid', '"5x"'],
  ]
  for (const [name, args, code, named] of cases) {
    it(`${name} is rejected`, async () => {
      const result = await runWrit(['lock', ...args, '--data-dir', setup.dataDir])
      assert.equal(result.code, 1, result.stderr)
      assert.ok(result.stderr.includes(`[${code}]`), result.stderr)
      assert.ok(result.stderr.includes(named), result.stderr)
    })
  }

  it('lock of an unknown bot warns', async () => {
    const args = ['lock', '--bot', 'ghost-agent', '--message', 'typo check']
    const result = await runWrit([...args, '--data-dir', setup.dataDir])
    assert.equal(result.code, 0, result.stderr)
    assert.match(result.stderr, /warning: no Bot named "ghost-agent" exists/)
    const lockId = result.stdout.trim()
    const removed = await runWrit(['unlock', lockId, '--data-dir', setup.dataDir])
    assert.equal(removed.code, 0, removed.stderr)
  })

  it('unknown lock id is rejected', async () => {
    const result = await runWrit(['unlock', 'lock-000000000000', '--data-dir', setup.dataDir])
    assert.equal(result.code, 1)
    assert.match(result.stderr, /lock "lock-000000000000" not found/)
    assert.match(result.stderr, /\[lock\.not_found\]/)
  })

  it('lock with ttl expires', async () => {
    const result = await runWrit([
      'lock',
      '--role',
      'unused-role',
      '--ttl',
      '2s',
      '--message',
      'maintenance',
      '--json',
      '--data-dir',
      setup.dataDir,
    ])
    assert.equal(result.code, 0, result.stderr)
    const lock = JSON.parse(result.stdout) as { id: string; expires: string }
    assert.ok(Date.parse(lock.expires) > Date.now(), `expiry ${lock.expires} is not ahead`)
    await waitFor('the lock to expire', async () => {
      const listed = await runWrit(['locks', '--json', '--data-dir', setup.dataDir])
      const ids = (JSON.parse(listed.stdout) as Array<{ id: string }>).map((entry) => entry.id)
      return ids.includes(lock.id) ? undefined : true
    })
  })
})

describe('certificate expiry', () => {
  it('session ends when the certificate expires', async () => {
    const identity = join(temporaryDirectory('locks-expiry'), 'identity')
    const enrollment = await addBot(setup.dataDir, 'short-lived', 'e2e-reader', ['--ttl', '8s'])
    await joinOnce(setup.server, enrollment, identity)
    const notAfter = Date.parse(new X509Certificate(readIdentity(identity).cert).validTo)

    const slow = await connect(identity, 'slow')
    const inFlight = rejection(
      slow.callTool({ name: 'read_slowly', arguments: { marker: 'expiring-1' } }),
    )
    await waitForRecord(slowRecord, 'expiring-1')
    const session = await openRawSession(identity, 'notes')
    const stream = await openEventStream(identity, 'notes', session)

    const error = await within(inFlight, notAfter - Date.now() + 5000, 'the call failing')
    assert.equal(error.code, WRIT_DENIED_CODE)
    assert.equal(error.data?.reason, 'expired')
    await within(stream.closed, 5000, 'the GET stream closing')
    assert.ok(
      Date.now() >= notAfter - 1000,
      'the session ended long before the certificate expired',
    )

    const reply = await httpsRequest(setup.server.address, '/mcp/notes', {
      tls: readIdentity(identity),
      body: initializeBody('2025-06-18'),
    })
    assert.equal(reply.status, 401)
    const body = JSON.parse(reply.body.toString('utf8')) as { error: DeniedError }
    assert.equal(body.error.data?.reason, 'expired')
  })

  it('idle bridge keeps its session after renewal', async () => {
    const identity = join(temporaryDirectory('locks-renewing'), 'identity')
    const enrollment = await addBot(setup.dataDir, 'renewing-bot', 'e2e-reader', ['--ttl', '6s'])
    agent = spawn(
      process.execPath,
      [
        CLI,
        'agent',
        '--server',
        setup.server.address,
        '--token',
        enrollment.token,
        '--ca-pin',
        setup.server.caPin,
        '--dest',
        identity,
      ],
      { stdio: 'ignore' },
    )
    await waitFor('the agent to write svid.pem', () =>
      existsSync(join(identity, 'svid.pem')) ? true : undefined,
    )
    const firstSerial = certificateSerial(identity)
    const firstNotAfter = Date.parse(new X509Certificate(readIdentity(identity).cert).validTo)
    const notes = await connect(identity, 'notes')
    await notes.callTool({ name: 'read_note', arguments: { phase: 'first-certificate' } })

    // The client stays idle while the agent renews and the first certificate expires.
    await waitFor('the agent to renew', () =>
      certificateSerial(identity) !== firstSerial ? true : undefined,
    )
    await waitFor('the first certificate to expire', () =>
      Date.now() > firstNotAfter + 1000 ? true : undefined,
    )
    const result = await notes.callTool({ name: 'read_note', arguments: { phase: 'renewed' } })
    assert.deepEqual(result.content, [
      { type: 'text', text: 'called read_note with {"phase":"renewed"}' },
    ])
  })
})
