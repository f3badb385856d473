/**
 * The client side of enrollment, password login and single sign-on: it decides which CA to trust,
 * sends the requests and checks the certificate it gets back. The private key is generated here
 * and never sent.
 */
import { request } from 'node:https'
import { type Clock, systemClock } from '../clock.js'
import { WritError } from '../errors.js'
import { connectionError, timeoutError } from './agent-errors.js'
import { parseCaPin } from './ca-pin.js'
import { DEFAULT_REQUEST_TIMEOUT_MS } from './client.js'
import { type IssuedIdentity, readIssuedIdentity } from './issued.js'
import { type AgentKeys, createCsrPem } from './keys.js'
import { fetchPinnedCa } from './pinned-tls.js'
import { isIpHost, parseServerAddress, type ServerAddress } from './server-address.js'

/** The largest response body read from the server: 1 MiB. */
const MAX_RESPONSE_BYTES = 1024 * 1024

/**
 * The client's trust in a server: the SPKI pin of its CA, checked before anything is sent, or a
 * trust bundle saved at an earlier login.
 */
export type ServerTrust = { caPin: string } | { bundlePem: string }

/** A connection to one Writ server whose CA has been checked. */
export interface TrustedServer {
  address: ServerAddress
  /** The CA certificates the TLS connection verifies the server against. */
  caPem: string
  /** The pin that was checked, when trust came from a pin. */
  caPin?: string
}

/**
 * Resolves the address and, for a pin, connects once to check the server's CA before any
 * password is sent. Throws `agent.ca_pin_invalid`, `agent.ca_pin_mismatch` and connection errors.
 */
export async function connectTrusted(server: string, trust: ServerTrust): Promise<TrustedServer> {
  const address = parseServerAddress(server)
  if ('bundlePem' in trust) return { address, caPem: trust.bundlePem }
  const pin = parseCaPin(trust.caPin)
  const pinned = await fetchPinnedCa(address, pin, DEFAULT_REQUEST_TIMEOUT_MS)
  return { address, caPem: pinned.caPem, caPin: pin }
}

/** The response body of `POST /v1/users/enroll`. */
export interface EnrollResponse {
  user: string
  spiffeId: string
  otpauthUri: string
  totpSecret: string
}

/** Redeems an enrollment code, setting the password; returns the new TOTP secret. */
export async function enrollUser(
  server: TrustedServer,
  input: { user: string; code: string; password: string },
): Promise<EnrollResponse> {
  const body = (await callWrit(server, '/v1/users/enroll', input)) as Partial<EnrollResponse>
  for (const field of ['user', 'spiffeId', 'otpauthUri', 'totpSecret'] as const) {
    if (typeof body[field] !== 'string') {
      throw invalidResponse(server.address, `the field "${field}" is missing`)
    }
  }
  return body as EnrollResponse
}

/** Logs in with a password and a TOTP code and returns the checked certificate for `keys`. */
export async function loginWithPassword(
  server: TrustedServer,
  input: { user: string; password: string; otp: string; keys: AgentKeys; clock?: Clock },
): Promise<IssuedIdentity> {
  const csr = createCsrPem(input.keys, { commonName: input.user })
  const body = await callWrit(server, '/v1/login', {
    user: input.user,
    password: input.password,
    otp: input.otp,
    csr,
  })
  return readIssued(server, body, input.keys, input.clock)
}

/** Returns the connector's fixed callback port, if it has one. */
export async function describeConnector(
  server: TrustedServer,
  connector: string,
): Promise<{ redirectPort?: number }> {
  const body = (await callWrit(
    server,
    `/v1/sso/connectors/${encodeURIComponent(connector)}`,
    undefined,
  )) as { redirectPort?: unknown }
  return typeof body.redirectPort === 'number' ? { redirectPort: body.redirectPort } : {}
}

/** Starts a single sign-on login; returns the URL to open in a browser and the expected state. */
export async function startSso(
  server: TrustedServer,
  input: { connector: string; redirectUri: string; codeChallenge: string },
): Promise<{ authorizationUrl: string; state: string }> {
  const body = (await callWrit(server, '/v1/sso/start', input)) as Record<string, unknown>
  if (typeof body.authorizationUrl !== 'string' || typeof body.state !== 'string') {
    throw invalidResponse(server.address, 'the authorization URL or state is missing')
  }
  return { authorizationUrl: body.authorizationUrl, state: body.state }
}

/** Relays the provider's callback and the PKCE verifier; returns the checked certificate. */
export async function finishSso(
  server: TrustedServer,
  input: {
    state: string
    code: string
    iss?: string
    codeVerifier: string
    keys: AgentKeys
    clock?: Clock
  },
): Promise<IssuedIdentity> {
  const { keys, clock, ...fields } = input
  // The server names the user from the provider's claims; this CN is only a placeholder.
  const csr = createCsrPem(keys, { commonName: 'writ-login' })
  const body = await callWrit(server, '/v1/sso/finish', { ...fields, csr })
  return readIssued(server, body, keys, clock)
}

function readIssued(
  server: TrustedServer,
  body: unknown,
  keys: AgentKeys,
  clock: Clock | undefined,
): Promise<IssuedIdentity> {
  return readIssuedIdentity(server.address, body, keys, {
    clock: clock ?? systemClock,
    ...(server.caPin ? { caPin: server.caPin } : {}),
  })
}

/**
 * Sends a JSON POST (or a GET when `body` is undefined) and returns the 200 body. Any other
 * status throws a WritError with the server's code and message, so the person sees the server's
 * exact message, such as the one generic login failure message.
 */
function callWrit(server: TrustedServer, path: string, body: unknown): Promise<unknown> {
  const { address } = server
  const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body))
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: address.host,
        port: address.port,
        path,
        method: payload ? 'POST' : 'GET',
        agent: false,
        ca: server.caPem,
        ...(isIpHost(address.host) ? {} : { servername: address.host }),
        headers: payload
          ? { 'content-type': 'application/json', 'content-length': payload.length }
          : {},
      },
      (res) => {
        const chunks: Buffer[] = []
        let size = 0
        res.on('data', (chunk: Buffer) => {
          size += chunk.length
          if (size > MAX_RESPONSE_BYTES) {
            res.destroy()
            reject(
              invalidResponse(address, `the response is larger than ${MAX_RESPONSE_BYTES} bytes`),
            )
            return
          }
          chunks.push(chunk)
        })
        res.once('end', () => {
          try {
            resolve(settle(address, res.statusCode ?? 0, Buffer.concat(chunks).toString('utf8')))
          } catch (error) {
            reject(error)
          }
        })
        res.once('error', (error) => reject(connectionError(address, error)))
      },
    )
    req.setTimeout(DEFAULT_REQUEST_TIMEOUT_MS, () => {
      req.destroy(timeoutError(address, DEFAULT_REQUEST_TIMEOUT_MS))
    })
    req.once('error', (error) => {
      reject(error instanceof WritError ? error : connectionError(address, error))
    })
    req.end(payload)
  })
}

function settle(address: ServerAddress, status: number, text: string): unknown {
  let parsed: unknown
  try {
    parsed = text ? JSON.parse(text) : undefined
  } catch {
    parsed = undefined
  }
  if (status === 200) {
    if (parsed === undefined) throw invalidResponse(address, 'the response body is not JSON')
    return parsed
  }
  const error = (parsed as { error?: { code?: unknown; message?: unknown; requestId?: unknown } })
    ?.error
  if (typeof error?.code === 'string' && typeof error.message === 'string') {
    const fields: Record<string, unknown> = { server: address.text, status }
    if (typeof error.requestId === 'string') fields.requestId = error.requestId
    throw new WritError(error.code, error.message, fields)
  }
  throw new WritError(
    'agent.server_error',
    `the Writ server at ${address.text} failed with HTTP ${status}`,
    { server: address.text, status },
  )
}

function invalidResponse(address: ServerAddress, reason: string): WritError {
  return new WritError(
    'agent.response_invalid',
    `the Writ server at ${address.text} sent an unusable response: ${reason}`,
    { server: address.text, reason },
  )
}
