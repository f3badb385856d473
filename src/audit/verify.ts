import { isWritError } from '../errors.js'
import type { Store } from '../store/store.js'
import { AUDIT_HEAD_META_KEY, GENESIS_HASH, hashEvent } from './chain.js'

export type AuditVerification =
  | { ok: true; count: number }
  | { ok: false; count: number; seq: number; id: string; reason: string }

/**
 * Walks the audit log in sequence order and checks that sequence numbers have no gaps, that each
 * `prevHash` equals the previous event's `hash` (the genesis hash for the first event), and that
 * each stored hash matches its recomputation, then that the last event is the head recorded with
 * the newest commit, so events deleted from the end are found too. Returns the first broken
 * event; `count` is the number of events that passed before it.
 */
export async function verifyAuditChain(store: Store): Promise<AuditVerification> {
  const progress = { count: 0 }
  try {
    return await walkChain(store, progress)
  } catch (error) {
    // The store raises this for a row whose JSON no longer parses, which is also an edit.
    if (!isWritError(error, 'audit.corrupt_event')) throw error
    return {
      ok: false,
      count: progress.count,
      seq: Number(error.fields.seq),
      id: String(error.fields.id),
      reason: 'unreadable event: the stored JSON does not parse',
    }
  }
}

async function walkChain(store: Store, progress: { count: number }): Promise<AuditVerification> {
  const head = parseHead(await store.getMeta(AUDIT_HEAD_META_KEY))
  let expectedSeq = 1
  let expectedPrevHash = GENESIS_HASH
  for await (const event of store.scanAudit()) {
    const broken = (reason: string): AuditVerification => ({
      ok: false,
      count: progress.count,
      seq: event.seq,
      id: event.id,
      reason,
    })
    if (event.seq !== expectedSeq) {
      return broken(`sequence gap: expected ${expectedSeq}, found ${event.seq}`)
    }
    if (event.prevHash !== expectedPrevHash) {
      return broken(
        expectedSeq === 1
          ? 'prevHash of the first event is not the genesis hash'
          : "prevHash does not match the previous event's hash",
      )
    }
    if (hashEvent(event) !== event.hash) return broken('hash mismatch: event was modified')
    progress.count += 1
    expectedSeq += 1
    expectedPrevHash = event.hash
  }
  const lastSeq = expectedSeq - 1
  if (head !== undefined && (head.seq !== lastSeq || head.hash !== expectedPrevHash)) {
    return {
      ok: false,
      count: progress.count,
      seq: head.seq,
      id: 'unknown',
      reason:
        head.seq > lastSeq
          ? `events ${lastSeq + 1} to ${head.seq} were removed from the end of the log`
          : `the log ends at event ${lastSeq}, not at the recorded head ${head.seq}`,
    }
  }
  return { ok: true, count: progress.count }
}

/** Reads the recorded head; a log written before heads were recorded has none. */
function parseHead(value: string | undefined): { seq: number; hash: string } | undefined {
  if (value === undefined) return undefined
  try {
    const head = JSON.parse(value) as { seq?: unknown; hash?: unknown }
    if (typeof head.seq === 'number' && typeof head.hash === 'string') {
      return { seq: head.seq, hash: head.hash }
    }
  } catch {
    // Reported below as an unreadable head.
  }
  return { seq: -1, hash: 'unreadable' }
}
