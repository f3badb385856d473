import {
  decodeJwt,
  decodeProtectedHeader,
  errors,
  importJWK,
  type JWK,
  type JWTPayload,
  jwtVerify,
} from 'jose'
import type { Clock } from '../clock.js'
import { WritError } from '../errors.js'
import { SpiffeId } from '../identity/spiffe-id.js'
import type { JwtBundle } from './workload-api-jwt.js'

/** The `alg` values the JWT-SVID format allows (RFC 7518 RSA, ECDSA and RSA-PSS); no others. */
export const JWT_SVID_ALGORITHMS = [
  'RS256',
  'RS384',
  'RS512',
  'ES256',
  'ES384',
  'ES512',
  'PS256',
  'PS384',
  'PS512',
] as const

/** Leeway for `exp`, `nbf` and `iat` against the local clock, in seconds. */
export const JWT_CLOCK_TOLERANCE_SECONDS = 30

/** A JWT-SVID that passed validation. */
export interface ValidatedJwtSvid {
  spiffeId: string
  claims: JWTPayload
}

/**
 * Validates a JWT-SVID the way the JWT-SVID format requires. The `alg` must be a permitted one,
 * `typ` JWT or JOSE when present, and `sub` a valid SPIFFE ID. The signature must verify with a
 * key in the bundle of the subject's trust domain, `aud` must contain `audience`, and `exp` must
 * be present and not past. `bundles` maps `spiffe://<trust domain>` to its JWK Set.
 * Throws `jwt_svid.invalid` with the reason, or `jwt_svid.key_unknown` when no key matches, so
 * the caller may refresh the bundle and try again.
 *
 * @example
 *   const { spiffeId, claims } = await validateJwtSvid(token, 'reports', bundles, Date.now)
 */
export async function validateJwtSvid(
  token: string,
  audience: string,
  bundles: ReadonlyMap<string, JwtBundle>,
  clock: Clock,
): Promise<ValidatedJwtSvid> {
  const { alg, kid, typ } = readHeader(token)
  if (typ !== undefined && typ !== 'JWT' && typ !== 'JOSE') {
    throw invalid(`the "typ" header is ${JSON.stringify(typ)}; a JWT-SVID allows JWT or JOSE`)
  }
  const subject = readSubject(token)
  const bundle = bundles.get(`spiffe://${subject.trustDomain}`)
  if (!bundle) {
    throw invalid(`no JWT bundle is known for the trust domain ${subject.trustDomain}`)
  }
  const candidates = bundle.keys.filter((key) => keyMatches(key, alg, kid))
  if (candidates.length === 0) {
    throw new WritError(
      'jwt_svid.key_unknown',
      `the JWT bundle of ${subject.trustDomain} has no ${alg} key${kid ? ` with kid "${kid}"` : ''}`,
      { kid, alg },
    )
  }

  let lastError: unknown
  for (const jwk of candidates) {
    try {
      const { payload } = await jwtVerify(token, await importPublicJwk(jwk, alg), {
        algorithms: [alg],
        audience,
        requiredClaims: ['aud', 'exp', 'sub'],
        currentDate: new Date(clock()),
        clockTolerance: JWT_CLOCK_TOLERANCE_SECONDS,
      })
      return { spiffeId: subject.toString(), claims: payload }
    } catch (error) {
      lastError = error
      // Another key without a kid may still match; any other failure is final.
      if (!(error instanceof errors.JWSSignatureVerificationFailed)) break
    }
  }
  throw explain(lastError, audience)
}

function readHeader(token: string): { alg: string; kid?: string; typ?: string } {
  let header: ReturnType<typeof decodeProtectedHeader>
  try {
    header = decodeProtectedHeader(token)
  } catch {
    throw invalid('the token is not a JWS in compact serialization')
  }
  const alg = header.alg
  if (typeof alg !== 'string' || !(JWT_SVID_ALGORITHMS as readonly string[]).includes(alg)) {
    throw invalid(`the "alg" header ${JSON.stringify(alg)} is not allowed for a JWT-SVID`)
  }
  const result: { alg: string; kid?: string; typ?: string } = { alg }
  if (typeof header.kid === 'string') result.kid = header.kid
  if (header.typ !== undefined) result.typ = String(header.typ)
  return result
}

function readSubject(token: string): SpiffeId {
  let payload: JWTPayload
  try {
    payload = decodeJwt(token)
  } catch {
    throw invalid('the token payload is not a JSON object')
  }
  if (typeof payload.sub !== 'string') throw invalid('the token has no "sub" claim')
  const parsed = SpiffeId.tryParse(payload.sub)
  if (!parsed.ok) throw invalid(`the "sub" claim is not a SPIFFE ID: ${parsed.reason}`)
  return parsed.id
}

/** Reports whether a bundle key may check a token with this `alg` and `kid`. */
function keyMatches(key: JWK, alg: string, kid: string | undefined): boolean {
  if (kid !== undefined && key.kid !== kid) return false
  if (key.use !== undefined && key.use !== 'sig' && key.use !== 'jwt-svid') return false
  if (key.alg !== undefined && key.alg !== alg) return false
  const family = alg.startsWith('ES') ? 'EC' : 'RSA'
  return key.kty === family
}

/**
 * Imports the public members of a bundle key. `use: jwt-svid` (the SPIFFE bundle value) and
 * `key_ops` are dropped because jose accepts only the RFC 7517 values there.
 */
async function importPublicJwk(jwk: JWK, alg: string) {
  const {
    use: _use,
    key_ops: _keyOps,
    d: _d,
    p: _p,
    q: _q,
    dp: _dp,
    dq: _dq,
    qi: _qi,
    ...rest
  } = jwk
  return importJWK(rest, alg)
}

function explain(error: unknown, audience: string): WritError {
  if (error instanceof errors.JWTExpired) {
    return invalid('the token has expired', error)
  }
  if (error instanceof errors.JWTClaimValidationFailed) {
    if (error.claim === 'aud' && error.reason === 'check_failed') {
      return invalid(`the token is not valid for the audience ${JSON.stringify(audience)}`, error)
    }
    return invalid(`the "${error.claim}" claim is invalid: ${error.message}`, error)
  }
  if (error instanceof errors.JWSSignatureVerificationFailed) {
    return invalid('the signature does not verify with the JWT bundle', error)
  }
  if (error instanceof errors.JOSEError) return invalid(error.message, error)
  if (error instanceof WritError) return error
  return invalid('the token could not be verified', error)
}

function invalid(reason: string, cause?: unknown): WritError {
  return new WritError(
    'jwt_svid.invalid',
    `invalid JWT-SVID: ${reason}`,
    { reason },
    cause === undefined ? undefined : { cause },
  )
}
