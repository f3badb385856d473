/**
 * The OpenID Connect relying party side of single sign-on: discovery, the authorization URL, the
 * code exchange, ID token validation and mapping claims to roles. The Writ server runs these
 * steps because it has the client secret, and the CLI only relays the browser's callback.
 */
import { createHash } from 'node:crypto'
import { type JWTPayload, type JWTVerifyGetKey, errors as joseErrors, jwtVerify } from 'jose'
import { WritError } from '../errors.js'
import type { RoleMapping } from '../policy/people-specs.js'

/** The fields of an OpenID Provider's discovery document that Writ uses. */
export interface OidcDiscovery {
  issuer: string
  authorization_endpoint: string
  token_endpoint: string
  jwks_uri: string
  userinfo_endpoint?: string
  token_endpoint_auth_methods_supported?: string[]
  authorization_response_iss_parameter_supported?: boolean
}

/** How long one request to the OpenID Provider may take. */
export const OIDC_REQUEST_TIMEOUT_MS = 10_000

/** The largest response accepted from the OpenID Provider: 1 MiB. */
const MAX_RESPONSE_CHARS = 1024 * 1024

/** Allowed lifetime slack when checking `exp`, `iat` and `nbf` of an ID token: 60 seconds. */
const CLOCK_TOLERANCE_SECONDS = 60

/** Only asymmetric signatures: a symmetric one would be made with the client secret Writ holds. */
const ID_TOKEN_ALGORITHMS = [
  'RS256',
  'RS384',
  'RS512',
  'PS256',
  'PS384',
  'PS512',
  'ES256',
  'ES384',
  'ES512',
  'EdDSA',
]

const LOOPBACK_HOSTS = new Set(['127.0.0.1', '[::1]', 'localhost'])

/**
 * Fetches `<issuer>/.well-known/openid-configuration` and checks that it names the same issuer,
 * character for character (OpenID Connect Discovery 1.0, section 4.3). Throws
 * `sso.discovery_failed` or `sso.issuer_mismatch` naming the URL or the issuer.
 */
export async function discoverProvider(issuer: string): Promise<OidcDiscovery> {
  const url = `${issuer.replace(/\/+$/, '')}/.well-known/openid-configuration`
  const document = await fetchJson(url, {}, 'sso.discovery_failed', 'discovery')
  if (document.issuer !== issuer) {
    throw new WritError(
      'sso.issuer_mismatch',
      `the OpenID Provider at ${url} names issuer ${JSON.stringify(document.issuer)}, not the configured ${JSON.stringify(issuer)}; fix spec.issuer of the OidcConnector`,
      { issuer, presented: document.issuer },
    )
  }
  for (const field of ['authorization_endpoint', 'token_endpoint', 'jwks_uri'] as const) {
    const value = document[field]
    if (typeof value !== 'string' || !isAllowedEndpoint(value)) {
      throw new WritError(
        'sso.discovery_failed',
        `the discovery document of ${issuer} has no usable ${field} (an https URL, or http on a loopback host)`,
        { issuer, field },
      )
    }
  }
  if (document.userinfo_endpoint !== undefined) {
    if (
      typeof document.userinfo_endpoint !== 'string' ||
      !isAllowedEndpoint(document.userinfo_endpoint)
    ) {
      delete document.userinfo_endpoint
    }
  }
  return document as unknown as OidcDiscovery
}

/** Builds the authorization request URL of the code flow with PKCE (S256). */
export function authorizationUrl(
  discovery: OidcDiscovery,
  request: {
    clientId: string
    redirectUri: string
    scopes: readonly string[]
    state: string
    nonce: string
    codeChallenge: string
  },
): string {
  const url = new URL(discovery.authorization_endpoint)
  url.searchParams.set('response_type', 'code')
  url.searchParams.set('client_id', request.clientId)
  url.searchParams.set('redirect_uri', request.redirectUri)
  url.searchParams.set('scope', request.scopes.join(' '))
  url.searchParams.set('state', request.state)
  url.searchParams.set('nonce', request.nonce)
  url.searchParams.set('code_challenge', request.codeChallenge)
  url.searchParams.set('code_challenge_method', 'S256')
  return url.toString()
}

/** Returns the PKCE S256 challenge of a verifier: base64url(SHA-256(verifier)). */
export function pkceChallenge(verifier: string): string {
  return createHash('sha256').update(verifier).digest('base64url')
}

/** The tokens of a successful code exchange. */
export interface TokenResponse {
  idToken: string
  accessToken?: string
}

/**
 * Exchanges the authorization code at the token endpoint, authenticating with the client secret
 * (HTTP Basic unless the provider supports only `client_secret_post`). Throws
 * `sso.token_exchange_failed` with the provider's error code.
 */
export async function exchangeCode(
  discovery: OidcDiscovery,
  request: {
    clientId: string
    clientSecret: string
    code: string
    redirectUri: string
    codeVerifier: string
  },
): Promise<TokenResponse> {
  const form = new URLSearchParams({
    grant_type: 'authorization_code',
    code: request.code,
    redirect_uri: request.redirectUri,
    code_verifier: request.codeVerifier,
  })
  const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded' }
  const methods = discovery.token_endpoint_auth_methods_supported ?? ['client_secret_basic']
  if (methods.includes('client_secret_basic')) {
    // RFC 6749 section 2.3.1: both parts are form-encoded before they are joined and encoded.
    const pair = `${encodeURIComponent(request.clientId)}:${encodeURIComponent(request.clientSecret)}`
    headers.authorization = `Basic ${Buffer.from(pair).toString('base64')}`
  } else if (methods.includes('client_secret_post')) {
    form.set('client_id', request.clientId)
    form.set('client_secret', request.clientSecret)
  } else {
    throw new WritError(
      'sso.token_exchange_failed',
      `the OpenID Provider ${discovery.issuer} supports neither client_secret_basic nor client_secret_post`,
      { issuer: discovery.issuer },
    )
  }
  const body = await fetchJson(
    discovery.token_endpoint,
    { method: 'POST', headers, body: form.toString() },
    'sso.token_exchange_failed',
    'token request',
  )
  if (typeof body.id_token !== 'string') {
    throw new WritError(
      'sso.token_exchange_failed',
      `the token response of ${discovery.issuer} has no id_token; check that the scopes include openid`,
      { issuer: discovery.issuer },
    )
  }
  const tokens: TokenResponse = { idToken: body.id_token }
  if (typeof body.access_token === 'string') tokens.accessToken = body.access_token
  return tokens
}

/**
 * Validates an ID token as OpenID Connect Core 1.0, section 3.1.3.7 requires. The checks are an
 * asymmetric signature by a key of the provider, `iss` equal to the configured issuer, `aud`
 * containing the client ID (and `azp` equal to it when there are several audiences), `exp` in
 * the future and `nonce` equal to the one sent. Throws `sso.id_token_invalid` naming the failed
 * check.
 */
export async function validateIdToken(
  idToken: string,
  expected: { issuer: string; clientId: string; nonce: string; keys: JWTVerifyGetKey; now: number },
): Promise<JWTPayload> {
  let payload: JWTPayload
  try {
    const verified = await jwtVerify(idToken, expected.keys, {
      issuer: expected.issuer,
      audience: expected.clientId,
      algorithms: ID_TOKEN_ALGORITHMS,
      clockTolerance: CLOCK_TOLERANCE_SECONDS,
      currentDate: new Date(expected.now),
      requiredClaims: ['sub', 'exp', 'iat'],
    })
    payload = verified.payload
  } catch (error) {
    throw invalidIdToken(describeJoseError(error, expected.issuer), error)
  }
  if (Array.isArray(payload.aud) && payload.aud.length > 1 && payload.azp !== expected.clientId) {
    throw invalidIdToken(`azp ${JSON.stringify(payload.azp)} is not the client ID`)
  }
  if (payload.nonce !== expected.nonce) {
    throw invalidIdToken('the nonce does not match the one this login sent')
  }
  return payload
}

/**
 * Fetches the UserInfo claims with the access token and keeps them only if their `sub` is the ID
 * token's subject (OpenID Connect Core 1.0, section 5.3.2). Throws `sso.userinfo_failed`.
 */
export async function fetchUserInfo(
  discovery: OidcDiscovery,
  accessToken: string,
  subject: string,
): Promise<Record<string, unknown>> {
  const endpoint = discovery.userinfo_endpoint
  if (!endpoint) return {}
  const claims = await fetchJson(
    endpoint,
    { headers: { authorization: `Bearer ${accessToken}` } },
    'sso.userinfo_failed',
    'UserInfo request',
  )
  if (claims.sub !== subject) {
    throw new WritError(
      'sso.userinfo_failed',
      `the UserInfo response of ${discovery.issuer} is for another subject than the ID token`,
      { issuer: discovery.issuer },
    )
  }
  return claims
}

/**
 * Returns the roles of every mapping whose claim equals `value`, or lists it when the claim is a
 * list, in mapping order without repeats.
 */
export function mapClaimsToRoles(
  claims: Readonly<Record<string, unknown>>,
  mappings: readonly RoleMapping[],
): string[] {
  const roles: string[] = []
  for (const mapping of mappings) {
    const claim = claims[mapping.claim]
    const matches = Array.isArray(claim) ? claim.includes(mapping.value) : claim === mapping.value
    if (!matches) continue
    for (const role of mapping.roles) if (!roles.includes(role)) roles.push(role)
  }
  return roles
}

/**
 * Reads the user name from a claim, lowercased. Throws `sso.username_invalid` naming the claim and
 * value when it is missing or is not a valid Writ name (lowercase letters, digits and dashes).
 */
export function usernameFromClaims(
  claims: Readonly<Record<string, unknown>>,
  claimName: string,
): string {
  const value = claims[claimName]
  const name = typeof value === 'string' ? value.trim().toLowerCase() : ''
  if (!/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/.test(name)) {
    const shown = value === undefined ? 'is missing' : `is ${JSON.stringify(value)}`
    throw new WritError(
      'sso.username_invalid',
      `the ${claimName} claim ${shown}, which is not a valid user name (lowercase letters, digits and dashes); set usernameClaim of the OidcConnector to a claim that holds one`,
      { claim: claimName },
    )
  }
  return name
}

/** Accepts https endpoints and http ones on loopback hosts, matching the issuer rule. */
function isAllowedEndpoint(value: string): boolean {
  try {
    const url = new URL(value)
    return (
      url.protocol === 'https:' || (url.protocol === 'http:' && LOOPBACK_HOSTS.has(url.hostname))
    )
  } catch {
    return false
  }
}

async function fetchJson(
  url: string,
  init: RequestInit,
  code: string,
  what: string,
): Promise<Record<string, unknown>> {
  let response: Response
  let text: string
  try {
    response = await fetch(url, {
      ...init,
      redirect: 'error',
      signal: AbortSignal.timeout(OIDC_REQUEST_TIMEOUT_MS),
    })
    text = await response.text()
  } catch (error) {
    const reason = (error as Error).name === 'TimeoutError' ? 'timed out' : (error as Error).message
    throw new WritError(code, `the ${what} to ${url} failed: ${reason}`, { url }, { cause: error })
  }
  if (text.length > MAX_RESPONSE_CHARS) {
    throw new WritError(code, `the ${what} to ${url} returned more than 1 MiB`, { url })
  }
  let body: unknown
  try {
    body = JSON.parse(text)
  } catch {
    body = undefined
  }
  if (!response.ok || typeof body !== 'object' || body === null || Array.isArray(body)) {
    const error = (body as { error?: unknown } | undefined)?.error
    const detail = typeof error === 'string' ? `: ${error}` : ''
    throw new WritError(
      code,
      `the ${what} to ${url} failed with HTTP ${response.status}${detail}`,
      {
        url,
        status: response.status,
        ...(typeof error === 'string' ? { providerError: error } : {}),
      },
    )
  }
  return body as Record<string, unknown>
}

function describeJoseError(error: unknown, issuer: string): string {
  if (error instanceof joseErrors.JWTClaimValidationFailed) {
    if (error.claim === 'iss') {
      const presented = JSON.stringify(error.payload.iss)
      return `it names issuer ${presented}, not the configured ${JSON.stringify(issuer)}`
    }
    return `claim ${error.claim} failed validation (${error.reason})`
  }
  if (error instanceof joseErrors.JWTExpired) return 'it has expired'
  if (error instanceof joseErrors.JWSSignatureVerificationFailed) {
    return 'its signature does not verify'
  }
  if (error instanceof joseErrors.JWKSNoMatchingKey) {
    return 'no key of the provider matches its signature'
  }
  if (error instanceof joseErrors.JOSEAlgNotAllowed) {
    return 'it is not signed with an asymmetric algorithm'
  }
  return (error as Error).message
}

function invalidIdToken(reason: string, cause?: unknown): WritError {
  return new WritError(
    'sso.id_token_invalid',
    `the ID token was rejected: ${reason}`,
    { reason },
    cause === undefined ? undefined : { cause },
  )
}
