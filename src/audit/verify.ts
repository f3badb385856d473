import { isWritError } from '../errors.js'
import type { Store } from '../store/store.js'
import { GENESIS_HASH, hashEvent } from './chain.js'

export type AuditVerification =
  | { ok: true; count: number }
  | { ok: false; count: number; seq: number; id: string; reason: string }

/**
 * Walks the audit log in sequence order and checks that sequence numbers have no gaps, that each
 * `prevHash` equals the previous event's `hash` (the genesis hash for the first event), and that
 * each stored hash matches its recomputation. Returns the first broken event; `count` is the
 * number of events that passed before it.
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
  return { ok: true, count: progress.count }
}
