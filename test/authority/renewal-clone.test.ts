// Renewal and locks over the real HTTPS listener: the agent's own client functions join and renew
// against a Writ server started in this process.
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { request } from 'node:https'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { joinWithToken, renew } from '../../src/agent/client.js'
import type { IssuedIdentity } from '../../src/agent/issued.js'
import { generateAgentKeys } from '../../src/agent/keys.js'
import { JWT_SVID_PATH } from '../../src/authority/jwt-svid-routes.js'
import { createLock, removeLock } from '../../src/authority/lock-service.js'
import { enrollBot } from '../../src/bots.js'
import { isWritError } from '../../src/errors.js'
import { WRIT_DENIED_CODE } from '../../src/gateway/jsonrpc.js'
import { silentLogger } from '../../src/log.js'
import { API_VERSION } from '../../src/policy/resource.js'
import { type RunningWrit, startWrit } from '../../src/server.js'

let writ: RunningWrit
let dataDir: string

before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'writ-clone-'))
  writ = await startWrit({
    dataDir,
    listen: '127.0.0.1:0',
    logger: silentLogger,
    lockPollMs: 50,
  })
  await writ.host.store.putResource({
    apiVersion: API_VERSION,
    kind: 'Role',
    metadata: { name: 'reader' },
    spec: { maxTtl: '1h' },
  })
})

after(async () => {
  await writ?.close()
  rmSync(dataDir, { recursive: true, force: true })
})

async function joinBot(name: string): Promise<IssuedIdentity> {
  const enrollment = await enrollBot(writ.host, name, ['reader'], undefined)
  return joinWithToken({
    server: writ.address,
    token: enrollment.token,
    caPin: writ.host.ca.pin,
    keys: await generateAgentKeys(),
  })
}

async function renewFrom(current: IssuedIdentity): Promise<IssuedIdentity> {
  return renew({ server: writ.address, current, keys: await generateAgentKeys() })
}

async function rejectsWith(promise: Promise<unknown>, code: string, ...parts: string[]) {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(isWritError(error), `expected a WritError, got ${String(error)}`)
    assert.equal(error.code, code)
    for (const part of parts) {
      assert.ok(error.message.includes(part), `message does not name ${part}: ${error.message}`)
    }
    return true
  })
}

/** Sends a request with the identity's certificate and returns status and parsed body. */
function send(
  identity: IssuedIdentity,
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; body: unknown }> {
  const [host, port] = writ.address.split(':') as [string, string]
  return new Promise((resolve, reject) => {
    const outgoing = request(
      {
        host,
        port: Number(port),
        path,
        method,
        headers: { 'content-type': 'application/json' },
        agent: false,
        ca: identity.bundlePem,
        cert: identity.certPem,
        key: identity.keyPem,
      },
      (response) => {
        const chunks: Buffer[] = []
        response.on('data', (chunk: Buffer) => chunks.push(chunk))
        response.on('end', () =>
          resolve({
            status: response.statusCode ?? 0,
            body: JSON.parse(Buffer.concat(chunks).toString('utf8')),
          }),
        )
      },
    )
    outgoing.on('error', reject)
    outgoing.end(body === undefined ? undefined : JSON.stringify(body))
  })
}

function listServers(identity: IssuedIdentity): Promise<{ status: number; body: unknown }> {
  return send(identity, 'GET', '/v1/mcp/servers')
}

async function waitForStatus(identity: IssuedIdentity, status: number): Promise<unknown> {
  for (let attempt = 0; attempt < 100; attempt++) {
    const reply = await listServers(identity)
    if (reply.status === status) return reply.body
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  throw new Error(`/v1/mcp/servers never answered ${status}`)
}

describe('copied certificate', () => {
  test('second renewal from one generation is refused', async () => {
    const original = await joinBot('cloned-bot')
    const renewed = await renewFrom(original)
    assert.notEqual(renewed.serial, original.serial)

    // A copy of the first certificate and key renews after the agent already did.
    await rejectsWith(renewFrom(original), 'renew.generation_stale', 'generation 1', 'lock-')

    const locks = await writ.host.store.listLocks()
    const lock = locks.find((candidate) => 'botInstance' in candidate.target)
    assert.ok(lock, `no bot instance lock among ${JSON.stringify(locks)}`)
    assert.equal(lock.createdBy, 'authority')

    const events = await writ.host.store.queryAudit({ type: 'lock.create' })
    assert.ok(events.some((event) => event.details?.lockId === lock.id))
    const refusals = await writ.host.store.queryAudit({
      type: 'certificate.renew',
      outcome: 'denied',
    })
    const refusal = refusals.find((event) => event.details?.lockId === lock.id)
    assert.ok(refusal, 'the refused renewal is not audited with the lock id')
    assert.equal(refusal.reason, 'generation_stale')

    // Both holders are now stopped: the agent's newest certificate renews no more.
    await rejectsWith(renewFrom(renewed), 'renew.locked', lock.id)
    const body = (await waitForStatus(renewed, 403)) as { error: { data: { reason: string } } }
    assert.equal(body.error.data.reason, 'locked')
  })
})

describe('locks over HTTPS', () => {
  test('bot lock refuses gateway and renewal', async () => {
    const identity = await joinBot('locked-bot')
    await waitForStatus(identity, 200)
    const lock = await createLock(writ.host, {
      target: { bot: 'locked-bot' },
      message: 'suspected key leak',
      createdBy: 'test',
    })

    const body = (await waitForStatus(identity, 403)) as {
      error: { code: number; message: string; data: { reason: string; requestId: string } }
    }
    assert.equal(body.error.code, WRIT_DENIED_CODE)
    assert.equal(body.error.data.reason, 'locked')
    assert.match(body.error.message, new RegExp(`lock ${lock.id}\\): suspected key leak`))
    const refused = await writ.host.store.queryAudit({ type: 'auth.refused' })
    const record = refused.find((event) => event.id === body.error.data.requestId)
    assert.equal(record?.details?.lockId, lock.id)
    assert.equal(record?.reason, 'locked')

    await rejectsWith(renewFrom(identity), 'renew.locked', lock.id, 'suspected key leak')
    const jwt = await send(identity, 'POST', JWT_SVID_PATH, { audience: ['tracker'] })
    assert.equal(jwt.status, 403)
    const jwtError = (jwt.body as { error: { code: string; message: string } }).error
    assert.equal(jwtError.code, 'jwt_svid.locked')
    assert.match(jwtError.message, new RegExp(lock.id))

    await removeLock(writ.host, lock.id, 'test')
    await waitForStatus(identity, 200)
    const renewed = await renewFrom(identity)
    assert.equal(renewed.spiffeId, identity.spiffeId)
  })

  test('token lock refuses join', async () => {
    const enrollment = await enrollBot(writ.host, 'token-bot', ['reader'], undefined)
    const lock = await createLock(writ.host, {
      target: { token: enrollment.tokenName },
      message: 'token was pasted in a chat',
      createdBy: 'test',
    })
    await rejectsWith(
      joinWithToken({
        server: writ.address,
        token: enrollment.token,
        caPin: writ.host.ca.pin,
        keys: await generateAgentKeys(),
      }),
      'join.locked',
      lock.id,
      'token was pasted in a chat',
    )
  })
})
