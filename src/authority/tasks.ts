import { taskCallerFields } from '../audit/task-caller.js'
import type { AuditCaller, AuditEventInput } from '../audit/types.js'
import type { Clock } from '../clock.js'
import { WritError } from '../errors.js'
import { type VerifiedCsr, verifyCsr } from '../identity/csr.js'
import { SpiffeId } from '../identity/spiffe-id.js'
import type { PeerIdentity, TaskScope, WritClaims } from '../identity/types.js'
import { formatDuration, parseDuration } from '../lib/duration.js'
import type { Logger } from '../log.js'
import type { Store } from '../store/store.js'
import type { AuditRecorder } from './authority.js'
import type { CertificateAuthority } from './ca.js'
import {
  checkPatternList,
  checkReason,
  childDepth,
  DEFAULT_MAX_TASK_DEPTH,
  DEFAULT_TASK_TTL_SECONDS,
  type LifetimeLimit,
  narrowScope,
  newTaskId,
  type RequestedScope,
  taskLifetime,
} from './task-scope.js'

/** The principal kinds that may ask for a task certificate: bots and people. */
const TASK_PARENT_KINDS: ReadonlySet<string> = new Set(['bot', 'user'])

/** The fields `POST /v1/task` reads; anything else in the body is rejected. */
const TASK_REQUEST_FIELDS: ReadonlySet<string> = new Set([
  'csr',
  'servers',
  'tools',
  'ttl',
  'reason',
])

export interface TaskAuthorityOptions {
  ca: CertificateAuthority
  store: Store
  audit: AuditRecorder
  clock: Clock
  logger: Logger
  /** The deepest delegation allowed: 1 allows tasks of bots and people only. */
  maxDepth?: number
  /** The smallest `maxTtl` of the named roles in seconds, from the current policy. */
  roleMaxTtlSeconds?: (roles: readonly string[]) => number | undefined
}

/** A checked `POST /v1/task` body. */
export interface TaskRequest extends RequestedScope {
  csrPem: string
  ttlSeconds: number
  reason: string
}

/** A task certificate as `POST /v1/task` returns it. */
export interface TaskResult {
  certificate: string
  bundle: string
  spiffeId: string
  notAfter: Date
  taskId: string
  serial: string
  parentSerial: string
  depth: number
  servers?: string[]
  tools: string[]
  /** The lifetime the certificate got, in seconds, and what bounded it. */
  ttlSeconds: number
  lifetimeLimitedBy: LifetimeLimit
}

/** Issues task certificates under the caller's own certificate. */
export interface TaskAuthority {
  /**
   * Issues a task certificate for `parent` from an unchecked request body. Throws a WritError
   * with code `task.*` or `csr.invalid`, carrying `auditId`.
   */
  issue(parent: PeerIdentity | undefined, body: unknown, peer: string): Promise<TaskResult>
}

/**
 * Creates the task service. A task certificate carries the parent's kind, roles and traits plus
 * a task scope, so the gateway grants it at most the intersection of both. Its SPIFFE ID is the
 * parent's with `/task/<id>` appended, it never outlives the parent, and its depth is the
 * parent's plus one. Every issue and rejection is audited as `task.issue`.
 *
 * @example
 *   const tasks = createTaskAuthority({ ca, store, audit, clock, logger })
 *   const task = await tasks.issue(identity, { csr, tools: ['read_*'], reason: 'triage' }, peer)
 */
export function createTaskAuthority(options: TaskAuthorityOptions): TaskAuthority {
  const { ca, store, audit, clock, logger } = options
  const maxDepth = options.maxDepth ?? DEFAULT_MAX_TASK_DEPTH
  if (!Number.isSafeInteger(maxDepth) || maxDepth < 1) {
    throw new TypeError(`maxDepth must be a positive integer, got ${maxDepth}`)
  }

  async function issue(
    parent: PeerIdentity | undefined,
    body: unknown,
    peer: string,
  ): Promise<TaskResult> {
    const caller = parent ? callerOf(parent.spiffeId, parent.claims, parent.serial) : undefined
    try {
      const authenticated = requireParent(parent)
      const request = parseTaskRequest(body)
      const csr = verifyCsr(request.csrPem)
      return await issueChecked(authenticated, request, csr, peer)
    } catch (error) {
      throw await recordRejection(error, caller, peer, body)
    }
  }

  async function issueChecked(
    parent: PeerIdentity,
    request: TaskRequest,
    csr: VerifiedCsr,
    peer: string,
  ): Promise<TaskResult> {
    const depth = childDepth(parent.claims.depth, maxDepth)
    const scope = narrowScope(parent.claims.task, request, parent.claims.traits)
    const now = clock()
    const lifetime = taskLifetime({
      now,
      requestedSeconds: request.ttlSeconds,
      roleMaxSeconds: options.roleMaxTtlSeconds?.(parent.claims.roles),
      parentNotAfter: parent.notAfter,
    })
    const taskId = newTaskId()
    const spiffeId = SpiffeId.parse(parent.spiffeId).child('task', taskId)
    const task: TaskScope = { id: taskId, reason: request.reason, ...scope }
    const claims = childClaims(parent, task, depth)

    const issued = await ca.issue({
      csr,
      spiffeId,
      commonName: parent.name,
      ttlSeconds: lifetime.ttlSeconds,
      claims,
      notAfterLimit: parent.notAfter,
    })
    await store.recordCertificate({
      serial: issued.serial,
      spiffeId: spiffeId.toString(),
      kind: claims.kind,
      notBefore: issued.notBefore.getTime(),
      notAfter: issued.notAfter.getTime(),
      generation: claims.generation,
      parentSerial: parent.serial,
      ...(claims.botInstance === undefined ? {} : { botInstance: claims.botInstance }),
    })

    const details = {
      taskId,
      reason: task.reason,
      spiffeId: spiffeId.toString(),
      serial: issued.serial,
      parentSpiffeId: parent.spiffeId,
      parentSerial: parent.serial,
      depth,
      ...scope,
      notAfter: issued.notAfter.toISOString(),
      ttlSeconds: lifetime.ttlSeconds,
      lifetimeLimitedBy: lifetime.limitedBy,
    }
    const parentCaller = callerOf(parent.spiffeId, parent.claims, parent.serial)
    const childCaller = callerOf(spiffeId.toString(), claims, issued.serial)
    // Recorded together so the audit writer commits both events in one transaction.
    await Promise.all([
      audit.record({ type: 'task.issue', outcome: 'success', caller: parentCaller, peer, details }),
      audit.record({
        type: 'certificate.issue',
        outcome: 'success',
        caller: childCaller,
        peer,
        details: { serial: issued.serial, notAfter: details.notAfter, roles: claims.roles, depth },
      }),
    ])
    logger.info(
      {
        spiffe_id: spiffeId.toString(),
        serial: issued.serial,
        parent_serial: parent.serial,
        task: taskId,
        ttl: formatDuration(lifetime.ttlSeconds),
        limited_by: lifetime.limitedBy,
        peer,
      },
      'task certificate issued',
    )
    return {
      certificate: issued.certPem,
      bundle: ca.bundlePem,
      spiffeId: spiffeId.toString(),
      notAfter: issued.notAfter,
      taskId,
      serial: issued.serial,
      parentSerial: parent.serial,
      depth,
      ...scope,
      ttlSeconds: lifetime.ttlSeconds,
      lifetimeLimitedBy: lifetime.limitedBy,
    }
  }

  /** Audits a rejection and returns the error to throw, carrying the audit id. */
  async function recordRejection(
    error: unknown,
    caller: AuditCaller | undefined,
    peer: string,
    body: unknown,
  ): Promise<unknown> {
    if (!(error instanceof WritError)) return error
    const event: AuditEventInput = {
      type: 'task.issue',
      outcome: 'denied',
      reason: rejectionReason(error.code),
      peer,
      details: { message: error.message, ...requestSummary(body) },
    }
    if (caller) event.caller = caller
    const recorded = await audit.record(event)
    logger.info(
      { code: error.code, reason: error.message, peer, audit_id: recorded.id },
      'task.issue rejected',
    )
    return new WritError(
      error.code,
      error.message,
      { ...error.fields, auditId: recorded.id },
      { cause: error },
    )
  }

  return { issue }
}

/**
 * Checks a `POST /v1/task` body. Throws `task.invalid` naming the field for a missing or
 * malformed value; `ttl` is optional and defaults to ten minutes.
 */
export function parseTaskRequest(body: unknown): TaskRequest {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new WritError('task.invalid', 'the task request must be a JSON object')
  }
  const record = body as Record<string, unknown>
  for (const field of Object.keys(record)) {
    if (!TASK_REQUEST_FIELDS.has(field)) {
      throw new WritError(
        'task.invalid',
        `unknown task field "${field}"; expected csr, servers, tools, ttl and reason`,
        { field },
      )
    }
  }
  if (typeof record.csr !== 'string' || record.csr === '') {
    throw new WritError('task.invalid', 'task field "csr" must be a PEM certificate request', {
      field: 'csr',
    })
  }
  const request: TaskRequest = {
    csrPem: record.csr,
    tools: checkPatternList('tools', record.tools),
    ttlSeconds: parseTaskTtl(record.ttl),
    reason: checkReason(record.reason),
  }
  if (record.servers !== undefined) request.servers = checkPatternList('servers', record.servers)
  return request
}

function parseTaskTtl(value: unknown): number {
  if (value === undefined) return DEFAULT_TASK_TTL_SECONDS
  if (typeof value !== 'string') {
    throw new WritError(
      'task.invalid',
      `task field "ttl" must be a duration string such as "10m", not ${JSON.stringify(value)}`,
      { field: 'ttl' },
    )
  }
  try {
    return parseDuration(value, 'task ttl')
  } catch (error) {
    if (!(error instanceof WritError)) throw error
    throw new WritError('task.invalid', error.message, { field: 'ttl', value }, { cause: error })
  }
}

function requireParent(parent: PeerIdentity | undefined): PeerIdentity {
  if (!parent) {
    throw new WritError(
      'task.unauthenticated',
      'a task certificate is issued only to a caller with a valid client certificate from this Writ CA; renew or join again if it expired',
    )
  }
  if (!TASK_PARENT_KINDS.has(parent.claims.kind)) {
    throw new WritError(
      'task.forbidden',
      `${parent.spiffeId} is a certificate of kind "${parent.claims.kind}"; only bots and people can request tasks`,
      { spiffeId: parent.spiffeId, kind: parent.claims.kind },
    )
  }
  return parent
}

function childClaims(parent: PeerIdentity, task: TaskScope, depth: number): WritClaims {
  const claims: WritClaims = {
    version: 1,
    kind: parent.claims.kind,
    roles: [...parent.claims.roles],
    traits: structuredClone(parent.claims.traits),
    task,
    parentSerial: parent.serial,
    depth,
    generation: parent.claims.generation,
    accessRequests: [...parent.claims.accessRequests],
  }
  // Copied so that a lock on the bot instance can also cover the tasks issued under it.
  if (parent.claims.botInstance !== undefined) claims.botInstance = parent.claims.botInstance
  return claims
}

/** Builds the audit caller of a certificate, naming its task and parent when it is a task. */
function callerOf(spiffeId: string, claims: WritClaims, serial: string): AuditCaller {
  return {
    spiffeId,
    kind: claims.kind,
    roles: [...claims.roles],
    serial,
    ...taskCallerFields(spiffeId, claims),
  }
}

/** Converts `task.depth_exceeded` to `depth_exceeded`, `csr.invalid` to `csr_invalid`. */
function rejectionReason(code: string): string {
  const [area, rest] = code.split('.', 2) as [string, string | undefined]
  if (rest === undefined) return area
  return area === 'task' ? rest : `${area}_${rest}`
}

/** Copies the requested scope into the audit record of a rejection, leaving out the CSR. */
function requestSummary(body: unknown): Record<string, unknown> {
  if (typeof body !== 'object' || body === null) return {}
  const record = body as Record<string, unknown>
  const summary: Record<string, unknown> = {}
  for (const field of ['servers', 'tools', 'ttl', 'reason']) {
    const value = record[field]
    if (value === undefined) continue
    summary[field] = value
  }
  return summary
}
