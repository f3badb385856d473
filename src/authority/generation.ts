import type { AuditCaller } from '../audit/types.js'
import { WritError } from '../errors.js'
import type { IssuedCertificateRecord } from '../store/store.js'
import { createLock, type LockServiceDeps } from './lock-service.js'

/** The certificate that asked for a renewal, as the clone check needs it. */
export interface RenewalSource {
  /** The generation in the presented certificate; the new one carries this plus one. */
  presentedGeneration: number
  caller: AuditCaller
  peer: string
}

/**
 * Records a renewed bot certificate, checking that the presented certificate is the newest of its
 * bot instance. Each renewal increments the generation, so a renewal from an older generation
 * means two parties hold the instance's key and certificate: the agent and a copy. Such a renewal
 * locks the bot instance, which stops both, and throws `renew.generation_stale`.
 *
 * NOTE: an agent can miss its last renewal when the connection breaks after the server recorded
 * it. The agent then retries from the older generation and is locked like a copy would be.
 */
export async function recordRenewalOrLock(
  deps: LockServiceDeps,
  record: IssuedCertificateRecord & { botInstance: string; generation: number },
  source: RenewalSource,
): Promise<void> {
  const result = await deps.store.recordRenewal(record, source.presentedGeneration)
  if (result.ok) return
  const presented = source.presentedGeneration
  const lock = await createLock(
    deps,
    {
      target: { botInstance: record.botInstance },
      message: `certificate generation ${presented} was presented for renewal after generation ${result.latest} was issued, so the certificate may have been copied`,
      createdBy: 'authority',
    },
    {
      caller: source.caller,
      peer: source.peer,
      reason: 'generation_stale',
      details: { presentedGeneration: presented, latestGeneration: result.latest },
    },
  )
  throw new WritError(
    'renew.generation_stale',
    `renewal refused: this certificate has generation ${presented}, but generation ${result.latest} was already issued to bot instance ${record.botInstance}; the instance is now locked (lock ${lock.id}); find where the key was copied, then join again with a new token from writ bots add`,
    {
      botInstance: record.botInstance,
      presentedGeneration: presented,
      latestGeneration: result.latest,
      lockId: lock.id,
    },
  )
}
