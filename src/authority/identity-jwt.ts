import { randomUUID } from 'node:crypto'
import { SignJWT } from 'jose'
import type { Clock } from '../clock.js'
import { WritError } from '../errors.js'
import type { PeerIdentity } from '../identity/types.js'
import type { JwtSvidKey } from './jwt-svid.js'

/** The maximum lifetime of an identity JWT sent to an upstream MCP server: five minutes. */
export const MAX_IDENTITY_JWT_TTL_SECONDS = 300

/** A signed identity JWT and its validity, in ms since the epoch. */
export interface IdentityJwt {
  token: string
  issuedAt: number
  expiresAt: number
}

/** Signs the short-lived JWTs that tell an upstream MCP server who is calling through Writ. */
export type IdentityJwtMinter = (
  identity: PeerIdentity,
  audience: string,
  ttlSeconds?: number,
) => Promise<IdentityJwt>

/**
 * Creates the minter. Each token is an ES256 JWT signed with the data directory's JWT key, the
 * key published at `/.well-known/jwks.json`. Its `iss` is the trust domain's SPIFFE ID, `sub` the
 * caller's SPIFFE ID and `aud` the upstream server's name. It also carries `iat`, `exp`, `jti`,
 * `kind`, `roles` and, for task certificates, `task`. It lives `ttlSeconds` (at most five
 * minutes) but never past the caller's certificate.
 *
 * @example
 *   const mint = createIdentityJwtMinter({ key, trustDomain: 'writ.local', clock: Date.now })
 *   const { token } = await mint(identity, 'tracker')
 */
export function createIdentityJwtMinter(options: {
  key: JwtSvidKey
  trustDomain: string
  clock: Clock
}): IdentityJwtMinter {
  const { key, clock } = options
  const issuer = `spiffe://${options.trustDomain}`

  return async function mintIdentityJwt(identity, audience, ttlSeconds) {
    const ttl = ttlSeconds ?? MAX_IDENTITY_JWT_TTL_SECONDS
    if (!Number.isSafeInteger(ttl) || ttl <= 0 || ttl > MAX_IDENTITY_JWT_TTL_SECONDS) {
      throw new TypeError(
        `ttlSeconds must be an integer from 1 to ${MAX_IDENTITY_JWT_TTL_SECONDS}, got ${ttl}`,
      )
    }
    // JWT times are whole seconds; rounding down keeps exp within the certificate's lifetime.
    const now = Math.floor(clock() / 1000) * 1000
    const expiresAt =
      Math.floor(Math.min(now + ttl * 1000, identity.notAfter.getTime()) / 1000) * 1000
    if (expiresAt <= now) {
      throw new WritError(
        'gateway.identity_jwt_expired',
        `cannot sign an identity JWT for ${identity.spiffeId}: its certificate expired at ${identity.notAfter.toISOString()}`,
        { spiffeId: identity.spiffeId },
      )
    }
    const claims: Record<string, unknown> = {
      kind: identity.claims.kind,
      roles: [...identity.claims.roles],
    }
    if (identity.claims.task) {
      claims.task = { id: identity.claims.task.id, reason: identity.claims.task.reason }
    }
    const token = await new SignJWT(claims)
      .setProtectedHeader({ alg: 'ES256', kid: key.kid, typ: 'JWT' })
      .setIssuer(issuer)
      .setSubject(identity.spiffeId)
      .setAudience(audience)
      .setIssuedAt(now / 1000)
      .setExpirationTime(expiresAt / 1000)
      .setJti(randomUUID())
      .sign(key.privateKey)
    return { token, issuedAt: now, expiresAt }
  }
}
