import type { WritClaims } from '../identity/types.js'
import type { AuditCaller } from './types.js'

/** The audit caller fields that name a task certificate's task and parent. */
export type TaskCallerFields = Pick<
  AuditCaller,
  'task' | 'taskReason' | 'parentSerial' | 'parentSpiffeId'
>

/**
 * Returns the task id, task reason, parent serial and parent SPIFFE ID of a task certificate's
 * caller, or an empty object for a certificate without a task scope.
 *
 * @example
 *   Object.assign(caller, taskCallerFields(identity.spiffeId, identity.claims))
 */
export function taskCallerFields(spiffeId: string, claims: WritClaims): TaskCallerFields {
  const task = claims.task
  if (task === undefined) return {}
  const fields: TaskCallerFields = { task: task.id, taskReason: task.reason }
  if (claims.parentSerial !== undefined) fields.parentSerial = claims.parentSerial
  const parent = parentSpiffeIdOf(spiffeId)
  if (parent !== undefined) fields.parentSpiffeId = parent
  return fields
}

/**
 * Returns the parent's SPIFFE ID of a task certificate's ID by removing the last `/task/<id>`,
 * or undefined when the ID does not end that way.
 *
 * @example parentSpiffeIdOf('spiffe://writ.local/bot/ci/task/k3v9qa2mzx') // 'spiffe://writ.local/bot/ci'
 */
export function parentSpiffeIdOf(spiffeId: string): string | undefined {
  const match = /^(spiffe:\/\/[^/]+\/.+)\/task\/[^/]+$/.exec(spiffeId)
  return match?.[1]
}
