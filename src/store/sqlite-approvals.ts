import type Database from 'better-sqlite3'
import type { Store, ToolApprovalRecord } from './store.js'

type ToolApprovalMethods = Pick<
  Store,
  | 'createToolApproval'
  | 'getToolApproval'
  | 'listToolApprovals'
  | 'countPendingToolApprovals'
  | 'decideToolApproval'
  | 'consumeToolApproval'
>

interface ToolApprovalRow {
  id: string
  spiffe_id: string
  binding: string
  server: string
  tool: string
  args_digest: string
  args: string
  rule: string
  state: ToolApprovalRecord['state']
  created: number
  expires: number
  decided_by: string | null
  decision_reason: string | null
  decided: number | null
  used: number | null
}

/** Implements the tool approval methods of the SQLite store on the `tool_approvals` table. */
export function sqliteToolApprovals(db: Database.Database): ToolApprovalMethods {
  const statements = {
    insert: db.prepare(
      `INSERT INTO tool_approvals (id, spiffe_id, binding, server, tool, args_digest, args, rule,
         state, created, expires) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    ),
    get: db.prepare('SELECT * FROM tool_approvals WHERE id = ?'),
    list: db.prepare('SELECT * FROM tool_approvals ORDER BY created DESC, id LIMIT ?'),
    listPending: db.prepare(
      `SELECT * FROM tool_approvals WHERE state = 'pending' ORDER BY created DESC, id LIMIT ?`,
    ),
    countPending: db.prepare(
      `SELECT COUNT(*) AS count FROM tool_approvals
         WHERE spiffe_id = ? AND state = 'pending' AND expires > ?`,
    ),
    // The state and expiry conditions make the decision happen once, even with two approvers.
    decide: db.prepare(
      `UPDATE tool_approvals SET state = ?, decided_by = ?, decision_reason = ?, decided = ?
         WHERE id = ? AND state = 'pending' AND expires > ?`,
    ),
    findApproved: db.prepare(
      `SELECT id FROM tool_approvals WHERE spiffe_id = ? AND binding = ? AND server = ?
         AND tool = ? AND args_digest = ? AND state = 'approved' AND expires > ?
         ORDER BY created, id LIMIT 1`,
    ),
    // Every binding column is repeated here, so an id alone can never release another call.
    consume: db.prepare(
      `UPDATE tool_approvals SET state = 'used', used = ? WHERE id = ? AND spiffe_id = ?
         AND binding = ? AND server = ? AND tool = ? AND args_digest = ? AND state = 'approved'
         AND expires > ?`,
    ),
  }

  const consume = db.transaction(
    (match: Parameters<ToolApprovalMethods['consumeToolApproval']>[0]) => {
      let id = match.id
      if (id === undefined) {
        const row = statements.findApproved.get(
          match.spiffeId,
          match.binding,
          match.server,
          match.tool,
          match.argsDigest,
          match.now,
        ) as { id: string } | undefined
        id = row?.id
      }
      if (id === undefined) return undefined
      const { changes } = statements.consume.run(
        match.now,
        id,
        match.spiffeId,
        match.binding,
        match.server,
        match.tool,
        match.argsDigest,
        match.now,
      )
      if (changes === 0) return undefined
      return recordFromRow(statements.get.get(id) as ToolApprovalRow)
    },
  )

  return {
    async createToolApproval(record) {
      statements.insert.run(
        record.id,
        record.spiffeId,
        record.binding,
        record.server,
        record.tool,
        record.argsDigest,
        JSON.stringify(record.args ?? null),
        record.rule,
        record.state,
        record.created,
        record.expires,
      )
    },
    async getToolApproval(id) {
      const row = statements.get.get(id) as ToolApprovalRow | undefined
      return row === undefined ? undefined : recordFromRow(row)
    },
    async listToolApprovals({ limit, pendingOnly }) {
      const statement = pendingOnly ? statements.listPending : statements.list
      return (statement.all(limit) as ToolApprovalRow[]).map(recordFromRow)
    },
    async countPendingToolApprovals(spiffeId, now) {
      return (statements.countPending.get(spiffeId, now) as { count: number }).count
    },
    async decideToolApproval(id, decision) {
      const { changes } = statements.decide.run(
        decision.state,
        decision.decidedBy,
        decision.reason,
        decision.decided,
        id,
        decision.decided,
      )
      if (changes === 0) return undefined
      return recordFromRow(statements.get.get(id) as ToolApprovalRow)
    },
    async consumeToolApproval(match) {
      return consume.immediate(match)
    },
  }
}

function recordFromRow(row: ToolApprovalRow): ToolApprovalRecord {
  const record: ToolApprovalRecord = {
    id: row.id,
    spiffeId: row.spiffe_id,
    binding: row.binding,
    server: row.server,
    tool: row.tool,
    argsDigest: row.args_digest,
    args: JSON.parse(row.args) as unknown,
    rule: row.rule,
    state: row.state,
    created: row.created,
    expires: row.expires,
  }
  if (row.decided_by !== null) record.decidedBy = row.decided_by
  if (row.decision_reason !== null) record.decisionReason = row.decision_reason
  if (row.decided !== null) record.decided = row.decided
  if (row.used !== null) record.used = row.used
  return record
}
