/** Event types written to the audit log. */
export type AuditEventType =
  | 'join'
  | 'certificate.issue'
  | 'certificate.renew'
  | 'auth.refused'
  | 'session.start'
  | 'session.end'
  | 'mcp.request'
  | 'resource.apply'
  | 'resource.delete'
  | 'lock.create'
  | 'lock.remove'
  | 'request.create'
  | 'request.approve'
  | 'request.deny'
  | 'request.assume'
  | 'jwt_svid.issue'
  | 'task.issue'
  | 'user.enroll'
  | 'login'
  | 'ca.rotate'
  | 'tool.pinned'
  | 'tool.changed'
  | 'tool.approved'
  | 'approval.approve'
  | 'approval.deny'

export type AuditOutcome = 'success' | 'denied' | 'error'

/** The caller recorded with an event, copied from the verified certificate. */
export interface AuditCaller {
  spiffeId: string
  kind: string
  roles: string[]
  serial: string
  /** Task certificates only: the task id. */
  task?: string
  /** Task certificates only: the reason stated when the task was issued. */
  taskReason?: string
  /** Task certificates only: the serial of the certificate the task was issued under. */
  parentSerial?: string
  /** Task certificates only: the SPIFFE ID of the certificate the task was issued under. */
  parentSpiffeId?: string
}

/** What a service hands to the audit writer; the writer adds id, sequence, time and hashes. */
export interface AuditEventInput {
  type: AuditEventType
  outcome: AuditOutcome
  reason?: string
  rule?: string
  caller?: AuditCaller
  /** Remote address and port of the TLS peer, such as `127.0.0.1:53122`. */
  peer?: string
  server?: string
  method?: string
  tool?: string
  /** `sha256:<hex>` of the canonical JSON of the arguments forwarded upstream. */
  argsDigest?: string
  /** A copy of the arguments with secret values replaced, or omitted when too large. */
  args?: unknown
  latencyMs?: number
  sessionId?: string
  /** Extra fields for one event type (token name, certificate serial, error text). */
  details?: Record<string, unknown>
}

/** A committed event as stored and returned by queries. */
export interface AuditEvent extends AuditEventInput {
  /** Random id that a client-facing error carries so the event can be found. */
  id: string
  seq: number
  /** ISO 8601 time with milliseconds, UTC. */
  time: string
  prevHash: string
  hash: string
}

/** Filters for `writ audit search`; every field narrows the result. */
export interface AuditQuery {
  since?: string
  principal?: string
  server?: string
  tool?: string
  outcome?: AuditOutcome
  type?: AuditEventType
  limit?: number
}
