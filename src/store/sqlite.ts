import { closeSync, openSync } from 'node:fs'
import Database from 'better-sqlite3'
import { AUDIT_HEAD_META_KEY, GENESIS_HASH } from '../audit/chain.js'
import type { AuditCaller, AuditEvent, AuditQuery } from '../audit/types.js'
import { type Clock, systemClock } from '../clock.js'
import { isWritError, WritError } from '../errors.js'
import { parseDuration } from '../lib/duration.js'
import { type Logger, silentLogger } from '../log.js'
import type { Resource, ResourceKind } from '../policy/resource.js'
import { MIGRATIONS } from './migrations.js'
import { sqliteAccessRequests } from './sqlite-access-requests.js'
import { sqliteToolApprovals } from './sqlite-approvals.js'
import { createSqliteLockMethods } from './sqlite-locks.js'
import { createSqlitePeopleStore } from './sqlite-people.js'
import { sqliteToolPins } from './sqlite-tool-pins.js'
import type { IssuedCertificateRecord, Store, TokenRefusal } from './store.js'

/** How long a statement waits for another connection's write lock before failing, in ms. */
const BUSY_TIMEOUT_MS = 5000
/** Number of events `queryAudit` returns when the query sets no limit. */
export const DEFAULT_AUDIT_LIMIT = 100
/** Rows read per page by `scanAudit`, so verification never loads the whole log. */
const SCAN_PAGE_SIZE = 500

interface AuditRow {
  seq: number
  id: string
  time: string
  type: string
  outcome: string
  principal: string | null
  server: string | null
  tool: string | null
  prev_hash: string
  hash: string
  json: string
}

/**
 * Opens (creating if needed) the SQLite database at `path` and brings its schema up to date.
 * Several processes, such as the server and the admin CLI, may open the same file at once: the
 * database runs in WAL mode and each write waits up to five seconds for the lock.
 *
 * @example
 *   const store = await openSqliteStore('./writ-data/writ.db')
 *
 * @throws WritError `store.open_failed` when the file cannot be opened or is not a database,
 *   `store.schema_too_new` when a newer Writ has migrated it.
 */
export async function openSqliteStore(
  path: string,
  options: { logger?: Logger; clock?: Clock; synchronous?: SynchronousMode } = {},
): Promise<Store> {
  const logger = options.logger ?? silentLogger
  const clock = options.clock ?? systemClock
  const db = openDatabase(path, options.synchronous ?? 'normal')
  logger.debug({ path }, 'store opened')
  return createSqliteStore(db, clock, logger)
}

/**
 * How commits reach the disk. Both modes commit an audit event before the call it records is
 * forwarded, and both survive a crash of the Writ process. `full` also waits for the disk
 * (fsync) on every commit, so committed events survive power loss; `normal`, the default, syncs
 * the write-ahead log at checkpoints, so a power loss can drop the last commits but never breaks
 * the hash chain.
 */
export type SynchronousMode = 'full' | 'normal'

function openDatabase(path: string, synchronous: SynchronousMode): Database.Database {
  let db: Database.Database | undefined
  try {
    if (path !== ':memory:') createPrivateFile(path)
    db = new Database(path)
    db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`)
    db.pragma('journal_mode = WAL')
    db.pragma(`synchronous = ${synchronous === 'full' ? 'FULL' : 'NORMAL'}`)
    migrate(db)
    return db
  } catch (error) {
    db?.close()
    if (isWritError(error)) throw error
    const reason = error instanceof Error ? error.message : String(error)
    throw new WritError(
      'store.open_failed',
      `failed to open the store "${path}": ${reason}; check that the directory exists and is writable and that the file is a Writ database`,
      { path },
      { cause: error },
    )
  }
}

/** Creates the database file with mode 0600 when it does not exist; SQLite gives its WAL files the same mode. */
function createPrivateFile(path: string): void {
  try {
    closeSync(openSync(path, 'wx', 0o600))
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error
  }
}

/** Applies pending migrations in one IMMEDIATE transaction, so concurrent openers migrate once. */
function migrate(db: Database.Database): void {
  // The highest version, not the last entry's: entries may be listed out of numeric order.
  const latest = Math.max(0, ...MIGRATIONS.map((migration) => migration.version))
  db.transaction(() => {
    db.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (
      version INTEGER PRIMARY KEY,
      name TEXT NOT NULL,
      applied TEXT NOT NULL
    )`)
    const row = db.prepare('SELECT MAX(version) AS version FROM schema_migrations').get() as {
      version: number | null
    }
    const current = row.version ?? 0
    if (current > latest) {
      throw new WritError(
        'store.schema_too_new',
        `the store has schema version ${current} but this Writ supports at most ${latest}; upgrade Writ`,
        { current, supported: latest },
      )
    }
    const record = db.prepare(
      'INSERT INTO schema_migrations (version, name, applied) VALUES (?, ?, ?)',
    )
    for (const migration of MIGRATIONS) {
      if (migration.version <= current) continue
      db.exec(migration.sql)
      record.run(migration.version, migration.name, new Date().toISOString())
    }
    db.pragma(`user_version = ${latest}`)
  }).immediate()
}

function createSqliteStore(db: Database.Database, clock: Clock, logger: Logger): Store {
  const statements = {
    putResource: db.prepare(
      `INSERT INTO resources (kind, name, json, updated, token_hash) VALUES (?, ?, ?, ?, ?)
       ON CONFLICT (kind, name) DO UPDATE SET
         json = excluded.json, updated = excluded.updated, token_hash = excluded.token_hash`,
    ),
    getResource: db.prepare('SELECT json FROM resources WHERE kind = ? AND name = ?'),
    listResources: db.prepare('SELECT json FROM resources WHERE kind = ? ORDER BY name'),
    deleteResource: db.prepare('DELETE FROM resources WHERE kind = ? AND name = ?'),
    bumpVersion: db.prepare('UPDATE policy_version SET version = version + 1 WHERE id = 1'),
    policyVersion: db.prepare('SELECT version FROM policy_version WHERE id = 1'),
    findToken: db.prepare(
      `SELECT json FROM resources WHERE kind = 'JoinToken' AND token_hash = ? ORDER BY name LIMIT 1`,
    ),
    tokenUsed: db.prepare('SELECT 1 FROM used_join_tokens WHERE token_hash = ?'),
    markTokenUsed: db.prepare(
      'INSERT INTO used_join_tokens (token_hash, name, used_at) VALUES (?, ?, ?)',
    ),
    recordCertificate: db.prepare(
      `INSERT INTO certificates (serial, spiffe_id, kind, not_before, not_after, bot_instance,
         generation, parent_serial, recorded) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    ),
    latestCertificateExpiry: db.prepare(
      'SELECT MAX(not_after) AS latest FROM certificates WHERE recorded < ?',
    ),
    lastAudit: db.prepare('SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1'),
    insertAudit: db.prepare(
      `INSERT INTO audit (seq, id, time, type, outcome, principal, server, tool, prev_hash, hash,
         json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    ),
    scanAudit: db.prepare('SELECT * FROM audit WHERE seq > ? ORDER BY seq LIMIT ?'),
    getMeta: db.prepare('SELECT value FROM meta WHERE key = ?'),
    setMeta: db.prepare(
      'INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value',
    ),
  }

  const putResource = db.transaction((resource: Resource) => {
    statements.putResource.run(
      resource.kind,
      resource.metadata.name,
      JSON.stringify(resource),
      new Date(clock()).toISOString(),
      tokenHashOf(resource),
    )
    statements.bumpVersion.run()
  })

  const deleteResource = db.transaction((kind: ResourceKind, name: string) => {
    const { changes } = statements.deleteResource.run(kind, name)
    if (changes > 0) statements.bumpVersion.run()
    return changes > 0
  })

  const consumeJoinToken = db.transaction((tokenHash: string, now: number) => {
    const row = statements.findToken.get(tokenHash) as { json: string } | undefined
    if (row === undefined) return tokenRefusal('token_unknown')
    const token = JSON.parse(row.json) as Resource
    if (statements.tokenUsed.get(tokenHash) !== undefined) return tokenRefusal('token_used', token)
    // An unparsable expiry counts as expired, so a malformed manifest never grants a join.
    const expires = Date.parse(String(token.spec.expires))
    if (Number.isNaN(expires)) {
      logger.warn(
        { token: token.metadata.name, expires: token.spec.expires },
        'join token has an invalid expiry',
      )
      return tokenRefusal('token_expired', token)
    }
    if (now >= expires) return tokenRefusal('token_expired', token)
    statements.markTokenUsed.run(tokenHash, token.metadata.name, new Date(now).toISOString())
    return { ok: true as const, token }
  })

  const appendAudit = db.transaction(
    (build: (last: { hash: string; seq: number }) => AuditEvent[]) => {
      const last = statements.lastAudit.get() as { seq: number; hash: string } | undefined
      const events = build(last ?? { hash: GENESIS_HASH, seq: 0 })
      for (const event of events) {
        const row = rowFromEvent(event)
        statements.insertAudit.run(
          row.seq,
          row.id,
          row.time,
          row.type,
          row.outcome,
          row.principal,
          row.server,
          row.tool,
          row.prev_hash,
          row.hash,
          row.json,
        )
      }
      // The head records the newest event in the same transaction, so verification can tell
      // when events were deleted from the end of the log, which leaves no gap behind.
      const head = events[events.length - 1]
      if (head !== undefined) {
        statements.setMeta.run(
          AUDIT_HEAD_META_KEY,
          JSON.stringify({ seq: head.seq, hash: head.hash }),
        )
      }
      return events
    },
  )

  return {
    ...sqliteAccessRequests(db),
    ...sqliteToolApprovals(db),
    ...createSqliteLockMethods(db, clock),
    ...createSqlitePeopleStore(db, clock),
    ...sqliteToolPins(db),
    async putResource(resource) {
      putResource.immediate(resource)
    },
    async getResource(kind, name) {
      const row = statements.getResource.get(kind, name) as { json: string } | undefined
      return row === undefined ? undefined : (JSON.parse(row.json) as Resource)
    },
    async listResources(kind) {
      const rows = statements.listResources.all(kind) as { json: string }[]
      return rows.map((row) => JSON.parse(row.json) as Resource)
    },
    async deleteResource(kind, name) {
      return deleteResource.immediate(kind, name)
    },
    async policyVersion() {
      return (statements.policyVersion.get() as { version: number }).version
    },
    async consumeJoinToken(tokenHash, now) {
      // IMMEDIATE takes the write lock before the read, so two processes cannot both see the
      // token unused.
      return consumeJoinToken.immediate(tokenHash, now)
    },
    async recordCertificate(record: IssuedCertificateRecord) {
      statements.recordCertificate.run(
        record.serial,
        record.spiffeId,
        record.kind,
        record.notBefore,
        record.notAfter,
        record.botInstance ?? null,
        record.generation ?? null,
        record.parentSerial ?? null,
        new Date(clock()).toISOString(),
      )
    },
    async latestCertificateExpiry(recordedBefore: number) {
      // `recorded` contains toISOString() text, whose fixed format sorts in time order.
      const row = statements.latestCertificateExpiry.get(
        new Date(recordedBefore).toISOString(),
      ) as { latest: number | null }
      return row.latest ?? undefined
    },
    async appendAudit(build) {
      return appendAudit.immediate(build)
    },
    async queryAudit(query) {
      return queryAudit(db, query, clock())
    },
    async *scanAudit() {
      let after = 0
      for (;;) {
        const rows = statements.scanAudit.all(after, SCAN_PAGE_SIZE) as AuditRow[]
        for (const row of rows) yield eventFromRow(row)
        const lastRow = rows[rows.length - 1]
        if (lastRow === undefined || rows.length < SCAN_PAGE_SIZE) return
        after = lastRow.seq
      }
    },
    async getMeta(key) {
      const row = statements.getMeta.get(key) as { value: string } | undefined
      return row?.value
    },
    async setMeta(key, value) {
      statements.setMeta.run(key, value)
    },
    async close() {
      if (db.open) db.close()
    },
  }
}

function tokenRefusal(reason: TokenRefusal, token?: Resource) {
  return token === undefined
    ? { ok: false as const, reason }
    : { ok: false as const, reason, token }
}

function tokenHashOf(resource: Resource): string | null {
  if (resource.kind !== 'JoinToken') return null
  const hash = resource.spec.tokenHash
  return typeof hash === 'string' ? hash : null
}

function queryAudit(db: Database.Database, query: AuditQuery, now: number): AuditEvent[] {
  const conditions: string[] = []
  const parameters: unknown[] = []
  if (query.since !== undefined) {
    conditions.push('time >= ?')
    parameters.push(new Date(parseSince(query.since, now)).toISOString())
  }
  if (query.principal !== undefined) {
    // Matches a full SPIFFE ID, a name that is the ID's last path segment(s), or an ID prefix
    // that ends at a path boundary (`spiffe://writ.local/bot` finds every bot).
    conditions.push(
      '(principal = ? OR (length(principal) > length(?) AND substr(principal, -length(?) - 1) = ?)' +
        ' OR substr(principal, 1, length(?) + 1) = ?)',
    )
    parameters.push(query.principal, query.principal, query.principal, `/${query.principal}`)
    parameters.push(query.principal, `${query.principal}/`)
  }
  for (const column of ['server', 'tool', 'outcome', 'type'] as const) {
    const value = query[column]
    if (value === undefined) continue
    conditions.push(`${column} = ?`)
    parameters.push(value)
  }
  const limit = query.limit ?? DEFAULT_AUDIT_LIMIT
  if (!Number.isSafeInteger(limit) || limit < 1) {
    throw new WritError(
      'audit.invalid_limit',
      `invalid audit limit ${limit}: use a whole number of 1 or more`,
      { limit },
    )
  }
  const where = conditions.length > 0 ? `WHERE ${conditions.join(' AND ')}` : ''
  const rows = db
    .prepare(`SELECT * FROM audit ${where} ORDER BY seq DESC LIMIT ?`)
    .all(...parameters, limit) as AuditRow[]
  return rows.reverse().map(eventFromRow)
}

/**
 * Converts `since` to epoch milliseconds. Accepts an ISO 8601 time (`2025-01-31`,
 * `2025-01-31T12:00:00Z`) or a duration before `now` (`15m`, `2h`, `1d`).
 */
export function parseSince(since: string, now: number): number {
  const invalid = (cause?: unknown) =>
    new WritError(
      'audit.invalid_since',
      `invalid since "${since}": use an ISO 8601 time such as 2025-01-31T12:00:00Z or a duration such as 15m or 2h`,
      { since },
      { cause },
    )
  if (/^\d{4}-\d{2}-\d{2}/.test(since.trim())) {
    const time = Date.parse(since.trim())
    if (Number.isNaN(time)) throw invalid()
    return time
  }
  try {
    return now - parseDuration(since, 'since') * 1000
  } catch (error) {
    throw invalid(error)
  }
}

/**
 * Splits an event into its row. Each field is stored exactly once: the filter columns store their
 * fields and `json` contains the rest (with `caller` minus its SPIFFE ID, which is `principal`).
 * With no second copy to fall back on, an edit to any column changes the event that verification
 * rebuilds and hashes.
 */
function rowFromEvent(event: AuditEvent): AuditRow {
  const { seq, id, time, type, outcome, server, tool, prevHash, hash, caller, ...rest } = event
  let principal: string | null = null
  let json: Record<string, unknown> = rest
  if (caller !== undefined) {
    const { spiffeId, ...callerRest } = caller
    principal = spiffeId
    json = { ...rest, caller: callerRest }
  }
  return {
    seq,
    id,
    time,
    type,
    outcome,
    principal,
    server: server ?? null,
    tool: tool ?? null,
    prev_hash: prevHash,
    hash,
    json: JSON.stringify(json),
  }
}

/**
 * Rebuilds an event from its row; the inverse of `rowFromEvent`.
 *
 * @throws WritError `audit.corrupt_event` with `seq` and `id` when `json` does not parse.
 */
function eventFromRow(row: AuditRow): AuditEvent {
  const { caller, ...rest } = parseEventJson(row)
  const event: AuditEvent = {
    ...rest,
    seq: row.seq,
    id: row.id,
    time: row.time,
    type: row.type as AuditEvent['type'],
    outcome: row.outcome as AuditEvent['outcome'],
    prevHash: row.prev_hash,
    hash: row.hash,
  }
  if (row.server !== null) event.server = row.server
  if (row.tool !== null) event.tool = row.tool
  if (caller !== undefined || row.principal !== null) {
    event.caller = { ...(caller ?? {}), spiffeId: row.principal } as AuditCaller
  }
  return event
}

function parseEventJson(row: AuditRow): Partial<AuditEvent> {
  try {
    const value: unknown = JSON.parse(row.json)
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      throw new TypeError('the stored JSON is not an object')
    }
    return value as Partial<AuditEvent>
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error)
    throw new WritError(
      'audit.corrupt_event',
      `audit event ${row.seq} (${row.id}) cannot be read: ${reason}; run writ audit verify`,
      { seq: row.seq, id: row.id },
      { cause: error },
    )
  }
}
