import type { AuditEvent, AuditQuery } from '../audit/types.js'
import type { Lock } from '../authority/locks.js'
import type { Resource, ResourceKind } from '../policy/resource.js'
import type { PeopleStore } from './people-store.js'
import type { ToolPinStore } from './tool-pin-store.js'

/** The reason a join token cannot be used. */
export type TokenRefusal = 'token_unknown' | 'token_used' | 'token_expired'

/** A certificate the authority issued, kept for audit and, later, locks by serial. */
export interface IssuedCertificateRecord {
  serial: string
  spiffeId: string
  kind: string
  notBefore: number
  notAfter: number
  botInstance?: string
  generation?: number
  parentSerial?: string
}

/** A just-in-time access request as stored. Times are epoch milliseconds. */
export interface AccessRequestRecord {
  /** Random UUID. */
  id: string
  /** SPIFFE ID of the requesting principal (never a task certificate's ID). */
  requester: string
  requesterKind: string
  roles: string[]
  reason: string
  /** How long the grant lasts once approved, counted from the approval. */
  ttlSeconds: number
  state: 'pending' | 'approved' | 'denied'
  created: number
  /** SPIFFE ID of the reviewer who approved or denied it. */
  reviewer?: string
  reviewReason?: string
  decided?: number
  /** When an approved grant ends. */
  expires?: number
}

/** The decision written once onto a pending access request. */
export interface AccessRequestDecision {
  state: 'approved' | 'denied'
  reviewer: string
  reviewReason: string
  decided: number
  expires?: number
}

/** A held tool call waiting for, or carrying, a person's decision. Times are epoch ms. */
export interface ToolApprovalRecord {
  /** Random id that the approver names, such as `apr_3f9c…`. */
  id: string
  spiffeId: string
  /** The bot instance, or the certificate serial for callers without one. */
  binding: string
  server: string
  tool: string
  /** `sha256:<hex>` of the canonical JSON of the arguments the approval covers. */
  argsDigest: string
  /** The arguments with secret values redacted, for the approver to read. */
  args: unknown
  /** The policy rule that required the approval, such as `role/ops/allow/approval/tools[0]`. */
  rule: string
  state: 'pending' | 'approved' | 'denied' | 'used'
  created: number
  /** After this time a pending or approved record no longer lets a call through. */
  expires: number
  decidedBy?: string
  decisionReason?: string
  decided?: number
  used?: number
}

/**
 * The storage interface. SQLite (`src/store/sqlite.ts`) is the embedded default; a PostgreSQL
 * implementation will share this interface, which is why every method is asynchronous.
 * The methods for people (credentials, login throttling, single sign-on) are in `PeopleStore`,
 * those for tool pins in `ToolPinStore`.
 */
export interface Store extends PeopleStore, ToolPinStore {
  /** Inserts or replaces a manifest and increments the policy version in the same transaction. */
  putResource(resource: Resource): Promise<void>
  getResource(kind: ResourceKind, name: string): Promise<Resource | undefined>
  listResources(kind: ResourceKind): Promise<Resource[]>
  /** Deletes a manifest; returns false when it did not exist. */
  deleteResource(kind: ResourceKind, name: string): Promise<boolean>
  /** A counter that changes whenever any manifest changes, in this process or another. */
  policyVersion(): Promise<number>

  /**
   * Marks the join token whose secret hashes to `tokenHash` as used, atomically, and returns it.
   * A token can be consumed once; concurrent callers see `token_used`.
   */
  consumeJoinToken(
    tokenHash: string,
    now: number,
  ): Promise<{ ok: true; token: Resource } | { ok: false; reason: TokenRefusal; token?: Resource }>

  recordCertificate(record: IssuedCertificateRecord): Promise<void>
  /**
   * Returns the latest `notAfter` (ms) of the certificates recorded before `recordedBefore` (ms),
   * or undefined when there are none. CA rotation uses it to learn when the last certificate
   * issued under an older CA state expires.
   */
  latestCertificateExpiry(recordedBefore: number): Promise<number | undefined>

  createAccessRequest(record: AccessRequestRecord): Promise<void>
  getAccessRequest(id: string): Promise<AccessRequestRecord | undefined>
  /** Returns the newest `limit` access requests, newest first. */
  listAccessRequests(limit: number): Promise<AccessRequestRecord[]>
  /**
   * Records the decision only if the request is still pending, atomically, and returns the
   * updated request; returns undefined when it was already decided or does not exist.
   */
  decideAccessRequest(
    id: string,
    decision: AccessRequestDecision,
  ): Promise<AccessRequestRecord | undefined>

  createToolApproval(record: ToolApprovalRecord): Promise<void>
  getToolApproval(id: string): Promise<ToolApprovalRecord | undefined>
  /** Returns the newest `limit` approvals, newest first, only pending ones when `pendingOnly`. */
  listToolApprovals(options: {
    limit: number
    pendingOnly?: boolean
  }): Promise<ToolApprovalRecord[]>
  /** Counts the pending approvals of `spiffeId` that have not expired at `now`. */
  countPendingToolApprovals(spiffeId: string, now: number): Promise<number>
  /**
   * Approves or denies a pending approval that has not expired at `decided`, atomically, and
   * returns the updated record; returns undefined when it was decided, expired or not found.
   */
  decideToolApproval(
    id: string,
    decision: { state: 'approved' | 'denied'; decidedBy: string; reason: string; decided: number },
  ): Promise<ToolApprovalRecord | undefined>
  /**
   * Marks an approved, unexpired approval as used, atomically, so that it lets one call through.
   * With `id` it consumes that approval; without, the oldest one matching the binding, server,
   * tool and digest. Returns the consumed record, or undefined when none qualifies.
   */
  consumeToolApproval(match: {
    id?: string
    spiffeId: string
    binding: string
    server: string
    tool: string
    argsDigest: string
    now: number
  }): Promise<ToolApprovalRecord | undefined>

  /**
   * Records a renewed bot certificate unless its bot instance already has a generation newer than
   * `presentedGeneration`, the generation of the certificate that asked for the renewal. The
   * check and the insert run in one transaction, so of two renewals presenting the same
   * certificate only the first succeeds. Returns the newest generation on a stale renewal.
   */
  recordRenewal(
    record: IssuedCertificateRecord & { botInstance: string; generation: number },
    presentedGeneration: number,
  ): Promise<{ ok: true } | { ok: false; latest: number }>

  /** Stores a new lock and increments the lock version in the same transaction. */
  putLock(lock: Lock): Promise<void>
  /** Deletes a lock and increments the lock version; returns the deleted lock, if it existed. */
  deleteLock(id: string): Promise<Lock | undefined>
  /** Every stored lock, expired ones included, oldest first. */
  listLocks(): Promise<Lock[]>
  /** A counter that changes whenever a lock is created or deleted, in this process or another. */
  lockVersion(): Promise<number>

  /**
   * Appends events to the hash chain in one transaction. `build` receives the hash and sequence
   * number of the last stored event and returns the complete events to insert, in order.
   */
  appendAudit(build: (last: { hash: string; seq: number }) => AuditEvent[]): Promise<AuditEvent[]>
  queryAudit(query: AuditQuery): Promise<AuditEvent[]>
  /** Yields every audit event in sequence order, for verification. */
  scanAudit(): AsyncIterable<AuditEvent>

  getMeta(key: string): Promise<string | undefined>
  setMeta(key: string, value: string): Promise<void>
  close(): Promise<void>
}
