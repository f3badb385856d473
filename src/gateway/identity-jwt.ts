import type { Clock } from '../clock.js'
import { WritError } from '../errors.js'
import type { PeerIdentity } from '../identity/types.js'
import type { IdentityJwtConfig, MintIdentityJwt } from './deps.js'
import { createRedactor, type Redactor } from './redact.js'

/**
 * A token is replaced once this fraction of its lifetime is left, so an upstream never receives
 * one that expires while the request is in flight.
 */
const REFRESH_WHEN_LEFT = 1 / 3

/** The identity JWTs of one client session and a redactor that hides them from the client. */
export interface SessionIdentityJwt {
  /** Returns the header carrying the current token, signing a new token when needed. */
  headers(): Promise<Record<string, string>>
  /** Redacts the configured secrets and the tokens this session sent. */
  redactor: Redactor
}

interface CachedToken {
  token: string
  /** The serial of the certificate the token was signed for; a renewal gets a new token. */
  serial: string
  refreshAt: number
}

/**
 * Creates the identity JWT source of one session. A token is reused for the session's requests
 * until a third of its lifetime is left or the session's certificate is renewed. Tokens are
 * credentials for the upstream, so the session's redactor replaces the current and the previous
 * token with `[REDACTED]` in anything sent back to the client.
 *
 * @example
 *   const jwt = createSessionIdentityJwt({ config, audience: 'tracker', mint, clock,
 *     secrets: [], identity: () => session.identity })
 *   const headers = await jwt.headers() // { Authorization: 'Bearer eyJ...' }
 */
export function createSessionIdentityJwt(options: {
  config: IdentityJwtConfig
  audience: string
  mint: MintIdentityJwt | undefined
  clock: Clock
  secrets: readonly string[]
  identity: () => PeerIdentity
}): SessionIdentityJwt {
  const { config, audience, clock } = options
  const mint = options.mint
  if (mint === undefined) {
    throw new WritError(
      'gateway.identity_jwt_unavailable',
      `MCP server "${audience}" sets http.identityJwt, but this gateway has no JWT signing key`,
      { server: audience },
    )
  }
  const sign: MintIdentityJwt = mint
  let cached: CachedToken | undefined
  let recent: string[] = []
  let minting: Promise<CachedToken> | undefined
  let redactorTokens: string[] = []
  let redactor = createRedactor(options.secrets)

  async function current(): Promise<string> {
    const identity = options.identity()
    if (cached && cached.serial === identity.serial && clock() < cached.refreshAt) {
      return cached.token
    }
    minting ??= sign(identity, audience, config.ttlSeconds).then((signed) => {
      const lifetime = signed.expiresAt - signed.issuedAt
      const refreshAt = signed.expiresAt - Math.floor(lifetime * REFRESH_WHEN_LEFT)
      return { token: signed.token, serial: identity.serial, refreshAt }
    })
    try {
      cached = await minting
    } finally {
      minting = undefined
    }
    // Callers that waited on the same signing all arrive here with the same token.
    if (recent[0] !== cached.token) recent = [cached.token, ...recent].slice(0, 2)
    return cached.token
  }

  function currentRedactor(): Redactor {
    if (redactorTokens !== recent) {
      redactorTokens = recent
      redactor = createRedactor([...options.secrets, ...recent])
    }
    return redactor
  }

  return {
    async headers() {
      const token = await current()
      const value = config.header.toLowerCase() === 'authorization' ? `Bearer ${token}` : token
      return { [config.header]: value }
    },
    redactor: {
      text: (value) => currentRedactor().text(value),
      value: (value) => currentRedactor().value(value),
      json: (value) => currentRedactor().json(value),
    },
  }
}
