/**
 * The authority side of `method: kubernetes` joins: finds the JoinToken the agent names, verifies
 * the service-account token it presents (against a static or discovered JWKS, or by TokenReview)
 * and checks the workload against the token's allow rules. Unlike a one-time token, a Kubernetes
 * JoinToken is not consumed, because the service-account token is the credential.
 */
import type { Clock } from '../clock.js'
import { WritError } from '../errors.js'
import type { Logger } from '../log.js'
import type { Resource } from '../policy/resource.js'
import type { Store } from '../store/store.js'
import {
  type ClaimCheck,
  checkAllowed,
  checkReviewStatus,
  checkTokenClaims,
  type KubernetesRejection,
  type KubernetesWorkload,
} from './claims.js'
import { ClusterRequestError } from './cluster-http.js'
import type { KubernetesJoinSpec } from './join-spec.js'
import { DiscoveredKeySets, SignatureError, verifyWithKeySet } from './signing-keys.js'
import { ReviewerTokenError, reviewToken } from './token-review.js'

/** 16 KiB: far above a projected token (about 1 KiB), so longer input is rejected unparsed. */
const MAX_SERVICE_ACCOUNT_TOKEN_LENGTH = 16 * 1024

const JOIN_TOKEN_NAME = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/

export interface KubernetesJoinOptions {
  store: Pick<Store, 'getResource'>
  clock: Clock
  logger: Logger
  /** The audience tokens must carry when the JoinToken sets none: the Writ trust domain. */
  defaultAudience: string
  /** Environment for `${env:NAME}` in `tokenReview.bearerToken`; `process.env` by default. */
  env?: NodeJS.ProcessEnv
}

/** A join the checks admitted: the JoinToken, the workload, and fields for the audit record. */
export interface KubernetesAdmission {
  token: Resource
  workload: KubernetesWorkload
  details: Record<string, unknown>
}

export interface KubernetesJoin {
  /**
   * Admits a join with the JoinToken named `tokenName` and a service-account token. Throws
   * `join.kubernetes_invalid` (fields `token`, `reason`) when the token or workload is rejected,
   * and `join.kubernetes_unavailable` when the cluster cannot be asked.
   */
  admit(tokenName: string, serviceAccountToken: string): Promise<KubernetesAdmission>
}

/**
 * Creates the verifier for Kubernetes joins. It keeps the key sets found by OIDC discovery in
 * memory for all JoinTokens that name the same issuer.
 *
 * @example
 *   const kubernetes = createKubernetesJoin({ store, clock, logger, defaultAudience: 'writ.local' })
 *   const { token, workload } = await kubernetes.admit('cluster-a', serviceAccountToken)
 */
export function createKubernetesJoin(options: KubernetesJoinOptions): KubernetesJoin {
  const { store, clock, logger } = options
  const discovered = new DiscoveredKeySets(clock)

  async function admit(tokenName: string, serviceAccountToken: string) {
    const token = await findJoinToken(store, tokenName, clock())
    const name = token.metadata.name
    const spec = token.spec.kubernetes as KubernetesJoinSpec
    const audience = spec.audience ?? options.defaultAudience
    if (
      serviceAccountToken.length > MAX_SERVICE_ACCOUNT_TOKEN_LENGTH ||
      !COMPACT_JWS.test(serviceAccountToken)
    ) {
      throw invalid(name, 'token_malformed', 'the service account token is not a compact JWT')
    }
    let check: ClaimCheck
    try {
      check = await verify(spec, serviceAccountToken, audience)
    } catch (error) {
      throw unavailableOrRethrow(error, name, logger)
    }
    if (!check.ok) throw invalid(name, check.reason, check.message)
    const allowed = checkAllowed(check.workload, spec.allow)
    if (!allowed.ok) throw invalid(name, allowed.reason, allowed.message)
    const workload = allowed.workload
    return { token, workload, details: admissionDetails(workload) }
  }

  async function verify(
    spec: KubernetesJoinSpec,
    jwt: string,
    audience: string,
  ): Promise<ClaimCheck> {
    if (spec.tokenReview) {
      const status = await reviewToken(spec.tokenReview, jwt, audience, options.env)
      return checkReviewStatus(status, audience)
    }
    const issuer = spec.issuer as string
    let payload: Uint8Array
    try {
      payload = spec.jwks
        ? await verifyWithKeySet(jwt, spec.jwks)
        : await discovered.verify(
            jwt,
            issuer,
            spec.discovery === true ? {} : (spec.discovery ?? {}),
          )
    } catch (error) {
      if (!(error instanceof SignatureError)) throw error
      const reason: KubernetesRejection =
        error.failure === 'malformed' ? 'token_malformed' : 'signature_invalid'
      return { ok: false, reason, message: error.message }
    }
    const now = Math.floor(clock() / 1000)
    return checkTokenClaims(parsePayload(payload), { issuer, audience, now })
  }

  return { admit }
}

/** The audit details of an admitted workload, plus the method. */
function admissionDetails(workload: KubernetesWorkload): Record<string, unknown> {
  const details: Record<string, unknown> = {
    method: 'kubernetes',
    namespace: workload.namespace,
    serviceAccount: workload.serviceAccount,
  }
  if (workload.pod !== undefined) details.pod = workload.pod
  if (workload.podUid !== undefined) details.podUid = workload.podUid
  return details
}

/**
 * Returns the audit details of a rejected Kubernetes join: the method and, when the token or
 * workload was rejected, the reason such as `audience_mismatch`.
 */
export function kubernetesRejectionDetails(error: unknown): Record<string, unknown> {
  const reason = error instanceof WritError ? error.fields.reason : undefined
  return typeof reason === 'string'
    ? { method: 'kubernetes', check: reason }
    : { method: 'kubernetes' }
}

async function findJoinToken(
  store: Pick<Store, 'getResource'>,
  tokenName: string,
  now: number,
): Promise<Resource> {
  if (!JOIN_TOKEN_NAME.test(tokenName)) {
    throw invalid(undefined, 'token_unknown', 'the join token name is not a valid resource name')
  }
  const token = await store.getResource('JoinToken', tokenName)
  if (token?.spec.method !== 'kubernetes') {
    throw invalid(
      tokenName,
      'token_unknown',
      `join token "${tokenName}" does not exist or does not use method kubernetes; ` +
        'apply a JoinToken with method: kubernetes',
    )
  }
  const expires = token.spec.expires
  if (expires !== undefined && !(now < Date.parse(String(expires)))) {
    throw invalid(tokenName, 'token_expired', `join token "${tokenName}" expired at ${expires}`)
  }
  return token
}

function parsePayload(payload: Uint8Array): unknown {
  try {
    return JSON.parse(new TextDecoder().decode(payload)) as unknown
  } catch {
    return undefined
  }
}

function invalid(
  tokenName: string | undefined,
  reason: KubernetesRejection,
  detail: string,
): WritError {
  const prefix =
    tokenName === undefined
      ? 'Kubernetes join rejected'
      : `Kubernetes join with token "${tokenName}" rejected`
  return new WritError(
    'join.kubernetes_invalid',
    `${prefix} (${reason}): ${detail}`,
    tokenName === undefined ? { reason } : { token: tokenName, reason },
  )
}

/** Turns a failure to reach the cluster into `join.kubernetes_unavailable`; rethrows the rest. */
function unavailableOrRethrow(error: unknown, tokenName: string, logger: Logger): unknown {
  if (!(error instanceof ClusterRequestError) && !(error instanceof ReviewerTokenError)) {
    return error
  }
  // The cause names cluster URLs and files, so it goes to the log and not to the agent.
  logger.warn({ token: tokenName, error }, 'kubernetes join verification failed')
  return new WritError(
    'join.kubernetes_unavailable',
    `join token "${tokenName}" cannot verify service account tokens now; the Writ server log has the cause`,
    { token: tokenName },
    { cause: error },
  )
}
