import assert from 'node:assert/strict'
import { createServer, request, type Server } from 'node:https'
import type { AddressInfo } from 'node:net'
import { afterEach, beforeEach, describe, test } from 'node:test'
import type { TLSSocket } from 'node:tls'
import { joinWithToken } from '../../src/agent/client.js'
import { createCsrPem, generateAgentKeys } from '../../src/agent/keys.js'
import { requestTask } from '../../src/agent/task-client.js'
import { createAuthorityRoutes } from '../../src/authority/routes.js'
import {
  createTaskAuthority,
  type TaskAuthority,
  type TaskResult,
} from '../../src/authority/tasks.js'
import { isWritError } from '../../src/errors.js'
import { pemToDer } from '../../src/identity/pem.js'
import type { PeerIdentity } from '../../src/identity/types.js'
import { identityFromCertificate } from '../../src/identity/verify.js'
import { createLogger } from '../../src/log.js'
import { compilePolicy } from '../../src/policy/policy.js'
import { API_VERSION, type Resource } from '../../src/policy/resource.js'
import { type AuthorityFixture, openAuthorityFixture } from './authority-fixture.js'

const PEER = '127.0.0.1:50000'
const BOT_ID = 'spiffe://writ.test/bot/ci-agent'

let fixture: AuthorityFixture
let tasks: TaskAuthority

beforeEach(async () => {
  fixture = await openAuthorityFixture()
  await fixture.addRole('reader', '30m')
  await fixture.addBot('ci-agent', ['reader'])
  tasks = taskAuthority()
})
afterEach(() => fixture.close())

function taskAuthority(
  extra: { maxDepth?: number; roleMaxTtlSeconds?: () => number } = {},
): TaskAuthority {
  return createTaskAuthority({
    ca: fixture.ca,
    store: fixture.store,
    audit: fixture.audit,
    clock: () => fixture.now,
    logger: createLogger({ sink: (line) => fixture.logLines.push(line) }),
    ...extra,
  })
}

async function joinedBot(): Promise<PeerIdentity> {
  await fixture.addToken('task-join-token', 'ci-agent')
  const csrPem = createCsrPem(await generateAgentKeys(), { commonName: 'writ-agent' })
  const result = await fixture.authority.join({ token: 'task-join-token', csrPem }, PEER)
  return identityOf(result.certificate)
}

function identityOf(certificate: string): PeerIdentity {
  return identityFromCertificate(pemToDer(certificate, ['CERTIFICATE'], 'test'))
}

async function taskBody(fields: Record<string, unknown> = {}): Promise<Record<string, unknown>> {
  const csr = createCsrPem(await generateAgentKeys(), { commonName: 'ignored' })
  return { csr, tools: ['read_*'], reason: 'summarise open issues', ...fields }
}

async function issueUnder(
  parent: PeerIdentity,
  fields: Record<string, unknown> = {},
  authority: TaskAuthority = tasks,
): Promise<{ result: TaskResult; identity: PeerIdentity }> {
  const result = await authority.issue(parent, await taskBody(fields), PEER)
  return { result, identity: identityOf(result.certificate) }
}

async function rejectsWith(promise: Promise<unknown>, code: string, message: RegExp) {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(isWritError(error), `expected a WritError, got ${String(error)}`)
    assert.equal(error.code, code)
    assert.match(error.message, message)
    return true
  })
}

describe('task issuance', () => {
  test('child of a bot carries parent roles and task scope', async () => {
    const bot = await joinedBot()
    const { result, identity } = await issueUnder(bot, { servers: ['files'] })

    assert.match(result.spiffeId, /^spiffe:\/\/writ\.test\/bot\/ci-agent\/task\/[a-z2-7]{10}$/)
    assert.equal(identity.spiffeId, result.spiffeId)
    assert.equal(result.spiffeId, `${BOT_ID}/task/${result.taskId}`)
    assert.equal(identity.name, 'ci-agent')
    assert.equal(identity.claims.kind, 'bot')
    assert.deepEqual(identity.claims.roles, ['reader'])
    assert.deepEqual(identity.claims.task, {
      id: result.taskId,
      reason: 'summarise open issues',
      servers: ['files'],
      tools: ['read_*'],
    })
    assert.equal(identity.claims.parentSerial, bot.serial)
    assert.equal(identity.claims.depth, 1)
    assert.equal(identity.claims.botInstance, bot.claims.botInstance)
    assert.equal(result.depth, 1)
    assert.equal(result.parentSerial, bot.serial)
    assert.equal(result.serial, identity.serial)
    assert.equal(result.bundle, fixture.ca.bundlePem)
  })

  test('default ttl is ten minutes', async () => {
    const bot = await joinedBot()
    const before = fixture.now
    const { result } = await issueUnder(bot)
    const seconds = (result.notAfter.getTime() - before) / 1000
    assert.ok(seconds > 595, `lifetime ${seconds}s`)
    assert.ok(seconds <= 600, `lifetime ${seconds}s`)
    assert.equal(result.ttlSeconds, 600)
    assert.equal(result.lifetimeLimitedBy, 'request')
  })

  test('ttl is capped at the parent expiry', async () => {
    const bot = await joinedBot()
    const { identity: first } = await issueUnder(bot, { ttl: '2m' })
    const { result, identity: second } = await issueUnder(first, { ttl: '1h' })
    assert.equal(result.lifetimeLimitedBy, 'parent')
    assert.ok(result.ttlSeconds <= 120, `ttl ${result.ttlSeconds}`)
    assert.ok(second.notAfter.getTime() <= first.notAfter.getTime())
    assert.equal(second.notAfter.getTime(), first.notAfter.getTime())
  })

  test('ttl is capped at the role maxTtl', async () => {
    const bot = await joinedBot()
    const capped = taskAuthority({ roleMaxTtlSeconds: () => 120 })
    const { result } = await issueUnder(bot, { ttl: '10m' }, capped)
    assert.equal(result.ttlSeconds, 120)
    assert.equal(result.lifetimeLimitedBy, 'role')
  })

  test('audit names parent, task and reason', async () => {
    const bot = await joinedBot()
    const { result } = await issueUnder(bot, { reason: 'triage issue 42' })
    const issue = fixture.audit.events.find((event) => event.type === 'task.issue')
    assert.ok(issue, 'no task.issue event')
    assert.equal(issue.outcome, 'success')
    assert.equal(issue.caller?.spiffeId, BOT_ID)
    assert.equal(issue.caller?.serial, bot.serial)
    assert.equal(issue.details?.taskId, result.taskId)
    assert.equal(issue.details?.reason, 'triage issue 42')
    assert.equal(issue.details?.parentSerial, bot.serial)
    assert.equal(issue.details?.serial, result.serial)

    const certificate = fixture.audit.events.at(-1)
    assert.equal(certificate?.type, 'certificate.issue')
    assert.deepEqual(certificate?.caller, {
      spiffeId: result.spiffeId,
      kind: 'bot',
      roles: ['reader'],
      serial: result.serial,
      task: result.taskId,
      taskReason: 'triage issue 42',
      parentSerial: bot.serial,
      parentSpiffeId: BOT_ID,
    })
  })
})

describe('task limits', () => {
  test('task of a task of a task is refused', async () => {
    const bot = await joinedBot()
    const { identity: first } = await issueUnder(bot)
    const { identity: second } = await issueUnder(first)
    assert.equal(second.claims.depth, 2)
    await rejectsWith(
      tasks.issue(second, await taskBody(), PEER),
      'task.depth_exceeded',
      /delegation depth 3, but this server allows at most 2/,
    )
    const denied = fixture.audit.events.at(-1)
    assert.equal(denied?.type, 'task.issue')
    assert.equal(denied?.outcome, 'denied')
    assert.equal(denied?.reason, 'depth_exceeded')
    assert.equal(denied?.caller?.spiffeId, second.spiffeId)
    assert.equal(denied?.caller?.parentSerial, first.serial)
  })

  test('server option lowers the depth limit', async () => {
    const bot = await joinedBot()
    const shallow = taskAuthority({ maxDepth: 1 })
    const { identity: first } = await issueUnder(bot, {}, shallow)
    await rejectsWith(
      shallow.issue(first, await taskBody(), PEER),
      'task.depth_exceeded',
      /depth 2, but this server allows at most 1/,
    )
  })

  test('child of a task stays within its scope', async () => {
    const bot = await joinedBot()
    const { identity: first } = await issueUnder(bot, { servers: ['files'], tools: ['read_*'] })
    const { identity: narrower } = await issueUnder(first, { tools: ['read_text_file'] })
    assert.deepEqual(narrower.claims.task?.servers, ['files'])
    assert.deepEqual(narrower.claims.task?.tools, ['read_text_file'])
    await rejectsWith(
      tasks.issue(first, await taskBody({ tools: ['write_file'] }), PEER),
      'task.scope_exceeded',
      /tools pattern "write_file" is not within the parent task's tools \[read_\*\]/,
    )
    await rejectsWith(
      tasks.issue(first, await taskBody({ servers: ['notes'] }), PEER),
      'task.scope_exceeded',
      /servers pattern "notes" is not within the parent task's servers \[files\]/,
    )
  })

  test('request without a client certificate is refused', async () => {
    await rejectsWith(
      tasks.issue(undefined, await taskBody(), PEER),
      'task.unauthenticated',
      /valid client certificate/,
    )
    const denied = fixture.audit.events.at(-1)
    assert.equal(denied?.reason, 'unauthenticated')
    assert.equal(denied?.caller, undefined)
    assert.equal(denied?.peer, PEER)
  })

  test('server and admin certificates cannot request tasks', async () => {
    const bot = await joinedBot()
    const admin: PeerIdentity = { ...bot, claims: { ...bot.claims, kind: 'admin' } }
    await rejectsWith(
      tasks.issue(admin, await taskBody(), PEER),
      'task.forbidden',
      /spiffe:\/\/writ\.test\/bot\/ci-agent is a certificate of kind "admin"/,
    )
  })
})

describe('task request validation', () => {
  test('reason is required', async () => {
    const bot = await joinedBot()
    await rejectsWith(
      tasks.issue(bot, await taskBody({ reason: undefined }), PEER),
      'task.invalid',
      /"reason" is required/,
    )
    assert.equal(fixture.audit.events.at(-1)?.reason, 'invalid')
  })

  test('bad ttl names the value', async () => {
    const bot = await joinedBot()
    await rejectsWith(
      tasks.issue(bot, await taskBody({ ttl: '10x' }), PEER),
      'task.invalid',
      /invalid task ttl "10x"/,
    )
    await rejectsWith(
      tasks.issue(bot, await taskBody({ ttl: 600 }), PEER),
      'task.invalid',
      /"ttl" must be a duration string such as "10m", not 600/,
    )
  })

  test('tools are required', async () => {
    const bot = await joinedBot()
    await rejectsWith(
      tasks.issue(bot, await taskBody({ tools: undefined }), PEER),
      'task.invalid',
      /"tools" must be a non-empty list/,
    )
  })

  test('unknown field is named', async () => {
    const bot = await joinedBot()
    await rejectsWith(
      tasks.issue(bot, await taskBody({ roles: ['admin'] }), PEER),
      'task.invalid',
      /unknown task field "roles"/,
    )
  })

  test('bad CSR is rejected', async () => {
    const bot = await joinedBot()
    await rejectsWith(
      tasks.issue(bot, await taskBody({ csr: 'not a csr' }), PEER),
      'csr.invalid',
      /./,
    )
    assert.equal(fixture.audit.events.at(-1)?.reason, 'csr_invalid')
  })
})

describe('task certificate under policy', () => {
  const resources: Resource[] = [
    {
      apiVersion: API_VERSION,
      kind: 'McpServer',
      metadata: { name: 'files', labels: { env: 'dev' } },
      spec: { stdio: { command: 'true' } },
    },
    {
      apiVersion: API_VERSION,
      kind: 'McpServer',
      metadata: { name: 'notes', labels: { env: 'dev' } },
      spec: { stdio: { command: 'true' } },
    },
    {
      apiVersion: API_VERSION,
      kind: 'Role',
      metadata: { name: 'reader' },
      spec: {
        allow: { mcpServers: { env: 'dev' }, tools: ['read_*', 'list_*'] },
        deny: { tools: ['write_*'] },
      },
    },
  ]
  const policy = compilePolicy(resources, resources)

  test('task allows only its own tools', async () => {
    const bot = await joinedBot()
    const { identity } = await issueUnder(bot, { tools: ['read_text_file'] })
    assert.equal(policy.decideTool(bot.claims, 'notes', 'read_note').effect, 'allow')
    const outside = policy.decideTool(identity.claims, 'notes', 'read_note')
    assert.equal(outside.effect, 'deny')
    assert.equal(outside.rule, 'task/tools')
    assert.equal(policy.decideTool(identity.claims, 'files', 'read_text_file').effect, 'allow')
  })

  test('task never exceeds the parent roles', async () => {
    const bot = await joinedBot()
    const { identity } = await issueUnder(bot, { tools: ['*'] })
    const write = policy.decideTool(identity.claims, 'files', 'write_file')
    assert.equal(write.effect, 'deny')
    assert.equal(write.rule, 'role/reader/deny/tools[0]')
    assert.equal(policy.decideTool(identity.claims, 'files', 'search_files').effect, 'deny')
  })

  test('task servers narrow the servers', async () => {
    const bot = await joinedBot()
    const { identity } = await issueUnder(bot, { servers: ['files'] })
    assert.deepEqual(policy.allowedServers(bot.claims), ['files', 'notes'])
    assert.deepEqual(policy.allowedServers(identity.claims), ['files'])
  })
})

describe('POST /v1/task over HTTPS', () => {
  let server: Server
  let address: string

  beforeEach(async () => {
    const tls = await fixture.ca.serverCertificate([])
    const routes = createAuthorityRoutes(fixture.authority, createLogger({ sink: () => {} }), tasks)
    server = createServer(
      {
        key: tls.keyPem,
        cert: `${tls.certPem.trim()}\n${fixture.ca.certPem.trim()}\n`,
        ca: fixture.ca.bundlePem,
        requestCert: true,
        rejectUnauthorized: false,
      },
      (req, res) => {
        const socket = req.socket as TLSSocket
        const certificate = socket.getPeerCertificate(false)
        const identity =
          socket.authorized && certificate?.raw
            ? identityFromCertificate(certificate.raw)
            : undefined
        const remote = `${socket.remoteAddress}:${socket.remotePort}`
        routes.handle(req, res, identity, remote).catch((error: unknown) => {
          res.destroy(error as Error)
        })
      },
    )
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()))
    address = `127.0.0.1:${(server.address() as AddressInfo).port}`
  })

  afterEach(async () => {
    server.closeAllConnections()
    await new Promise<void>((resolve) => server.close(() => resolve()))
  })

  async function joinOverHttps() {
    await fixture.addToken('https-task-token', 'ci-agent')
    return joinWithToken({
      server: address,
      token: 'https-task-token',
      caPin: fixture.ca.pin,
      keys: await generateAgentKeys(),
    })
  }

  test('client gets a checked task certificate', async () => {
    const bot = await joinOverHttps()
    const keys = await generateAgentKeys()
    const task = await requestTask({
      server: address,
      parent: bot,
      keys,
      tools: ['read_*'],
      servers: ['files'],
      ttl: '2m',
      reason: 'read the changelog',
    })
    assert.equal(task.spiffeId, `${BOT_ID}/task/${task.taskId}`)
    assert.equal(task.parentSpiffeId, BOT_ID)
    assert.equal(task.depth, 1)
    assert.equal(task.ttlSeconds, 120)
    assert.equal(task.lifetimeLimitedBy, 'request')
    assert.equal(task.keyPem, keys.privateKeyPem)
    assert.equal(identityOf(task.certPem).claims.task?.reason, 'read the changelog')
  })

  test('depth error keeps its code over HTTPS', async () => {
    const bot = await joinOverHttps()
    const request = { server: address, tools: ['read_*'], reason: 'nested' }
    const first = await requestTask({ ...request, parent: bot, keys: await generateAgentKeys() })
    const second = await requestTask({ ...request, parent: first, keys: await generateAgentKeys() })
    await assert.rejects(
      requestTask({ ...request, parent: second, keys: await generateAgentKeys() }),
      (error: unknown) => {
        assert.ok(isWritError(error))
        assert.equal(error.code, 'task.depth_exceeded')
        assert.equal(error.fields.status, 403)
        assert.match(error.message, /delegation depth 3, but this server allows at most 2/)
        return true
      },
    )
  })

  test('missing client certificate gets 401', async () => {
    const body = JSON.stringify(await taskBody())
    const reply = await new Promise<{ status: number; text: string }>((resolve, reject) => {
      const outgoing = request(
        {
          host: '127.0.0.1',
          port: (server.address() as AddressInfo).port,
          path: '/v1/task',
          method: 'POST',
          ca: fixture.ca.bundlePem,
          agent: false,
          headers: { 'content-type': 'application/json' },
        },
        (res) => {
          const chunks: Buffer[] = []
          res.on('data', (chunk: Buffer) => chunks.push(chunk))
          res.once('end', () =>
            resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }),
          )
        },
      )
      outgoing.once('error', reject)
      outgoing.end(body)
    })
    assert.equal(reply.status, 401)
    assert.equal(JSON.parse(reply.text).error.code, 'task.unauthenticated')
  })
})
