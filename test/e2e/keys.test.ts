import assert from 'node:assert/strict'
import { type ChildProcess, spawn } from 'node:child_process'
import { X509Certificate } from 'node:crypto'
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { connect } from 'node:tls'
import type { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { createLocalJWKSet, type JSONWebKeySet, jwtVerify } from 'jose'
import {
  addBot,
  auditSearch,
  CLI,
  connectThroughBridge,
  FIXTURES,
  httpsRequest,
  joinOnce,
  RECORDING_SERVER,
  removeTemporaryDirectories,
  runWrit,
  startWrit,
  stopProcess,
  TRUST_DOMAIN,
  temporaryDirectory,
  type WritServer,
  waitFor,
} from './harness.js'

const HTTP_RECORDING_SERVER = join(FIXTURES, 'http-recording-server.mjs')
const CERTIFICATE_BLOCK = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g

after(() => removeTemporaryDirectories())

/** Starts the HTTP fixture and resolves with its process and MCP URL. */
async function startHttpFixture(
  recordFile: string,
): Promise<{ process: ChildProcess; url: string }> {
  const child = spawn(process.execPath, [HTTP_RECORDING_SERVER], {
    env: { ...process.env, RECORD_FILE: recordFile },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let stdout = ''
  let stderr = ''
  child.stderr?.setEncoding('utf8').on('data', (text: string) => {
    stderr += text
  })
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`HTTP fixture did not start: ${stderr}`)),
      10_000,
    )
    child.stdout?.setEncoding('utf8').on('data', (text: string) => {
      stdout += text
      const match = /"listening":"([^"]+)"/.exec(stdout)
      if (match) {
        clearTimeout(timer)
        resolve(match[1] as string)
      }
    })
    child.once('exit', (code) => {
      clearTimeout(timer)
      reject(new Error(`HTTP fixture exited with ${code}: ${stderr}`))
    })
  })
  return { process: child, url }
}

interface RecordedRequest {
  method: string
  path: string
  authorization: string | null
  identity: string | null
}

function readRecords(recordFile: string): RecordedRequest[] {
  if (!existsSync(recordFile)) return []
  return readFileSync(recordFile, 'utf8')
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line) as RecordedRequest)
}

/** GETs a public document over HTTPS without a client certificate, trusting `caPem`. */
async function fetchDocument(address: string, path: string, caPem: string): Promise<unknown> {
  const reply = await httpsRequest(address, path, { tls: { ca: caPem }, method: 'GET' })
  assert.equal(reply.status, 200, reply.body.toString('utf8'))
  assert.match(String(reply.headers['content-type']), /^application\/json/)
  return JSON.parse(reply.body.toString('utf8'))
}

function certificatesIn(pem: string): X509Certificate[] {
  return (pem.match(CERTIFICATE_BLOCK) ?? []).map((block) => new X509Certificate(block))
}

function textOf(result: unknown): string {
  const content = (result as { content?: Array<{ text?: string }> }).content ?? []
  return content.map((item) => item.text ?? '').join('')
}

describe('JWKS, SPIFFE bundle and identity JWTs', () => {
  let root: string
  let server: WritServer
  let fixture: { process: ChildProcess; url: string }
  let recordFile: string
  let identity: string
  let bridge: { client: Client } | undefined
  let header: { client: Client } | undefined
  const spiffeId = `spiffe://${TRUST_DOMAIN}/bot/jwt-agent`

  before(async () => {
    root = temporaryDirectory('keys')
    recordFile = join(root, 'http-received.jsonl')
    identity = join(root, 'identity')
    fixture = await startHttpFixture(recordFile)
    const config = join(root, 'config.yaml')
    writeFileSync(
      config,
      `apiVersion: writ.dev/v1alpha1
kind: McpServer
metadata: { name: tracker, labels: { env: keys } }
spec:
  http:
    url: ${fixture.url}
    allowPrivateNetwork: true
    identityJwt: true
---
apiVersion: writ.dev/v1alpha1
kind: McpServer
metadata: { name: tracker-header, labels: { env: keys } }
spec:
  http:
    url: ${fixture.url}
    allowPrivateNetwork: true
    identityJwt: { header: X-Writ-Identity, ttl: 2m }
---
apiVersion: writ.dev/v1alpha1
kind: Role
metadata: { name: keys-reader }
spec:
  allow:
    mcpServers: { env: keys }
    tools: ['*']
`,
    )
    server = await startWrit(join(root, 'data'), ['--config', config])
    const enrollment = await addBot(server.dataDir, 'jwt-agent', 'keys-reader')
    await joinOnce(server, enrollment, identity)
  })

  after(async () => {
    await bridge?.client.close()
    await header?.client.close()
    await server?.stop()
    if (fixture) await stopProcess(fixture.process)
  })

  async function jwks(): Promise<JSONWebKeySet> {
    const caPem = readFileSync(join(identity, 'bundle.pem'), 'utf8')
    return (await fetchDocument(server.address, '/.well-known/jwks.json', caPem)) as JSONWebKeySet
  }

  it('JWKS is served over HTTPS', async () => {
    const document = await jwks()
    assert.equal(document.keys.length, 1)
    const [key] = document.keys
    assert.equal(key?.kty, 'EC')
    assert.equal(key?.crv, 'P-256')
    assert.equal(key?.alg, 'ES256')
    assert.equal(key?.use, 'sig')
    assert.match(String(key?.kid), /^[A-Za-z0-9_-]{43}$/)
    assert.equal(key?.d, undefined)
  })

  it('SPIFFE bundle is served over HTTPS', async () => {
    const caPem = readFileSync(join(server.dataDir, 'ca.pem'), 'utf8')
    const bundle = (await fetchDocument(server.address, '/.well-known/spiffe-bundle', caPem)) as {
      keys: Array<Record<string, unknown>>
      spiffe_sequence: number
      spiffe_refresh_hint: number
    }
    assert.equal(bundle.spiffe_sequence, 1)
    assert.equal(bundle.spiffe_refresh_hint, 300)
    const x509Keys = bundle.keys.filter((key) => key.use === 'x509-svid')
    assert.equal(x509Keys.length, 1)
    const x5c = (x509Keys[0]?.x5c ?? []) as string[]
    assert.equal(x5c.length, 1)
    const der = Buffer.from(x5c[0] as string, 'base64')
    assert.equal(new X509Certificate(der).fingerprint256, new X509Certificate(caPem).fingerprint256)
    const jwtKeys = bundle.keys.filter((key) => key.use === 'jwt-svid')
    assert.equal(jwtKeys.length, 1)
    assert.equal(jwtKeys[0]?.kid, (await jwks()).keys[0]?.kid)
  })

  it('well-known documents reject POST', async () => {
    const caPem = readFileSync(join(identity, 'bundle.pem'), 'utf8')
    const reply = await httpsRequest(server.address, '/.well-known/jwks.json', {
      tls: { ca: caPem },
      method: 'POST',
      body: '{}',
    })
    assert.equal(reply.status, 405)
    const body = JSON.parse(reply.body.toString('utf8'))
    assert.equal(body.error.code, 'request.method_not_allowed')
    assert.equal(body.error.message, '/.well-known/jwks.json accepts GET only, got POST')
  })

  it('HTTP upstream receives a verifiable JWT', async () => {
    bridge = await connectThroughBridge(server.address, identity, 'tracker')
    const result = await bridge.client.callTool({ name: 'whoami', arguments: {} })
    assert.equal(textOf(result), 'whoami answered')

    const records = readRecords(recordFile)
    assert.ok(records.length >= 2, `the fixture recorded ${records.length} requests`)
    const keys = createLocalJWKSet(await jwks())
    for (const record of records) {
      assert.match(String(record.authorization), /^Bearer [\w-]+\.[\w-]+\.[\w-]+$/, record.method)
      const token = (record.authorization as string).slice('Bearer '.length)
      const { payload, protectedHeader } = await jwtVerify(token, keys, {
        audience: 'tracker',
        issuer: `spiffe://${TRUST_DOMAIN}`,
        algorithms: ['ES256'],
      })
      assert.equal(protectedHeader.alg, 'ES256')
      assert.equal(payload.sub, spiffeId)
      assert.equal(payload.aud, 'tracker')
      assert.equal(payload.kind, 'bot')
      assert.deepEqual(payload.roles, ['keys-reader'])
      assert.ok((payload.exp as number) - (payload.iat as number) <= 300)
    }
  })

  it('custom header carries the bare JWT', async () => {
    const before = readRecords(recordFile).length
    header = await connectThroughBridge(server.address, identity, 'tracker-header')
    await header.client.callTool({ name: 'whoami', arguments: {} })
    const records = readRecords(recordFile).slice(before)
    assert.ok(records.length > 0, 'the fixture recorded no request for tracker-header')
    const keys = createLocalJWKSet(await jwks())
    for (const record of records) {
      assert.equal(record.authorization, null)
      const { payload } = await jwtVerify(String(record.identity), keys, {
        audience: 'tracker-header',
      })
      assert.equal(payload.sub, spiffeId)
      assert.equal((payload.exp as number) - (payload.iat as number), 120)
    }
  })

  it('agent never sees the JWT', async () => {
    assert.ok(bridge, 'the tracker bridge did not start')
    const result = await bridge.client.callTool({ name: 'echo_authorization', arguments: {} })
    assert.equal(textOf(result), 'header: Bearer [REDACTED]')

    const tokens = readRecords(recordFile)
      .map((record) => record.authorization?.slice('Bearer '.length) ?? record.identity)
      .filter((token): token is string => typeof token === 'string')
    assert.ok(tokens.length > 0)
    const identityFiles = readdirSync(identity).map((name) =>
      readFileSync(join(identity, name), 'utf8'),
    )
    const audit = JSON.stringify(await auditSearch(server.dataDir))
    for (const token of tokens) {
      for (const text of identityFiles) assert.ok(!text.includes(token), 'token in identity files')
      assert.ok(!audit.includes(token), 'token in the audit log')
      assert.ok(!server.stderr().includes(token), 'token in the server log')
    }
  })

  it('apply rejects a JWT TTL over 5m', async () => {
    const file = join(root, 'too-long.yaml')
    writeFileSync(
      file,
      `apiVersion: writ.dev/v1alpha1
kind: McpServer
metadata: { name: too-long }
spec:
  http:
    url: ${fixture.url}
    allowPrivateNetwork: true
    identityJwt: { ttl: 10m }
`,
    )
    const result = await runWrit(['apply', '-f', file, '--data-dir', server.dataDir])
    assert.equal(result.code, 1)
    assert.match(result.stderr, /\[manifest\.invalid\]/)
    assert.match(result.stderr, /identity JWT lifetime 10m exceeds the 5m maximum/)
  })
})

describe('CA rotation with a live agent', () => {
  const TTL = '6s'
  let root: string
  let server: WritServer
  let agent: ChildProcess | undefined
  let agentStderr = ''
  let identity: string
  let bridge: { client: Client; stderr: () => string } | undefined
  const failures: string[] = []
  let calls = 0
  let calling: Promise<void> | undefined
  let stopCalling = false

  before(async () => {
    root = temporaryDirectory('rotation')
    identity = join(root, 'identity')
    const config = join(root, 'config.yaml')
    writeFileSync(
      config,
      `apiVersion: writ.dev/v1alpha1
kind: McpServer
metadata: { name: notes, labels: { env: rotation } }
spec:
  stdio:
    command: ${JSON.stringify(process.execPath)}
    args: [${JSON.stringify(RECORDING_SERVER)}]
---
apiVersion: writ.dev/v1alpha1
kind: Role
metadata: { name: rotation-reader }
spec:
  allow:
    mcpServers: { env: rotation }
    tools: ['read_*']
`,
    )
    server = await startWrit(join(root, 'data'), ['--config', config])
    const enrollment = await addBot(server.dataDir, 'rotating-agent', 'rotation-reader', [
      '--ttl',
      TTL,
    ])
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
        enrollment.caPin,
        '--dest',
        identity,
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    )
    agent.stderr?.setEncoding('utf8').on('data', (text: string) => {
      agentStderr += text
    })
    await waitFor('the agent to write svid.pem', () =>
      existsSync(join(identity, 'svid.pem')) ? true : undefined,
    )
  })

  after(async () => {
    stopCalling = true
    await calling
    await bridge?.client.close()
    if (agent) await stopProcess(agent)
    await server?.stop()
  })

  function bundleCas(): X509Certificate[] {
    return certificatesIn(readFileSync(join(identity, 'bundle.pem'), 'utf8'))
  }

  function svidIssuer(): string {
    return new X509Certificate(readFileSync(join(identity, 'svid.pem'), 'utf8')).issuer
  }

  async function status(): Promise<{
    phase: string
    sequence: number
    trusted: Array<{ generation: number; pin: string; signing: boolean }>
  }> {
    const result = await runWrit(['ca', 'status', '--json', '--data-dir', server.dataDir])
    assert.equal(result.code, 0, result.stderr)
    return JSON.parse(result.stdout)
  }

  /** Runs a rotation step, retrying while older certificates are still valid. */
  async function rotate(phase: 'switch' | 'finish'): Promise<void> {
    await waitFor(
      `writ ca rotate ${phase} to be allowed`,
      async () => {
        const result = await runWrit(['ca', 'rotate', phase, '--data-dir', server.dataDir])
        if (result.code === 0) return true
        assert.match(result.stderr, /\[ca\.rotation_too_early\]/, result.stderr)
        return undefined
      },
      40_000,
      500,
    )
  }

  /** Waits until a renewal gives the agent's files the expected certificate or bundle. */
  async function waitForRenewal(check: () => boolean, what: string): Promise<void> {
    await waitFor(what, () => (check() ? true : undefined), 30_000, 200)
  }

  /** Returns the issuer of the server certificate a new TLS connection presents. */
  function serverIssuer(): Promise<string> {
    const [host, port] = server.address.split(':') as [string, string]
    return new Promise((resolve, reject) => {
      const socket = connect({ host, port: Number(port), rejectUnauthorized: false }, () => {
        const issuer = socket.getPeerX509Certificate()?.issuer ?? ''
        socket.destroy()
        resolve(issuer)
      })
      socket.once('error', reject)
    })
  }

  async function callNote(label: string): Promise<void> {
    assert.ok(bridge, 'the bridge did not start')
    const result = await bridge.client.callTool({ name: 'read_note', arguments: { label } })
    assert.equal(textOf(result), `called read_note with {"label":"${label}"}`)
  }

  it('bridge calls work before rotation', async () => {
    bridge = await connectThroughBridge(server.address, identity, 'notes')
    await callNote('stable')
    assert.equal(svidIssuer(), `CN=Writ CA ${TRUST_DOMAIN}`)
    // Calls keep running through every phase; each one must succeed.
    calling = (async () => {
      while (!stopCalling) {
        calls++
        try {
          await callNote(`background-${calls}`)
        } catch (error) {
          failures.push(`call ${calls}: ${(error as Error).message}`)
        }
        await new Promise((resolve) => setTimeout(resolve, 250))
      }
    })()
  })

  it('init adds the new CA to the bundle', async () => {
    const result = await runWrit(['ca', 'rotate', 'init', '--data-dir', server.dataDir])
    assert.equal(result.code, 0, result.stderr)
    assert.match(result.stdout, /CA 2 added to the trust bundle; CA 1 still signs/)
    const state = await status()
    assert.equal(state.phase, 'added')
    assert.equal(state.sequence, 2)
    assert.equal(state.trusted.length, 2)

    // The agent's certificate from before init is still valid, so switching now is too early.
    const early = await runWrit(['ca', 'rotate', 'switch', '--data-dir', server.dataDir])
    assert.equal(early.code, 1)
    assert.match(
      early.stderr,
      /cannot switch the CA before \S+Z: certificates issued before \S+Z are valid until then and their holders may not trust the new CA yet; run the step again after \S+Z or pass --force \[ca\.rotation_too_early\]/,
    )

    await waitForRenewal(() => bundleCas().length === 2, 'the agent to receive both CAs')
    assert.equal(svidIssuer(), `CN=Writ CA ${TRUST_DOMAIN}`)
    const bundle = (await fetchDocument(
      server.address,
      '/.well-known/spiffe-bundle',
      readFileSync(join(identity, 'bundle.pem'), 'utf8'),
    )) as { keys: Array<{ use: string }>; spiffe_sequence: number }
    assert.equal(bundle.spiffe_sequence, 2)
    assert.equal(bundle.keys.filter((key) => key.use === 'x509-svid').length, 2)
    await callNote('added')
  })

  it('switch signs with the new CA', async () => {
    await rotate('switch')
    const state = await status()
    assert.equal(state.phase, 'switched')
    const newPin = state.trusted.find((ca) => ca.generation === 2)?.pin

    await waitFor('the server to present the new CA', async () =>
      (await serverIssuer()) === `CN=Writ CA ${TRUST_DOMAIN} #2` ? true : undefined,
    )
    await waitForRenewal(
      () => svidIssuer() === `CN=Writ CA ${TRUST_DOMAIN} #2`,
      'the agent to get a certificate from the new CA',
    )
    await callNote('switched')

    // writ bots add now prints the pin of the CA that signs the server certificate.
    const enrollment = await addBot(server.dataDir, 'late-agent', 'rotation-reader', ['--ttl', TTL])
    assert.equal(enrollment.caPin, newPin)
    await joinOnce({ ...server, caPin: enrollment.caPin }, enrollment, join(root, 'late'))
  })

  it('finish retires the old CA', async () => {
    await rotate('finish')
    const state = await status()
    assert.equal(state.phase, 'stable')
    assert.deepEqual(
      state.trusted.map((ca) => ca.generation),
      [2],
    )
    assert.equal(existsSync(join(server.dataDir, 'ca_key.pem')), false)
    await waitForRenewal(() => bundleCas().length === 1, 'the agent to drop the old CA')
    assert.equal(bundleCas()[0]?.subject, `CN=Writ CA ${TRUST_DOMAIN} #2`)
    await callNote('finished')
  })

  it('no call failed during the rotation', async () => {
    stopCalling = true
    await calling
    assert.ok(calls >= 10, `only ${calls} background calls ran`)
    assert.deepEqual(failures, [])
    assert.equal(agent?.exitCode, null, `the agent exited: ${agentStderr}`)
  })

  it('rotation steps are audited', async () => {
    const all = await auditSearch(server.dataDir, ['--limit', '100000'])
    const events = all.filter((event) => event.type === 'ca.rotate')
    assert.deepEqual(
      events.map((event) => event.reason),
      ['added', 'switched', 'retired'],
    )
    for (const event of events) assert.equal(event.outcome, 'success')
  })

  it('rotate rejects an unknown phase', async () => {
    const result = await runWrit(['ca', 'rotate', 'later', '--data-dir', server.dataDir])
    assert.equal(result.code, 2)
    assert.match(result.stderr, /invalid phase "later": use init, switch or finish/)
  })

  it('rotate rejects misplaced options', async () => {
    const dataDir = ['--data-dir', server.dataDir]
    const grace = await runWrit(['ca', 'rotate', 'init', '--grace', '1x', ...dataDir])
    assert.equal(grace.code, 1)
    assert.match(grace.stderr, /invalid --grace "1x": .* \[duration\.invalid\]/)
    const force = await runWrit(['ca', 'rotate', 'init', '--force', ...dataDir])
    assert.equal(force.code, 2)
    assert.match(force.stderr, /--force applies to switch and finish/)
    const finishGrace = await runWrit(['ca', 'rotate', 'finish', '--grace', '1h', ...dataDir])
    assert.equal(finishGrace.code, 2)
    assert.match(finishGrace.stderr, /--grace applies to init and switch/)
    assert.equal((await status()).phase, 'stable')
  })

  it('finish without rotation fails', async () => {
    const result = await runWrit(['ca', 'rotate', 'finish', '--data-dir', server.dataDir])
    assert.equal(result.code, 1)
    assert.match(
      result.stderr,
      /cannot finish the CA: no rotation is in progress; start one with writ ca rotate init \[ca\.rotation_phase\]/,
    )
  })
})
