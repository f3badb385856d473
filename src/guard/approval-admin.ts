import type { AuditEventInput } from '../audit/types.js'
import { WritError } from '../errors.js'
import type { Store, ToolApprovalRecord } from '../store/store.js'

/** The maximum length of an approver's reason, in characters. */
export const MAX_DECISION_REASON_LENGTH = 1000

/** Dependencies of an approval decision: the store, the audit log and the clock. */
export interface ApprovalAdminDeps {
  store: Store
  audit: { record(event: AuditEventInput): Promise<{ id: string; seq: number }> }
  clock(): number
}

/**
 * Returns the approvals for `writ approvals ls`: the pending ones not expired at `now`, or with
 * `all` the newest of every state.
 */
export async function listApprovals(
  store: Store,
  options: { all: boolean; limit: number; now: number },
): Promise<ToolApprovalRecord[]> {
  const approvals = await store.listToolApprovals({
    limit: options.limit,
    pendingOnly: !options.all,
  })
  if (options.all) return approvals
  return approvals.filter((approval) => approval.expires > options.now)
}

/**
 * Approves or denies a pending approval and records `approval.approve` or `approval.deny`.
 * Throws `approval.invalid_reason` for an empty or overlong reason, `approval.not_found` for an
 * unknown id, and `approval.not_pending` when it was already decided or has expired.
 */
export async function decideApproval(
  deps: ApprovalAdminDeps,
  request: { id: string; state: 'approved' | 'denied'; reason: string; decidedBy: string },
): Promise<ToolApprovalRecord> {
  const reason = request.reason.trim()
  if (reason === '' || reason.length > MAX_DECISION_REASON_LENGTH) {
    throw new WritError(
      'approval.invalid_reason',
      `invalid reason ${JSON.stringify(request.reason.slice(0, 64))}: give --reason TEXT of 1 to ${MAX_DECISION_REASON_LENGTH} characters`,
      { length: reason.length },
    )
  }
  const now = deps.clock()
  const decided = await deps.store.decideToolApproval(request.id, {
    state: request.state,
    decidedBy: request.decidedBy,
    reason,
    decided: now,
  })
  if (decided === undefined) {
    const existing = await deps.store.getToolApproval(request.id)
    if (existing === undefined) {
      throw new WritError(
        'approval.not_found',
        `approval "${request.id}" not found; run writ approvals ls to list pending approvals`,
        { id: request.id },
      )
    }
    const state =
      existing.state === 'pending'
        ? `expired at ${new Date(existing.expires).toISOString()}`
        : existing.state
    throw new WritError(
      'approval.not_pending',
      `approval "${request.id}" is no longer pending (${state}); the caller must call again to request a new one`,
      { id: request.id, state: existing.state },
    )
  }
  await deps.audit.record({
    type: request.state === 'approved' ? 'approval.approve' : 'approval.deny',
    outcome: 'success',
    reason,
    rule: decided.rule,
    server: decided.server,
    tool: decided.tool,
    argsDigest: decided.argsDigest,
    details: { approval: decided.id, decidedBy: request.decidedBy, spiffeId: decided.spiffeId },
  })
  return decided
}
