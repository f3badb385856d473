// End-to-end tests of Kubernetes joins: the built `writ agent --join-method kubernetes` reads a
// projected service-account token from a file and joins a real `writ start`, which verifies the
// token against a fake Kubernetes API server (static JWKS, OIDC discovery or TokenReview).
import assert from 'node:assert/strict'
import { type ChildProcess, spawn } from 'node:child_process'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { connect, createServer, type Server, type Socket } from 'node:net'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { FakeApiServer, type TokenRequest } from '../fixtures/kube/fake-apiserver.js'
import {
  type AuditRecord,
  auditSearch,
  CLI,
  type CommandResult,
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

const ALLOW = [{ namespace: 'payments', serviceAccount: 'worker' }]

let cluster: FakeApiServer
let server: WritServer
let root: string
let dataDir: string

before(async () => {
  cluster = await FakeApiServer.start()
  root = temporaryDirectory('kube')
  dataDir = join(root, 'data')
  const reviewerFile = join(root, 'reviewer-token')
  writeFileSync(reviewerFile, `${cluster.reviewerToken}\n`)
  const config = join(root, 'config.yaml')
  writeFileSync(config, manifests(reviewerFile))
  server = await startWrit(dataDir, ['--config', config])
})

after(async () => {
  await server?.stop()
  await cluster?.close()
  removeTemporaryDirectories()
})

/** Role, bots and one JoinToken per verification method, as JSON documents in one YAML file. */
function manifests(reviewerFile: string): string {
  const tokenReview = {
    url: cluster.url,
    caFile: cluster.caFile,
    bearerToken: `\${file:${reviewerFile}}`,
  }
  const documents = [
    { kind: 'Role', metadata: { name: 'kube-role' }, spec: { maxTtl: '1h' } },
    { kind: 'Bot', metadata: { name: 'kube-worker' }, spec: { roles: ['kube-role'] } },
    { kind: 'Bot', metadata: { name: 'kube-short' }, spec: { roles: ['kube-role'], ttl: '6s' } },
    joinToken('kube-static', 'kube-worker', { issuer: cluster.issuer, jwks: cluster.jwks() }),
    joinToken('kube-discovery', 'kube-worker', {
      issuer: cluster.issuer,
      discovery: { caFile: cluster.caFile },
    }),
    joinToken('kube-review', 'kube-worker', { tokenReview }),
    joinToken('kube-short-review', 'kube-short', { tokenReview }),
  ]
  return documents
    .map((document) => JSON.stringify({ apiVersion: 'writ.dev/v1alpha1', ...document }))
    .join('\n---\n')
}

function joinToken(name: string, bot: string, kubernetes: Record<string, unknown>) {
  return {
    kind: 'JoinToken',
    metadata: { name },
    spec: { bot, method: 'kubernetes', kubernetes: { allow: ALLOW, ...kubernetes } },
  }
}

/** Signs a token for `payments/worker` with Writ's default audience and writes it to a file. */
async function writeToken(path: string, overrides: Partial<TokenRequest> = {}): Promise<string> {
  const token = await cluster.issueToken({
    namespace: 'payments',
    serviceAccount: 'worker',
    audiences: [TRUST_DOMAIN],
    ...overrides,
  })
  writeFileSync(path, token)
  return path
}

function kubernetesAgent(
  joinTokenName: string,
  tokenPath: string,
  dest: string,
  address = server.address,
): string[] {
  return [
    'agent',
    '--server',
    address,
    '--join-method',
    'kubernetes',
    '--token-path',
    tokenPath,
    '--token',
    joinTokenName,
    '--ca-pin',
    server.caPin,
    '--dest',
    dest,
  ]
}

function joinOnce(joinTokenName: string, tokenPath: string, dest: string): Promise<CommandResult> {
  return runWrit([...kubernetesAgent(joinTokenName, tokenPath, dest), '--oneshot'])
}

async function joinEvents(): Promise<AuditRecord[]> {
  const events = await auditSearch(dataDir)
  return events.filter((event) => event.type === 'join')
}

describe('kubernetes join succeeds', () => {
  it('with static JWKS', async () => {
    const dir = temporaryDirectory('kube-static')
    const tokenPath = await writeToken(join(dir, 'token'), { pod: 'worker-static' })
    const result = await joinOnce('kube-static', tokenPath, join(dir, 'id'))
    assert.equal(result.code, 0, result.stderr)
    assert.match(result.stdout, /joined spiffe:\/\/writ\.local\/bot\/kube-worker serial [0-9a-f]+/)
    assert.ok(existsSync(join(dir, 'id', 'svid.pem')))

    const joined = (await joinEvents()).find((event) => event.details?.pod === 'worker-static')
    assert.ok(joined, 'no join audit event names the pod')
    assert.equal(joined.outcome, 'success')
    assert.deepEqual(
      {
        token: joined.details?.token,
        method: joined.details?.method,
        namespace: joined.details?.namespace,
        serviceAccount: joined.details?.serviceAccount,
      },
      {
        token: 'kube-static',
        method: 'kubernetes',
        namespace: 'payments',
        serviceAccount: 'worker',
      },
    )
  })

  it('with OIDC discovery', async () => {
    const dir = temporaryDirectory('kube-discovery')
    const fetches = cluster.hits.get('/.well-known/openid-configuration') ?? 0
    const tokenPath = await writeToken(join(dir, 'token'))
    const result = await joinOnce('kube-discovery', tokenPath, join(dir, 'id'))
    assert.equal(result.code, 0, result.stderr)
    assert.match(result.stdout, /joined spiffe:\/\/writ\.local\/bot\/kube-worker/)
    assert.equal(cluster.hits.get('/.well-known/openid-configuration'), fetches + 1)
  })

  it('with TokenReview', async () => {
    const dir = temporaryDirectory('kube-review')
    const tokenPath = await writeToken(join(dir, 'token'), { pod: 'worker-reviewed' })
    const result = await joinOnce('kube-review', tokenPath, join(dir, 'id'))
    assert.equal(result.code, 0, result.stderr)
    assert.match(result.stdout, /joined spiffe:\/\/writ\.local\/bot\/kube-worker/)
    const review = cluster.reviews.at(-1)
    assert.ok(review, 'the fake API server received no TokenReview')
    assert.deepEqual((review.request.spec as { audiences?: unknown }).audiences, [TRUST_DOMAIN])
    assert.equal(review.status.authenticated, true)
  })

  it('the joined identity works for mTLS', async () => {
    const dir = temporaryDirectory('kube-mtls')
    const tokenPath = await writeToken(join(dir, 'token'))
    const joined = await joinOnce('kube-static', tokenPath, join(dir, 'id'))
    assert.equal(joined.code, 0, joined.stderr)
    const reply = await httpsRequest(server.address, '/v1/mcp/servers', {
      tls: readIdentity(join(dir, 'id')),
      method: 'GET',
    })
    assert.equal(reply.status, 200, reply.body.toString())
  })

  it('reads the token file again for each join', async () => {
    const dir = temporaryDirectory('kube-reread')
    const tokenPath = join(dir, 'token')
    await writeToken(tokenPath, { pod: 'worker-first' })
    const first = await joinOnce('kube-review', tokenPath, join(dir, 'id'))
    assert.equal(first.code, 0, first.stderr)
    await writeToken(tokenPath, { pod: 'worker-second' })
    const second = await joinOnce('kube-review', tokenPath, join(dir, 'id'))
    assert.equal(second.code, 0, second.stderr)
    const pods = (await joinEvents()).map((event) => event.details?.pod)
    assert.ok(pods.indexOf('worker-first') < pods.indexOf('worker-second'), pods.join(', '))
  })
})

describe('kubernetes join fails', () => {
  const cases: Array<{
    name: string
    joinToken: string
    token: Partial<TokenRequest>
    reason: string
    message: RegExp
  }> = [
    {
      name: 'for a wrong audience',
      joinToken: 'kube-static',
      token: { audiences: ['https://kubernetes.default.svc'] },
      reason: 'audience_mismatch',
      message: /audience "https:\/\/kubernetes\.default\.svc", expected "writ\.local"/,
    },
    {
      name: 'for an expired token',
      joinToken: 'kube-static',
      token: { issuedAt: Math.floor(Date.now() / 1000) - 7200, lifetimeSeconds: 3600 },
      reason: 'expired',
      message: /the token expired at/,
    },
    {
      name: 'for a namespace not allowed',
      joinToken: 'kube-static',
      token: { namespace: 'default' },
      reason: 'not_allowed',
      message: /service account "worker" in namespace "default" is not in the allow list/,
    },
    {
      name: 'for a service account not allowed',
      joinToken: 'kube-discovery',
      token: { serviceAccount: 'builder' },
      reason: 'not_allowed',
      message: /service account "builder" in namespace "payments"/,
    },
    {
      name: 'for a token signed by another key',
      joinToken: 'kube-static',
      token: { signer: 'foreign-same-kid' },
      reason: 'signature_invalid',
      message: /the signature does not verify/,
    },
    {
      name: 'for a deleted pod under TokenReview',
      joinToken: 'kube-review',
      token: { pod: 'worker-deleted' },
      reason: 'review_refused',
      message: /pod "payments\/worker-deleted".*no longer exists/,
    },
  ]

  for (const entry of cases) {
    it(entry.name, async () => {
      const dir = temporaryDirectory('kube-fail')
      const tokenPath = await writeToken(join(dir, 'token'), entry.token)
      if (entry.reason === 'review_refused') cluster.deletePod('payments', 'worker-deleted')
      const result = await joinOnce(entry.joinToken, tokenPath, join(dir, 'id'))
      assert.equal(result.code, 1, result.stdout)
      assert.match(result.stderr, /\[join\.kubernetes_invalid\]/)
      assert.match(result.stderr, new RegExp(`\\(${entry.reason}\\)`))
      assert.match(result.stderr, entry.message)
      assert.ok(!existsSync(join(dir, 'id', 'svid.pem')))

      const denied = (await joinEvents()).at(-1)
      assert.equal(denied?.outcome, 'denied')
      assert.equal(denied?.reason, 'kubernetes_invalid')
      assert.equal(denied?.details?.check, entry.reason)
      assert.equal(denied?.details?.token, entry.joinToken)
    })
  }

  it('for a missing token file', async () => {
    const dir = temporaryDirectory('kube-missing')
    const tokenPath = join(dir, 'no-token')
    const result = await joinOnce('kube-static', tokenPath, join(dir, 'id'))
    assert.equal(result.code, 1)
    assert.match(result.stderr, /\[agent\.kubernetes_token_unreadable\]/)
    assert.ok(result.stderr.includes(`${tokenPath} (ENOENT)`), result.stderr)
  })

  it('for an unknown join token', async () => {
    const dir = temporaryDirectory('kube-unknown')
    const tokenPath = await writeToken(join(dir, 'token'))
    const result = await joinOnce('no-such-join-token', tokenPath, join(dir, 'id'))
    assert.equal(result.code, 1)
    assert.match(result.stderr, /\(token_unknown\)/)
    assert.match(result.stderr, /join token "no-such-join-token" does not exist/)
  })

  it('for bad flags', async () => {
    const method = await runWrit([
      'agent',
      '--server',
      server.address,
      '--join-method',
      'cloud',
      '--dest',
      root,
    ])
    assert.equal(method.code, 2)
    assert.match(method.stderr, /invalid --join-method "cloud": expected token or kubernetes/)

    const path = await runWrit([
      'agent',
      '--server',
      server.address,
      '--token-path',
      '/tmp/token',
      '--dest',
      root,
    ])
    assert.equal(path.code, 2)
    assert.match(path.stderr, /--token-path needs --join-method kubernetes/)

    const name = await runWrit([
      'agent',
      '--server',
      server.address,
      '--join-method',
      'kubernetes',
      '--ca-pin',
      server.caPin,
      '--dest',
      root,
    ])
    assert.equal(name.code, 1)
    assert.match(name.stderr, /\[agent\.join_token_required\]/)
  })

  it('for an unknown method on the wire', async () => {
    const reply = await httpsRequest(server.address, '/v1/join', {
      tls: { ca: readFileSync(join(dataDir, 'ca.pem'), 'utf8') },
      body: JSON.stringify({ method: 'cloud', token: 'kube-static', csr: 'x' }),
    })
    assert.equal(reply.status, 400)
    const body = JSON.parse(reply.body.toString()) as { error: { code: string; message: string } }
    assert.equal(body.error.code, 'request.invalid')
    assert.match(body.error.message, /"method" must be "token" or "kubernetes"/)
  })
})

describe('kubernetes agent after an outage', () => {
  let proxy: CuttableProxy | undefined
  let agent: ChildProcess | undefined

  after(async () => {
    if (agent) await stopProcess(agent)
    await proxy?.close()
  })

  it('joins again with the rotated token file', async () => {
    const dir = temporaryDirectory('kube-outage')
    const tokenPath = await writeToken(join(dir, 'token'), { pod: 'worker-before' })
    proxy = await CuttableProxy.start(Number(server.address.split(':')[1]))
    let stdout = ''
    let stderr = ''
    agent = spawn(
      process.execPath,
      [CLI, ...kubernetesAgent('kube-short-review', tokenPath, join(dir, 'id'), proxy.address)],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    )
    agent.stdout?.setEncoding('utf8').on('data', (text: string) => {
      stdout += text
    })
    agent.stderr?.setEncoding('utf8').on('data', (text: string) => {
      stderr += text
    })
    await waitFor('the first join', () => (stdout.includes('joined') ? true : undefined))

    // The server becomes unreachable until the 6-second certificate has expired, while the
    // kubelet writes a new token for the pod that replaced the first one.
    await proxy.cut()
    await writeToken(tokenPath, { pod: 'worker-after' })
    await waitFor(
      'the agent to give up renewing and join again',
      () => (stderr.includes('joining again with the service account token') ? true : undefined),
      30_000,
    )
    await proxy.restore()
    await waitFor(
      'the second join',
      () => (stdout.match(/joined spiffe/g)?.length === 2 ? true : undefined),
      30_000,
    )

    const reviewed = cluster.reviews.map(
      (review) =>
        (
          review.status.user as {
            extra?: Record<string, string[]>
          }
        ).extra?.['authentication.kubernetes.io/pod-name']?.[0],
    )
    assert.ok(reviewed.includes('worker-before'), reviewed.join(', '))
    assert.equal(reviewed.at(-1), 'worker-after')
    assert.match(stdout, /joined spiffe:\/\/writ\.local\/bot\/kube-short/)
    assert.equal(agent.exitCode, null, stderr)
  })
})

/** A TCP relay to the Writ port that the test can cut and restore on the same port. */
class CuttableProxy {
  private server: Server | undefined
  private readonly sockets = new Set<Socket>()
  private port = 0

  private constructor(private readonly target: number) {}

  static async start(target: number): Promise<CuttableProxy> {
    const proxy = new CuttableProxy(target)
    await proxy.restore()
    return proxy
  }

  get address(): string {
    return `127.0.0.1:${this.port}`
  }

  /** Listens again, on the port used before or on a free one the first time. */
  async restore(): Promise<void> {
    const server = createServer((client) => {
      const upstream = connect(this.target, '127.0.0.1')
      for (const socket of [client, upstream]) {
        this.sockets.add(socket)
        socket.once('close', () => this.sockets.delete(socket))
        socket.on('error', () => {
          client.destroy()
          upstream.destroy()
        })
      }
      client.pipe(upstream).pipe(client)
    })
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(this.port, '127.0.0.1', () => resolve())
    })
    this.port = (server.address() as { port: number }).port
    this.server = server
  }

  /** Stops listening and drops every open connection, so connects are refused. */
  async cut(): Promise<void> {
    const server = this.server
    this.server = undefined
    for (const socket of this.sockets) socket.destroy()
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()))
  }

  close(): Promise<void> {
    return this.cut()
  }
}
