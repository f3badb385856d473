import { randomUUID } from 'node:crypto'
import type { AuditCaller, AuditEventInput } from '../audit/types.js'
import type { Clock } from '../clock.js'
import { WritError } from '../errors.js'
import { type VerifiedCsr, verifyCsr } from '../identity/csr.js'
import type { PeerIdentity, WritClaims } from '../identity/types.js'
import { formatDuration, parseDuration } from '../lib/duration.js'
import type { Logger } from '../log.js'
import { checkRequest, checkReview, principalOf, type RoleIndex } from '../policy/access-rules.js'
import type { RoleSpec } from '../policy/specs.js'
import type { AccessRequestRecord, Store } from '../store/store.js'
import { type AuditRecorder, DEFAULT_BOT_TTL_SECONDS, type JoinResult } from './authority.js'
import type { CertificateAuthority } from './ca.js'
import { DEFAULT_USER_TTL_SECONDS } from './user-certificates.js'

/** A pending request that nobody approves or denies within this time expires: 24 hours. */
export const PENDING_REQUEST_LIFETIME_MS = 24 * 3_600_000

/** How many of the newest requests `list` reads before filtering them for the caller. */
export const LIST_LIMIT = 500

/** The maximum length of a request or review reason, in characters. */
export const MAX_REASON_LENGTH = 1024

/** The lifetime that caps an assumed certificate for other principal kinds: 1 hour. */
const OTHER_TTL_SECONDS = 3600

/** Letters, digits and dashes: request ids are UUIDs, and anything else is never stored. */
const REQUEST_ID = /^[A-Za-z0-9-]{1,64}$/

/** C0 and C1 control characters, which could rewrite a reviewer's terminal in `writ request ls`. */
const CONTROL_CHARACTERS = /[\u0000-\u001f\u007f-\u009f]/

/** `expired` is derived: a pending request past its lifetime or an approved grant past its end. */
export type AccessRequestStatus = 'pending' | 'approved' | 'denied' | 'expired'

/** An access request as the API returns it, with times as ISO 8601 strings. */
export interface AccessRequestView {
  id: string
  requester: string
  roles: string[]
  reason: string
  /** How long the grant lasts once approved, such as `1h`. */
  ttl: string
  status: AccessRequestStatus
  created: string
  reviewer?: string
  reviewReason?: string
  decided?: string
  expires?: string
  /** Whether the caller may approve or deny the request now. */
  reviewable: boolean
}

/** The body a requester posts to create a request. */
export interface AccessRequestInput {
  roles: unknown
  reason: unknown
  /** A duration such as `30m`. The default is one hour, or the role's maximum if shorter. */
  ttl?: unknown
}

/** The certificate issued by `assume`, with the request it carries. */
export interface AssumeResult extends JoinResult {
  request: AccessRequestView
}

/** Creates, lists, reviews and assumes just-in-time access requests. */
export interface AccessRequestService {
  create(caller: PeerIdentity, input: AccessRequestInput, peer: string): Promise<AccessRequestView>
  list(caller: PeerIdentity): Promise<AccessRequestView[]>
  decide(
    caller: PeerIdentity,
    id: string,
    action: 'approve' | 'deny',
    reason: unknown,
    peer: string,
  ): Promise<AccessRequestView>
  assume(caller: PeerIdentity, id: string, csrPem: string, peer: string): Promise<AssumeResult>
}

export interface AccessRequestOptions {
  ca: CertificateAuthority
  store: Store
  audit: AuditRecorder
  clock: Clock
  logger: Logger
}

/**
 * Creates the access request service. Every create, approve, deny and assume is audited, whether
 * it succeeds or is rejected. A rejection throws a WritError with an `access.*` code whose
 * fields carry `auditId`.
 *
 * @example
 *   const requests = createAccessRequestService({ ca, store, audit, clock, logger })
 *   const created = await requests.create(identity, { roles: ['deployer'], reason }, peer)
 */
export function createAccessRequestService(options: AccessRequestOptions): AccessRequestService {
  const { ca, store, audit, clock, logger } = options

  async function readRoles(): Promise<RoleIndex> {
    const roles = await store.listResources('Role')
    return new Map(roles.map((role) => [role.metadata.name, role.spec as RoleSpec]))
  }

  async function create(
    caller: PeerIdentity,
    input: AccessRequestInput,
    peer: string,
  ): Promise<AccessRequestView> {
    const details: Record<string, unknown> = {}
    try {
      requireOwnCertificate(caller, 'request access')
      const roles = checkRoleList(input.roles)
      details.roles = roles
      const reason = checkReason(input.reason, 'reason')
      details.reason = reason
      const ttlSeconds = input.ttl === undefined ? undefined : checkTtl(input.ttl)
      const index = await readRoles()
      const check = checkRequest(index, caller.claims.roles, roles, ttlSeconds)
      if (!check.ok) throw new WritError(check.code, check.message, check.fields)
      const record: AccessRequestRecord = {
        id: randomUUID(),
        requester: caller.spiffeId,
        requesterKind: caller.claims.kind,
        roles,
        reason,
        ttlSeconds: check.ttlSeconds,
        state: 'pending',
        created: clock(),
      }
      await store.createAccessRequest(record)
      details.requestId = record.id
      details.ttl = formatDuration(record.ttlSeconds)
      await audit.record({ ...event('request.create', caller, peer), details })
      logger.info(
        { request_id: record.id, spiffe_id: caller.spiffeId, roles, peer },
        'access request created',
      )
      return viewOf(record, caller, index, clock())
    } catch (error) {
      throw await recordRejection(error, { ...event('request.create', caller, peer), details })
    }
  }

  async function list(caller: PeerIdentity): Promise<AccessRequestView[]> {
    const index = await readRoles()
    const principal = principalOf(caller.spiffeId)
    const now = clock()
    const records = await store.listAccessRequests(LIST_LIMIT)
    return records
      .filter(
        (record) =>
          record.requester === principal ||
          checkReview(index, caller.claims.roles, record.roles).ok,
      )
      .map((record) => viewOf(record, caller, index, now))
  }

  async function decide(
    caller: PeerIdentity,
    id: string,
    action: 'approve' | 'deny',
    reason: unknown,
    peer: string,
  ): Promise<AccessRequestView> {
    const type = action === 'approve' ? 'request.approve' : 'request.deny'
    const details: Record<string, unknown> = { requestId: id, reviewer: caller.spiffeId }
    try {
      const reviewReason = checkReason(reason, 'reason')
      details.reason = reviewReason
      const request = await findRequest(id)
      details.requester = request.requester
      details.roles = request.roles
      if (principalOf(caller.spiffeId) === request.requester) {
        throw new WritError(
          'access.self_review',
          `${caller.spiffeId} cannot ${action} access request ${id} because it is its own request; ask another reviewer`,
          { requestId: id, reviewer: caller.spiffeId },
        )
      }
      const index = await readRoles()
      const check = checkReview(index, caller.claims.roles, request.roles)
      if (!check.ok) throw new WritError(check.code, check.message, { ...check.fields, id })
      const now = clock()
      checkPending(request, now)
      const decided = await store.decideAccessRequest(id, {
        state: action === 'approve' ? 'approved' : 'denied',
        reviewer: caller.spiffeId,
        reviewReason,
        decided: now,
        ...(action === 'approve' ? { expires: now + request.ttlSeconds * 1000 } : {}),
      })
      if (!decided) {
        // Another reviewer decided between the read and the conditional update.
        throw alreadyDecided((await store.getAccessRequest(id)) ?? request)
      }
      const record = decided
      if (record.expires !== undefined) details.expires = new Date(record.expires).toISOString()
      await audit.record({ ...event(type, caller, peer), details })
      logger.info(
        { request_id: id, reviewer: caller.spiffeId, requester: request.requester, peer },
        action === 'approve' ? 'access request approved' : 'access request denied',
      )
      return viewOf(record, caller, index, now)
    } catch (error) {
      throw await recordRejection(error, { ...event(type, caller, peer), details })
    }
  }

  async function assume(
    caller: PeerIdentity,
    id: string,
    csrPem: string,
    peer: string,
  ): Promise<AssumeResult> {
    const details: Record<string, unknown> = { requestId: id }
    try {
      requireOwnCertificate(caller, 'assume an access request')
      const request = await findRequest(id)
      details.roles = request.roles
      if (request.reviewer !== undefined) details.reviewer = request.reviewer
      if (request.requester !== caller.spiffeId) {
        throw new WritError(
          'access.not_requester',
          `access request ${id} belongs to ${request.requester}, not to ${caller.spiffeId}; only the requester can assume it`,
          { requestId: id, requester: request.requester },
        )
      }
      const now = clock()
      const expires = checkAssumable(request, now)
      const csr = verifyCsr(csrPem)
      checkRequestedId(csr, caller.spiffeId)
      const index = await readRoles()
      const claims = assumedClaims(caller.claims, request, index)
      const ttlSeconds = await assumedTtlSeconds(caller, claims.roles, index)
      const issued = await ca.issue({
        csr,
        spiffeId: caller.spiffeId,
        commonName: caller.name,
        ttlSeconds,
        claims,
        // The new certificate ends with the grant and never outlives the one that asked for it.
        notAfterLimit: new Date(Math.min(expires, caller.notAfter.getTime())),
      })
      await store.recordCertificate({
        serial: issued.serial,
        spiffeId: caller.spiffeId,
        kind: claims.kind,
        notBefore: issued.notBefore.getTime(),
        notAfter: issued.notAfter.getTime(),
        generation: claims.generation,
        ...(claims.botInstance === undefined ? {} : { botInstance: claims.botInstance }),
      })
      Object.assign(details, {
        serial: issued.serial,
        notAfter: issued.notAfter.toISOString(),
        grantExpires: new Date(expires).toISOString(),
        certificateRoles: claims.roles,
      })
      await audit.record({ ...event('request.assume', caller, peer), details })
      logger.info(
        { request_id: id, spiffe_id: caller.spiffeId, serial: issued.serial, peer },
        'access request assumed',
      )
      return {
        certificate: issued.certPem,
        bundle: ca.bundlePem,
        spiffeId: caller.spiffeId,
        notAfter: issued.notAfter,
        request: viewOf(request, caller, index, now),
      }
    } catch (error) {
      throw await recordRejection(error, { ...event('request.assume', caller, peer), details })
    }
  }

  async function findRequest(id: string): Promise<AccessRequestRecord> {
    const request = REQUEST_ID.test(id) ? await store.getAccessRequest(id) : undefined
    if (!request) {
      const shown = REQUEST_ID.test(id) ? id : JSON.stringify(id.slice(0, 64))
      throw new WritError(
        'access.request_not_found',
        `access request ${shown} does not exist; list requests with writ request ls`,
        { requestId: id },
      )
    }
    return request
  }

  /** Reads the lifetime a certificate with `roles` would normally get for this principal. */
  async function assumedTtlSeconds(
    caller: PeerIdentity,
    roles: readonly string[],
    index: RoleIndex,
  ): Promise<number> {
    let ttlSeconds = OTHER_TTL_SECONDS
    if (caller.claims.kind === 'user') ttlSeconds = DEFAULT_USER_TTL_SECONDS
    if (caller.claims.kind === 'bot') {
      const botTtl = (await store.getResource('Bot', caller.name))?.spec.ttl
      ttlSeconds =
        typeof botTtl === 'string'
          ? parseDuration(botTtl, `ttl of bot "${caller.name}"`)
          : DEFAULT_BOT_TTL_SECONDS
    }
    for (const role of roles) {
      const maxTtl = index.get(role)?.maxTtl
      if (maxTtl !== undefined) {
        ttlSeconds = Math.min(ttlSeconds, parseDuration(maxTtl, `maxTtl of role "${role}"`))
      }
    }
    return ttlSeconds
  }

  /** Audits a rejection and returns the error to throw, carrying the audit id. */
  async function recordRejection(error: unknown, rejected: AuditEventInput): Promise<unknown> {
    if (!(error instanceof WritError)) return error
    const recorded = await audit.record({
      ...rejected,
      outcome: 'denied',
      reason: auditReason(error.code),
    })
    logger.info(
      { code: error.code, reason: error.message, peer: rejected.peer, audit_id: recorded.id },
      `${rejected.type} rejected`,
    )
    return new WritError(
      error.code,
      error.message,
      { ...error.fields, auditId: recorded.id },
      { cause: error },
    )
  }

  return { create, list, decide, assume }
}

/** Task and delegated certificates narrow a principal's rights, so they may not widen them. */
function requireOwnCertificate(caller: PeerIdentity, action: string): void {
  if (caller.claims.task === undefined && caller.claims.depth === 0) return
  throw new WritError(
    'access.forbidden',
    `${caller.spiffeId} is a task or delegated certificate and cannot ${action}; use the parent identity`,
    { spiffeId: caller.spiffeId },
  )
}

function checkRoleList(value: unknown): string[] {
  if (
    !Array.isArray(value) ||
    value.length === 0 ||
    !value.every((role) => typeof role === 'string' && /^[a-z0-9-]{1,63}$/.test(role))
  ) {
    throw new WritError(
      'access.invalid',
      `roles must be a non-empty list of role names, got ${JSON.stringify(value)?.slice(0, 200)}`,
      { field: 'roles' },
    )
  }
  return [...new Set(value as string[])]
}

function checkReason(value: unknown, field: string): string {
  const reason = typeof value === 'string' ? value.trim() : ''
  if (reason === '') {
    throw new WritError('access.invalid', `${field} is required: say why, such as a ticket id`, {
      field,
    })
  }
  if (reason.length > MAX_REASON_LENGTH) {
    throw new WritError(
      'access.invalid',
      `${field} is ${reason.length} characters long, the maximum is ${MAX_REASON_LENGTH}`,
      { field },
    )
  }
  if (CONTROL_CHARACTERS.test(reason)) {
    throw new WritError(
      'access.invalid',
      `${field} contains control characters such as line breaks; write it on one line`,
      { field },
    )
  }
  return reason
}

function checkTtl(value: unknown): number {
  if (typeof value !== 'string') {
    throw new WritError(
      'access.invalid',
      `ttl must be a duration such as 30m, got ${typeof value}`,
      {
        field: 'ttl',
      },
    )
  }
  try {
    return parseDuration(value, 'ttl')
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error)
    throw new WritError('access.invalid', message, { field: 'ttl' }, { cause: error })
  }
}

/** Throws unless the request can still be approved or denied. */
function checkPending(request: AccessRequestRecord, now: number): void {
  if (request.state !== 'pending') throw alreadyDecided(request)
  if (now >= request.created + PENDING_REQUEST_LIFETIME_MS) {
    throw new WritError(
      'access.expired',
      `access request ${request.id} expired unreviewed at ${new Date(request.created + PENDING_REQUEST_LIFETIME_MS).toISOString()}; the requester can create a new one`,
      { requestId: request.id },
    )
  }
}

function alreadyDecided(request: AccessRequestRecord): WritError {
  return new WritError(
    'access.already_decided',
    `access request ${request.id} was already ${request.state} by ${request.reviewer ?? 'a reviewer'}; each request is decided once`,
    { requestId: request.id, state: request.state },
  )
}

/** Throws unless the request is an approved grant that has not ended; returns its end. */
function checkAssumable(request: AccessRequestRecord, now: number): number {
  if (request.state !== 'approved' || request.expires === undefined) {
    const why =
      request.state === 'denied'
        ? `was denied by ${request.reviewer ?? 'a reviewer'}: ${request.reviewReason ?? ''}`
        : 'is still pending review'
    throw new WritError(
      'access.not_approved',
      `access request ${request.id} ${why}; only an approved request can be assumed`,
      { requestId: request.id, state: request.state },
    )
  }
  if (now >= request.expires) {
    throw new WritError(
      'access.expired',
      `access request ${request.id} expired at ${new Date(request.expires).toISOString()}; create a new request`,
      { requestId: request.id, expires: request.expires },
    )
  }
  return request.expires
}

/** Checks that the CSR requests the caller's own SPIFFE ID or no URI SAN at all. */
function checkRequestedId(csr: VerifiedCsr, spiffeId: string): void {
  if (csr.uriSans.length === 0) return
  if (csr.uriSans.length > 1 || csr.uriSans[0] !== spiffeId) {
    throw new WritError(
      'csr.invalid',
      `the CSR requests ${csr.uriSans.join(', ')}, but the caller is ${spiffeId}; request the caller's own ID or none`,
      { requested: csr.uriSans, spiffeId },
    )
  }
}

/**
 * Returns the caller's claims plus the granted roles and the request id. Every granted role must
 * still exist, because a deleted role's `maxTtl` could no longer cap the certificate.
 */
function assumedClaims(
  claims: WritClaims,
  request: AccessRequestRecord,
  index: RoleIndex,
): WritClaims {
  const missing = request.roles.find((role) => !index.has(role))
  if (missing !== undefined) {
    throw new WritError(
      'access.role_not_found',
      `role "${missing}" of access request ${request.id} no longer exists; ask an administrator to restore it`,
      { role: missing, requestId: request.id },
    )
  }
  return {
    ...claims,
    roles: [...new Set([...claims.roles, ...request.roles])],
    accessRequests: [...new Set([...claims.accessRequests, request.id])],
  }
}

function viewOf(
  record: AccessRequestRecord,
  caller: PeerIdentity,
  index: RoleIndex,
  now: number,
): AccessRequestView {
  const status = statusOf(record, now)
  const view: AccessRequestView = {
    id: record.id,
    requester: record.requester,
    roles: record.roles,
    reason: record.reason,
    ttl: formatDuration(record.ttlSeconds),
    status,
    created: new Date(record.created).toISOString(),
    reviewable:
      status === 'pending' &&
      principalOf(caller.spiffeId) !== record.requester &&
      checkReview(index, caller.claims.roles, record.roles).ok,
  }
  if (record.reviewer !== undefined) view.reviewer = record.reviewer
  if (record.reviewReason !== undefined) view.reviewReason = record.reviewReason
  if (record.decided !== undefined) view.decided = new Date(record.decided).toISOString()
  if (record.expires !== undefined) view.expires = new Date(record.expires).toISOString()
  return view
}

function statusOf(record: AccessRequestRecord, now: number): AccessRequestStatus {
  if (record.state === 'pending') {
    return now >= record.created + PENDING_REQUEST_LIFETIME_MS ? 'expired' : 'pending'
  }
  if (record.state === 'approved' && record.expires !== undefined && now >= record.expires) {
    return 'expired'
  }
  return record.state
}

function event(type: AuditEventInput['type'], caller: PeerIdentity, peer: string): AuditEventInput {
  const auditCaller: AuditCaller = {
    spiffeId: caller.spiffeId,
    kind: caller.claims.kind,
    roles: caller.claims.roles,
    serial: caller.serial,
  }
  if (caller.claims.task) auditCaller.task = caller.claims.task.id
  return { type, outcome: 'success', caller: auditCaller, peer }
}

/** Converts an error code to an audit reason: `access.self_review` to `self_review`. */
function auditReason(code: string): string {
  const [area, rest] = code.split('.', 2) as [string, string | undefined]
  if (rest === undefined) return area
  return area === 'access' ? rest : `${area}_${rest}`
}
