import { X509Certificate } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { JWK } from 'jose'
import { pemToDer } from '../identity/pem.js'
import type { CertificateAuthority } from './ca.js'
import type { JwtSvidKey } from './jwt-svid.js'

/** The JWK Set of the keys that verify Writ's JWTs (JWT-SVIDs and identity JWTs). */
export const JWKS_PATH = '/.well-known/jwks.json'

/** The trust bundle in SPIFFE bundle format. */
export const SPIFFE_BUNDLE_PATH = '/.well-known/spiffe-bundle'

/**
 * How often bundle consumers should fetch the SPIFFE bundle again, in seconds: five minutes, the
 * default the SPIFFE Trust Domain and Bundle specification suggests for clients without a hint.
 */
export const SPIFFE_REFRESH_HINT_SECONDS = 300

/** A SPIFFE bundle: a JWK Set with the bundle's sequence number and refresh hint. */
export interface SpiffeBundle {
  keys: JWK[]
  spiffe_sequence: number
  spiffe_refresh_hint: number
}

/** Returns the JWK Set served at `/.well-known/jwks.json`: the JWT key with `use: sig`. */
export function jwksDocument(jwtKey: JwtSvidKey): { keys: JWK[] } {
  return {
    keys: [{ ...publicMembers(jwtKey.publicJwk), kid: jwtKey.kid, alg: 'ES256', use: 'sig' }],
  }
}

/**
 * Builds the SPIFFE bundle of the trust domain: one `x509-svid` key per trusted CA, carrying the
 * CA certificate as its only `x5c` entry, and one `jwt-svid` key with its `kid`. The sequence
 * number is the CA state's, which grows whenever the trusted CAs change.
 *
 * @example
 *   const bundle = spiffeBundleDocument(host.ca, jwtKey)
 *   bundle.keys.filter((key) => key.use === 'x509-svid').length // 2 during a rotation
 */
export function spiffeBundleDocument(ca: CertificateAuthority, jwtKey: JwtSvidKey): SpiffeBundle {
  const x509Keys = ca.trusted.map((trusted) => {
    const der = pemToDer(trusted.certPem, ['CERTIFICATE'], 'ca.invalid_certificate')
    const jwk = new X509Certificate(der).publicKey.export({ format: 'jwk' }) as JWK
    return { ...publicMembers(jwk), use: 'x509-svid', x5c: [der.toString('base64')] }
  })
  const jwtJwk = { ...publicMembers(jwtKey.publicJwk), kid: jwtKey.kid, use: 'jwt-svid' }
  return {
    keys: [...x509Keys, jwtJwk],
    spiffe_sequence: ca.state.sequence,
    spiffe_refresh_hint: SPIFFE_REFRESH_HINT_SECONDS,
  }
}

/** The public routes under `/.well-known/`, served without a client certificate. */
export interface WellKnownRoutes {
  /** Whether `path` is one of these routes. */
  matches(path: string): boolean
  handle(req: IncomingMessage, res: ServerResponse, path: string): void
}

/**
 * Creates the handler for `GET /.well-known/jwks.json` and `GET /.well-known/spiffe-bundle`.
 * Each response is built from the CA state at the time of the request.
 */
export function createWellKnownRoutes(options: {
  ca: CertificateAuthority
  jwtKey: JwtSvidKey
}): WellKnownRoutes {
  const documents: Record<string, () => unknown> = {
    [JWKS_PATH]: () => jwksDocument(options.jwtKey),
    [SPIFFE_BUNDLE_PATH]: () => spiffeBundleDocument(options.ca, options.jwtKey),
  }
  return {
    matches: (path) => Object.hasOwn(documents, path),
    handle(req, res, path) {
      req.resume()
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        const body = {
          error: {
            code: 'request.method_not_allowed',
            message: `${path} accepts GET only, got ${req.method}`,
          },
        }
        send(res, 405, body, { allow: 'GET, HEAD' })
        return
      }
      const build = documents[path] as () => unknown
      send(res, 200, build(), { 'cache-control': 'no-cache' }, req.method === 'HEAD')
    },
  }
}

/** Keeps the members of a public EC JWK, dropping `d` and any metadata. */
function publicMembers(jwk: JWK): JWK {
  return { kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y } as JWK
}

function send(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string>,
  headOnly = false,
): void {
  const text = JSON.stringify(body)
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    ...headers,
  })
  res.end(headOnly ? undefined : text)
}
