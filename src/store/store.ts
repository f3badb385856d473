import type { AuditEvent, AuditQuery } from '../audit/types.js'
import type { Resource, ResourceKind } from '../policy/resource.js'

/** Why a join token cannot be used. */
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

/**
 * The storage interface. SQLite (`src/store/sqlite.ts`) is the embedded default; a PostgreSQL
 * implementation will share this interface, which is why every method is asynchronous.
 */
export interface Store {
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
