import type { AuditEventInput } from '../audit/types.js'
import type { GatewayDeps } from '../gateway/deps.js'
import type { PostExchange } from '../gateway/http-io.js'
import {
  denialResponse,
  errorResponse,
  INTERNAL_ERROR,
  type JsonRpcId,
  type JsonRpcMessage,
} from '../gateway/jsonrpc.js'
import type { Session } from '../gateway/session.js'

/** The audit fields of a tool call that the pipeline has built so far. */
type CallAudit = Partial<AuditEventInput> & {
  type: AuditEventInput['type']
  tool: string
  argsDigest: string
  args: unknown
}

/** The outcome of `holdToolCall` for the pipeline. */
export type HoldOutcome =
  | { handled: true }
  /** The call may continue; `audit` names the approval that released it, if any. */
  | { handled: false; audit: Partial<AuditEventInput> }

/**
 * Applies the approval and flow guard to a tool call the roles allow. A held call keeps the
 * client's request open until a person decides or the approval expires. A refused call is
 * audited and answered here (`handled: true`). The request must not be tracked yet, because an
 * upstream timeout must not run while a person decides.
 */
export async function holdToolCall(
  deps: GatewayDeps,
  session: Session,
  message: JsonRpcMessage,
  exchange: PostExchange,
  audit: CallAudit,
): Promise<HoldOutcome> {
  const guard = deps.callGuard
  if (guard === undefined) return { handled: false, audit: {} }
  const id = message.id as JsonRpcId
  const verdict = await guard.check({
    identity: session.identity,
    server: session.server,
    tool: audit.tool,
    argsDigest: audit.argsDigest,
    redactedArgs: audit.args,
    abandoned: () => session.ended || !exchange.open,
  })
  if (verdict.effect === 'abandoned') {
    const denial = session.endDenial
    if (session.ended) {
      // A lock or expiry ended the session: the approval must not release this call later.
      const why = `session ended (${denial?.reason ?? 'closed'}) while the call waited`
      await guard.cancel(verdict.approvalId, why).catch((error: unknown) => {
        session.logger.error({ error, approval: verdict.approvalId }, 'approval cancel failed')
      })
    }
    const event = {
      ...audit,
      outcome: 'denied' as const,
      reason: session.ended
        ? `the session ended (${denial?.reason ?? 'closed'}) while the call waited for approval ${verdict.approvalId}`
        : `the client left while the call waited for approval ${verdict.approvalId}`,
      rule: verdict.rule,
      details: { approval: { id: verdict.approvalId }, ...(denial?.details ?? {}) },
    }
    const record = await deps.audit(session.auditEvent(event)).catch((error: unknown) => {
      session.logger.error({ error, approval: verdict.approvalId }, 'audit write failed')
      return undefined
    })
    // The session may have ended while the call waited; the client still gets an answer.
    const answer =
      denial !== undefined && record !== undefined
        ? denialResponse(id, denial.reason, denial.message, record.id)
        : errorResponse(id, INTERNAL_ERROR, 'the session ended while the call waited for approval')
    exchange.respond(id, JSON.stringify(answer))
    return { handled: true }
  }
  if (verdict.effect === 'deny') {
    const event = {
      ...audit,
      outcome: 'denied' as const,
      reason: verdict.reason,
      rule: verdict.rule,
      ...(verdict.details === undefined ? {} : { details: verdict.details }),
    }
    const record = await deps.audit(session.auditEvent(event))
    session.logger.info(
      { tool: audit.tool, denial: verdict.denial, rule: verdict.rule },
      'tool call refused by approval or flow policy',
    )
    exchange.respond(
      id,
      JSON.stringify(denialResponse(id, verdict.denial, verdict.message, record.id)),
    )
    return { handled: true }
  }
  if (session.ended || !exchange.open) {
    // The approval was used up, but the client is gone: the call is not forwarded.
    session.logger.info({ tool: audit.tool }, 'approved tool call abandoned by the client')
    return { handled: true }
  }
  if (!('approval' in verdict)) return { handled: false, audit: {} }
  const { approval } = verdict
  return {
    handled: false,
    audit: {
      rule: approval.rule,
      details: {
        approval: {
          id: approval.id,
          approvedBy: approval.approvedBy,
          reason: approval.reason,
        },
      },
    },
  }
}
