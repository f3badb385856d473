import type { Clock } from '../clock.js'
import { systemClock } from '../clock.js'
import { parseCaPin } from './ca-pin.js'
import type { IdentityFiles } from './files.js'
import { postJson } from './https-json.js'
import {
  type IssuedIdentity,
  parseFirstCertificate,
  readIssuedIdentity,
  readUriSan,
} from './issued.js'
import { type AgentKeys, createCsrPem } from './keys.js'
import { fetchPinnedCa } from './pinned-tls.js'
import { parseServerAddress, type ServerAddress } from './server-address.js'

/** How long one request to the Writ server may take before it counts as unreachable. */
export const DEFAULT_REQUEST_TIMEOUT_MS = 10_000

/**
 * The CN the agent puts in its first CSR. The server names the bot from the join token and
 * ignores the requested subject, so this value is only a placeholder.
 */
const JOIN_CSR_COMMON_NAME = 'writ-agent'

export interface JoinOptions {
  /** `HOST:PORT` or an address from `parseServerAddress`. */
  server: string | ServerAddress
  /** The one-time token, or with `serviceAccountToken` the name of a Kubernetes JoinToken. */
  token: string
  /** A Kubernetes service-account token (JWT); when set, the join uses `method: kubernetes`. */
  serviceAccountToken?: string
  /** `sha256:<hex>` of the CA's SubjectPublicKeyInfo, any letter case. */
  caPin: string
  keys: AgentKeys
  clock?: Clock
  timeoutMs?: number
  /** Aborts the request in flight. */
  signal?: AbortSignal
}

export interface RenewOptions {
  server: string | ServerAddress
  /** The identity in use: its certificate and key authenticate the request, its bundle the server. */
  current: IdentityFiles
  /** The new key pair to certify; the agent makes a new one for each renewal. */
  keys: AgentKeys
  clock?: Clock
  timeoutMs?: number
  /** Aborts the request in flight. */
  signal?: AbortSignal
}

/**
 * Joins with a one-time token: checks the server's CA against the pin before sending anything,
 * then posts a CSR for `keys` to `/v1/join` and returns the checked identity.
 * Throws `agent.ca_pin_invalid`, `agent.ca_pin_mismatch`, `join.token_used`,
 * `join.token_expired`, `join.token_unknown`, `agent.server_unreachable` and others.
 *
 * @example
 *   const keys = await generateAgentKeys()
 *   const identity = await joinWithToken({ server: '127.0.0.1:7443', token, caPin, keys })
 */
export async function joinWithToken(options: JoinOptions): Promise<IssuedIdentity> {
  const address = toAddress(options.server)
  const pin = parseCaPin(options.caPin)
  const timeoutMs = options.timeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS
  const pinned = await fetchPinnedCa(address, pin, timeoutMs)

  const csr = createCsrPem(options.keys, { commonName: JOIN_CSR_COMMON_NAME })
  const body = await postJson(
    address,
    '/v1/join',
    options.serviceAccountToken === undefined
      ? { token: options.token, csr }
      : {
          method: 'kubernetes',
          token: options.token,
          serviceAccountToken: options.serviceAccountToken,
          csr,
        },
    { ca: pinned.caPem },
    timeoutMs,
    options.signal,
  )
  return readIssuedIdentity(address, body, options.keys, {
    clock: options.clock ?? systemClock,
    caPin: pin,
  })
}

/**
 * Renews over mTLS with the current certificate: posts a CSR for the new `keys` to `/v1/renew`,
 * trusting the server only if it chains to the current bundle, and returns the new identity.
 *
 * @example
 *   const next = await renew({ server: '127.0.0.1:7443', current, keys: await generateAgentKeys() })
 */
export async function renew(options: RenewOptions): Promise<IssuedIdentity> {
  const address = toAddress(options.server)
  const { current } = options
  const leaf = parseFirstCertificate(address, current.certPem, 'current certificate')
  const spiffeId = readUriSan(leaf)
  const commonName = /(?:^|\n)CN=([^\n]*)/.exec(leaf.subject)?.[1] ?? JOIN_CSR_COMMON_NAME

  const csr = createCsrPem(options.keys, { commonName, ...(spiffeId ? { spiffeId } : {}) })
  const body = await postJson(
    address,
    '/v1/renew',
    { csr },
    { ca: current.bundlePem, cert: current.certPem, key: current.keyPem },
    options.timeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS,
    options.signal,
  )
  return readIssuedIdentity(address, body, options.keys, {
    clock: options.clock ?? systemClock,
    ...(spiffeId ? { spiffeId } : {}),
  })
}

function toAddress(server: string | ServerAddress): ServerAddress {
  return typeof server === 'string' ? parseServerAddress(server) : server
}
