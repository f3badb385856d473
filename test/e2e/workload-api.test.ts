import assert from 'node:assert/strict'
import { type ChildProcess, spawn } from 'node:child_process'
import { createPrivateKey, X509Certificate } from 'node:crypto'
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { type ClientReadableStream, Metadata, status } from '@grpc/grpc-js'
import { createLocalJWKSet, decodeJwt, jwtVerify } from 'jose'
import {
  addBot,
  CLI,
  httpsRequest,
  readIdentity,
  removeTemporaryDirectories,
  runWrit,
  startWrit,
  stopProcess,
  TRUST_DOMAIN,
  temporaryDirectory,
  type WritServer,
  waitFor,
} from './harness.js'
import {
  type BundlesResponse,
  connectWorkloadApi,
  type JwtSvidResponse,
  StreamReader,
  securityHeader,
  unary,
  type ValidateResponse,
  type WorkloadApiClient,
  type X509SvidResponse,
} from './workload-client.js'

// The agent renews when a third of the lifetime, counted from receipt, is left, so a 9 s TTL
// renews about 6 s after the join and pushes a new SVID on every open stream.
const TTL = '9s'
const BOT = 'workload-agent'
const SPIFFE_ID = `spiffe://${TRUST_DOMAIN}/bot/${BOT}`
const TRUST_DOMAIN_ID = `spiffe://${TRUST_DOMAIN}`

const CONFIG = `apiVersion: writ.dev/v1alpha1
kind: Role
metadata: { name: workload-reader }
spec:
  maxTtl: 1h
  allow:
    mcpServers: { env: none }
    tools: ['read_*']
`

const root = temporaryDirectory('workload')
const dataDir = join(root, 'data')
const identity = join(root, 'identity')
const socketPath = join(root, 'run', 'agent.sock')
let server: WritServer
let agent: ChildProcess | undefined
let agentStdout = ''
let agentStderr = ''
let client: WorkloadApiClient
const readers: Array<StreamReader<unknown>> = []

before(async () => {
  const config = join(root, 'config.yaml')
  writeFileSync(config, CONFIG)
  server = await startWrit(dataDir, ['--config', config])
  const enrollment = await addBot(dataDir, BOT, 'workload-reader', ['--ttl', TTL])
  agent = spawn(
    process.execPath,
    [
      CLI,
      'agent',
      '--server',
      server.address,
      '--token',
      enrollment.token,
      '--ca-pin',
      server.caPin,
      '--dest',
      identity,
      '--workload-api',
      `unix://${socketPath}`,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  )
  agent.stdout?.setEncoding('utf8').on('data', (text: string) => {
    agentStdout += text
  })
  agent.stderr?.setEncoding('utf8').on('data', (text: string) => {
    agentStderr += text
  })
  await waitFor('the agent to join', () => (agentStdout.includes('joined ') ? true : undefined))
  client = connectWorkloadApi(socketPath)
})

after(async () => {
  for (const reader of readers) reader.stream.cancel()
  client?.close()
  if (agent) await stopProcess(agent)
  await server?.stop()
  removeTemporaryDirectories()
})

function openStream<T>(start: () => ClientReadableStream<T>): StreamReader<T> {
  const reader = new StreamReader(start())
  readers.push(reader as StreamReader<unknown>)
  return reader
}

function caDer(): Buffer {
  return new X509Certificate(readFileSync(join(dataDir, 'ca.pem'))).raw
}

/** Checks an X509SVID message: the bot's ID, a leaf signed by the CA and a key that matches it. */
function checkSvid(response: X509SvidResponse): X509Certificate {
  assert.equal(response.svids.length, 1)
  const svid = response.svids[0]
  assert.ok(svid)
  assert.equal(svid.spiffe_id, SPIFFE_ID)
  const leaf = new X509Certificate(svid.x509_svid)
  assert.match(leaf.subjectAltName ?? '', new RegExp(`URI:${SPIFFE_ID}$`))
  const key = createPrivateKey({ key: svid.x509_svid_key, format: 'der', type: 'pkcs8' })
  assert.ok(leaf.checkPrivateKey(key), 'x509_svid_key is not the key of x509_svid')
  assert.deepEqual(svid.bundle, caDer())
  assert.ok(
    leaf.verify(new X509Certificate(svid.bundle).publicKey),
    'the leaf is not signed by the bundle',
  )
  return leaf
}

describe('SPIFFE Workload API served by writ agent', () => {
  it('socket is mode 0600', () => {
    assert.match(agentStdout, /serving the SPIFFE Workload API on unix:\/\//)
    const stats = statSync(socketPath)
    assert.ok(stats.isSocket())
    assert.equal(stats.mode & 0o777, 0o600)
  })

  it('FetchX509SVID returns the bot SVID', async () => {
    const reader = openStream(() => client.FetchX509SVID({}, securityHeader()))
    const first = await reader.next(() => true)
    const leaf = checkSvid(first)
    const files = readIdentity(identity)
    const fileSerials = new Set([new X509Certificate(files.cert).serialNumber])
    // The agent may have renewed between reading the stream and reading the file.
    if (!fileSerials.has(leaf.serialNumber)) {
      assert.ok(agentStdout.includes('renewed '), 'the SVID matches no certificate the agent wrote')
    }
    reader.stream.cancel()
  })

  it('renewal pushes a new SVID on the open stream', async () => {
    const reader = openStream(() => client.FetchX509SVID({}, securityHeader()))
    const first = checkSvid(await reader.next(() => true))
    const renewed = await reader.next(
      (message) =>
        new X509Certificate(message.svids[0]?.x509_svid ?? Buffer.alloc(0)).serialNumber !==
        first.serialNumber,
      1,
      30_000,
    )
    const leaf = checkSvid(renewed)
    assert.notEqual(leaf.serialNumber, first.serialNumber)
    // The stream update and the agent's printed line race, so wait for the line.
    const renewedLine = /renewed spiffe:\/\/writ\.local\/bot\/workload-agent serial/
    const printed = await waitFor(
      'the agent to print the renewal',
      () => (renewedLine.test(agentStdout) ? true : undefined),
      10_000,
    )
    assert.equal(printed, true)
  })

  it('FetchX509Bundles returns the CA', async () => {
    const reader = openStream(() => client.FetchX509Bundles({}, securityHeader()))
    const message: BundlesResponse = await reader.next(() => true)
    assert.deepEqual(Object.keys(message.bundles), [TRUST_DOMAIN_ID])
    assert.deepEqual(message.bundles[TRUST_DOMAIN_ID], caDer())
  })

  it('FetchJWTSVID token validates for its audience', async () => {
    const fetched = await unary<JwtSvidResponse>((metadata, callback) =>
      client.FetchJWTSVID({ audience: ['reports'] }, metadata, callback),
    )
    assert.equal(fetched.error, undefined)
    const svid = fetched.response?.svids[0]
    assert.ok(svid)
    assert.equal(svid.spiffe_id, SPIFFE_ID)
    const payload = decodeJwt(svid.svid)
    assert.equal(payload.sub, SPIFFE_ID)
    assert.deepEqual(payload.aud, ['reports'])

    const validated = await unary<ValidateResponse>((metadata, callback) =>
      client.ValidateJWTSVID({ audience: 'reports', svid: svid.svid }, metadata, callback),
    )
    assert.equal(validated.error, undefined)
    assert.equal(validated.response?.spiffe_id, SPIFFE_ID)
    const claims = validated.response?.claims.fields ?? {}
    assert.equal(claims.sub?.stringValue, SPIFFE_ID)
    assert.deepEqual(
      claims.aud?.listValue?.values.map((value) => value.stringValue),
      ['reports'],
    )
    assert.equal(claims.exp?.numberValue, payload.exp)
  })

  it('ValidateJWTSVID rejects another audience', async () => {
    const fetched = await unary<JwtSvidResponse>((metadata, callback) =>
      client.FetchJWTSVID({ audience: ['reports'] }, metadata, callback),
    )
    const token = fetched.response?.svids[0]?.svid
    assert.ok(token)
    const validated = await unary<ValidateResponse>((metadata, callback) =>
      client.ValidateJWTSVID({ audience: 'billing', svid: token }, metadata, callback),
    )
    assert.equal(validated.error?.code, status.INVALID_ARGUMENT)
    assert.match(validated.error?.details ?? '', /audience "billing"/)
  })

  it('FetchJWTBundles keys verify the token', async () => {
    const reader = openStream(() => client.FetchJWTBundles({}, securityHeader()))
    const message: BundlesResponse = await reader.next(() => true)
    const document = message.bundles[TRUST_DOMAIN_ID]
    assert.ok(document, `no JWT bundle for ${TRUST_DOMAIN_ID}`)
    const jwks = JSON.parse(document.toString('utf8')) as { keys: Array<Record<string, unknown>> }
    assert.equal(jwks.keys.length, 1)
    assert.equal(jwks.keys[0]?.d, undefined, 'the JWT bundle contains a private key')

    const fetched = await unary<JwtSvidResponse>((metadata, callback) =>
      client.FetchJWTSVID({ audience: ['ledger'] }, metadata, callback),
    )
    const token = fetched.response?.svids[0]?.svid
    assert.ok(token)
    const verified = await jwtVerify(token, createLocalJWKSet(jwks as never), {
      audience: 'ledger',
    })
    assert.equal(verified.payload.sub, SPIFFE_ID)
    assert.equal(verified.protectedHeader.alg, 'ES256')
  })

  it('FetchX509SVID without header fails', async () => {
    const reader = openStream(() => client.FetchX509SVID({}))
    const error = await reader.failure()
    assert.equal(error.code, status.INVALID_ARGUMENT)
    assert.match(error.details, /workload\.spiffe\.io/)
    assert.equal(reader.messages.length, 0)
  })

  it('unary calls without header fail', async () => {
    const fetched = await unary<JwtSvidResponse>(
      (metadata, callback) => client.FetchJWTSVID({ audience: ['reports'] }, metadata, callback),
      new Metadata(),
    )
    assert.equal(fetched.error?.code, status.INVALID_ARGUMENT)
    assert.match(fetched.error?.details ?? '', /workload\.spiffe\.io/)

    const wrongValue = securityHeader()
    wrongValue.set('workload.spiffe.io', 'TRUE')
    const validated = await unary<ValidateResponse>(
      (metadata, callback) =>
        client.ValidateJWTSVID({ audience: 'a', svid: 'b' }, metadata, callback),
      wrongValue,
    )
    assert.equal(validated.error?.code, status.INVALID_ARGUMENT)
    assert.match(validated.error?.details ?? '', /workload\.spiffe\.io/)
  })

  it('FetchJWTSVID needs an audience', async () => {
    const fetched = await unary<JwtSvidResponse>((metadata, callback) =>
      client.FetchJWTSVID({ audience: [] }, metadata, callback),
    )
    assert.equal(fetched.error?.code, status.INVALID_ARGUMENT)
    assert.match(fetched.error?.details ?? '', /audience must be specified/)
  })

  it('FetchJWTSVID for another ID is denied', async () => {
    const other = `spiffe://${TRUST_DOMAIN}/bot/someone-else`
    const fetched = await unary<JwtSvidResponse>((metadata, callback) =>
      client.FetchJWTSVID({ audience: ['reports'], spiffe_id: other }, metadata, callback),
    )
    assert.equal(fetched.error?.code, status.PERMISSION_DENIED)
    assert.ok(fetched.error?.details.includes(other), fetched.error?.details)
  })

  it('ValidateJWTSVID rejects a malformed token', async () => {
    const validated = await unary<ValidateResponse>((metadata, callback) =>
      client.ValidateJWTSVID({ audience: 'reports', svid: 'not-a-token' }, metadata, callback),
    )
    assert.equal(validated.error?.code, status.INVALID_ARGUMENT)
    assert.match(validated.error?.details ?? '', /invalid JWT-SVID/)
  })

  it('ValidateJWTSVID needs audience and token', async () => {
    const noAudience = await unary<ValidateResponse>((metadata, callback) =>
      client.ValidateJWTSVID({ audience: '', svid: 'x' }, metadata, callback),
    )
    assert.equal(noAudience.error?.code, status.INVALID_ARGUMENT)
    assert.match(noAudience.error?.details ?? '', /audience must be specified/)
    const noToken = await unary<ValidateResponse>((metadata, callback) =>
      client.ValidateJWTSVID({ audience: 'reports', svid: '' }, metadata, callback),
    )
    assert.equal(noToken.error?.code, status.INVALID_ARGUMENT)
    assert.match(noToken.error?.details ?? '', /svid must be specified/)
  })

  it('second agent on the socket fails', async () => {
    const result = await runWrit([
      'agent',
      '--server',
      server.address,
      '--token',
      'unused-token',
      '--ca-pin',
      server.caPin,
      '--dest',
      join(root, 'second'),
      '--workload-api',
      `unix://${socketPath}`,
    ])
    assert.equal(result.code, 1)
    assert.match(result.stderr, /agent\.workload_api_socket_in_use/)
    assert.ok(result.stderr.includes(socketPath), result.stderr)
  })
})

describe('Writ JWT-SVID routes', () => {
  it('jwt-svid for another ID is forbidden', async () => {
    const other = `spiffe://${TRUST_DOMAIN}/bot/someone-else`
    const reply = await httpsRequest(server.address, '/v1/jwt-svid', {
      tls: readIdentity(identity),
      body: JSON.stringify({ audience: ['reports'], spiffe_id: other }),
    })
    assert.equal(reply.status, 403)
    const body = JSON.parse(reply.body.toString('utf8')) as { error: Record<string, string> }
    assert.equal(body.error.code, 'jwt_svid.forbidden')
    assert.ok(body.error.message?.includes(other), body.error.message)
    assert.equal(typeof body.error.requestId, 'string')
  })

  it('jwt-svid needs an audience list', async () => {
    const reply = await httpsRequest(server.address, '/v1/jwt-svid', {
      tls: readIdentity(identity),
      body: JSON.stringify({ audience: 'reports' }),
    })
    assert.equal(reply.status, 400)
    const body = JSON.parse(reply.body.toString('utf8')) as { error: Record<string, string> }
    assert.equal(body.error.code, 'jwt_svid.invalid_request')
    assert.match(body.error.message ?? '', /audience/)
  })

  it('jwt-svid needs a client certificate', async () => {
    const reply = await httpsRequest(server.address, '/v1/jwt-svid', {
      tls: { ca: readIdentity(identity).ca },
      body: JSON.stringify({ audience: ['reports'] }),
    })
    assert.equal(reply.status, 401)
    const body = JSON.parse(reply.body.toString('utf8')) as { error: Record<string, string> }
    assert.equal(body.error.code, 'jwt_svid.unauthenticated')
  })

  it('jwt-bundle is a public JWK Set', async () => {
    const reply = await httpsRequest(server.address, '/v1/jwt-bundle', {
      tls: { ca: readIdentity(identity).ca },
      method: 'GET',
    })
    assert.equal(reply.status, 200)
    const body = JSON.parse(reply.body.toString('utf8')) as { keys: Array<Record<string, string>> }
    assert.equal(body.keys.length, 1)
    assert.equal(body.keys[0]?.kty, 'EC')
    assert.equal(body.keys[0]?.crv, 'P-256')
    assert.equal(typeof body.keys[0]?.kid, 'string')
    assert.equal(body.keys[0]?.d, undefined)
  })
})

describe('writ agent --workload-api input errors', () => {
  it('tcp address is rejected', async () => {
    const result = await runWrit([
      'agent',
      '--server',
      server.address,
      '--dest',
      join(root, 'tcp'),
      '--workload-api',
      'tcp://127.0.0.1:8081',
    ])
    assert.equal(result.code, 1)
    assert.match(result.stderr, /agent\.workload_api_address_invalid/)
    assert.ok(result.stderr.includes('tcp://127.0.0.1:8081'), result.stderr)
  })

  it('oneshot with workload api is a usage error', async () => {
    const result = await runWrit([
      'agent',
      '--server',
      server.address,
      '--dest',
      join(root, 'oneshot'),
      '--oneshot',
      '--workload-api',
      `unix://${join(root, 'oneshot.sock')}`,
    ])
    assert.equal(result.code, 2)
    assert.match(result.stderr, /--oneshot/)
  })

  it('path that is not a socket is rejected', async () => {
    const path = join(root, 'plain-file')
    writeFileSync(path, 'not a socket\n')
    const result = await runWrit([
      'agent',
      '--server',
      server.address,
      '--dest',
      join(root, 'plain'),
      '--workload-api',
      `unix://${path}`,
    ])
    assert.equal(result.code, 1)
    assert.match(result.stderr, /agent\.workload_api_socket_invalid/)
    assert.ok(result.stderr.includes(path), result.stderr)
    assert.equal(readFileSync(path, 'utf8'), 'not a socket\n')
  })
})

describe('writ agent shutdown', () => {
  it('SIGTERM ends streams and removes the socket', async () => {
    assert.ok(agent)
    const reader = openStream(() => client.FetchX509SVID({}, securityHeader()))
    await reader.next(() => true)
    await stopProcess(agent)
    assert.equal(agent.exitCode, 0, agentStderr)
    const error = await reader.failure()
    assert.equal(error.code, status.UNAVAILABLE)
    assert.equal(existsSync(socketPath), false)
  })
})
