/**
 * Signature verification of service-account tokens against the cluster's JSON Web Key Set,
 * given statically in the JoinToken or found by OIDC discovery of the issuer. Discovered key sets
 * are cached and fetched again when a token names a key the cache lacks, since that is how a
 * cluster's key rotation shows up.
 */
import { type CryptoKey, compactVerify, createLocalJWKSet, type JSONWebKeySet } from 'jose'
import type { Clock } from '../clock.js'
import { ClusterRequestError, requestClusterJson } from './cluster-http.js'
import type { ClusterTrust } from './join-spec.js'

/**
 * Algorithms the Kubernetes API server signs service-account tokens with, RSA or ECDSA
 * depending on its key. Symmetric and `none` algorithms are never accepted.
 */
export const TOKEN_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'ES256', 'ES384', 'ES512']

/** How long a discovered key set is used before it is fetched again: 10 minutes. */
export const JWKS_MAX_AGE_MS = 10 * 60_000

/**
 * The shortest time between two fetches caused by unknown key IDs: 30 seconds, so tokens with
 * made-up key IDs cannot make Writ fetch the key set on every join.
 */
export const JWKS_REFRESH_COOLDOWN_MS = 30_000

/** Why a signature check failed: no key with the token's ID, a bad signature, or not a JWS. */
export type SignatureFailure = 'unknown_key' | 'bad_signature' | 'malformed'

/** A signature that did not verify. The message explains the failure without quoting the token. */
export class SignatureError extends Error {
  override name = 'SignatureError'
  readonly failure: SignatureFailure

  constructor(message: string, failure: SignatureFailure, options?: { cause?: unknown }) {
    super(message, options)
    this.failure = failure
  }
}

/**
 * Verifies a compact JWS against a key set and returns its payload bytes. Throws SignatureError
 * for a bad signature, an unknown key, a disallowed algorithm or a malformed token.
 */
export async function verifyWithKeySet(token: string, jwks: JSONWebKeySet): Promise<Uint8Array> {
  let getKey: ReturnType<typeof createLocalJWKSet>
  try {
    getKey = createLocalJWKSet(jwks)
  } catch (error) {
    throw new ClusterRequestError('the cluster key set is not a valid JWKS', undefined, {
      cause: error,
    })
  }
  try {
    const { payload } = await compactVerify(token, getKey, { algorithms: TOKEN_ALGORITHMS })
    return payload
  } catch (error) {
    if (errorCode(error) === 'ERR_JWKS_MULTIPLE_MATCHING_KEYS') {
      return verifyWithCandidates(token, error as AsyncIterable<CryptoKey>)
    }
    throw signatureError(error, token)
  }
}

/** Tries each candidate key in turn, since a token without `kid` matches every key of its type. */
async function verifyWithCandidates(
  token: string,
  candidates: AsyncIterable<CryptoKey>,
): Promise<Uint8Array> {
  for await (const key of candidates) {
    try {
      const { payload } = await compactVerify(token, key, { algorithms: TOKEN_ALGORITHMS })
      return payload
    } catch {
      // Try the next key; the error after the loop covers them all.
    }
  }
  throw new SignatureError(
    'the signature does not verify with any key of the cluster',
    'bad_signature',
  )
}

function signatureError(error: unknown, token: string): SignatureError {
  const kid = readKid(token)
  switch (errorCode(error)) {
    case 'ERR_JWKS_NO_MATCHING_KEY':
      return new SignatureError(
        `no key of the cluster matches the token's key ID ${kid ?? '(none)'}`,
        'unknown_key',
        { cause: error },
      )
    case 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED':
      return new SignatureError(
        `the signature does not verify with key ${kid ?? '(no kid)'}`,
        'bad_signature',
        { cause: error },
      )
    case 'ERR_JOSE_ALG_NOT_ALLOWED':
    case 'ERR_JOSE_NOT_SUPPORTED':
      return new SignatureError(
        `the token's algorithm is not accepted (accepted: ${TOKEN_ALGORITHMS.join(', ')})`,
        'bad_signature',
        { cause: error },
      )
    default:
      return new SignatureError('the token is not a valid compact JWS', 'malformed', {
        cause: error,
      })
  }
}

/** Reads the `kid` from the protected header without trusting it, for error messages only. */
function readKid(token: string): string | undefined {
  try {
    const header = JSON.parse(Buffer.from(token.split('.')[0] ?? '', 'base64url').toString('utf8'))
    return typeof header?.kid === 'string' ? JSON.stringify(header.kid.slice(0, 100)) : undefined
  } catch {
    return undefined
  }
}

function errorCode(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | undefined)?.code
  return typeof code === 'string' ? code : undefined
}

interface CachedKeySet {
  jwks: JSONWebKeySet
  fetchedAt: number
}

/** Fetches and caches the key sets of issuers found by OIDC discovery. */
export class DiscoveredKeySets {
  private readonly cache = new Map<string, CachedKeySet>()
  private readonly inflight = new Map<string, Promise<CachedKeySet>>()

  constructor(private readonly clock: Clock) {}

  /**
   * Verifies `token` with the key set of `issuer`, fetching it when missing or older than
   * `JWKS_MAX_AGE_MS`, and once more when the token names an unknown key (at most once per
   * `JWKS_REFRESH_COOLDOWN_MS`). Throws SignatureError or ClusterRequestError.
   */
  async verify(token: string, issuer: string, trust: ClusterTrust): Promise<Uint8Array> {
    const key = JSON.stringify([issuer, trust.ca ?? null, trust.caFile ?? null])
    let entry = this.cache.get(key)
    if (!entry || this.clock() - entry.fetchedAt >= JWKS_MAX_AGE_MS) {
      entry = await this.fetch(key, issuer, trust)
    }
    try {
      return await verifyWithKeySet(token, entry.jwks)
    } catch (error) {
      const unknownKey = error instanceof SignatureError && error.failure === 'unknown_key'
      if (!unknownKey || this.clock() - entry.fetchedAt < JWKS_REFRESH_COOLDOWN_MS) throw error
      entry = await this.fetch(key, issuer, trust)
      return verifyWithKeySet(token, entry.jwks)
    }
  }

  private fetch(key: string, issuer: string, trust: ClusterTrust): Promise<CachedKeySet> {
    const pending = this.inflight.get(key)
    if (pending) return pending
    const started = fetchKeySet(issuer, trust)
      .then((jwks) => {
        const entry = { jwks, fetchedAt: this.clock() }
        this.cache.set(key, entry)
        return entry
      })
      .finally(() => this.inflight.delete(key))
    this.inflight.set(key, started)
    return started
  }
}

/**
 * Reads `<issuer>/.well-known/openid-configuration`, checks that it names the same issuer, and
 * fetches the key set at its `jwks_uri`.
 */
export async function fetchKeySet(issuer: string, trust: ClusterTrust): Promise<JSONWebKeySet> {
  const discoveryUrl = `${issuer.replace(/\/+$/, '')}/.well-known/openid-configuration`
  const discovery = await getJson(discoveryUrl, trust)
  const document = discovery as { issuer?: unknown; jwks_uri?: unknown }
  if (document.issuer !== issuer) {
    throw new ClusterRequestError(
      `${discoveryUrl} names issuer ${JSON.stringify(document.issuer)}, expected ${JSON.stringify(issuer)}`,
    )
  }
  if (typeof document.jwks_uri !== 'string') {
    throw new ClusterRequestError(`${discoveryUrl} has no jwks_uri`)
  }
  const jwks = await getJson(document.jwks_uri, trust)
  const keys = (jwks as { keys?: unknown }).keys
  if (!Array.isArray(keys)) {
    throw new ClusterRequestError(`${document.jwks_uri} is not a JSON Web Key Set (no keys list)`)
  }
  return jwks as JSONWebKeySet
}

async function getJson(url: string, trust: ClusterTrust): Promise<unknown> {
  const response = await requestClusterJson({ method: 'GET', url, trust })
  if (response.status !== 200) {
    throw new ClusterRequestError(`${url} returned HTTP ${response.status}`, response.status)
  }
  if (typeof response.body !== 'object' || response.body === null || Array.isArray(response.body)) {
    throw new ClusterRequestError(`${url} did not return a JSON object`)
  }
  return response.body
}
