/**
 * The content guard's hooks into the gateway: scrubbing what upstreams send, deciding
 * server-initiated requests, and denying tool calls that would carry a secret to an external
 * server. Each function is called from one place in the gateway.
 */

import type { AuditEventInput } from '../audit/types.js'
import type { GatewayDeps, UpstreamConfig } from '../gateway/deps.js'
import type { PostExchange } from '../gateway/http-io.js'
import {
  classifyMessage,
  denialResponse,
  errorResponse,
  INTERNAL_ERROR,
  type JsonRpcId,
  type JsonRpcMessage,
} from '../gateway/jsonrpc.js'
import type { PendingRequest, Session } from '../gateway/session.js'
import { redactSecrets, redactSecretsInValue, ScrubTally, scrubValue } from './scrub.js'
import { decideServerRequest, type ServerRequestVerdict } from './server-requests.js'

/**
 * Screens a request or notification from the upstream before the session routes it. Strings in
 * its params are scrubbed. A governed server request (sampling, elicitation, roots) is audited,
 * and when denied the gateway sends the upstream a JSON-RPC error and returns `undefined`,
 * so the client never sees it. Responses are returned unchanged, because `scrubResponse` handles
 * them after the response policy has run.
 */
export function screenUpstreamMessage(
  deps: GatewayDeps,
  session: Session,
  message: JsonRpcMessage,
): JsonRpcMessage | undefined {
  const kind = classifyMessage(message)
  if (kind !== 'request' && kind !== 'notification') return message
  const tally = new ScrubTally()
  // Configured secrets are replaced first, so they keep their plain `[REDACTED]` marker.
  const params =
    message.params === undefined
      ? undefined
      : scrubValue(session.redactor.value(message.params), tally)
  const screened = params === message.params ? message : { ...message, params }
  // The decision reads the scrubbed params, so a zero-width space inside "password" cannot hide it.
  const verdict =
    kind === 'request'
      ? decideServerRequest(message.method!, params, session.config.allow)
      : undefined
  if (verdict !== undefined && !verdict.ok) {
    denyServerRequest(deps, session, screened, verdict, tally)
    return undefined
  }
  if (verdict !== undefined || tally.redactions.size > 0) {
    // Notifications are audited only when they carried a secret, so a server that colours every
    // log line does not write one audit record per line.
    const event = session.auditEvent({
      type: 'mcp.request',
      outcome: 'success',
      method: message.method!,
      reason: verdict === undefined ? 'upstream_content_scrubbed' : 'server_request_allowed',
      ...(verdict === undefined ? { rule: 'guard/scrub' } : { rule: verdict.rule }),
      details: {
        direction: kind === 'request' ? 'server_request' : 'server_notification',
        ...tally.details(),
      },
    })
    deps.audit(event).catch((error) => session.logger.error({ error }, 'audit write failed'))
  }
  return screened
}

function denyServerRequest(
  deps: GatewayDeps,
  session: Session,
  message: JsonRpcMessage,
  verdict: Extract<ServerRequestVerdict, { ok: false }>,
  tally: ScrubTally,
): void {
  const id = message.id as JsonRpcId
  const method = message.method!
  session.logger.info({ method, rule: verdict.rule }, 'server request denied')
  const event = session.auditEvent({
    type: 'mcp.request',
    outcome: 'denied',
    method,
    reason: verdict.reason,
    rule: verdict.rule,
    details: { direction: 'server_request', ...tally.details() },
  })
  deps.audit(event).then(
    (record) =>
      answerUpstream(session, denialResponse(id, 'forbidden', verdict.message, record.id)),
    (error) => {
      session.logger.error({ error, method }, 'audit write failed')
      answerUpstream(session, errorResponse(id, INTERNAL_ERROR, verdict.message))
    },
  )
}

function answerUpstream(session: Session, response: JsonRpcMessage): void {
  if (!session.ended) session.upstream?.send(response)
}

/**
 * Scrubs the result or error of an upstream response before it reaches the client, and audits
 * what was removed or redacted by kind and detector name, never the values.
 */
export function scrubResponse(
  deps: GatewayDeps,
  session: Session,
  pending: PendingRequest,
  message: JsonRpcMessage,
): JsonRpcMessage {
  const tally = new ScrubTally()
  // Configured secrets are replaced first, so they keep their plain `[REDACTED]` marker.
  const redacted = session.redactor.value(message)
  let screened = redacted
  if (redacted.result !== undefined) {
    const result = scrubValue(redacted.result, tally)
    if (result !== redacted.result) screened = { ...screened, result }
  }
  if (redacted.error !== undefined) {
    const error = scrubValue(redacted.error, tally)
    if (error !== redacted.error) screened = { ...screened, error }
  }
  if (!tally.changed) return redacted
  const event = session.auditEvent({
    type: 'mcp.request',
    outcome: 'success',
    method: pending.method,
    ...(pending.tool === undefined ? {} : { tool: pending.tool }),
    reason: 'upstream_content_scrubbed',
    rule: 'guard/scrub',
    details: { direction: 'server_response', ...tally.details() },
  })
  deps.audit(event).catch((error) => session.logger.error({ error }, 'audit write failed'))
  return screened
}

/**
 * Denies a tool call to a server marked external whose arguments contain a secret: the call is
 * audited with rule `guard/secret-egress/<detector>`, the client gets a denial with reason
 * `forbidden`, and `true` is returned. `false` means the call may continue. Invisible
 * characters are removed before detection, so a token split by a zero-width space is found.
 */
export async function refuseSecretEgress(
  deps: GatewayDeps,
  session: Session,
  message: JsonRpcMessage,
  exchange: PostExchange,
  audit: Partial<AuditEventInput> & { type: AuditEventInput['type']; tool: string },
): Promise<boolean> {
  const detector = secretEgressDetector(session.config, message.params?.arguments)
  if (detector === undefined) return false
  const id = message.id as JsonRpcId
  const rule = `guard/secret-egress/${detector}`
  const record = await deps.audit(
    session.auditEvent({ ...audit, outcome: 'denied', reason: 'secret_egress', rule }),
  )
  session.logger.info({ tool: audit.tool, rule }, 'tool call denied: secret to external server')
  const tool = JSON.stringify(audit.tool.slice(0, 128))
  const text = `tool ${tool} is not allowed: its arguments contain a secret (${detector}) and server "${session.server}" is external`
  exchange.respond(id, JSON.stringify(denialResponse(id, 'forbidden', text, record.id)))
  return true
}

/** Returns the first secret detector that matches the arguments for an external server. */
export function secretEgressDetector(config: UpstreamConfig, args: unknown): string | undefined {
  if (config.external !== true || args === undefined) return undefined
  const tally = new ScrubTally()
  scrubValue(args, tally)
  const [detector] = tally.redactions.keys()
  return detector
}

/** Returns a copy of tool arguments for the audit log with every detected secret replaced. */
export function auditSafeArgs<T>(args: T): T {
  return redactSecretsInValue(args)
}

/** Returns an upstream error text for the audit log with every detected secret replaced. */
export function auditSafeText(text: string): string {
  return redactSecrets(text, new ScrubTally())
}
