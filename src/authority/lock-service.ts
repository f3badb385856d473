import { randomBytes } from 'node:crypto'
import type { AuditCaller, AuditEventInput } from '../audit/types.js'
import type { Clock } from '../clock.js'
import { WritError } from '../errors.js'
import type { Store } from '../store/store.js'
import {
  checkLockMessage,
  findLock,
  isLockActive,
  type Lock,
  type LockSubject,
  type LockTarget,
  lockedMessage,
} from './locks.js'

/** Dependencies of lock creation and removal: the store, the audit log and the clock. */
export interface LockServiceDeps {
  store: Store
  audit: { record(event: AuditEventInput): Promise<{ id: string; seq: number }> }
  clock: Clock
}

export interface LockRequest {
  target: LockTarget
  message: string
  /** Lifetime in seconds; without it the lock stays until `writ unlock`. */
  ttlSeconds?: number
  /** The requester, recorded as the lock's creator, such as `cli:alice` or `authority`. */
  createdBy: string
}

/** Audit fields added to the `lock.create` event, such as the caller whose renewal caused it. */
export interface LockAuditContext {
  caller?: AuditCaller
  peer?: string
  reason?: string
  details?: Record<string, unknown>
}

/**
 * Stores a lock and records `lock.create`. Running servers see it at their next poll of the lock
 * version and end the sessions it covers.
 *
 * @example
 *   const lock = await createLock(host, { target: { bot: 'ci-agent' }, message: 'key leaked',
 *     createdBy: 'cli:alice' })
 */
export async function createLock(
  deps: LockServiceDeps,
  request: LockRequest,
  context: LockAuditContext = {},
): Promise<Lock> {
  const message = checkLockMessage(request.message)
  const now = deps.clock()
  const lock: Lock = {
    id: `lock-${randomBytes(6).toString('hex')}`,
    target: request.target,
    message,
    created: new Date(now).toISOString(),
    createdBy: request.createdBy,
  }
  if (request.ttlSeconds !== undefined) {
    lock.expires = new Date(now + request.ttlSeconds * 1000).toISOString()
  }
  await deps.store.putLock(lock)
  await deps.audit.record({
    type: 'lock.create',
    outcome: 'success',
    ...(context.reason === undefined ? {} : { reason: context.reason }),
    ...(context.caller === undefined ? {} : { caller: context.caller }),
    ...(context.peer === undefined ? {} : { peer: context.peer }),
    details: { ...context.details, ...lockDetails(lock) },
  })
  return lock
}

/** Deletes a lock and records `lock.remove`. Throws `lock.not_found` naming the id. */
export async function removeLock(deps: LockServiceDeps, id: string, actor: string): Promise<Lock> {
  const lock = await deps.store.deleteLock(id)
  if (lock === undefined) {
    throw new WritError(
      'lock.not_found',
      `lock "${id}" not found; run writ locks to list the active locks and their ids`,
      { id },
    )
  }
  await deps.audit.record({
    type: 'lock.remove',
    outcome: 'success',
    details: { ...lockDetails(lock), removedBy: actor },
  })
  return lock
}

/** Returns the locks in force at the store's clock, oldest first. */
export async function listActiveLocks(store: Store, now: number): Promise<Lock[]> {
  return (await store.listLocks()).filter((lock) => isLockActive(lock, now))
}

/**
 * Throws `<area>.locked` when an active lock covers the subject. The message names the lock and
 * its reason, and the error's `lockId` field lets the audit record name it too.
 */
export async function requireUnlocked(
  store: Store,
  subject: LockSubject,
  now: number,
  area: string,
  action: string,
): Promise<void> {
  const lock = findLock(await store.listLocks(), subject, now)
  if (lock === undefined) return
  throw new WritError(`${area}.locked`, lockedMessage(action, lock), {
    lockId: lock.id,
    target: lock.target,
  })
}

/** Returns the fields of a lock that its audit events carry. */
export function lockDetails(lock: Lock): Record<string, unknown> {
  return {
    lockId: lock.id,
    target: lock.target,
    message: lock.message,
    createdBy: lock.createdBy,
    ...(lock.expires === undefined ? {} : { expires: lock.expires }),
  }
}
