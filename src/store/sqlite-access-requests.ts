import type Database from 'better-sqlite3'
import type { AccessRequestDecision, AccessRequestRecord, Store } from './store.js'

type AccessRequestMethods = Pick<
  Store,
  'createAccessRequest' | 'getAccessRequest' | 'listAccessRequests' | 'decideAccessRequest'
>

interface AccessRequestRow {
  id: string
  requester: string
  requester_kind: string
  roles: string
  reason: string
  ttl_seconds: number
  state: AccessRequestRecord['state']
  created: number
  reviewer: string | null
  review_reason: string | null
  decided: number | null
  expires: number | null
}

/** Implements the access request methods of the SQLite store on the `access_requests` table. */
export function sqliteAccessRequests(db: Database.Database): AccessRequestMethods {
  const statements = {
    insert: db.prepare(
      `INSERT INTO access_requests (id, requester, requester_kind, roles, reason, ttl_seconds,
         state, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
    ),
    get: db.prepare('SELECT * FROM access_requests WHERE id = ?'),
    list: db.prepare('SELECT * FROM access_requests ORDER BY created DESC, id LIMIT ?'),
    // The state condition makes the decision happen once, even with concurrent reviewers.
    decide: db.prepare(
      `UPDATE access_requests SET state = ?, reviewer = ?, review_reason = ?, decided = ?,
         expires = ? WHERE id = ? AND state = 'pending'`,
    ),
  }

  return {
    async createAccessRequest(record) {
      statements.insert.run(
        record.id,
        record.requester,
        record.requesterKind,
        JSON.stringify(record.roles),
        record.reason,
        record.ttlSeconds,
        record.state,
        record.created,
      )
    },
    async getAccessRequest(id) {
      const row = statements.get.get(id) as AccessRequestRow | undefined
      return row === undefined ? undefined : recordFromRow(row)
    },
    async listAccessRequests(limit) {
      const rows = statements.list.all(limit) as AccessRequestRow[]
      return rows.map(recordFromRow)
    },
    async decideAccessRequest(id: string, decision: AccessRequestDecision) {
      const { changes } = statements.decide.run(
        decision.state,
        decision.reviewer,
        decision.reviewReason,
        decision.decided,
        decision.expires ?? null,
        id,
      )
      if (changes === 0) return undefined
      return recordFromRow(statements.get.get(id) as AccessRequestRow)
    },
  }
}

function recordFromRow(row: AccessRequestRow): AccessRequestRecord {
  const record: AccessRequestRecord = {
    id: row.id,
    requester: row.requester,
    requesterKind: row.requester_kind,
    roles: JSON.parse(row.roles) as string[],
    reason: row.reason,
    ttlSeconds: row.ttl_seconds,
    state: row.state,
    created: row.created,
  }
  if (row.reviewer !== null) record.reviewer = row.reviewer
  if (row.review_reason !== null) record.reviewReason = row.review_reason
  if (row.decided !== null) record.decided = row.decided
  if (row.expires !== null) record.expires = row.expires
  return record
}
