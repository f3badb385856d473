import { generateKeyPairSync, type KeyObject, randomBytes, randomUUID } from 'node:crypto'
import { linkSync, mkdirSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { calculateJwkThumbprint, exportJWK, type JWK, SignJWT } from 'jose'
import type { Clock } from '../clock.js'
import { WritError } from '../errors.js'
import { readP256PrivateKey } from '../identity/keys.js'
import type { PeerIdentity } from '../identity/types.js'

/** How long a JWT-SVID is valid when the caller's certificate lives longer: five minutes. */
export const JWT_SVID_TTL_SECONDS = 300

/** Maximum number of audience values in one JWT-SVID; the SPIFFE JWT-SVID rules advise one. */
export const MAX_JWT_SVID_AUDIENCES = 10

/** Maximum length of one audience value, in characters. */
export const MAX_JWT_SVID_AUDIENCE_LENGTH = 512

/** The data directory file that contains the JWT-SVID signing key (PKCS#8 PEM, mode 0600). */
export const JWT_SVID_KEY_FILE = 'jwt_svid_key.pem'

/** The ES256 key that signs JWT-SVIDs, with its public half as a JWK. */
export interface JwtSvidKey {
  privateKey: KeyObject
  /** The public key as a JWK with `kid`, `alg: ES256` and no private members. */
  publicJwk: JWK
  /** The RFC 7638 thumbprint of the public key, sent as `kid` in every token header. */
  kid: string
}

/** A JWK Set, as served at `GET /v1/jwt-bundle` and streamed by the Workload API. */
export interface JwtBundle {
  keys: JWK[]
}

/** A JWT-SVID request: the audience values and, optionally, the caller's own SPIFFE ID. */
export interface JwtSvidRequest {
  audience: string[]
  spiffeId?: string
}

/** A signed JWT-SVID. */
export interface IssuedJwtSvid {
  token: string
  spiffeId: string
  /** The token's `jti`, recorded in the audit log. */
  id: string
  expiresAt: Date
}

/** Signs JWT-SVIDs for verified callers and publishes the key that checks them. */
export interface JwtSvidIssuer {
  /**
   * Signs a JWT-SVID whose `sub` is the caller's SPIFFE ID. Throws `jwt_svid.invalid_request`
   * for a bad audience list and `jwt_svid.forbidden` when `spiffeId` names another identity.
   */
  issue(caller: PeerIdentity, request: JwtSvidRequest): Promise<IssuedJwtSvid>
  /** Returns the JWK Set of the keys that validate the JWT-SVIDs this issuer signs. */
  bundle(): JwtBundle
}

/**
 * Reads the JWT-SVID signing key from the data directory, creating a P-256 key on first use.
 * Two processes starting at once end up with the same key, because the file is created with an
 * atomic link and the loser reads the winner's file.
 *
 * @example
 *   const key = await loadOrCreateJwtSvidKey('./writ-data')
 */
export async function loadOrCreateJwtSvidKey(dataDir: string): Promise<JwtSvidKey> {
  mkdirSync(dataDir, { recursive: true, mode: 0o700 })
  const path = join(dataDir, JWT_SVID_KEY_FILE)
  const privateKey = readKeyFile(path) ?? createKeyFile(path)
  const { d: _private, ...publicJwk } = await exportJWK(privateKey)
  const kid = await calculateJwkThumbprint(publicJwk)
  return { privateKey, publicJwk: { ...publicJwk, kid, alg: 'ES256' }, kid }
}

/**
 * Creates the issuer. Each token lives `ttlSeconds` (five minutes by default) but never past the
 * caller's certificate, carries `sub`, `aud`, `exp`, `iat` and `jti`, and has only the `alg`,
 * `kid` and `typ` header parameters that the JWT-SVID format permits.
 *
 * @example
 *   const issuer = createJwtSvidIssuer({ key, clock: Date.now })
 *   const { token } = await issuer.issue(identity, { audience: ['reports'] })
 */
export function createJwtSvidIssuer(options: {
  key: JwtSvidKey
  clock: Clock
  ttlSeconds?: number
}): JwtSvidIssuer {
  const { key, clock } = options
  const ttlMs = (options.ttlSeconds ?? JWT_SVID_TTL_SECONDS) * 1000

  async function issue(caller: PeerIdentity, request: JwtSvidRequest): Promise<IssuedJwtSvid> {
    const audience = checkAudience(request.audience)
    if (request.spiffeId !== undefined && request.spiffeId !== caller.spiffeId) {
      throw new WritError(
        'jwt_svid.forbidden',
        `a JWT-SVID for ${request.spiffeId} was requested, but the caller is ${caller.spiffeId}; request the caller's own ID or none`,
        { requested: request.spiffeId, spiffeId: caller.spiffeId },
      )
    }
    const now = clock()
    const expiresAt = Math.min(now + ttlMs, caller.notAfter.getTime())
    if (expiresAt <= now) {
      throw new WritError(
        'jwt_svid.certificate_expired',
        `the certificate of ${caller.spiffeId} expired at ${caller.notAfter.toISOString()}; renew it first`,
        { spiffeId: caller.spiffeId },
      )
    }
    const id = randomUUID()
    const token = await new SignJWT({})
      .setProtectedHeader({ alg: 'ES256', kid: key.kid, typ: 'JWT' })
      .setSubject(caller.spiffeId)
      .setAudience(audience)
      .setIssuedAt(Math.floor(now / 1000))
      .setExpirationTime(Math.floor(expiresAt / 1000))
      .setJti(id)
      .sign(key.privateKey)
    return { token, spiffeId: caller.spiffeId, id, expiresAt: new Date(expiresAt) }
  }

  return {
    issue,
    bundle: () => ({ keys: [{ ...key.publicJwk }] }),
  }
}

/** Checks the requested audience list and returns it without duplicates. */
function checkAudience(audience: unknown): string[] {
  if (!Array.isArray(audience) || audience.length === 0) {
    throw new WritError(
      'jwt_svid.invalid_request',
      'audience must be a non-empty list of strings, such as ["reports"]',
      { field: 'audience' },
    )
  }
  if (audience.length > MAX_JWT_SVID_AUDIENCES) {
    throw new WritError(
      'jwt_svid.invalid_request',
      `audience lists ${audience.length} values; at most ${MAX_JWT_SVID_AUDIENCES} are allowed`,
      { field: 'audience', count: audience.length, maximum: MAX_JWT_SVID_AUDIENCES },
    )
  }
  for (const value of audience) {
    if (typeof value !== 'string' || value === '' || value.length > MAX_JWT_SVID_AUDIENCE_LENGTH) {
      throw new WritError(
        'jwt_svid.invalid_request',
        `invalid audience value ${JSON.stringify(value)}: expected a string of 1 to ${MAX_JWT_SVID_AUDIENCE_LENGTH} characters`,
        { field: 'audience', value },
      )
    }
  }
  return [...new Set(audience as string[])]
}

function readKeyFile(path: string): KeyObject | undefined {
  let pem: string
  try {
    pem = readFileSync(path, 'utf8')
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw error
  }
  try {
    return readP256PrivateKey(pem)
  } catch (error) {
    throw new WritError(
      'jwt_svid.key_invalid',
      `${path} does not hold an ECDSA P-256 private key; restore it from a backup or delete it to create a new key`,
      { path },
      { cause: error },
    )
  }
}

/**
 * Writes a new key to a temporary file and links it into place. `linkSync` fails when the file
 * already exists, so a concurrent creator's key wins and is read back instead.
 */
function createKeyFile(path: string): KeyObject {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' })
  const pem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString()
  const temporary = `${path}.${randomBytes(6).toString('hex')}.tmp`
  writeFileSync(temporary, pem, { mode: 0o600, flag: 'wx' })
  try {
    linkSync(temporary, path)
    return privateKey
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error
    return readKeyFile(path) as KeyObject
  } finally {
    unlinkSync(temporary)
  }
}
