import type Database from 'better-sqlite3'
import type { ToolPinRecord, ToolPinStore } from './tool-pin-store.js'

interface ToolPinRow {
  server: string
  tool: string
  state: ToolPinRecord['state']
  digest: string
  approved_digest: string | null
  definition: string
  findings: string
  first_seen: number
  changed: number
  approved_by: string | null
  approved_at: number | null
}

/** Implements `ToolPinStore` on the `tool_pins` and `tool_pin_version` tables of migration 6. */
export function sqliteToolPins(db: Database.Database): ToolPinStore {
  const statements = {
    get: db.prepare('SELECT * FROM tool_pins WHERE server = ? AND tool = ?'),
    put: db.prepare(
      `INSERT INTO tool_pins (server, tool, state, digest, approved_digest, definition, findings,
         first_seen, changed, approved_by, approved_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (server, tool) DO UPDATE SET state = excluded.state, digest = excluded.digest,
         approved_digest = excluded.approved_digest, definition = excluded.definition,
         findings = excluded.findings, first_seen = excluded.first_seen,
         changed = excluded.changed, approved_by = excluded.approved_by,
         approved_at = excluded.approved_at`,
    ),
    listAll: db.prepare('SELECT * FROM tool_pins ORDER BY server, tool'),
    listServer: db.prepare('SELECT * FROM tool_pins WHERE server = ? ORDER BY tool'),
    bumpVersion: db.prepare('UPDATE tool_pin_version SET version = version + 1 WHERE id = 1'),
    version: db.prepare('SELECT version FROM tool_pin_version WHERE id = 1'),
  }

  const update = db.transaction(
    (
      server: string,
      tool: string,
      change: (current: ToolPinRecord | undefined) => ToolPinRecord | undefined,
    ) => {
      const row = statements.get.get(server, tool) as ToolPinRow | undefined
      const before = row === undefined ? undefined : recordFromRow(row)
      const after = change(before)
      if (after === undefined) return before === undefined ? {} : { before, after: before }
      statements.put.run(
        server,
        tool,
        after.state,
        after.digest,
        after.approvedDigest ?? null,
        after.definition,
        JSON.stringify(after.findings),
        after.firstSeen,
        after.changed,
        after.approvedBy ?? null,
        after.approvedAt ?? null,
      )
      statements.bumpVersion.run()
      return before === undefined ? { after } : { before, after }
    },
  )

  return {
    async updateToolPin(server, tool, change) {
      return update.immediate(server, tool, change)
    },
    async listToolPins(server) {
      const rows = (
        server === undefined ? statements.listAll.all() : statements.listServer.all(server)
      ) as ToolPinRow[]
      return rows.map(recordFromRow)
    },
    async toolPinVersion() {
      return (statements.version.get() as { version: number }).version
    },
  }
}

function recordFromRow(row: ToolPinRow): ToolPinRecord {
  const record: ToolPinRecord = {
    server: row.server,
    tool: row.tool,
    state: row.state,
    digest: row.digest,
    definition: row.definition,
    findings: JSON.parse(row.findings) as ToolPinRecord['findings'],
    firstSeen: row.first_seen,
    changed: row.changed,
  }
  if (row.approved_digest !== null) record.approvedDigest = row.approved_digest
  if (row.approved_by !== null) record.approvedBy = row.approved_by
  if (row.approved_at !== null) record.approvedAt = row.approved_at
  return record
}
