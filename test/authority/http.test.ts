import assert from 'node:assert/strict'
import type { IncomingHttpHeaders } from 'node:http'
import { createServer, request, type Server } from 'node:https'
import type { AddressInfo } from 'node:net'
import { after, before, test } from 'node:test'
import type { TLSSocket } from 'node:tls'
import { joinWithToken, renew } from '../../src/agent/client.js'
import { createCsrPem, generateAgentKeys } from '../../src/agent/keys.js'
import { createAuthorityRoutes, MAX_AUTHORITY_BODY_BYTES } from '../../src/authority/routes.js'
import { isWritError } from '../../src/errors.js'
import { pemToDer } from '../../src/identity/pem.js'
import type { PeerIdentity } from '../../src/identity/types.js'
import { identityFromCertificate } from '../../src/identity/verify.js'
import { createLogger } from '../../src/log.js'
import { createTestCa } from '../identity/test-pki.js'
import { type AuthorityFixture, openAuthorityFixture } from './authority-fixture.js'

let fixture: AuthorityFixture
let server: Server
let address: string
const serverLog: string[] = []

/** Starts an HTTPS server that authenticates client certificates the way src/server.ts does. */
async function startServer(hostname: string): Promise<Server> {
  const tls = await fixture.ca.serverCertificate([])
  const logger = createLogger({ sink: (line) => serverLog.push(line) })
  const routes = createAuthorityRoutes(fixture.authority, logger)
  const https = createServer(
    {
      key: tls.keyPem,
      cert: `${tls.certPem.trim()}\n${fixture.ca.certPem.trim()}\n`,
      ca: fixture.ca.bundlePem,
      requestCert: true,
      rejectUnauthorized: false,
    },
    (req, res) => {
      const socket = req.socket as TLSSocket
      let identity: PeerIdentity | undefined
      const certificate = socket.getPeerCertificate(false)
      if (socket.authorized && certificate?.raw) {
        try {
          identity = identityFromCertificate(certificate.raw)
        } catch {
          identity = undefined
        }
      }
      const remote = `${socket.remoteAddress}:${socket.remotePort}`
      routes.handle(req, res, identity, remote).catch((error: unknown) => {
        res.destroy(error as Error)
      })
    },
  )
  await new Promise<void>((resolve, reject) => {
    https.once('error', reject)
    https.listen(0, hostname, () => resolve())
  })
  return https
}

function stopServer(https: Server): Promise<void> {
  https.closeAllConnections()
  return new Promise((resolve) => https.close(() => resolve()))
}

before(async () => {
  fixture = await openAuthorityFixture()
  await fixture.addRole('reader', '30m')
  await fixture.addBot('ci-agent', ['reader'])
  server = await startServer('127.0.0.1')
  address = `127.0.0.1:${(server.address() as AddressInfo).port}`
})
after(async () => {
  await stopServer(server)
  await fixture.close()
})

interface RawResponse {
  status: number
  headers: IncomingHttpHeaders
  body: { error?: { code: string; message: string; requestId?: string } } & Record<string, unknown>
}

/** Sends one request to the test server, trusting the CA bundle. */
function send(
  path: string,
  options: {
    method?: string
    body?: string | Buffer
    chunked?: boolean
    servername?: string
    port?: number
    host?: string
  } = {},
): Promise<RawResponse> {
  const body = options.body === undefined ? undefined : Buffer.from(options.body)
  const headers: Record<string, string | number> = { 'content-type': 'application/json' }
  if (body && !options.chunked) headers['content-length'] = body.length
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: options.host ?? '127.0.0.1',
        port: options.port ?? (server.address() as AddressInfo).port,
        path,
        method: options.method ?? 'POST',
        ca: fixture.ca.bundlePem,
        agent: false,
        headers,
        ...(options.servername ? { servername: options.servername } : {}),
      },
      (res) => {
        const chunks: Buffer[] = []
        res.on('data', (chunk: Buffer) => chunks.push(chunk))
        res.once('end', () => {
          const text = Buffer.concat(chunks).toString('utf8')
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: text ? JSON.parse(text) : {},
          })
        })
      },
    )
    req.once('error', reject)
    if (body && options.chunked) {
      // Several writes without content-length make Node send the body chunked.
      for (let offset = 0; offset < body.length; offset += 16_384) {
        req.write(body.subarray(offset, offset + 16_384))
      }
      req.end()
    } else {
      req.end(body)
    }
  })
}

async function rejectsWith(promise: Promise<unknown>, code: string, message: string) {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(isWritError(error), `expected a WritError, got ${String(error)}`)
    assert.equal(error.code, code)
    assert.equal(error.message, message)
    return true
  })
}

test('agent joins and renews over HTTPS', async () => {
  await fixture.addToken('http-join-token', 'ci-agent')
  const joined = await joinWithToken({
    server: address,
    token: 'http-join-token',
    caPin: fixture.ca.pin,
    keys: await generateAgentKeys(),
  })
  assert.equal(joined.spiffeId, 'spiffe://writ.test/bot/ci-agent')
  assert.equal(joined.bundlePem, fixture.ca.bundlePem)
  const first = identityFromCertificate(pemToDer(joined.certPem, ['CERTIFICATE'], 'test'))
  assert.equal(first.claims.generation, 1)
  assert.equal(joined.serial, first.serial)

  const renewed = await renew({
    server: address,
    current: { certPem: joined.certPem, keyPem: joined.keyPem, bundlePem: joined.bundlePem },
    keys: await generateAgentKeys(),
  })
  const second = identityFromCertificate(pemToDer(renewed.certPem, ['CERTIFICATE'], 'test'))
  assert.equal(renewed.spiffeId, joined.spiffeId)
  assert.notEqual(renewed.serial, joined.serial)
  assert.equal(second.claims.generation, 2)
  assert.equal(second.claims.botInstance, first.claims.botInstance)
  assert.equal(fixture.audit.events.at(-1)?.type, 'certificate.renew')
  assert.equal(fixture.audit.events.at(-1)?.caller?.serial, joined.serial)
})

test('agent reports a reused token', async () => {
  await fixture.addToken('http-reused-token', 'ci-agent')
  const options = { server: address, token: 'http-reused-token', caPin: fixture.ca.pin }
  await joinWithToken({ ...options, keys: await generateAgentKeys() })
  await rejectsWith(
    joinWithToken({ ...options, keys: await generateAgentKeys() }),
    'join.token_used',
    'join token has already been used; create a new one with writ bots add',
  )
})

test('agent reports an unknown token', async () => {
  await rejectsWith(
    joinWithToken({
      server: address,
      token: 'http-unknown-token',
      caPin: fixture.ca.pin,
      keys: await generateAgentKeys(),
    }),
    'join.token_unknown',
    `join token is not known to the Writ server at ${address}; check the token or create a new one with writ bots add`,
  )
})

test('agent reports an expired token', async () => {
  await fixture.addToken('http-expired-token', 'ci-agent', -1000)
  await rejectsWith(
    joinWithToken({
      server: address,
      token: 'http-expired-token',
      caPin: fixture.ca.pin,
      keys: await generateAgentKeys(),
    }),
    'join.token_expired',
    'join token has expired; create a new one with writ bots add',
  )
})

test('agent with a wrong CA pin sends no token', async () => {
  await fixture.addToken('http-pinned-token', 'ci-agent')
  const other = await createTestCa()
  try {
    const eventsBefore = fixture.audit.events.length
    await rejectsWith(
      joinWithToken({
        server: address,
        token: 'http-pinned-token',
        caPin: other.ca.pin,
        keys: await generateAgentKeys(),
      }),
      'agent.ca_pin_mismatch',
      `CA pin mismatch: expected ${other.ca.pin}, the server at ${address} presented ${fixture.ca.pin}`,
    )
    assert.equal(fixture.audit.events.length, eventsBefore)
  } finally {
    other.remove()
  }
  const joined = await joinWithToken({
    server: address,
    token: 'http-pinned-token',
    caPin: fixture.ca.pin,
    keys: await generateAgentKeys(),
  })
  assert.equal(joined.spiffeId, 'spiffe://writ.test/bot/ci-agent')
})

test('renew without a client certificate is 401', async () => {
  const response = await send('/v1/renew', { body: JSON.stringify({ csr: 'x' }) })
  assert.equal(response.status, 401)
  assert.equal(response.body.error?.code, 'renew.unauthenticated')
  assert.equal(
    response.body.error?.message,
    'renewal requires a valid client certificate issued by this Writ CA; join again if the certificate expired',
  )
})

test('join rejects a bad CSR with 400', async () => {
  const response = await send('/v1/join', {
    body: JSON.stringify({ token: 'raw-unknown', csr: 'not a csr' }),
  })
  assert.equal(response.status, 400)
  assert.equal(response.body.error?.code, 'csr.invalid')
  assert.equal(
    response.body.error?.message,
    'expected one PEM block labelled CERTIFICATE REQUEST, found 0',
  )
})

test('token errors are 403 with a request id', async () => {
  const csr = createCsrPem(await generateAgentKeys(), { commonName: 'writ-agent' })
  const refused = await send('/v1/join', { body: JSON.stringify({ token: 'raw-unknown', csr }) })
  assert.equal(refused.status, 403)
  assert.equal(refused.body.error?.code, 'join.token_unknown')
  assert.match(refused.body.error?.requestId ?? '', /^audit-\d+$/)
  assert.equal(JSON.stringify(refused.body).includes('raw-unknown'), false)
})

test('join rejects other methods with 405', async () => {
  const response = await send('/v1/join', { method: 'GET' })
  assert.equal(response.status, 405)
  assert.equal(response.headers.allow, 'POST')
  assert.equal(response.body.error?.code, 'request.method_not_allowed')
  assert.equal(response.body.error?.message, '/v1/join accepts POST only, not GET')
})

test('join rejects a body over 64 KiB with 413', async () => {
  const body = JSON.stringify({ token: 'x', csr: 'a'.repeat(MAX_AUTHORITY_BODY_BYTES) })
  for (const chunked of [false, true]) {
    const response = await send('/v1/join', { body, chunked })
    assert.equal(response.status, 413, `status with chunked=${chunked}`)
    assert.equal(response.body.error?.code, 'request.too_large')
    assert.equal(response.body.error?.message, 'request body is larger than 65536 bytes')
  }
})

test('join rejects invalid JSON without echoing it', async () => {
  const response = await send('/v1/join', { body: '{"token": "leaky-secret", ' })
  assert.equal(response.status, 400)
  assert.equal(response.body.error?.code, 'request.invalid_json')
  assert.equal(response.body.error?.message, 'request body is not valid JSON')
  assert.equal(serverLog.join('\n').includes('leaky-secret'), false)
})

test('join names a missing or mistyped field', async () => {
  const missing = await send('/v1/join', { body: JSON.stringify({ token: 'abc' }) })
  assert.equal(missing.status, 400)
  assert.equal(missing.body.error?.code, 'request.invalid')
  assert.equal(
    missing.body.error?.message,
    'request field "csr" must be a non-empty string; it is missing',
  )
  const mistyped = await send('/v1/join', { body: JSON.stringify({ token: 7, csr: 'x' }) })
  assert.equal(
    mistyped.body.error?.message,
    'request field "token" must be a non-empty string; found a number',
  )
  const array = await send('/v1/join', { body: '[]' })
  assert.equal(array.body.error?.message, 'request body must be a JSON object')
})

test('server certificate passes hostname checks', async () => {
  for (const servername of [undefined, 'localhost']) {
    const response = await send('/v1/join', {
      method: 'GET',
      ...(servername ? { servername } : {}),
    })
    assert.equal(response.status, 405, `request with servername ${servername}`)
  }
  let ipv6: Server
  try {
    ipv6 = await startServer('::1')
  } catch (error) {
    // NOTE: some containers have no IPv6 loopback; the IP SAN itself is checked in ca.test.ts.
    if ((error as NodeJS.ErrnoException).code === 'EADDRNOTAVAIL') return
    throw error
  }
  try {
    const port = (ipv6.address() as AddressInfo).port
    const response = await send('/v1/join', { method: 'GET', host: '::1', port })
    assert.equal(response.status, 405)
  } finally {
    await stopServer(ipv6)
  }
})
