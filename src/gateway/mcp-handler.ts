import { randomBytes } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { WritError } from '../errors.js'
import { interceptListChanged } from '../guard/pin-relist.js'
import { screenUpstreamMessage, scrubResponse } from '../guard/upstream-guard.js'
import type { PeerIdentity } from '../identity/types.js'
import {
  DEFAULT_MAX_SESSIONS_PER_PRINCIPAL,
  type Decision,
  type GatewayDeps,
  type UpstreamConfig,
} from './deps.js'
import { accepts, idKey, PostExchange, readLimitedBody, writeJson } from './http-io.js'
import { createSessionIdentityJwt, type SessionIdentityJwt } from './identity-jwt.js'
import {
  classifyMessage,
  denialResponse,
  errorResponse,
  INTERNAL_ERROR,
  INVALID_REQUEST,
  type JsonRpcId,
  type JsonRpcMessage,
  MAX_JSON_DEPTH,
  type MessageKind,
  PARSE_ERROR,
  parseJson,
} from './jsonrpc.js'
import { processClientMessage, transformResponse } from './pipeline.js'
import { createRedactor } from './redact.js'
import { callerOf, Session, type SessionDenial } from './session.js'
import type { Upstream, UpstreamEvents } from './upstream.js'
import { createHttpUpstream } from './upstream-http.js'
import { createStdioUpstream } from './upstream-stdio.js'

/** Methods the gateway decides on; a variant of one of these names is never forwarded. */
const GOVERNED_METHODS = [
  'initialize',
  'tools/call',
  'tools/list',
  'resources/read',
  'resources/list',
  'resources/templates/list',
  'resources/subscribe',
  'resources/unsubscribe',
  'prompts/get',
  'prompts/list',
  'completion/complete',
]

/** Returns why a method name is rejected, or undefined for a name that may be forwarded. */
function screenMethod(method: string): string | undefined {
  if (method === '' || /[\s\u0000-\u001f\u007f]/.test(method)) {
    return `invalid method name ${JSON.stringify(method.slice(0, 64))}`
  }
  const lower = method.toLowerCase()
  if (lower !== method && GOVERNED_METHODS.includes(lower)) {
    const name = JSON.stringify(method.slice(0, 64))
    return `invalid method name ${name}: method names are case-sensitive, use "${lower}"`
  }
  return undefined
}

/** Protocol revisions the gateway accepts in `MCP-Protocol-Version`. */
export const SUPPORTED_PROTOCOL_VERSIONS = ['2024-11-05', '2025-03-26', '2025-06-18', '2025-11-25']
/** The last revision that allowed JSON-RPC batches. */
const BATCH_PROTOCOL_VERSION = '2025-03-26'
const DEFAULT_STARTUP_TIMEOUT_MS = 30_000

/** The MCP gateway's HTTP entry point, mounted behind the listener that verifies certificates. */
export interface McpHandler {
  /** Serves one request on `/mcp/<serverName>` for an already verified peer. */
  handle(
    req: IncomingMessage,
    res: ServerResponse,
    identity: PeerIdentity,
    serverName: string,
    peerAddress: string,
  ): Promise<void>
  /** Ends every session and stops every upstream. */
  closeAll(): Promise<void>
  /**
   * Ends every session, initializing ones included, for which `select` returns a denial given the
   * session's current identity: its GET stream closes and its in-flight requests get the denial.
   * Resolves with the number of sessions ended.
   */
  closeSessions(select: (identity: PeerIdentity) => SessionEnd | undefined): Promise<number>
  sessionCount(): number
}

/** Why `closeSessions` ends a session: the audit reason and what in-flight requests receive. */
export interface SessionEnd {
  /** The `session.end` audit reason, such as `locked`. */
  reason: string
  denial: SessionDenial
}

/**
 * Creates the Streamable HTTP handler that fronts one upstream per client session.
 *
 * @example
 *   const mcp = createMcpHandler(deps)
 *   server.on('request', (req, res) => mcp.handle(req, res, identity, 'files', '127.0.0.1:5000'))
 */
export function createMcpHandler(deps: GatewayDeps): McpHandler {
  if (!Number.isInteger(deps.limits.maxBodyBytes) || deps.limits.maxBodyBytes <= 0) {
    throw new TypeError(
      `limits.maxBodyBytes must be a positive integer, got ${deps.limits.maxBodyBytes}`,
    )
  }
  const sessions = new Map<string, Session>()
  /** Every session not yet ended, including those still waiting for the initialize response. */
  const live = new Set<Session>()
  /** The identity JWT source of each session whose upstream sets `http.identityJwt`. */
  const identityJwts = new WeakMap<Session, SessionIdentityJwt>()

  function sessionIdentityJwt(
    config: UpstreamConfig,
    identity: () => PeerIdentity,
  ): SessionIdentityJwt | undefined {
    const jwtConfig = config.http?.identityJwt
    if (jwtConfig === undefined) return undefined
    return createSessionIdentityJwt({
      config: jwtConfig,
      audience: config.name,
      mint: deps.mintIdentityJwt,
      clock: deps.clock,
      secrets: config.secrets,
      identity,
    })
  }

  async function handle(
    req: IncomingMessage,
    res: ServerResponse,
    identity: PeerIdentity,
    serverName: string,
    peerAddress: string,
  ): Promise<void> {
    try {
      // Access is decided before the server is looked up, so a caller learns nothing about
      // servers it may not use: unknown and forbidden names get the same answer.
      const decision = deps.decideServer(identity, serverName)
      if (decision.effect !== 'allow') {
        req.resume()
        await rejectServer(res, identity, serverName, peerAddress, decision)
        return
      }
      let config: UpstreamConfig | undefined
      try {
        config = deps.getServer(serverName)
      } catch (error) {
        // The manifest cannot be resolved (an unset ${env:} reference, say). The policy cache
        // logs the cause once; the caller learns which server is broken, not why.
        req.resume()
        deps.logger.debug({ error, server: serverName }, 'upstream configuration unusable')
        const message = `MCP server "${serverName}" is misconfigured on the Writ server; its log names the problem`
        writeJson(res, 502, errorResponse(null, INTERNAL_ERROR, message))
        return
      }
      if (config === undefined) {
        req.resume()
        writeJson(
          res,
          404,
          errorResponse(null, INVALID_REQUEST, `MCP server "${serverName}" not found`),
        )
        return
      }
      const context: RequestContext = { req, res, identity, config, peer: peerAddress }
      if (req.method === 'POST') await handlePost(context)
      else if (req.method === 'GET') await handleGet(context)
      else if (req.method === 'DELETE') await handleDelete(context)
      else {
        req.resume()
        writeJson(res, 405, undefined, { allow: 'GET, POST, DELETE' })
      }
    } catch (error) {
      deps.logger.error({ error, server: serverName }, 'MCP request failed')
      writeJson(res, 500, errorResponse(null, INTERNAL_ERROR, 'internal gateway error'))
    }
  }

  async function rejectServer(
    res: ServerResponse,
    identity: PeerIdentity,
    serverName: string,
    peer: string,
    decision: Decision,
  ): Promise<void> {
    const record = await deps.audit({
      type: 'mcp.request',
      outcome: 'denied',
      reason: decision.reason,
      ...(decision.rule === undefined ? {} : { rule: decision.rule }),
      caller: callerOf(identity),
      peer,
      server: serverName,
    })
    const message = `access to MCP server "${serverName}" is not allowed`
    const reason = decision.denial ?? 'forbidden'
    writeJson(res, 403, denialResponse(null, reason, message, record.id))
  }

  async function handlePost(context: RequestContext): Promise<void> {
    const { req, res } = context
    const contentType = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase()
    if (contentType !== 'application/json') {
      req.resume()
      writeJson(
        res,
        415,
        errorResponse(null, INVALID_REQUEST, 'Content-Type must be application/json'),
      )
      return
    }
    const accept = req.headers.accept
    if (!accepts(accept, 'application/json') && !accepts(accept, 'text/event-stream')) {
      req.resume()
      const message = 'Accept must list application/json and text/event-stream'
      writeJson(res, 406, errorResponse(null, INVALID_REQUEST, message))
      return
    }
    if (!checkProtocolHeader(context)) return
    const limit = deps.limits.maxBodyBytes
    const body = await readLimitedBody(req, limit)
    if (!body.ok) {
      await rejectTooLarge(context, limit)
      return
    }
    const parsed = parseJson(body.text)
    if (!parsed.ok && parsed.reason === 'depth') {
      const message = `request body nests arrays and objects deeper than ${MAX_JSON_DEPTH} levels`
      writeJson(res, 400, errorResponse(null, INVALID_REQUEST, message))
      return
    }
    if (!parsed.ok) {
      writeJson(res, 400, errorResponse(null, PARSE_ERROR, 'request body is not valid JSON'))
      return
    }
    const sessionHeader = req.headers['mcp-session-id']
    if (sessionHeader === undefined) {
      await startSession(context, parsed.value)
      return
    }
    const session = findSession(context)
    if (session === undefined) return
    if (!checkServerAccess(context, session)) return
    await dispatch(context, session, parsed.value)
  }

  async function rejectTooLarge(context: RequestContext, limit: number): Promise<void> {
    const record = await deps.audit({
      type: 'mcp.request',
      outcome: 'denied',
      reason: 'too_large',
      caller: callerOf(context.identity),
      peer: context.peer,
      server: context.config.name,
      details: { maxBodyBytes: limit },
    })
    const message = `request body exceeds the ${limit}-byte limit`
    writeJson(context.res, 413, denialResponse(null, 'too_large', message, record.id), {
      connection: 'close',
    })
  }

  function checkProtocolHeader(context: RequestContext): boolean {
    const version = context.req.headers['mcp-protocol-version']
    if (version === undefined || SUPPORTED_PROTOCOL_VERSIONS.includes(String(version))) return true
    context.req.resume()
    const message = `unsupported MCP-Protocol-Version ${JSON.stringify(String(version).slice(0, 32))}`
    writeJson(context.res, 400, errorResponse(null, INVALID_REQUEST, message))
    return false
  }

  /** Looks up the session named by the request, answering 400 or 404 when there is none. */
  function findSession(context: RequestContext): Session | undefined {
    const { req, res, identity, config } = context
    const header = req.headers['mcp-session-id']
    if (typeof header !== 'string' || header === '') {
      req.resume()
      writeJson(res, 400, errorResponse(null, INVALID_REQUEST, 'missing Mcp-Session-Id header'))
      return undefined
    }
    const session = sessions.get(header)
    // A session opened with another certificate is reported as missing, so its id reveals nothing.
    if (session === undefined || session.server !== config.name || !session.isBoundTo(identity)) {
      req.resume()
      writeJson(res, 404, errorResponse(null, INVALID_REQUEST, 'session not found'))
      return undefined
    }
    return session
  }

  /** Applies the server decision and certificate expiry on every request; policy can change. */
  function checkServerAccess(context: RequestContext, session: Session | undefined): boolean {
    const decision = decideAccess(context)
    if (decision.effect === 'allow') return true
    const reason = decision.denial ?? 'forbidden'
    const event = {
      type: 'mcp.request' as const,
      outcome: 'denied' as const,
      reason: decision.reason,
      ...(decision.rule === undefined ? {} : { rule: decision.rule }),
    }
    const record = session
      ? deps.audit(session.auditEvent(event))
      : deps.audit({
          ...event,
          caller: callerOf(context.identity),
          peer: context.peer,
          server: context.config.name,
        })
    void record.then(
      (committed) => {
        const message = `access to MCP server "${context.config.name}" is not allowed`
        writeJson(context.res, 403, denialResponse(null, reason, message, committed.id))
      },
      (error) => {
        deps.logger.error({ error }, 'audit write failed')
        writeJson(context.res, 403, errorResponse(null, INTERNAL_ERROR, 'access denied'))
      },
    )
    return false
  }

  function decideAccess(context: RequestContext): Decision {
    if (context.identity.notAfter.getTime() <= deps.clock()) {
      return { effect: 'deny', reason: 'certificate_expired', denial: 'expired' }
    }
    return deps.decideServer(context.identity, context.config.name)
  }

  async function startSession(context: RequestContext, value: unknown): Promise<void> {
    const { res, identity, config } = context
    if (classifyMessage(value) !== 'request' || (value as JsonRpcMessage).method !== 'initialize') {
      writeJson(res, 400, errorResponse(null, INVALID_REQUEST, 'missing Mcp-Session-Id header'))
      return
    }
    const message = value as JsonRpcMessage
    const decision = decideAccess(context)
    if (decision.effect !== 'allow') {
      const record = await deps.audit({
        type: 'session.start',
        outcome: 'denied',
        reason: decision.reason,
        ...(decision.rule === undefined ? {} : { rule: decision.rule }),
        caller: callerOf(identity),
        peer: context.peer,
        server: config.name,
      })
      const text = `access to MCP server "${config.name}" is not allowed`
      writeJson(
        res,
        403,
        denialResponse(message.id, decision.denial ?? 'forbidden', text, record.id),
      )
      return
    }
    const cap = deps.limits.maxSessionsPerPrincipal ?? DEFAULT_MAX_SESSIONS_PER_PRINCIPAL
    let held = 0
    for (const other of live) if (other.identity.spiffeId === identity.spiffeId) held++
    if (held >= cap) {
      const record = await deps.audit({
        type: 'session.start',
        outcome: 'denied',
        reason: `session limit reached: ${held} live sessions, at most ${cap} per principal`,
        caller: callerOf(identity),
        peer: context.peer,
        server: config.name,
      })
      const text = `too many open MCP sessions (limit ${cap}); close unused sessions with DELETE`
      writeJson(res, 429, denialResponse(message.id, 'rate_limited', text, record.id))
      return
    }
    const identityJwt = sessionIdentityJwt(config, () => session.identity)
    const session = new Session({
      id: randomBytes(24).toString('base64url'),
      identity,
      peer: context.peer,
      config,
      redactor: identityJwt?.redactor ?? createRedactor(config.secrets),
      deps,
      onEnd: (ended) => {
        sessions.delete(ended.id)
        live.delete(ended)
      },
    })
    live.add(session)
    if (identityJwt) identityJwts.set(session, identityJwt)
    await deps.audit(
      session.auditEvent({ type: 'session.start', outcome: 'success', reason: decision.reason }),
    )
    let initialized = false
    const exchange = new PostExchange({
      res,
      streaming: false,
      batch: false,
      headers: (): Record<string, string> => (initialized ? { 'mcp-session-id': session.id } : {}),
    })
    session.upstream = createUpstream(session, (result) => {
      if (result.error !== undefined || initialized) return
      initialized = true
      const version = (result.result as { protocolVersion?: unknown } | undefined)?.protocolVersion
      if (typeof version === 'string') session.protocolVersion = version
      sessions.set(session.id, session)
    })
    session.track(message, exchange)
    const timeout = startupTimer(session)
    res.once('finish', () => {
      clearTimeout(timeout)
      if (!initialized) void session.end({ reason: 'initialize_failed' })
    })
    try {
      await session.upstream.start()
    } catch (error) {
      await session.end({ reason: 'upstream_start_failed', error: asError(error) })
      return
    }
    session.forward(message, Promise.resolve(), () => {})
    session.logger.info({ spiffeId: identity.spiffeId }, 'session started')
  }

  function startupTimer(session: Session): NodeJS.Timeout {
    const ms = session.config.startupTimeoutMs ?? DEFAULT_STARTUP_TIMEOUT_MS
    return setTimeout(() => {
      const stderr = session.upstream?.recentStderr().slice(-10).join('\n') ?? ''
      const suffix = stderr === '' ? '' : `; stderr: ${stderr}`
      const error = new WritError(
        'gateway.upstream_timeout',
        `upstream server "${session.server}" did not answer initialize within ${ms} ms${suffix}`,
        { server: session.server, timeoutMs: ms },
      )
      void session.end({ reason: 'upstream_start_timeout', error })
    }, ms)
  }

  function createUpstream(
    session: Session,
    onInitializeResponse: (message: JsonRpcMessage) => void,
  ): Upstream {
    const config: UpstreamConfig = session.config
    let initializeAnswered = false
    const events: UpstreamEvents = {
      onMessage: (message) => {
        // A tools list_changed is held until the gateway has listed and pinned the tools again.
        if (interceptListChanged(deps.toolPins, session, message, events.onMessage)) return
        // Server requests and notifications are screened here; responses after their policy.
        const screened = screenUpstreamMessage(deps, session, message)
        if (screened === undefined) return
        session.receive(screened, (pending, response) => {
          if (pending.method === 'initialize' && !initializeAnswered) {
            initializeAnswered = true
            onInitializeResponse(response)
          }
          const transformed = transformResponse(deps, session, pending, response)
          return scrubResponse(deps, session, pending, transformed)
        })
      },
      onClose: (error) => {
        if (!session.ended)
          void session.end({ reason: 'upstream_closed', ...(error ? { error } : {}) })
      },
    }
    const custom = deps.openUpstream?.(session, events)
    if (custom !== undefined) return custom
    const logger = session.logger
    if (config.stdio !== undefined) {
      const redactor = session.redactor
      return createStdioUpstream({
        server: config.name,
        config: config.stdio,
        events,
        redactor,
        logger,
      })
    }
    if (config.http !== undefined) {
      const identityJwt = identityJwts.get(session)
      return createHttpUpstream({
        server: config.name,
        config: config.http,
        events,
        logger,
        ...(identityJwt ? { headersFor: () => identityJwt.headers() } : {}),
      })
    }
    throw new WritError(
      'gateway.upstream_unconfigured',
      `MCP server "${config.name}" has no transport`,
      {
        server: config.name,
      },
    )
  }

  async function dispatch(
    context: RequestContext,
    session: Session,
    value: unknown,
  ): Promise<void> {
    const { req, res } = context
    const batch = Array.isArray(value)
    if (batch && !batchAllowed(context, session, value)) return
    const messages = (batch ? value : [value]) as unknown[]
    const requests: JsonRpcMessage[] = []
    const invalid: JsonRpcMessage[] = []
    const rejected = new Set<unknown>()
    const batchIds = new Set<string>()
    for (const item of messages) {
      const kind = classifyMessage(item)
      const problem =
        kind === undefined
          ? 'invalid JSON-RPC message'
          : screenMessage(item as JsonRpcMessage, kind, session, batchIds)
      if (problem !== undefined) {
        rejected.add(item)
        invalid.push(errorResponse(idOf(item), INVALID_REQUEST, problem))
        if (kind !== undefined) auditRejected(session, item as JsonRpcMessage, problem)
      } else if (kind === 'request') {
        requests.push(item as JsonRpcMessage)
      }
    }
    if (requests.length === 0 && invalid.length > 0) {
      writeJson(res, 400, batch ? invalid : invalid[0])
      return
    }
    let exchange: PostExchange | undefined
    if (requests.length > 0) {
      exchange = new PostExchange({
        res,
        streaming: accepts(req.headers.accept, 'text/event-stream'),
        batch,
        headers: () => ({ 'mcp-session-id': session.id }),
      })
      for (const request of requests) exchange.expect(request.id as JsonRpcId)
      exchange.begin()
      for (const error of invalid) exchange.respond(null, JSON.stringify(error))
    } else {
      writeJson(res, 202, undefined, { 'mcp-session-id': session.id })
    }
    for (const item of messages) {
      if (rejected.has(item)) continue
      await processClientMessage(deps, session, item as JsonRpcMessage, exchange)
    }
  }

  /** Records a message the gateway rejected before policy, so probing leaves a trace. */
  function auditRejected(session: Session, message: JsonRpcMessage, problem: string): void {
    const event = session.auditEvent({
      type: 'mcp.request',
      outcome: 'denied',
      reason: problem,
      ...(typeof message.method === 'string' ? { method: message.method.slice(0, 128) } : {}),
    })
    deps.audit(event).catch((error) => deps.logger.error({ error }, 'audit write failed'))
  }

  /**
   * Returns why a well-formed message must not be forwarded, or undefined. Policy is decided on
   * exact method names, so variants that a lenient upstream might still run (other letter case,
   * surrounding spaces) are rejected. Calls sent as notifications are rejected because they would
   * skip the tool decision, and request ids already in use because they would mix up responses.
   */
  function screenMessage(
    message: JsonRpcMessage,
    kind: MessageKind,
    session: Session,
    batchIds: Set<string>,
  ): string | undefined {
    const method = message.method
    if (typeof method === 'string') {
      const methodProblem = screenMethod(method)
      if (methodProblem !== undefined) return methodProblem
      if (kind === 'notification' && !method.startsWith('notifications/')) {
        return `method ${JSON.stringify(method.slice(0, 64))} must be sent as a request with an id`
      }
    }
    if (kind !== 'request') return undefined
    const id = message.id as JsonRpcId
    const key = idKey(id)
    if (batchIds.has(key) || session.hasPending(id)) {
      return `request id ${JSON.stringify(id)} is already in use by a pending request`
    }
    batchIds.add(key)
    return undefined
  }

  function batchAllowed(context: RequestContext, session: Session, value: unknown[]): boolean {
    if (value.length === 0) {
      writeJson(context.res, 400, errorResponse(null, INVALID_REQUEST, 'empty batch'))
      return false
    }
    if (session.protocolVersion === BATCH_PROTOCOL_VERSION) return true
    const message = `JSON-RPC batches were removed in protocol revision 2025-06-18; this session uses ${session.protocolVersion ?? 'an unknown revision'}`
    writeJson(context.res, 400, errorResponse(null, INVALID_REQUEST, message))
    return false
  }

  async function handleGet(context: RequestContext): Promise<void> {
    const { req, res } = context
    req.resume()
    if (!accepts(req.headers.accept, 'text/event-stream')) {
      writeJson(
        res,
        406,
        errorResponse(null, INVALID_REQUEST, 'Accept must list text/event-stream'),
      )
      return
    }
    if (!checkProtocolHeader(context)) return
    const session = findSession(context)
    if (session === undefined || !checkServerAccess(context, session)) return
    if (session.hasEventStream) {
      writeJson(
        res,
        409,
        errorResponse(null, INVALID_REQUEST, 'this session already has a GET stream open'),
      )
      return
    }
    session.attachEventStream(res)
  }

  async function handleDelete(context: RequestContext): Promise<void> {
    context.req.resume()
    const session = findSession(context)
    if (session === undefined) return
    await session.end({ reason: 'client_deleted' })
    writeJson(context.res, 200, undefined)
  }

  async function closeAll(): Promise<void> {
    await Promise.allSettled(
      [...sessions.values()].map((session) => session.end({ reason: 'gateway_closed' })),
    )
  }

  async function closeSessions(
    select: (identity: PeerIdentity) => SessionEnd | undefined,
  ): Promise<number> {
    const ending: Promise<void>[] = []
    for (const session of live) {
      const end = select(session.identity)
      if (end !== undefined) ending.push(session.end({ reason: end.reason, denial: end.denial }))
    }
    await Promise.allSettled(ending)
    return ending.length
  }

  return { handle, closeAll, closeSessions, sessionCount: () => sessions.size }
}

interface RequestContext {
  req: IncomingMessage
  res: ServerResponse
  identity: PeerIdentity
  config: UpstreamConfig
  peer: string
}

function idOf(value: unknown): JsonRpcId | null {
  const id = (value as { id?: unknown } | null)?.id
  return typeof id === 'string' || typeof id === 'number' ? id : null
}

function asError(error: unknown): Error {
  return error instanceof Error ? error : new Error(String(error))
}
