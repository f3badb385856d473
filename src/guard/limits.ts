import type { AuditEventInput } from '../audit/types.js'
import type { GatewayDeps } from '../gateway/deps.js'
import { idKey, type PostExchange } from '../gateway/http-io.js'
import {
  denialResponse,
  errorResponse,
  INTERNAL_ERROR,
  type JsonRpcId,
  type JsonRpcMessage,
} from '../gateway/jsonrpc.js'
import type { PendingRequest, Session } from '../gateway/session.js'
import { compilePattern, type NamePattern } from '../policy/pattern.js'
import { type CircuitBreakerOptions, CircuitBreakers } from './circuit-breaker.js'
import { LoopDetector, type LoopDetectorOptions, loopKey } from './loop-detector.js'
import { type BucketRate, TokenBuckets } from './token-bucket.js'

/** Rate limits for one principal: all its tool calls, plus tighter limits per tool pattern. */
export interface RateLimitConfig extends BucketRate {
  /** Limits per tool name pattern (literal, glob or `^...$`), each with its own bucket. */
  tools?: Record<string, BucketRate>
}

/** Gateway-wide settings of the limits guard; each has a default. */
export interface LimitsSettings {
  /** The rate limit for servers whose manifest sets none; no limit when absent. */
  rateLimit?: RateLimitConfig
  /** The tools/call timeout for servers whose manifest sets none (default 60 s). */
  toolCallTimeoutMs?: number
  /** The largest upstream response passed to a client, in bytes (default 8 MiB). */
  maxResponseBytes?: number
  circuitBreaker?: CircuitBreakerOptions
  loopDetector?: LoopDetectorOptions
}

/** 60 s: the default time an upstream has to respond to one tools/call. */
export const DEFAULT_TOOL_CALL_TIMEOUT_MS = 60_000
/** 8 MiB: the default maximum size of one upstream response delivered to a client. */
export const DEFAULT_MAX_RESPONSE_BYTES = 8 * 1024 * 1024

/** The audit fields of the tools/call being checked, as the pipeline builds them. */
type CallAudit = Partial<AuditEventInput> & {
  type: AuditEventInput['type']
  tool: string
  argsDigest: string
}

interface CallRecord {
  session: Session
  id: JsonRpcId
  tool: string
  loopKey: string
  probe: boolean
  timer: NodeJS.Timeout
}

interface LimitsState {
  buckets: TokenBuckets
  breakers: CircuitBreakers
  loops: LoopDetector
  calls: Map<string, CallRecord>
  patterns: Map<string, NamePattern>
}

/**
 * Guard state per gateway, keyed by its `limits` object: wrappers such as the aggregated endpoint
 * copy `deps` but share `limits`, so a caller gets one budget on a server whichever endpoint it
 * uses.
 */
const states = new WeakMap<GatewayDeps['limits'], LimitsState>()

/** Returns the guard state of one gateway, created on first use with the gateway's clock. */
function stateOf(deps: GatewayDeps): LimitsState {
  let state = states.get(deps.limits)
  if (state === undefined) {
    const settings = settingsOf(deps)
    state = {
      buckets: new TokenBuckets(deps.clock),
      breakers: new CircuitBreakers(deps.clock, settings.circuitBreaker),
      loops: new LoopDetector(deps.clock, settings.loopDetector),
      calls: new Map(),
      patterns: new Map(),
    }
    states.set(deps.limits, state)
  }
  return state
}

function settingsOf(deps: GatewayDeps): LimitsSettings {
  return deps.limits.guard ?? {}
}

/**
 * Applies the loop detector, the rate limits and the circuit breaker to a tools/call that policy
 * allowed. A refused call is audited and responded to here, and the function resolves true. A call
 * that may pass is registered for its timeout and outcome, and the function resolves false.
 */
export async function limitToolCall(
  deps: GatewayDeps,
  session: Session,
  message: JsonRpcMessage,
  exchange: PostExchange,
  audit: CallAudit,
): Promise<boolean> {
  const state = stateOf(deps)
  const id = message.id as JsonRpcId
  const key = loopKey(session.spiffeId, session.server, audit.tool, audit.argsDigest)
  const refusal = checkLoop(state, key) ?? checkRate(deps, state, session, audit.tool)
  if (refusal !== undefined) {
    const event = { ...audit, outcome: 'denied' as const, ...refusal.audit }
    const record = await deps.audit(session.auditEvent(event))
    session.logger.info({ tool: audit.tool, rule: refusal.audit.rule }, 'tool call limited')
    const denial = denialResponse(id, 'rate_limited', refusal.message, record.id)
    exchange.respond(id, JSON.stringify(denial))
    return true
  }
  const circuit = state.breakers.check(session.server)
  if (!circuit.ok) {
    await failFast(deps, session, exchange, id, audit, circuit.retryAt, circuit.failures)
    return true
  }
  registerCall(deps, state, session, id, audit.tool, key, circuit.probe)
  return false
}

interface Refusal {
  message: string
  audit: { reason: string; rule: string; details: Record<string, unknown> }
}

function checkLoop(state: LimitsState, key: string): Refusal | undefined {
  const failures = state.loops.check(key)
  if (failures === 0) return undefined
  return {
    message: `the same tool call failed ${failures} times in a row; change the arguments or stop retrying`,
    audit: { reason: 'repeated_failing_call', rule: 'guard/loop', details: { failures } },
  }
}

function checkRate(
  deps: GatewayDeps,
  state: LimitsState,
  session: Session,
  tool: string,
): Refusal | undefined {
  const principal = `${session.server}\n${session.spiffeId}`
  const taken: string[] = []
  // The server's limits (or the gateway default) and the roles' limits are separate buckets,
  // and a call must fit in both.
  const sources: Array<[string, RateLimitConfig | undefined]> = [
    [`${principal}\nserver`, session.config.limits ?? settingsOf(deps).rateLimit],
    [`${principal}\nroles`, deps.roleRateLimits?.(session.identity)],
  ]
  for (const [prefix, config] of sources) {
    if (config === undefined) continue
    const refusal = takeTokens(state, prefix, config, tool, taken)
    if (refusal === undefined) continue
    for (const key of taken) state.buckets.refund(key)
    return refusal
  }
  return undefined
}

/** Takes a token from each bucket of `config` that applies to `tool`, recording it in `taken`. */
function takeTokens(
  state: LimitsState,
  prefix: string,
  config: RateLimitConfig,
  tool: string,
  taken: string[],
): Refusal | undefined {
  // Tool buckets first, so a call refused for its tool spends nothing of the principal's budget.
  for (const [source, rate] of Object.entries(config.tools ?? {})) {
    if (!patternOf(state, source).matches(tool)) continue
    const key = `${prefix}\n${source}`
    const result = state.buckets.take(key, rate)
    if (!result.ok) return rateRefusal(tool, source, rate, result.retryAfterMs)
    taken.push(key)
  }
  const result = state.buckets.take(prefix, config)
  if (!result.ok) return rateRefusal(tool, undefined, config, result.retryAfterMs)
  taken.push(prefix)
  return undefined
}

function rateRefusal(
  tool: string,
  pattern: string | undefined,
  rate: BucketRate,
  retryAfterMs: number,
): Refusal {
  const seconds = Math.max(1, Math.ceil(retryAfterMs / 1000))
  const scope =
    pattern === undefined ? 'tool calls' : `calls to tools matching ${JSON.stringify(pattern)}`
  const name = JSON.stringify(tool.slice(0, 128))
  return {
    message: `tool ${name} is rate limited: at most ${rate.callsPerMinute} ${scope} per minute; retry in ${seconds} s`,
    audit: {
      reason: 'rate_limit_exceeded',
      rule: pattern === undefined ? 'guard/rate-limit' : `guard/rate-limit:${pattern}`,
      details: { callsPerMinute: rate.callsPerMinute, retryAfterMs },
    },
  }
}

function patternOf(state: LimitsState, source: string): NamePattern {
  let pattern = state.patterns.get(source)
  if (pattern === undefined) {
    pattern = compilePattern(source)
    state.patterns.set(source, pattern)
  }
  return pattern
}

async function failFast(
  deps: GatewayDeps,
  session: Session,
  exchange: PostExchange,
  id: JsonRpcId,
  audit: CallAudit,
  retryAt: number,
  failures: number,
): Promise<void> {
  const retry = new Date(retryAt).toISOString()
  const record = await deps.audit(
    session.auditEvent({
      ...audit,
      outcome: 'error',
      reason: 'circuit_open',
      rule: 'guard/circuit-breaker',
      details: { failures, retryAt: retry },
    }),
  )
  const text = `upstream server "${session.server}" is failing, so calls fail fast until ${retry}, when one call will be tried again`
  const data = { server: session.server, retryAt: retry, requestId: record.id }
  exchange.respond(id, JSON.stringify(errorResponse(id, INTERNAL_ERROR, text, data)))
}

function registerCall(
  deps: GatewayDeps,
  state: LimitsState,
  session: Session,
  id: JsonRpcId,
  tool: string,
  key: string,
  probe: boolean,
): void {
  const callKey = `${session.id}\n${idKey(id)}`
  const timeoutMs =
    session.config.timeoutMs ?? settingsOf(deps).toolCallTimeoutMs ?? DEFAULT_TOOL_CALL_TIMEOUT_MS
  const timer = setTimeout(() => void timeOut(deps, state, callKey, timeoutMs), timeoutMs)
  timer.unref()
  state.calls.set(callKey, { session, id, tool, loopKey: key, probe, timer })
}

/** Fails a tools/call that the upstream did not respond to in time, and cancels it upstream. */
async function timeOut(
  deps: GatewayDeps,
  state: LimitsState,
  callKey: string,
  timeoutMs: number,
): Promise<void> {
  const call = state.calls.get(callKey)
  state.calls.delete(callKey)
  if (call === undefined) return
  const { session, id, tool } = call
  if (session.ended || !session.hasPending(id)) {
    if (call.probe) state.breakers.abandoned(session.server)
    return
  }

  const reason = `timed out after ${timeoutMs} ms`
  session.upstream?.send({
    jsonrpc: '2.0',
    method: 'notifications/cancelled',
    params: { requestId: id, reason: `Writ gateway: ${reason}` },
  })
  state.breakers.failed(session.server)
  state.loops.failed(call.loopKey)
  session.logger.warn({ tool, timeoutMs }, 'tool call timed out, cancelled upstream')

  let requestId: string | undefined
  try {
    const event = session.auditEvent({
      type: 'mcp.request',
      outcome: 'error',
      method: 'tools/call',
      tool,
      reason: 'upstream_timeout',
      rule: 'guard/timeout',
      latencyMs: timeoutMs,
      details: { timeoutMs, cancelled: true },
    })
    requestId = (await deps.audit(event)).id
  } catch (error) {
    session.logger.error({ error }, 'audit write failed')
  }

  const text = `upstream server "${session.server}" did not answer tool ${JSON.stringify(tool.slice(0, 128))} within the ${timeoutMs} ms timeout; the call was cancelled`
  const data = { server: session.server, timeoutMs, ...(requestId ? { requestId } : {}) }
  session.answer(id, errorResponse(id, INTERNAL_ERROR, text, data))
}

/** JSON-RPC errors caused by the client, which do not indicate the upstream's health. */
const CLIENT_ERROR_CODES = new Set([-32700, -32600, -32601, -32602])

/**
 * Records the upstream's answer to a tools/call for the timeout, the circuit breaker and the loop
 * detector. Only server-side JSON-RPC errors count against the circuit; any failure, including a
 * result flagged `isError`, counts toward a loop.
 */
export function observeToolResponse(
  deps: GatewayDeps,
  session: Session,
  pending: PendingRequest,
  message: JsonRpcMessage,
): void {
  if (pending.method !== 'tools/call') return
  const state = states.get(deps.limits)
  if (state === undefined) return
  const callKey = `${session.id}\n${idKey(pending.id)}`
  const call = state.calls.get(callKey)
  if (call === undefined) return
  state.calls.delete(callKey)
  clearTimeout(call.timer)
  const error = message.error as { code?: unknown } | undefined
  const serverError = error !== undefined && !CLIENT_ERROR_CODES.has(Number(error.code))
  if (serverError) {
    if (state.breakers.failed(session.server)) {
      session.logger.warn({ server: session.server }, 'upstream failing, circuit opened')
    }
  } else {
    state.breakers.succeeded(session.server)
  }
  const toolFailed = (message.result as { isError?: unknown } | undefined)?.isError === true
  if (error !== undefined || toolFailed) state.loops.failed(call.loopKey)
  else state.loops.succeeded(call.loopKey)
}

/**
 * Replaces an upstream response larger than the limit with a `too_large` denial for that request
 * only; the session goes on. Returns true when it took over delivery of the response.
 */
export function refuseOversizedResponse(
  deps: GatewayDeps,
  session: Session,
  pending: PendingRequest,
  json: string,
): boolean {
  const limit = settingsOf(deps).maxResponseBytes ?? DEFAULT_MAX_RESPONSE_BYTES
  // A UTF-16 length is at most the UTF-8 byte length, so most responses skip the byte count.
  if (json.length * 3 <= limit) return false
  const bytes = Buffer.byteLength(json)
  if (bytes <= limit) return false
  session.logger.warn({ method: pending.method, bytes, limit }, 'upstream response too large')
  const event = session.auditEvent({
    type: 'mcp.request',
    outcome: 'denied',
    method: pending.method,
    ...(pending.tool === undefined ? {} : { tool: pending.tool }),
    reason: 'response_too_large',
    rule: 'guard/response-size',
    details: { bytes, maxBytes: limit },
  })
  const text = `the upstream response of ${bytes} bytes exceeds the ${limit}-byte limit`
  deps.audit(event).then(
    (record) => {
      const denial = denialResponse(pending.id, 'too_large', text, record.id)
      pending.exchange.respond(pending.id, JSON.stringify(denial))
    },
    (error) => {
      session.logger.error({ error }, 'audit write failed')
      const failure = errorResponse(pending.id, INTERNAL_ERROR, text)
      pending.exchange.respond(pending.id, JSON.stringify(failure))
    },
  )
  return true
}
