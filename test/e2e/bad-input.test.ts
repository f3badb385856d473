import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { WRIT_DENIED_CODE } from '../../src/gateway/jsonrpc.js'
import {
  type ClientCertificate,
  expiredWritCertificate,
  foreignCertificate,
} from './certificates.js'
import {
  auditSearch,
  type ClientTls,
  type GatewaySetup,
  type HttpsReply,
  httpsRequest,
  initializeBody,
  readIdentity,
  removeTemporaryDirectories,
  replyJson,
  replyMessages,
  runWrit,
  startGatewaySetup,
  temporaryDirectory,
  waitFor,
} from './harness.js'

const MAX_BODY_BYTES = 2048
let setup: GatewaySetup
let agentTls: Required<ClientTls>

before(async () => {
  // This server also runs with every audit commit waiting for the disk, the non-default mode.
  setup = await startGatewaySetup('bad-input', [
    '--max-body-bytes',
    String(MAX_BODY_BYTES),
    '--audit-sync',
    'full',
  ])
  agentTls = readIdentity(setup.identity)
})

after(async () => {
  await setup?.server.stop()
  removeTemporaryDirectories()
})

type ErrorBody = {
  error: { code: number; message: string; data?: { reason?: string; requestId?: string } }
}

function post(body: string, options: { tls?: ClientTls; session?: string; server?: string } = {}) {
  return httpsRequest(setup.server.address, `/mcp/${options.server ?? 'notes'}`, {
    tls: options.tls ?? agentTls,
    body,
    headers: options.session ? { 'mcp-session-id': options.session } : {},
  })
}

async function openSession(version: string): Promise<string> {
  const reply = await post(initializeBody(version))
  assert.equal(reply.status, 200, reply.body.toString())
  const session = reply.headers['mcp-session-id']
  assert.equal(typeof session, 'string')
  await post(JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }), {
    session: session as string,
  })
  return session as string
}

const ping = (id: number) => ({ jsonrpc: '2.0', id, method: 'ping' })

describe('malformed MCP requests over HTTPS', () => {
  it('invalid JSON gets -32700', async () => {
    const reply = await post('{"jsonrpc": "2.0", "id": 1,')
    assert.equal(reply.status, 400)
    assert.equal((replyJson(reply) as ErrorBody).error.code, -32700)
  })

  it('body over the limit gets 413', async () => {
    const body = JSON.stringify({ ...ping(1), params: { pad: 'x'.repeat(MAX_BODY_BYTES * 2) } })
    const reply = await post(body)
    assert.equal(reply.status, 413)
    const { error } = replyJson(reply) as ErrorBody
    assert.equal(error.code, WRIT_DENIED_CODE)
    assert.equal(error.data?.reason, 'too_large')
    assert.match(error.message, new RegExp(`${MAX_BODY_BYTES}-byte limit`))
  })

  it('batch under 2025-06-18 is rejected', async () => {
    const session = await openSession('2025-06-18')
    const reply = await post(JSON.stringify([ping(2), ping(3)]), { session })
    assert.equal(reply.status, 400)
    const { error } = replyJson(reply) as ErrorBody
    assert.equal(error.code, -32600)
    assert.match(error.message, /batch/)
  })

  it('batch under 2025-03-26 gets responses', async () => {
    const session = await openSession('2025-03-26')
    const reply = await post(JSON.stringify([ping(2), ping(3)]), { session })
    assert.equal(reply.status, 200, reply.body.toString())
    const ids = replyMessages(reply).map((item) => item.id as number)
    assert.deepEqual(ids.sort(), [2, 3])
  })

  it('unknown session gets 404', async () => {
    const reply = await post(JSON.stringify(ping(1)), { session: 'no-such-session' })
    assert.equal(reply.status, 404)
  })

  it('deleted session gets 404', async () => {
    const session = await openSession('2025-06-18')
    const deleted = await httpsRequest(setup.server.address, '/mcp/notes', {
      tls: agentTls,
      method: 'DELETE',
      headers: { 'mcp-session-id': session },
    })
    assert.ok([200, 202, 204].includes(deleted.status), `DELETE returned ${deleted.status}`)
    const reply = await post(JSON.stringify(ping(5)), { session })
    assert.equal(reply.status, 404)
  })

  it('split multibyte result arrives intact', async () => {
    const session = await openSession('2025-06-18')
    const call = {
      jsonrpc: '2.0',
      id: 9,
      method: 'tools/call',
      params: { name: 'emoji', arguments: {} },
    }
    const reply = await post(JSON.stringify(call), { session })
    assert.equal(reply.status, 200, reply.body.toString())
    assert.ok(
      reply.body.includes(Buffer.from('ok 😀🎉 done')),
      `reply bytes: ${reply.body.toString('hex')}`,
    )
    const result = replyJson(reply).result as { content: Array<{ text: string }> }
    assert.equal(result.content[0]?.text, 'ok 😀🎉 done')
  })

  it('unresolved secret names the server only', async () => {
    const manifest = `apiVersion: writ.dev/v1alpha1
kind: McpServer
metadata: { name: misconfigured, labels: { env: e2e } }
spec:
  stdio:
    command: ${JSON.stringify(process.execPath)}
    args: ['-e', '0']
    env: { API_KEY: '\${env:WRIT_E2E_NEVER_SET_VARIABLE}' }
`
    const applied = await runWrit(['apply', '-f', '-', '--data-dir', setup.dataDir], {
      input: manifest,
    })
    assert.equal(applied.code, 0, applied.stderr)
    const reply = await waitFor('the server to load the new manifest', async () => {
      const attempt = await post(initializeBody('2025-06-18'), { server: 'misconfigured' })
      return attempt.status === 403 ? undefined : attempt
    })
    assert.equal(reply.status, 502)
    const { error } = replyJson(reply) as ErrorBody
    assert.match(error.message, /MCP server "misconfigured" is misconfigured on the Writ server/)
    assert.doesNotMatch(error.message, /WRIT_E2E_NEVER_SET_VARIABLE/)
    await waitFor('the log to name the unresolved reference', () =>
      setup.server.stderr().includes('secrets.unresolved') ? true : undefined,
    )
  })

  it('unknown server answered like a forbidden one', async () => {
    const unknown = await post(initializeBody('2025-06-18'), { server: 'no-such-server' })
    assert.equal(unknown.status, 403)
    const unknownError = (replyJson(unknown) as ErrorBody).error
    assert.match(unknownError.message, /access to MCP server "no-such-server" is not allowed/)
    const forbidden = await post(initializeBody('2025-06-18'), { server: 'hidden' })
    assert.equal(forbidden.status, 403)
    const forbiddenError = (replyJson(forbidden) as ErrorBody).error
    assert.match(forbiddenError.message, /access to MCP server "hidden" is not allowed/)
  })

  it('upstream exit reported within 2 s', async () => {
    const started = Date.now()
    const reply = await post(initializeBody('2025-06-18'), { server: 'broken' })
    const elapsed = Date.now() - started
    const { error } = replyJson(reply) as ErrorBody
    assert.match(error.message, /upstream server "broken" is unavailable: it exited with code 3/)
    assert.doesNotMatch(error.message, /cannot open database/)
    assert.ok(elapsed < 2000, `the error took ${elapsed} ms`)
  })
})

describe('rejected client certificates', () => {
  /** Sends initialize with `tls`, checks the 401 denial and returns the reply and its body. */
  async function expectRejected(
    tls: ClientTls,
    reason: string,
  ): Promise<{ reply: HttpsReply; body: ErrorBody }> {
    const reply = await post(initializeBody('2025-06-18'), { tls })
    assert.equal(reply.status, 401, reply.body.toString())
    const body = replyJson(reply) as ErrorBody
    assert.equal(body.error.code, WRIT_DENIED_CODE)
    assert.equal(body.error.data?.reason, reason)
    return { reply, body }
  }

  /** Finds the `auth.refused` audit event of a reply and checks that it records the peer address. */
  async function expectRejectionAudited(reply: HttpsReply, body: ErrorBody, reason: string) {
    const events = await auditSearch(setup.dataDir, ['--outcome', 'denied'])
    const event = events.find((candidate) => candidate.id === body.error.data?.requestId)
    assert.ok(event, `no audit event with id ${body.error.data?.requestId}`)
    assert.equal(event.type, 'auth.refused')
    assert.equal(event.reason, reason)
    assert.equal(event.peer, `127.0.0.1:${reply.localPort}`)
    return event
  }

  it('missing certificate rejected and audited', async () => {
    const { reply, body } = await expectRejected({ ca: agentTls.ca }, 'forbidden')
    assert.match(body.error.message, /client certificate required/)
    await expectRejectionAudited(reply, body, 'forbidden')
  })

  it('expired certificate rejected and audited', async () => {
    const expired: ClientCertificate = await expiredWritCertificate(setup.dataDir, 'e2e-agent')
    const { reply, body } = await expectRejected({ ca: agentTls.ca, ...expired }, 'expired')
    assert.match(body.error.message, /expired/)
    await expectRejectionAudited(reply, body, 'expired')
  })

  it('foreign CA certificate rejected and audited', async () => {
    const foreign = await foreignCertificate(temporaryDirectory('foreign-ca'), 'e2e-agent')
    const { reply, body } = await expectRejected({ ca: agentTls.ca, ...foreign }, 'forbidden')
    assert.match(body.error.message, /not issued by this Writ CA/)
    await expectRejectionAudited(reply, body, 'forbidden')
  })

  it('server listing needs a certificate', async () => {
    const reply = await httpsRequest(setup.server.address, '/v1/mcp/servers', {
      tls: { ca: agentTls.ca },
      method: 'GET',
    })
    assert.equal(reply.status, 401)
  })
})
