import { createHash, randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { createRemoteJWKSet, type JWTVerifyGetKey } from 'jose'
import type { AuditEventInput } from '../audit/types.js'
import type { Clock } from '../clock.js'
import { WritError } from '../errors.js'
import { verifyCsr } from '../identity/csr.js'
import type { Logger } from '../log.js'
import {
  DEFAULT_OIDC_SCOPES,
  DEFAULT_USERNAME_CLAIM,
  type OidcConnectorSpec,
} from '../policy/people-specs.js'
import { parseReferences, type ReadTextFile } from '../policy/secrets.js'
import type { Store } from '../store/store.js'
import type { AuditRecorder } from './authority.js'
import type { CertificateAuthority } from './ca.js'
import { requireUnlocked } from './lock-service.js'
import {
  authorizationUrl,
  discoverProvider,
  exchangeCode,
  fetchUserInfo,
  mapClaimsToRoles,
  type OidcDiscovery,
  pkceChallenge,
  usernameFromClaims,
  validateIdToken,
} from './oidc.js'
import {
  issueUserCertificate,
  type UserCertificate,
  userCaller,
  userCertificateTtl,
} from './user-certificates.js'

/** How long a started single sign-on login may take until the callback: 10 minutes. */
export const SSO_FLOW_TTL_MS = 10 * 60_000

/** How long a provider's discovery document is reused before it is fetched again: 5 minutes. */
const DISCOVERY_CACHE_MS = 5 * 60_000

/** A PKCE S256 challenge: base64url of a SHA-256 digest, 43 characters. */
const CODE_CHALLENGE = /^[A-Za-z0-9_-]{43}$/
/** A PKCE code verifier (RFC 7636 section 4.1). */
const CODE_VERIFIER = /^[A-Za-z0-9._~-]{43,128}$/
const CALLBACK_PATH = '/callback'

export interface SsoServiceOptions {
  ca: CertificateAuthority
  store: Store
  audit: AuditRecorder
  clock: Clock
  logger: Logger
  /** The variables `${env:NAME}` client secrets are read from; the process environment by default. */
  env?: NodeJS.ProcessEnv
  readFile?: ReadTextFile
}

export interface SsoStartRequest {
  connector: string
  /** The CLI's loopback callback, `http://127.0.0.1:PORT/callback` or `http://[::1]:PORT/callback`. */
  redirectUri: string
  /** The PKCE S256 challenge; the CLI keeps the verifier until the callback. */
  codeChallenge: string
}

export interface SsoStartResult {
  authorizationUrl: string
  state: string
  expires: Date
}

/** The callback parameters the CLI relays, with the PKCE verifier and the CSR to certify. */
export interface SsoFinishRequest {
  state: string
  code: string
  /** The `iss` parameter of the authorization response (RFC 9207), when the provider sends it. */
  iss?: string
  codeVerifier: string
  csrPem: string
}

/** Single sign-on through OidcConnector manifests. */
export interface SsoService {
  /** Returns what the CLI needs before it listens for the callback. */
  describeConnector(name: string): Promise<{ name: string; redirectPort?: number }>
  start(request: SsoStartRequest, peer: string): Promise<SsoStartResult>
  finish(request: SsoFinishRequest, peer: string): Promise<UserCertificate>
}

interface ProviderEntry {
  discovery: OidcDiscovery
  keys: JWTVerifyGetKey
  loadedAt: number
}

/**
 * Creates the single sign-on service. `start` records a flow keyed by the SHA-256 of a random
 * `state` and returns the provider's authorization URL. `finish` accepts each state once, checks
 * the PKCE verifier, the `iss` parameter, the code exchange and the ID token (issuer, audience,
 * nonce, signature), maps claims to roles and issues the person's certificate.
 *
 * @example
 *   const sso = createSsoService({ ca, store, audit, clock, logger })
 *   const { authorizationUrl } = await sso.start({ connector, redirectUri, codeChallenge }, peer)
 */
export function createSsoService(options: SsoServiceOptions): SsoService {
  const { ca, store, audit, clock, logger } = options
  const env = options.env ?? process.env
  const readFile = options.readFile ?? readFileSync
  const providers = new Map<string, ProviderEntry>()

  async function describeConnector(name: string) {
    const { spec } = await readConnector(name)
    return spec.redirectPort === undefined ? { name } : { name, redirectPort: spec.redirectPort }
  }

  // NOTE: starting a login needs no credential and stores a flow row until a day after it
  // expires, and nothing limits how often one address may start.
  async function start(request: SsoStartRequest, peer: string): Promise<SsoStartResult> {
    const { spec } = await readConnector(request.connector)
    checkRedirectUri(request.redirectUri, spec.redirectPort)
    if (!CODE_CHALLENGE.test(request.codeChallenge)) {
      throw new WritError(
        'request.invalid',
        'codeChallenge must be a PKCE S256 challenge: 43 base64url characters',
        { field: 'codeChallenge' },
      )
    }

    const provider = await loadProvider(spec.issuer)
    const state = randomBytes(32).toString('base64url')
    const nonce = randomBytes(32).toString('base64url')
    const now = clock()
    const expiresAt = now + SSO_FLOW_TTL_MS
    await store.putSsoFlow(
      {
        stateHash: sha256(state),
        connector: request.connector,
        nonce,
        redirectUri: request.redirectUri,
        codeChallenge: request.codeChallenge,
        expiresAt,
      },
      now,
    )
    logger.info({ connector: request.connector, peer }, 'single sign-on started')

    const url = authorizationUrl(provider.discovery, {
      clientId: spec.clientId,
      redirectUri: request.redirectUri,
      scopes: spec.scopes ?? DEFAULT_OIDC_SCOPES,
      state,
      nonce,
      codeChallenge: request.codeChallenge,
    })
    return { authorizationUrl: url, state, expires: new Date(expiresAt) }
  }

  async function finish(request: SsoFinishRequest, peer: string): Promise<UserCertificate> {
    const event: AuditEventInput = {
      type: 'login',
      outcome: 'denied',
      peer,
      details: { method: 'sso' },
    }
    try {
      // The state is used up first, so a replayed callback fails here whatever else it carries.
      const consumed = await store.consumeSsoFlow(sha256(request.state), clock())
      if (!consumed.ok) {
        event.reason = consumed.reason
        throw new WritError(
          'sso.state_invalid',
          'the login state is unknown, expired or already used; run writ login --sso again',
        )
      }
      const flow = consumed.flow
      event.details = { ...event.details, connector: flow.connector }
      if (!CODE_VERIFIER.test(request.codeVerifier)) {
        throw new WritError('request.invalid', 'codeVerifier is not a valid PKCE code verifier', {
          field: 'codeVerifier',
        })
      }
      if (pkceChallenge(request.codeVerifier) !== flow.codeChallenge) {
        throw new WritError(
          'sso.pkce_mismatch',
          'the PKCE code verifier does not match the challenge this login started with',
        )
      }
      const csr = verifyCsr(request.csrPem)
      const { spec } = await readConnector(flow.connector)
      const provider = await loadProvider(spec.issuer)
      checkResponseIssuer(request.iss, spec.issuer, provider.discovery)
      const tokens = await exchangeCode(provider.discovery, {
        clientId: spec.clientId,
        clientSecret: resolveClientSecret(spec.clientSecret, flow.connector),
        code: request.code,
        redirectUri: flow.redirectUri,
        codeVerifier: request.codeVerifier,
      })
      const idClaims = await validateIdToken(tokens.idToken, {
        issuer: spec.issuer,
        clientId: spec.clientId,
        nonce: flow.nonce,
        keys: provider.keys,
        now: clock(),
      })
      const subject = idClaims.sub as string
      event.details = { ...event.details, subject }
      const userInfo = tokens.accessToken
        ? await fetchUserInfo(provider.discovery, tokens.accessToken, subject)
        : {}
      // Signed ID token claims win over UserInfo claims of the same name.
      const claims = { ...userInfo, ...idClaims }
      const certificate = await certify(flow.connector, spec, claims, csr, event)
      const caller = userCaller(certificate)
      await Promise.all([
        audit.record({ ...event, outcome: 'success', caller }),
        audit.record({
          type: 'certificate.issue',
          outcome: 'success',
          caller,
          peer,
          details: {
            serial: certificate.serial,
            notAfter: certificate.notAfter.toISOString(),
            roles: certificate.claims.roles,
          },
        }),
      ])
      logger.info(
        { spiffe_id: certificate.spiffeId, connector: flow.connector, peer },
        'user logged in by single sign-on',
      )
      return certificate
    } catch (error) {
      throw await recordRejection(error, event)
    }
  }

  async function certify(
    connector: string,
    spec: OidcConnectorSpec,
    claims: Record<string, unknown>,
    csr: ReturnType<typeof verifyCsr>,
    event: AuditEventInput,
  ): Promise<UserCertificate> {
    const user = usernameFromClaims(claims, spec.usernameClaim ?? DEFAULT_USERNAME_CLAIM)
    event.details = { ...event.details, user }
    if (await store.getResource('User', user)) {
      // A local user's name would otherwise give the provider's account that user's identity.
      throw new WritError(
        'sso.username_conflict',
        `the single sign-on user "${user}" has the name of a local Writ user; ask an administrator to rename one of them`,
        { user },
      )
    }
    const roles = mapClaimsToRoles(claims, spec.roleMappings)
    if (roles.length === 0) {
      throw new WritError(
        'sso.no_roles',
        `no roleMappings of connector "${connector}" match the claims of "${user}"; ask an administrator to map one of your groups to a role`,
        { user, connector },
      )
    }
    await requireUnlocked(store, { user, roles }, clock(), 'sso', 'login refused')
    const ttlSeconds = await userCertificateTtl(store, 'sso', user, roles)
    return issueUserCertificate(ca, store, { name: user, roles, traits: {}, ttlSeconds }, csr)
  }

  async function readConnector(name: string): Promise<{ spec: OidcConnectorSpec }> {
    const resource =
      typeof name === 'string' && name !== ''
        ? await store.getResource('OidcConnector', name)
        : undefined
    if (!resource) {
      throw new WritError(
        'sso.connector_not_found',
        `single sign-on connector "${String(name).slice(0, 80)}" does not exist; check the name with your administrator`,
        { connector: name },
      )
    }
    return { spec: resource.spec as unknown as OidcConnectorSpec }
  }

  async function loadProvider(issuer: string): Promise<ProviderEntry> {
    const cached = providers.get(issuer)
    if (cached && clock() - cached.loadedAt < DISCOVERY_CACHE_MS) return cached
    const discovery = await discoverProvider(issuer)
    const entry = {
      discovery,
      keys:
        cached?.discovery.jwks_uri === discovery.jwks_uri
          ? cached.keys
          : createRemoteJWKSet(new URL(discovery.jwks_uri)),
      loadedAt: clock(),
    }
    providers.set(issuer, entry)
    return entry
  }

  function resolveClientSecret(reference: string, connector: string): string {
    const [part] = parseReferences(reference)
    if (part && 'scheme' in part) {
      if (part.scheme === 'env') {
        const value = env[part.target]
        if (value !== undefined && value !== '') return value
      } else {
        try {
          return readFile(part.target, 'utf8').replace(/\r?\n$/, '')
        } catch {
          // Reported below without the file's error, which could quote its content.
        }
      }
    }
    throw new WritError(
      'sso.secret_unresolved',
      `the clientSecret ${reference} of connector "${connector}" cannot be resolved in the Writ server; set the variable or create the file`,
      { connector, reference },
    )
  }

  async function recordRejection(error: unknown, event: AuditEventInput): Promise<unknown> {
    if (!(error instanceof WritError)) return error
    const reason = event.reason ?? auditReason(error.code)
    const recorded = await audit.record({ ...event, reason })
    logger.info(
      { code: error.code, reason, peer: event.peer, audit_id: recorded.id },
      'single sign-on rejected',
    )
    return new WritError(
      error.code,
      error.message,
      { ...error.fields, auditId: recorded.id },
      { cause: error },
    )
  }

  return { describeConnector, start, finish }
}

/**
 * Accepts only a loopback callback on `/callback` (RFC 8252 section 7.3), on the connector's
 * fixed port when it sets one.
 */
function checkRedirectUri(redirectUri: string, fixedPort: number | undefined): void {
  let url: URL | undefined
  try {
    url = new URL(redirectUri)
  } catch {
    url = undefined
  }
  const valid =
    url !== undefined &&
    url.protocol === 'http:' &&
    (url.hostname === '127.0.0.1' || url.hostname === '[::1]') &&
    url.port !== '' &&
    url.pathname === CALLBACK_PATH &&
    url.search === '' &&
    url.hash === ''
  if (!valid) {
    throw new WritError(
      'sso.redirect_uri_invalid',
      `invalid redirectUri ${JSON.stringify(redirectUri.slice(0, 200))}: use http://127.0.0.1:PORT${CALLBACK_PATH}`,
      { field: 'redirectUri' },
    )
  }
  if (fixedPort !== undefined && Number(url?.port) !== fixedPort) {
    throw new WritError(
      'sso.redirect_uri_invalid',
      `this connector needs the callback on port ${fixedPort}, not ${url?.port}`,
      { field: 'redirectUri', redirectPort: fixedPort },
    )
  }
}

/**
 * Checks the `iss` parameter of the authorization response (RFC 9207). It is required when the
 * provider advertises it, so a response from another provider cannot be slipped in.
 */
function checkResponseIssuer(iss: string | undefined, issuer: string, discovery: OidcDiscovery) {
  if (iss === undefined) {
    if (!discovery.authorization_response_iss_parameter_supported) return
    throw new WritError(
      'sso.issuer_mismatch',
      `the authorization response has no iss parameter, but ${issuer} sends one`,
      { issuer },
    )
  }
  if (iss !== issuer) {
    throw new WritError(
      'sso.issuer_mismatch',
      `the authorization response comes from issuer ${JSON.stringify(iss.slice(0, 200))}, not the configured ${JSON.stringify(issuer)}`,
      { issuer, presented: iss.slice(0, 200) },
    )
  }
}

/** Converts an error code to an audit reason: `sso.no_roles` to `no_roles`. */
function auditReason(code: string): string {
  const [area, rest] = code.split('.', 2) as [string, string | undefined]
  if (rest === undefined) return area
  return area === 'sso' ? rest : `${area}_${rest}`
}

function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex')
}
