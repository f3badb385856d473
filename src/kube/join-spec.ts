/**
 * The `spec.kubernetes` block of a JoinToken with `method: kubernetes`: which service accounts
 * may join, the audience their projected tokens must carry, and how Writ verifies those tokens.
 * Validation runs when the manifest is applied, so a token that could never verify is rejected
 * then instead of at the first join.
 */
import { createPublicKey, X509Certificate } from 'node:crypto'
import {
  atField,
  describeValue,
  expectDuration,
  expectKnownFields,
  expectMapping,
  expectName,
  expectPresent,
  expectString,
  expectTime,
  FieldError,
  type FieldPath,
  optionalString,
} from '../policy/fields.js'
import { hasReferences } from '../policy/secrets.js'

/** One allow rule: a service account in a namespace, both matched exactly. */
export interface KubernetesAllowRule {
  namespace: string
  serviceAccount: string
}

/** A JSON Web Key as it appears in a JWKS; only public keys are accepted. */
export type PublicJwk = Record<string, unknown> & { kty: string }

/** TLS trust for an HTTPS endpoint of the cluster: inline PEM or a file, else the system CAs. */
export interface ClusterTrust {
  /** PEM certificates of the CA that signed the endpoint's certificate. */
  ca?: string
  /** Path of a PEM file with those certificates, read on each request. */
  caFile?: string
}

export interface TokenReviewSpec extends ClusterTrust {
  /** Base URL of the Kubernetes API server, such as `https://10.0.0.1:6443`. */
  url: string
  /**
   * `${env:NAME}` or `${file:PATH}` reference to a bearer token allowed to create TokenReviews
   * (the `system:auth-delegator` cluster role grants that).
   */
  bearerToken: string
}

/** The `spec.kubernetes` block. Exactly one of `jwks`, `discovery` and `tokenReview` is set. */
export interface KubernetesJoinSpec {
  allow: KubernetesAllowRule[]
  /** The audience the projected token must carry; the Writ trust domain when unset. */
  audience?: string
  /** The `iss` every token must carry; required with `jwks` and `discovery`. */
  issuer?: string
  /** The cluster's signing keys, copied from `<api server>/openid/v1/jwks`. */
  jwks?: { keys: PublicJwk[] }
  /** `true` or trust settings: fetch the keys through OIDC discovery of `issuer`. */
  discovery?: true | ClusterTrust
  tokenReview?: TokenReviewSpec
}

const VERIFICATION_MODES = ['jwks', 'discovery', 'tokenReview'] as const

/** 253 characters: the longest Kubernetes object name, a DNS subdomain (RFC 1123). */
const MAX_SUBDOMAIN_LENGTH = 253
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/

/** Validates `spec.kubernetes` at `path`, throwing a `FieldError` at the first invalid field. */
export function validateKubernetesJoinSpec(value: unknown, path: FieldPath): void {
  const spec = expectMapping(value, path)
  expectKnownFields(spec, path, ['allow', 'audience', 'issuer', ...VERIFICATION_MODES])
  validateAllowRules(
    expectPresent(spec, 'allow', path, 'a list of { namespace, serviceAccount }'),
    [...path, 'allow'],
  )
  optionalString(spec, 'audience', path)
  const issuer = optionalString(spec, 'issuer', path)

  const modes = VERIFICATION_MODES.filter((mode) => spec[mode] !== undefined)
  if (modes.length !== 1) {
    const found = modes.length === 0 ? 'none is set' : `found ${modes.join(' and ')}`
    throw new FieldError(
      path,
      `set exactly one of jwks, discovery and tokenReview to choose how tokens are verified; ${found}`,
    )
  }
  const mode = modes[0] as (typeof VERIFICATION_MODES)[number]
  if (mode === 'tokenReview') {
    if (issuer !== undefined) {
      throw new FieldError(
        [...path, 'issuer'],
        'issuer is not used with tokenReview, because the API server checks the issuer itself; remove it',
      )
    }
    validateTokenReview(spec.tokenReview, [...path, 'tokenReview'])
    return
  }
  if (issuer === undefined) {
    throw new FieldError(
      [...path, 'issuer'],
      `missing required field: ${mode} needs the issuer URL that the cluster puts in iss`,
    )
  }
  if (mode === 'jwks') validateJwks(spec.jwks, [...path, 'jwks'])
  else validateDiscovery(spec.discovery, issuer, path)
}

function validateAllowRules(value: unknown, path: FieldPath): void {
  if (!Array.isArray(value) || value.length === 0) {
    throw new FieldError(
      path,
      `expected a non-empty list of { namespace, serviceAccount }, got ${describeValue(value)}`,
    )
  }
  value.forEach((item, index) => {
    const rulePath = [...path, index]
    const rule = expectMapping(item, rulePath)
    expectKnownFields(rule, rulePath, ['namespace', 'serviceAccount'])
    expectName(expectPresent(rule, 'namespace', rulePath, 'a namespace name'), [
      ...rulePath,
      'namespace',
    ])
    const accountPath = [...rulePath, 'serviceAccount']
    const account = expectString(
      expectPresent(rule, 'serviceAccount', rulePath, 'a service account name'),
      accountPath,
    )
    if (account.length > MAX_SUBDOMAIN_LENGTH || !DNS_SUBDOMAIN.test(account)) {
      throw new FieldError(
        accountPath,
        `invalid service account name ${JSON.stringify(account)}: use at most ` +
          `${MAX_SUBDOMAIN_LENGTH} lowercase letters, digits, '-' and '.'`,
      )
    }
  })
}

function validateJwks(value: unknown, path: FieldPath): void {
  const jwks = expectMapping(value, path)
  expectKnownFields(jwks, path, ['keys'])
  const keys = expectPresent(jwks, 'keys', path, 'the list of keys from /openid/v1/jwks')
  if (!Array.isArray(keys) || keys.length === 0) {
    throw new FieldError([...path, 'keys'], `expected a non-empty list of JSON Web Keys`)
  }
  keys.forEach((item, index) => {
    const keyPath = [...path, 'keys', index]
    const jwk = expectMapping(item, keyPath)
    expectString(expectPresent(jwk, 'kty', keyPath, 'RSA or EC'), [...keyPath, 'kty'])
    if (jwk.d !== undefined) {
      throw new FieldError(
        [...keyPath, 'd'],
        'this is a private key; copy only the public keys the API server publishes',
      )
    }
    try {
      createPublicKey({ key: jwk as never, format: 'jwk' })
    } catch (error) {
      throw new FieldError(
        keyPath,
        `invalid JSON Web Key: ${(error as Error).message}; copy the keys from /openid/v1/jwks`,
        { cause: error },
      )
    }
  })
}

function validateDiscovery(value: unknown, issuer: string, path: FieldPath): void {
  checkHttpsUrl(issuer, [...path, 'issuer'], 'issuer')
  if (value === true) return
  const discoveryPath = [...path, 'discovery']
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new FieldError(
      discoveryPath,
      `expected true or a mapping with ca or caFile, got ${describeValue(value)}`,
    )
  }
  validateTrust(value as Record<string, unknown>, discoveryPath, [])
}

function validateTokenReview(value: unknown, path: FieldPath): void {
  const review = expectMapping(value, path)
  validateTrust(review, path, ['url', 'bearerToken'])
  const url = expectString(expectPresent(review, 'url', path, 'the API server URL'), [
    ...path,
    'url',
  ])
  checkHttpsUrl(url, [...path, 'url'], 'url')
  const tokenPath = [...path, 'bearerToken']
  const token = expectString(
    // biome-ignore lint/suspicious/noTemplateCurlyInString: the text shows the reference syntax
    expectPresent(review, 'bearerToken', path, 'a ${env:NAME} or ${file:PATH} reference'),
    tokenPath,
  )
  if (!atField(tokenPath, () => hasReferences(token))) {
    throw new FieldError(
      tokenPath,
      // biome-ignore lint/suspicious/noTemplateCurlyInString: the text shows the reference syntax
      'write the token as a ${env:NAME} or ${file:PATH} reference, so the secret stays out of the Writ store',
    )
  }
}

function validateTrust(object: Record<string, unknown>, path: FieldPath, extra: string[]): void {
  expectKnownFields(object, path, [...extra, 'ca', 'caFile'])
  const ca = optionalString(object, 'ca', path)
  optionalString(object, 'caFile', path)
  if (ca !== undefined && object.caFile !== undefined) {
    throw new FieldError(path, 'set at most one of ca and caFile, not both')
  }
  if (ca !== undefined) {
    try {
      new X509Certificate(ca)
    } catch (error) {
      throw new FieldError(
        [...path, 'ca'],
        'expected PEM certificates (-----BEGIN CERTIFICATE-----)',
        {
          cause: error,
        },
      )
    }
  }
}

function checkHttpsUrl(text: string, path: FieldPath, field: string): void {
  let url: URL | undefined
  try {
    url = new URL(text)
  } catch {
    url = undefined
  }
  if (url?.protocol !== 'https:' || url.search !== '' || url.hash !== '') {
    throw new FieldError(
      path,
      `invalid ${field} ${JSON.stringify(text)}: expected an https URL without query or fragment`,
    )
  }
}

/**
 * Validates the fields of a JoinToken with `method: kubernetes` other than `bot` and `method`:
 * no secret (the service-account token is the credential), an optional expiry, and the
 * `kubernetes` block.
 */
export function validateKubernetesJoinToken(spec: Record<string, unknown>, path: FieldPath): void {
  for (const secret of ['token', 'tokenHash']) {
    if (spec[secret] !== undefined) {
      throw new FieldError(
        [...path, secret],
        `a kubernetes join token has no ${secret}, because the service account token is the credential; remove it`,
      )
    }
  }
  if (spec.expires !== undefined && spec.ttl !== undefined) {
    throw new FieldError(path, 'set at most one of expires and ttl, not both')
  }
  if (spec.expires !== undefined) expectTime(spec.expires, [...path, 'expires'])
  if (spec.ttl !== undefined) expectDuration(spec.ttl, [...path, 'ttl'])
  validateKubernetesJoinSpec(
    expectPresent(spec, 'kubernetes', path, 'a mapping with allow and a verification method'),
    [...path, 'kubernetes'],
  )
}
