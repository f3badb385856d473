import { createHash, randomUUID } from 'node:crypto'
import { taskCallerFields } from '../audit/task-caller.js'
import type { AuditCaller, AuditEventInput } from '../audit/types.js'
import type { Clock } from '../clock.js'
import { WritError } from '../errors.js'
import { type VerifiedCsr, verifyCsr } from '../identity/csr.js'
import { SpiffeId } from '../identity/spiffe-id.js'
import type { PeerIdentity, WritClaims } from '../identity/types.js'
import {
  createKubernetesJoin,
  type KubernetesJoin,
  kubernetesRejectionDetails,
} from '../kube/kubernetes-join.js'
import { parseDuration } from '../lib/duration.js'
import type { Logger } from '../log.js'
import type { Resource } from '../policy/resource.js'
import type { Store } from '../store/store.js'
import type { CertificateAuthority, IssuedCertificate } from './ca.js'
import { type RenewalSource, recordRenewalOrLock } from './generation.js'
import { requireUnlocked } from './lock-service.js'
import { subjectOf } from './locks.js'

/**
 * The longest bot certificate issued, whatever the Bot manifest and roles say: 24 hours. Bot
 * certificates are meant to be renewed, and a lock stops a certificate only at Writ itself:
 * a service that trusts the CA directly accepts it until it expires.
 */
export const MAX_BOT_TTL_SECONDS = 24 * 3600

/** The lifetime of a bot certificate when the Bot manifest sets no `spec.ttl`: one hour. */
export const DEFAULT_BOT_TTL_SECONDS = 3600

const TOKEN_HINT = 'create a new one with writ bots add'

/** Messages for each token rejection. None names the token or says whether other tokens exist. */
const TOKEN_MESSAGES = {
  token_unknown: `join token is not known to this Writ server; check the token or ${TOKEN_HINT}`,
  token_used: `join token has already been used; ${TOKEN_HINT}`,
  token_expired: `join token has expired; ${TOKEN_HINT}`,
} as const

/** The part of the audit writer the authority uses. */
export interface AuditRecorder {
  record(event: AuditEventInput): Promise<{ id: string; seq: number }>
}

export interface AuthorityOptions {
  ca: CertificateAuthority
  store: Store
  audit: AuditRecorder
  clock: Clock
  logger: Logger
  trustDomain: string
  /** Verifies `method: kubernetes` joins; one is created from the other options when unset. */
  kubernetes?: KubernetesJoin
}

/** An issued X.509-SVID as the join and renew routes return it. */
export interface JoinResult {
  /** The leaf certificate PEM. */
  certificate: string
  /** The CA certificates peers trust, as PEM. */
  bundle: string
  spiffeId: string
  notAfter: Date
}

export interface JoinRequest {
  /**
   * `token` (the default) joins with a one-time secret. `kubernetes` joins with a service-account
   * token, and `token` is then the name of a JoinToken with `method: kubernetes`.
   */
  method?: 'token' | 'kubernetes'
  /** The one-time join token as the operator received it; only its SHA-256 is looked up. */
  token: string
  /** The projected service-account token (a JWT), with `method: kubernetes` only. */
  serviceAccountToken?: string
  csrPem: string
}

/** Issues bot certificates: the first one against a join token, later ones by renewal. */
export interface Authority {
  join(request: JoinRequest, peer: string): Promise<JoinResult>
  renew(identity: PeerIdentity, csrPem: string, peer: string): Promise<JoinResult>
}

/** The roles and lifetime a bot's next certificate gets, read from its manifests now. */
interface BotGrant {
  name: string
  roles: string[]
  ttlSeconds: number
}

/**
 * Creates the authority service. Every decision is written to the audit log. A rejection throws
 * a WritError whose code the routes map to an HTTP status and whose fields carry `auditId`.
 *
 * @example
 *   const authority = createAuthority({ ca, store, audit, clock, logger, trustDomain })
 *   const issued = await authority.join({ token, csrPem }, '127.0.0.1:53122')
 */
export function createAuthority(options: AuthorityOptions): Authority {
  const { ca, store, audit, clock, logger } = options
  const trustDomain = SpiffeId.parse(`spiffe://${options.trustDomain}`).trustDomain
  const kubernetes =
    options.kubernetes ??
    createKubernetesJoin({ store, clock, logger, defaultAudience: trustDomain })

  /** Checks the join credential and returns the JoinToken it used, plus audit details. */
  async function admit(
    request: JoinRequest,
  ): Promise<{ token: Resource; details: Record<string, unknown> }> {
    if (request.method !== 'kubernetes') {
      return { token: await consumeToken(store, request.token, clock()), details: {} }
    }
    return kubernetes.admit(request.token, request.serviceAccountToken ?? '')
  }

  async function join(request: JoinRequest, peer: string): Promise<JoinResult> {
    let tokenName: string | undefined
    try {
      const csr = verifyCsr(request.csrPem)
      const { token, details: admission } = await admit(request)
      tokenName = token.metadata.name
      const grant = await readBotGrant(store, 'join', botNameOf(token))
      // The token is already used up, so a locked token cannot be tried again after an unlock.
      const subject = { token: tokenName, bot: grant.name, roles: grant.roles }
      await requireUnlocked(store, subject, clock(), 'join', 'join refused')
      const spiffeId = SpiffeId.fromParts(trustDomain, ['bot', grant.name])
      const claims: WritClaims = {
        version: 1,
        kind: 'bot',
        roles: grant.roles,
        traits: {},
        depth: 0,
        botInstance: randomUUID(),
        generation: 1,
        accessRequests: [],
      }
      const issued = await issue(spiffeId, grant, csr, claims)
      const caller = callerFor(spiffeId.toString(), claims, issued.serial)
      const details = {
        token: tokenName,
        bot: grant.name,
        botInstance: claims.botInstance,
        ...admission,
      }
      // Recorded together so the audit writer commits both events in one transaction.
      await Promise.all([
        audit.record({ type: 'join', outcome: 'success', caller, peer, details }),
        audit.record({
          type: 'certificate.issue',
          outcome: 'success',
          caller,
          peer,
          details: issueDetails(issued, claims),
        }),
      ])
      logger.info(
        { spiffe_id: spiffeId.toString(), serial: issued.serial, token: tokenName, peer },
        'bot joined',
      )
      return resultOf(issued, spiffeId, ca.bundlePem)
    } catch (error) {
      // A rejected token is named in the error's fields, because it was never returned.
      const named = tokenName ?? (error instanceof WritError ? error.fields.token : undefined)
      const details: Record<string, unknown> = typeof named === 'string' ? { token: named } : {}
      if (request.method === 'kubernetes') Object.assign(details, kubernetesRejectionDetails(error))
      throw await recordRejection(error, { type: 'join', outcome: 'denied', peer, details })
    }
  }

  async function renew(identity: PeerIdentity, csrPem: string, peer: string): Promise<JoinResult> {
    const caller = callerFor(identity.spiffeId, identity.claims, identity.serial)
    try {
      const botName = renewableBotName(identity, trustDomain)
      await requireUnlocked(store, subjectOf(identity), clock(), 'renew', 'renewal refused')
      const csr = verifyCsr(csrPem)
      checkRequestedId(csr, identity.spiffeId)
      const grant = await readBotGrant(store, 'renew', botName)
      const spiffeId = SpiffeId.parse(identity.spiffeId)
      const claims: WritClaims = {
        version: 1,
        kind: 'bot',
        roles: grant.roles,
        traits: {},
        depth: 0,
        generation: identity.claims.generation + 1,
        accessRequests: [],
      }
      if (identity.claims.botInstance !== undefined) {
        claims.botInstance = identity.claims.botInstance
      }
      const source = { presentedGeneration: identity.claims.generation, caller, peer }
      const issued = await issue(spiffeId, grant, csr, claims, source)
      await audit.record({
        type: 'certificate.renew',
        outcome: 'success',
        caller,
        peer,
        details: { ...issueDetails(issued, claims), previousSerial: identity.serial },
      })
      logger.info(
        { spiffe_id: identity.spiffeId, serial: issued.serial, previous: identity.serial, peer },
        'bot certificate renewed',
      )
      return resultOf(issued, spiffeId, ca.bundlePem)
    } catch (error) {
      throw await recordRejection(error, {
        type: 'certificate.renew',
        outcome: 'denied',
        caller,
        peer,
      })
    }
  }

  async function issue(
    spiffeId: SpiffeId,
    grant: BotGrant,
    csr: VerifiedCsr,
    claims: WritClaims,
    renewal?: RenewalSource,
  ): Promise<IssuedCertificate> {
    const issued = await ca.issue({
      csr,
      spiffeId,
      commonName: grant.name,
      ttlSeconds: grant.ttlSeconds,
      claims,
    })
    const record = {
      serial: issued.serial,
      spiffeId: spiffeId.toString(),
      kind: claims.kind,
      notBefore: issued.notBefore.getTime(),
      notAfter: issued.notAfter.getTime(),
      generation: claims.generation,
      ...(claims.botInstance === undefined ? {} : { botInstance: claims.botInstance }),
    }
    if (renewal !== undefined && claims.botInstance !== undefined) {
      // A stale generation throws before the certificate is returned, so it is never used.
      const renewed = { ...record, botInstance: claims.botInstance }
      await recordRenewalOrLock({ store, audit, clock }, renewed, renewal)
    } else {
      await store.recordCertificate(record)
    }
    return issued
  }

  /**
   * Audits a rejection and returns the error to throw, carrying the audit id. Failures that are
   * not WritErrors are server faults, returned unchanged for the routes to log.
   */
  async function recordRejection(error: unknown, event: AuditEventInput): Promise<unknown> {
    if (!(error instanceof WritError)) return error
    // A refusal by a lock names it, so the audit log links the refusal to the lock.
    const lockId = error.fields.lockId
    const details = typeof lockId === 'string' ? { ...event.details, lockId } : event.details
    const recorded = await audit.record({
      ...event,
      reason: auditReason(error.code),
      ...(details === undefined ? {} : { details }),
    })
    logger.info(
      { code: error.code, reason: error.message, peer: event.peer, audit_id: recorded.id },
      `${event.type} rejected`,
    )
    return new WritError(
      error.code,
      error.message,
      { ...error.fields, auditId: recorded.id },
      { cause: error },
    )
  }

  return { join, renew }
}

async function consumeToken(store: Store, token: string, now: number): Promise<Resource> {
  if (typeof token !== 'string' || token === '') {
    throw new WritError('join.token_unknown', TOKEN_MESSAGES.token_unknown)
  }
  const hash = createHash('sha256').update(token).digest('hex')
  const result = await store.consumeJoinToken(hash, now)
  if (result.ok) return result.token
  const fields = result.token ? { token: result.token.metadata.name } : {}
  throw new WritError(`join.${result.reason}`, TOKEN_MESSAGES[result.reason], fields)
}

function botNameOf(token: Resource): string {
  const bot = token.spec.bot
  if (typeof bot !== 'string' || bot === '') {
    throw new WritError(
      'join.bot_not_found',
      `join token ${token.metadata.name} names no bot; ${TOKEN_HINT}`,
      { token: token.metadata.name },
    )
  }
  return bot
}

/**
 * Reads the Bot manifest and its roles as they are now and computes the certificate lifetime:
 * the bot's `spec.ttl` (one hour by default) capped by the smallest `maxTtl` of its roles.
 */
async function readBotGrant(store: Store, area: 'join' | 'renew', name: string): Promise<BotGrant> {
  const bot = await store.getResource('Bot', name)
  if (!bot) {
    throw new WritError(
      `${area}.bot_not_found`,
      `bot "${name}" does not exist; add it again with writ bots add`,
      { bot: name },
    )
  }
  const roles = bot.spec.roles
  if (!Array.isArray(roles) || !roles.every((role) => typeof role === 'string')) {
    throw new TypeError(`Bot "${name}" spec.roles is not a list of strings`)
  }
  const botTtl = bot.spec.ttl
  let ttlSeconds =
    typeof botTtl === 'string'
      ? parseDuration(botTtl, `ttl of bot "${name}"`)
      : DEFAULT_BOT_TTL_SECONDS
  for (const roleName of roles) {
    const role = await store.getResource('Role', roleName)
    if (!role) {
      // An unknown role could be created later with a shorter maxTtl than this certificate.
      throw new WritError(
        `${area}.role_not_found`,
        `role "${roleName}" of bot "${name}" does not exist; create the role or remove it from the bot`,
        { bot: name, role: roleName },
      )
    }
    const maxTtl = role.spec.maxTtl
    if (typeof maxTtl === 'string') {
      ttlSeconds = Math.min(ttlSeconds, parseDuration(maxTtl, `maxTtl of role "${roleName}"`))
    }
  }
  return { name, roles: [...roles], ttlSeconds: Math.min(ttlSeconds, MAX_BOT_TTL_SECONDS) }
}

/**
 * Returns the bot name of an identity allowed to renew, which must be a bot's own certificate.
 * Task and delegated certificates are bound to their parent's lifetime and are never renewed.
 */
function renewableBotName(identity: PeerIdentity, trustDomain: string): string {
  const forbidden = (why: string) =>
    new WritError('renew.forbidden', `${identity.spiffeId} cannot renew here: ${why}`, {
      spiffeId: identity.spiffeId,
      kind: identity.claims.kind,
    })
  if (identity.claims.kind !== 'bot') {
    throw forbidden(`it is a ${identity.claims.kind} certificate and only bots renew`)
  }
  if (identity.claims.task !== undefined || identity.claims.depth !== 0) {
    throw forbidden('task and delegated certificates are not renewed; request a new one')
  }
  const parsed = SpiffeId.tryParse(identity.spiffeId)
  const segments = parsed.ok ? parsed.id.segments : []
  if (
    !parsed.ok ||
    !parsed.id.memberOf(trustDomain) ||
    segments.length !== 2 ||
    segments[0] !== 'bot'
  ) {
    throw forbidden(`the ID is not spiffe://${trustDomain}/bot/<name>`)
  }
  return segments[1] as string
}

/** Checks that a renewal CSR requests the caller's own SPIFFE ID or no URI SAN at all. */
function checkRequestedId(csr: VerifiedCsr, spiffeId: string): void {
  if (csr.uriSans.length === 0) return
  if (csr.uriSans.length > 1 || csr.uriSans[0] !== spiffeId) {
    const requested = csr.uriSans.join(', ')
    throw new WritError(
      'csr.invalid',
      `the CSR requests ${requested}, but the caller is ${spiffeId}; request the caller's own ID or none`,
      { requested: csr.uriSans, spiffeId },
    )
  }
}

function callerFor(spiffeId: string, claims: WritClaims, serial: string): AuditCaller {
  const caller: AuditCaller = { spiffeId, kind: claims.kind, roles: claims.roles, serial }
  if (claims.task) caller.task = claims.task.id
  Object.assign(caller, taskCallerFields(spiffeId, claims))
  return caller
}

function issueDetails(issued: IssuedCertificate, claims: WritClaims): Record<string, unknown> {
  return {
    serial: issued.serial,
    notAfter: issued.notAfter.toISOString(),
    roles: claims.roles,
    botInstance: claims.botInstance,
    generation: claims.generation,
  }
}

/** Converts an error code to an audit reason: `join.token_used` to `token_used`, `csr.invalid` to `csr_invalid`. */
function auditReason(code: string): string {
  const [area, rest] = code.split('.', 2) as [string, string | undefined]
  if (rest === undefined) return area
  return area === 'join' || area === 'renew' ? rest : `${area}_${rest}`
}

function resultOf(issued: IssuedCertificate, spiffeId: SpiffeId, bundle: string): JoinResult {
  return {
    certificate: issued.certPem,
    bundle,
    spiffeId: spiffeId.toString(),
    notAfter: issued.notAfter,
  }
}
