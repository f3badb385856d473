import type { AuditEventInput } from '../audit/types.js'
import { holdToolCall } from '../guard/approval-hold.js'
import { limitToolCall, observeToolResponse } from '../guard/limits.js'
import { checkScope, filterScopedList, refuseByArguments } from '../guard/scope.js'
import { decideWithPins } from '../guard/tool-pins.js'
import { auditSafeArgs, auditSafeText, refuseSecretEgress } from '../guard/upstream-guard.js'
import { forwardToAggregate } from './aggregate-route.js'
import { digestJson } from './canonical-json.js'
import type { GatewayDeps } from './deps.js'
import type { PostExchange } from './http-io.js'
import {
  classifyMessage,
  denialResponse,
  errorResponse,
  INTERNAL_ERROR,
  INVALID_REQUEST,
  type JsonRpcId,
  type JsonRpcMessage,
} from './jsonrpc.js'
import type { PendingRequest, Session } from './session.js'

/**
 * Runs one client message through the gateway pipeline: decide, audit, then forward in order.
 * Requests must already have been announced to `exchange` by the caller.
 */
export async function processClientMessage(
  deps: GatewayDeps,
  session: Session,
  message: JsonRpcMessage,
  exchange: PostExchange | undefined,
): Promise<void> {
  if (forwardToAggregate(session, message, exchange)) return
  const kind = classifyMessage(message)
  if (kind === 'request' && exchange !== undefined) {
    await processRequest(deps, session, message, exchange)
    return
  }
  if (kind === 'notification' && message.method === 'notifications/cancelled') {
    session.cancel((message.params as { requestId?: unknown } | undefined)?.requestId)
  }
  let method = message.method
  let details: Record<string, unknown> | undefined
  if (kind === 'response' || kind === 'error') {
    method = session.takeServerRequest(message.id)
    details = { direction: 'client_response', outcome: kind }
  }
  const gate = deps.audit(
    session.auditEvent({
      type: 'mcp.request',
      outcome: 'success',
      ...(method === undefined ? {} : { method }),
      ...(details === undefined ? {} : { details }),
    }),
  )
  session.forward(message, gate, (error) =>
    session.logger.error({ error, method }, 'audit write failed, message not forwarded'),
  )
}

async function processRequest(
  deps: GatewayDeps,
  session: Session,
  message: JsonRpcMessage,
  exchange: PostExchange,
): Promise<void> {
  const id = message.id as JsonRpcId
  const method = message.method!
  if (method === 'initialize') {
    const json = JSON.stringify(
      errorResponse(id, INVALID_REQUEST, 'session is already initialized'),
    )
    exchange.respond(id, json)
    return
  }
  if (method === 'tools/call') {
    await processToolCall(deps, session, message, exchange)
    return
  }
  const scope = await checkScope(deps, session, message, exchange)
  if (scope.handled) return
  session.track(message, exchange)
  // Every request is recorded, lists and pings included, before it is forwarded.
  const gate = deps.audit(
    session.auditEvent({ type: 'mcp.request', outcome: 'success', method, ...scope.audit }),
  )
  session.forward(message, gate, (error) => refuseUnaudited(session, id, method, error))
}

async function processToolCall(
  deps: GatewayDeps,
  session: Session,
  message: JsonRpcMessage,
  exchange: PostExchange,
): Promise<void> {
  const id = message.id as JsonRpcId
  const params = message.params ?? {}
  const tool = typeof params.name === 'string' ? params.name : ''
  const args = params.arguments ?? {}
  const decision = decideWithPins(
    deps.toolPins,
    session.config,
    tool,
    deps.decideTool(session.identity, session.server, tool),
  )
  const base = {
    type: 'mcp.request',
    method: 'tools/call',
    tool,
    argsDigest: digestJson(args),
    args: auditSafeArgs(session.redactor.value(args)),
    reason: decision.reason,
    ...(decision.rule === undefined ? {} : { rule: decision.rule }),
  } satisfies Partial<AuditEventInput>
  if (decision.effect !== 'allow') {
    const record = await deps.audit(session.auditEvent({ ...base, outcome: 'denied' }))
    const reason = decision.denial ?? 'forbidden'
    session.logger.info({ tool, reason: decision.reason, rule: decision.rule }, 'tool call denied')
    const denial = denialResponse(id, reason, toolDenialMessage(tool, reason), record.id)
    exchange.respond(id, JSON.stringify(denial))
    return
  }
  // Argument rules see `message` as it will be forwarded; a step that rewrites arguments must
  // run before this check.
  if (await refuseByArguments(deps, session, message, exchange, base)) return
  if (await refuseSecretEgress(deps, session, message, exchange, base)) return
  const hold = await holdToolCall(deps, session, message, exchange, base)
  if (hold.handled) return
  if (await limitToolCall(deps, session, message, exchange, base)) return
  session.track(message, exchange, tool)
  // The record of an allowed call is committed before the call leaves the gateway.
  const gate = deps.audit(session.auditEvent({ ...base, ...hold.audit, outcome: 'success' }))
  session.forward(message, gate, (error) => refuseUnaudited(session, id, 'tools/call', error))
}

function toolDenialMessage(tool: string, reason: string): string {
  const name = JSON.stringify(tool.slice(0, 128))
  if (reason === 'needs_approval') return `tool ${name} needs approval`
  if (reason === 'rate_limited') return `tool ${name} is rate limited`
  if (reason === 'quarantined') return `tool ${name} is quarantined until an operator approves it`
  return `tool ${name} is not allowed`
}

function refuseUnaudited(session: Session, id: JsonRpcId, method: string, error: unknown): void {
  // Fail closed: a call that cannot be recorded is not forwarded.
  session.logger.error({ error, method }, 'audit write failed, request not forwarded')
  session.answer(id, errorResponse(id, INTERNAL_ERROR, 'request could not be recorded'))
}

/**
 * Methods whose responses carry upstream content that flow policy tracks. Error responses count
 * too, because their messages reach the client's model as well.
 */
const FLOW_METHODS = ['tools/call', 'resources/read', 'prompts/get']

/**
 * Applies policy to an upstream response before it reaches the client: filters `tools/list`,
 * audits every error response with its latency, so upstream failures show in the audit log.
 */
export function transformResponse(
  deps: GatewayDeps,
  session: Session,
  pending: PendingRequest,
  message: JsonRpcMessage,
): JsonRpcMessage {
  const latencyMs = deps.clock() - pending.startedAt
  const failed = 'error' in message
  if (pending.method === 'tools/call') {
    session.logger.debug({ tool: pending.tool, latencyMs, failed }, 'tool call answered')
    observeToolResponse(deps, session, pending, message)
  }
  if (FLOW_METHODS.includes(pending.method)) {
    deps.callGuard?.observeResult(session.identity, session.server)
  }
  if (failed) {
    const error = message.error as { code?: unknown; message?: unknown }
    deps
      .audit(
        session.auditEvent({
          type: 'mcp.request',
          outcome: 'error',
          method: pending.method,
          ...(pending.tool === undefined ? {} : { tool: pending.tool }),
          latencyMs,
          details: {
            code: error.code,
            error: auditSafeText(session.redactor.text(String(error.message))),
          },
        }),
      )
      .catch((auditError) => session.logger.error({ error: auditError }, 'audit write failed'))
  }
  if (pending.method === 'tools/list' && !failed) return filterToolList(deps, session, message)
  if (!failed) return filterScopedList(deps, session, pending.method, message) ?? message
  return message
}

function filterToolList(
  deps: GatewayDeps,
  session: Session,
  message: JsonRpcMessage,
): JsonRpcMessage {
  const result = message.result as { tools?: unknown } | undefined
  if (result === undefined || !Array.isArray(result.tools)) return message
  // Every listed tool is pinned, including those this caller may not see.
  const pinned =
    deps.toolPins?.filterListed(session, session.config.toolPinning, result.tools) ?? result.tools
  const tools = pinned.filter((tool: unknown) => {
    const name = (tool as { name?: unknown } | null)?.name
    if (typeof name !== 'string') return false
    return deps.decideTool(session.identity, session.server, name).effect === 'allow'
  })
  return { ...message, result: { ...result, tools } }
}
