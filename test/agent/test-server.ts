import { X509Certificate } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { createServer, type Server } from 'node:https'
import type { AddressInfo } from 'node:net'
import type { TLSSocket } from 'node:tls'
import type { Clock } from '../../src/clock.js'
import {
  createTestCa,
  issueServerCertificate,
  issueSvid,
  type KeyedCertificate,
  type TestCa,
} from './test-ca.js'

const TRUST_DOMAIN = 'writ.test'

export interface TestServerOptions {
  /** Lifetime of issued SVIDs in milliseconds. */
  ttlMs?: number
  clock?: Clock
  /** Names on the server certificate; defaults to 127.0.0.1 and localhost. */
  serverNames?: { dns?: string[]; ip?: string[] }
}

interface TokenState {
  bot: string
  expiresAt: number
  used: boolean
}

/** A rejection the test queues for the next request, as status and optional error code. */
export interface QueuedFailure {
  status: number
  code?: string
}

/**
 * A minimal Writ authority speaking the agent's HTTP API over TLS: `POST /v1/join` with a
 * one-time token and `POST /v1/renew` authenticated by the client certificate. It records what it
 * received so tests can check what the agent sent.
 */
export class TestAuthority {
  readonly ca: TestCa
  readonly tls: KeyedCertificate
  readonly clock: Clock
  readonly ttlMs: number
  /** Every join request that reached the HTTP layer, with the token it carried. */
  readonly joins: string[] = []
  /** The serial (lowercase hex) of the client certificate presented on each renewal. */
  readonly renewals: string[] = []
  /** Failures to answer before handling requests normally, first in first out. */
  readonly failures: QueuedFailure[] = []
  port = 0
  private readonly tokens = new Map<string, TokenState>()
  private server: Server | undefined

  private constructor(ca: TestCa, tls: KeyedCertificate, options: TestServerOptions) {
    this.ca = ca
    this.tls = tls
    this.clock = options.clock ?? Date.now
    this.ttlMs = options.ttlMs ?? 3_600_000
  }

  static async start(options: TestServerOptions = {}): Promise<TestAuthority> {
    const ca = createTestCa()
    const names = options.serverNames ?? { dns: ['localhost'], ip: ['127.0.0.1'] }
    const authority = new TestAuthority(ca, issueServerCertificate(ca, names), options)
    await authority.listen()
    return authority
  }

  get address(): string {
    return `127.0.0.1:${this.port}`
  }

  addToken(token: string, bot: string, expiresAt = this.clock() + 600_000): void {
    this.tokens.set(token, { bot, expiresAt, used: false })
  }

  /** Listens on the previous port after `stop`, or on a free port the first time. */
  async listen(): Promise<void> {
    const server = createServer(
      {
        // The chain goes out leaf first, then the CA, as the Writ server sends it.
        cert: this.tls.certPem + this.ca.certPem,
        key: this.tls.keyPem,
        ca: this.ca.certPem,
        requestCert: true,
        rejectUnauthorized: false,
      },
      (req, res) => {
        this.handle(req, res).catch((error: Error) =>
          reply(res, 500, 'test.internal', error.message),
        )
      },
    )
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(this.port, '127.0.0.1', () => resolve())
    })
    this.port = (server.address() as AddressInfo).port
    this.server = server
  }

  async stop(): Promise<void> {
    const server = this.server
    this.server = undefined
    if (!server) return
    const closed = new Promise((resolve) => server.close(resolve))
    server.closeAllConnections()
    await closed
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = JSON.parse(await readText(req)) as { token?: string; csr?: string }
    if (req.method === 'POST' && req.url === '/v1/join') this.joins.push(body.token ?? '')
    const failure = this.failures.shift()
    if (failure) return reply(res, failure.status, failure.code ?? 'test.failure', 'queued failure')
    if (req.method === 'POST' && req.url === '/v1/join') return this.join(body, res)
    if (req.method === 'POST' && req.url === '/v1/renew') return this.renew(req, body, res)
    reply(res, 404, 'http.not_found', `no route for ${req.method} ${req.url}`)
  }

  private async join(body: { token?: string; csr?: string }, res: ServerResponse): Promise<void> {
    const state = this.tokens.get(body.token ?? '')
    if (!state) return reply(res, 401, 'join.token_unknown', 'unknown join token')
    if (state.used) return reply(res, 401, 'join.token_used', 'join token already used')
    if (state.expiresAt <= this.clock()) {
      return reply(res, 401, 'join.token_expired', 'join token expired')
    }
    state.used = true
    this.issue(res, body.csr ?? '', state.bot, `spiffe://${TRUST_DOMAIN}/bot/${state.bot}`)
  }

  private async renew(
    req: IncomingMessage,
    body: { csr?: string },
    res: ServerResponse,
  ): Promise<void> {
    const peer = (req.socket as TLSSocket).getPeerCertificate()
    if (!peer?.raw) return reply(res, 401, 'renew.certificate_required', 'no client certificate')
    const presented = new X509Certificate(peer.raw)
    const caCert = new X509Certificate(this.ca.certPem)
    const now = this.clock()
    const valid =
      presented.verify(caCert.publicKey) &&
      new Date(presented.validFrom).getTime() <= now &&
      now < new Date(presented.validTo).getTime()
    if (!valid) return reply(res, 401, 'renew.certificate_invalid', 'client certificate rejected')
    this.renewals.push(presented.serialNumber.toLowerCase().replace(/^0+(?=.)/, ''))
    const spiffeId = /URI:([^,]+)/.exec(presented.subjectAltName ?? '')?.[1] ?? ''
    const name = /CN=([^\n]+)/.exec(presented.subject)?.[1] ?? ''
    this.issue(res, body.csr ?? '', name, spiffeId)
  }

  private issue(res: ServerResponse, csrPem: string, name: string, spiffeId: string): void {
    // X.509 times have whole-second precision, so start on a second boundary.
    const notBefore = new Date(Math.floor(this.clock() / 1000) * 1000)
    const notAfter = new Date(notBefore.getTime() + this.ttlMs)
    const certificate = issueSvid(this.ca, csrPem, { name, spiffeId, notBefore, notAfter })
    const answer = {
      certificate,
      bundle: this.ca.certPem,
      spiffeId,
      expiresAt: notAfter.toISOString(),
    }
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(answer))
  }
}

function reply(res: ServerResponse, status: number, code: string, message: string): void {
  res
    .writeHead(status, { 'content-type': 'application/json' })
    .end(JSON.stringify({ error: { code, message } }))
}

function readText(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    req.on('data', (chunk: Buffer) => chunks.push(chunk))
    req.once('end', () => resolve(Buffer.concat(chunks).toString('utf8') || '{}'))
    req.once('error', reject)
  })
}
