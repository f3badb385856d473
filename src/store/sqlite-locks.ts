import type Database from 'better-sqlite3'
import { LOCK_TARGET_KINDS, type Lock, type LockTarget, targetEntry } from '../authority/locks.js'
import type { Clock } from '../clock.js'
import type { IssuedCertificateRecord, Store } from './store.js'

interface LockRow {
  id: string
  target_kind: string
  target_value: string
  message: string
  created: string
  expires: string | null
  created_by: string
}

/** The Store methods for locks and renewal generations, over the tables of migration 2. */
export type LockStoreMethods = Pick<
  Store,
  'recordRenewal' | 'putLock' | 'deleteLock' | 'listLocks' | 'lockVersion'
>

/** Prepares the lock and renewal statements on an open, migrated database. */
export function createSqliteLockMethods(db: Database.Database, clock: Clock): LockStoreMethods {
  const statements = {
    latestGeneration: db.prepare(
      'SELECT MAX(generation) AS latest FROM certificates WHERE bot_instance = ?',
    ),
    recordCertificate: db.prepare(
      `INSERT INTO certificates (serial, spiffe_id, kind, not_before, not_after, bot_instance,
         generation, parent_serial, recorded) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    ),
    insertLock: db.prepare(
      `INSERT INTO locks (id, target_kind, target_value, message, created, expires, created_by)
       VALUES (?, ?, ?, ?, ?, ?, ?)`,
    ),
    getLock: db.prepare('SELECT * FROM locks WHERE id = ?'),
    deleteLock: db.prepare('DELETE FROM locks WHERE id = ?'),
    listLocks: db.prepare('SELECT * FROM locks ORDER BY created, id'),
    bumpLockVersion: db.prepare('UPDATE lock_version SET version = version + 1 WHERE id = 1'),
    lockVersion: db.prepare('SELECT version FROM lock_version WHERE id = 1'),
  }

  const recordRenewal = db.transaction(
    (record: IssuedCertificateRecord & { botInstance: string }, presented: number) => {
      const row = statements.latestGeneration.get(record.botInstance) as { latest: number | null }
      if (row.latest !== null && row.latest > presented) {
        return { ok: false as const, latest: row.latest }
      }
      statements.recordCertificate.run(
        record.serial,
        record.spiffeId,
        record.kind,
        record.notBefore,
        record.notAfter,
        record.botInstance,
        record.generation ?? null,
        record.parentSerial ?? null,
        new Date(clock()).toISOString(),
      )
      return { ok: true as const }
    },
  )

  const putLock = db.transaction((lock: Lock) => {
    const [kind, value] = targetEntry(lock.target)
    statements.insertLock.run(
      lock.id,
      kind,
      value,
      lock.message,
      lock.created,
      lock.expires ?? null,
      lock.createdBy,
    )
    statements.bumpLockVersion.run()
  })

  const deleteLock = db.transaction((id: string) => {
    const row = statements.getLock.get(id) as LockRow | undefined
    if (row === undefined) return undefined
    statements.deleteLock.run(id)
    statements.bumpLockVersion.run()
    return lockFromRow(row)
  })

  return {
    async recordRenewal(record, presentedGeneration) {
      // IMMEDIATE takes the write lock before the read, so two processes renewing the same
      // certificate cannot both see its generation as the newest.
      return recordRenewal.immediate(record, presentedGeneration)
    },
    async putLock(lock) {
      putLock.immediate(lock)
    },
    async deleteLock(id) {
      return deleteLock.immediate(id)
    },
    async listLocks() {
      return (statements.listLocks.all() as LockRow[]).map(lockFromRow)
    },
    async lockVersion() {
      return (statements.lockVersion.get() as { version: number }).version
    },
  }
}

function lockFromRow(row: LockRow): Lock {
  if (!(LOCK_TARGET_KINDS as readonly string[]).includes(row.target_kind)) {
    // Skipping a lock this Writ cannot read would lift it, so reading the list fails instead.
    throw new TypeError(`lock ${row.id} has unknown target kind "${row.target_kind}"`)
  }
  const lock: Lock = {
    id: row.id,
    target: { [row.target_kind]: row.target_value } as LockTarget,
    message: row.message,
    created: row.created,
    createdBy: row.created_by,
  }
  if (row.expires !== null) lock.expires = row.expires
  return lock
}
