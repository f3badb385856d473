import type { IncomingMessage } from 'node:http'
import { request } from 'node:https'
import type { JWK } from 'jose'
import type { Clock } from '../clock.js'
import { WritError } from '../errors.js'
import { connectionError, responseError, timeoutError } from './agent-errors.js'
import type { IdentityFiles } from './files.js'
import { invalidResponse, postJson, type RequestTls } from './https-json.js'
import type { ServerAddress } from './server-address.js'

/** The largest JWK Set the agent reads from the server. */
const MAX_BUNDLE_BYTES = 256 * 1024

/** How many JWT-SVIDs the agent keeps for reuse; the oldest is dropped past this. */
const MAX_CACHED_TOKENS = 256

/** A JWK Set: the keys that validate JWT-SVIDs of one trust domain. */
export interface JwtBundle {
  keys: JWK[]
}

/** A JWT-SVID as the Writ server returned it. */
export interface JwtSvid {
  token: string
  spiffeId: string
  expiresAt: number
}

interface CachedToken extends JwtSvid {
  issuedAt: number
}

/**
 * Requests JWT-SVIDs and the JWT bundle from the Writ server over mTLS with the agent's current
 * certificate. A token is reused for the same audience while more than half of its lifetime is
 * left, so a busy workload does not cause one signature and one audit record per call.
 */
export class JwtSvidClient {
  readonly #server: ServerAddress
  readonly #clock: Clock
  readonly #timeoutMs: number
  readonly #tokens = new Map<string, CachedToken>()

  constructor(options: { server: ServerAddress; clock: Clock; timeoutMs: number }) {
    this.#server = options.server
    this.#clock = options.clock
    this.#timeoutMs = options.timeoutMs
  }

  /**
   * Returns a JWT-SVID of `identity` for `audience`, from the cache or from `POST /v1/jwt-svid`.
   * Throws the agent's WritErrors: `agent.server_unreachable`, `jwt_svid.forbidden` and others.
   */
  async fetchSvid(
    identity: IdentityFiles & { spiffeId: string },
    audience: string[],
  ): Promise<JwtSvid> {
    const key = `${identity.spiffeId}\n${[...new Set(audience)].sort().join('\n')}`
    const now = this.#clock()
    const cached = this.#tokens.get(key)
    if (cached && cached.expiresAt - now > (cached.expiresAt - cached.issuedAt) / 2) return cached

    const body = await postJson(
      this.#server,
      '/v1/jwt-svid',
      { audience, spiffe_id: identity.spiffeId },
      tlsOf(identity),
      this.#timeoutMs,
    )
    const issued = readJwtSvid(this.#server, body)
    this.#remember(key, { ...issued, issuedAt: now })
    return issued
  }

  /** Fetches the JWK Set from `GET /v1/jwt-bundle`, checking that it is one. */
  async fetchBundle(identity: IdentityFiles): Promise<JwtBundle> {
    const body = await getJson(this.#server, '/v1/jwt-bundle', tlsOf(identity), this.#timeoutMs)
    const keys = (body as { keys?: unknown } | undefined)?.keys
    if (!Array.isArray(keys) || !keys.every((key) => typeof key === 'object' && key !== null)) {
      throw invalidResponse(this.#server, 'the JWT bundle is not a JWK Set')
    }
    return { keys: keys as JWK[] }
  }

  #remember(key: string, token: CachedToken): void {
    const now = this.#clock()
    for (const [name, entry] of this.#tokens) {
      if (entry.expiresAt <= now) this.#tokens.delete(name)
    }
    this.#tokens.delete(key)
    if (this.#tokens.size >= MAX_CACHED_TOKENS) {
      const oldest = this.#tokens.keys().next().value
      if (oldest !== undefined) this.#tokens.delete(oldest)
    }
    this.#tokens.set(key, token)
  }
}

function tlsOf(identity: IdentityFiles): RequestTls {
  return { ca: identity.bundlePem, cert: identity.certPem, key: identity.keyPem }
}

function readJwtSvid(server: ServerAddress, body: unknown): JwtSvid {
  const record = (body ?? {}) as Record<string, unknown>
  const expiresAt = Date.parse(String(record.expiresAt))
  if (typeof record.token !== 'string' || record.token === '') {
    throw invalidResponse(server, 'the field "token" is missing or not a string')
  }
  if (typeof record.spiffeId !== 'string' || Number.isNaN(expiresAt)) {
    throw invalidResponse(server, 'the fields "spiffeId" and "expiresAt" are missing or invalid')
  }
  return { token: record.token, spiffeId: record.spiffeId, expiresAt }
}

/** Sends a GET over HTTPS with the agent's certificate and returns the parsed 200 body. */
function getJson(
  server: ServerAddress,
  path: string,
  tls: RequestTls,
  timeoutMs: number,
): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const req = request(
      { host: server.host, port: server.port, path, method: 'GET', agent: false, ...tls },
      (res) => {
        readBody(server, res).then((text) => {
          try {
            resolve(parseReply(server, res.statusCode ?? 0, text))
          } catch (error) {
            reject(error)
          }
        }, reject)
      },
    )
    req.setTimeout(timeoutMs, () => req.destroy(timeoutError(server, timeoutMs)))
    req.once('error', (error) => {
      reject(error instanceof WritError ? error : connectionError(server, error))
    })
    req.end()
  })
}

function readBody(server: ServerAddress, res: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let size = 0
    res.on('data', (chunk: Buffer) => {
      size += chunk.length
      if (size > MAX_BUNDLE_BYTES) {
        res.destroy()
        reject(invalidResponse(server, `the response is larger than ${MAX_BUNDLE_BYTES} bytes`))
        return
      }
      chunks.push(chunk)
    })
    res.once('end', () => resolve(Buffer.concat(chunks).toString('utf8')))
    res.once('error', (error) => reject(connectionError(server, error)))
  })
}

function parseReply(server: ServerAddress, status: number, text: string): unknown {
  let parsed: unknown
  try {
    parsed = text ? JSON.parse(text) : undefined
  } catch {
    if (status === 200) throw invalidResponse(server, 'the response body is not JSON')
  }
  if (status !== 200) throw responseError(server, status, parsed)
  return parsed
}
