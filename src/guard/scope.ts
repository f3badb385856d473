/**
 * Applies argument rules to `tools/call`, and roles to resources and prompts, inside the
 * gateway pipeline. Every decision comes from the caller's certificate through `GatewayDeps`:
 * nothing in a request (arguments such as `role`, `_meta`, or HTTP headers) is read as identity.
 *
 * Methods governed here, besides the argument check:
 *
 * - `resources/read`, `resources/subscribe` and `resources/unsubscribe` by `params.uri`,
 * - `prompts/get` by `params.name`,
 * - `completion/complete` by its `params.ref` (a prompt name or a resource template URI),
 * - `resources/list`, `resources/templates/list` and `prompts/list`, whose results are filtered.
 *   A resource template is listed when its `uriTemplate` text matches an allowed pattern.
 *
 * A denied request is audited with the rule and gets a JSON-RPC error with reason `forbidden`, so
 * it never reaches the upstream.
 */
import type { AuditEventInput } from '../audit/types.js'
import type { Decision, GatewayDeps } from '../gateway/deps.js'
import type { PostExchange } from '../gateway/http-io.js'
import { denialResponse, type JsonRpcId, type JsonRpcMessage } from '../gateway/jsonrpc.js'
import type { Session } from '../gateway/session.js'

/** The outcome of a scope check: denied and responded to here, or allowed with audit fields. */
export type ScopeOutcome = { handled: true } | { handled: false; audit: Partial<AuditEventInput> }

type ScopedTarget = { kind: 'resource' | 'prompt'; name: string }

/** Methods whose target `checkScope` decides, with where the target sits in `params`. */
const TARGETS: Record<string, (params: Record<string, unknown>) => ScopedTarget | undefined> = {
  'resources/read': (params) => ({ kind: 'resource', name: stringOf(params.uri) }),
  'resources/subscribe': (params) => ({ kind: 'resource', name: stringOf(params.uri) }),
  'resources/unsubscribe': (params) => ({ kind: 'resource', name: stringOf(params.uri) }),
  'prompts/get': (params) => ({ kind: 'prompt', name: stringOf(params.name) }),
  'completion/complete': completionTarget,
}

/**
 * Decides a request for a resource or prompt. Returns `handled: false` for other methods and for
 * allowed requests, whose audit fields then name the rule. A denied request is audited and gets
 * its error response here.
 */
export async function checkScope(
  deps: GatewayDeps,
  session: Session,
  message: JsonRpcMessage,
  exchange: PostExchange,
): Promise<ScopeOutcome> {
  const method = message.method ?? ''
  const targetOf = TARGETS[method]
  if (targetOf === undefined) return { handled: false, audit: {} }
  const target = targetOf(message.params ?? {}) ?? { kind: 'prompt', name: '' }
  const decision = decideTarget(deps, session, target)
  const audit = {
    reason: decision.reason,
    ...(decision.rule === undefined ? {} : { rule: decision.rule }),
    details: { [target.kind === 'resource' ? 'uri' : 'prompt']: target.name.slice(0, 2048) },
  }
  if (decision.effect === 'allow') return { handled: false, audit }
  const id = message.id as JsonRpcId
  const record = await deps.audit(
    session.auditEvent({ type: 'mcp.request', outcome: 'denied', method, ...audit }),
  )
  session.logger.info({ method, rule: decision.rule }, `${target.kind} request denied`)
  const shown = JSON.stringify(target.name.slice(0, 128))
  const text = `${target.kind} ${shown} is not allowed`
  exchange.respond(id, JSON.stringify(denialResponse(id, 'forbidden', text, record.id)))
  return { handled: true }
}

/**
 * Checks the arguments of a tool call the roles allow, on the value that will be forwarded.
 * Returns true when a rule failed: the call is then audited with the rule and gets reason
 * `forbidden`. False means the call may continue.
 */
export async function refuseByArguments(
  deps: GatewayDeps,
  session: Session,
  message: JsonRpcMessage,
  exchange: PostExchange,
  audit: Partial<AuditEventInput> & { type: AuditEventInput['type']; tool: string },
): Promise<boolean> {
  if (deps.decideArguments === undefined) return false
  const args = message.params?.arguments ?? {}
  const decision = deps.decideArguments(session.identity, session.server, audit.tool, args)
  if (decision.effect === 'allow') return false
  const id = message.id as JsonRpcId
  const record = await deps.audit(
    session.auditEvent({
      ...audit,
      outcome: 'denied',
      reason: decision.reason,
      ...(decision.rule === undefined ? {} : { rule: decision.rule }),
    }),
  )
  session.logger.info(
    { tool: audit.tool, rule: decision.rule },
    'tool call denied by argument rule',
  )
  const text = `the arguments of tool ${JSON.stringify(audit.tool.slice(0, 128))} are not allowed`
  exchange.respond(id, JSON.stringify(denialResponse(id, 'forbidden', text, record.id)))
  return true
}

/** List results filtered by `filterScopedList`: the method, the result field and the name key. */
const LISTS: Record<string, { field: string; key: string; kind: ScopedTarget['kind'] }> = {
  'resources/list': { field: 'resources', key: 'uri', kind: 'resource' },
  'resources/templates/list': { field: 'resourceTemplates', key: 'uriTemplate', kind: 'resource' },
  'prompts/list': { field: 'prompts', key: 'name', kind: 'prompt' },
}

/**
 * Removes the resources, resource templates or prompts the caller may not use from a list
 * result. Returns undefined for other methods, so the caller keeps the message as it is.
 */
export function filterScopedList(
  deps: GatewayDeps,
  session: Session,
  method: string,
  message: JsonRpcMessage,
): JsonRpcMessage | undefined {
  const list = LISTS[method]
  if (list === undefined) return undefined
  const result = message.result as Record<string, unknown> | undefined
  if (result === undefined || !Array.isArray(result[list.field])) return message
  const items = (result[list.field] as unknown[]).filter((item) => {
    const name = (item as Record<string, unknown> | null)?.[list.key]
    if (typeof name !== 'string') return false
    return decideTarget(deps, session, { kind: list.kind, name }).effect === 'allow'
  })
  return { ...message, result: { ...result, [list.field]: items } }
}

function decideTarget(deps: GatewayDeps, session: Session, target: ScopedTarget): Decision {
  const decide = target.kind === 'resource' ? deps.decideResource : deps.decidePrompt
  if (decide === undefined) {
    const reason = `the gateway has no ${target.kind} policy, so every ${target.kind} is denied`
    return { effect: 'deny', reason, rule: 'default-deny', denial: 'forbidden' }
  }
  return decide(session.identity, session.server, target.name)
}

/** Reads the prompt name or resource template URI that a completion request refers to. */
function completionTarget(params: Record<string, unknown>): ScopedTarget | undefined {
  const ref = params.ref as { type?: unknown; name?: unknown; uri?: unknown } | undefined
  if (ref?.type === 'ref/prompt') return { kind: 'prompt', name: stringOf(ref.name) }
  if (ref?.type === 'ref/resource') return { kind: 'resource', name: stringOf(ref.uri) }
  return undefined
}

function stringOf(value: unknown): string {
  return typeof value === 'string' ? value : ''
}
