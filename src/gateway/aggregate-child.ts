import { WritError } from '../errors.js'
import { screenUpstreamMessage, scrubResponse } from '../guard/upstream-guard.js'
import type { GatewayDeps, UpstreamConfig } from './deps.js'
import type { PostExchange } from './http-io.js'
import { createSessionIdentityJwt } from './identity-jwt.js'
import { classifyMessage, type JsonRpcId, type JsonRpcMessage } from './jsonrpc.js'
import { transformResponse } from './pipeline.js'
import { createRedactor } from './redact.js'
import { Session } from './session.js'
import type { Upstream } from './upstream.js'
import { createHttpUpstream } from './upstream-http.js'
import { createStdioUpstream } from './upstream-stdio.js'

/** Callbacks through which one upstream of an aggregated session reports to the aggregate. */
export interface ChildEvents {
  /** A response to a request the aggregate sent, already transformed by the pipeline. */
  onResponse(child: AggregateChild, id: JsonRpcId | null, message: JsonRpcMessage): void
  /** A server-to-client request or a notification, already redacted. */
  onServerMessage(child: AggregateChild, message: JsonRpcMessage): void
  onEnd(child: AggregateChild): void
}

/**
 * One upstream server inside an aggregated session. It is a regular `Session` for that server,
 * so policy decisions, audit records (with the real server name) and response filtering run as
 * they do on `/mcp/<server>`. Responses reach the aggregate through an exchange object instead
 * of an HTTP response.
 */
export class AggregateChild {
  readonly server: string
  readonly session: Session
  readonly exchange: PostExchange
  /** The capabilities from the upstream's initialize result. */
  capabilities: Record<string, unknown> = {}
  ready = false

  constructor(session: Session, exchange: PostExchange) {
    this.server = session.server
    this.session = session
    this.exchange = exchange
  }
}

/**
 * Creates the session and upstream transport of one server for the aggregated session `id`.
 * The upstream is not started. Throws a `WritError` when the server has no usable transport.
 */
export function createAggregateChild(options: {
  id: string
  parent: Session
  config: UpstreamConfig
  deps: GatewayDeps
  events: ChildEvents
}): AggregateChild {
  const { parent, config, deps, events } = options
  const identityJwt =
    config.http?.identityJwt === undefined
      ? undefined
      : createSessionIdentityJwt({
          config: config.http.identityJwt,
          audience: config.name,
          mint: deps.mintIdentityJwt,
          clock: deps.clock,
          secrets: config.secrets,
          identity: () => session.identity,
        })
  const session: Session = new Session({
    id: options.id,
    identity: parent.identity,
    peer: parent.peer,
    config,
    redactor: identityJwt?.redactor ?? createRedactor(config.secrets),
    deps,
    onEnd: () => events.onEnd(child),
  })
  const exchange = createChildExchange((id, json) => {
    events.onResponse(child, id, JSON.parse(json) as JsonRpcMessage)
  })
  const child = new AggregateChild(session, exchange)
  const upstreamEvents = {
    onMessage: (received: JsonRpcMessage) => {
      // Server requests and notifications are screened here; responses after their policy.
      const message = screenUpstreamMessage(deps, session, received)
      if (message === undefined) return
      const kind = classifyMessage(message)
      if (kind === 'request' || kind === 'notification') {
        // Parsing back the redacted text keeps secrets of this server from other sessions.
        events.onServerMessage(child, JSON.parse(session.redactor.json(message)) as JsonRpcMessage)
        return
      }
      session.receive(message, (pending, response) =>
        scrubResponse(deps, session, pending, transformResponse(deps, session, pending, response)),
      )
    },
    onClose: (error?: Error) => {
      if (!session.ended)
        void session.end({ reason: 'upstream_closed', ...(error ? { error } : {}) })
    },
  }
  session.upstream = openUpstream(config, session, upstreamEvents, identityJwt?.headers)
  return child
}

function openUpstream(
  config: UpstreamConfig,
  session: Session,
  events: { onMessage(message: JsonRpcMessage): void; onClose(error?: Error): void },
  identityHeaders: (() => Promise<Record<string, string>>) | undefined,
): Upstream {
  if (config.stdio !== undefined) {
    return createStdioUpstream({
      server: config.name,
      config: config.stdio,
      events,
      redactor: session.redactor,
      logger: session.logger,
    })
  }
  if (config.http !== undefined) {
    return createHttpUpstream({
      server: config.name,
      config: config.http,
      events,
      logger: session.logger,
      ...(identityHeaders ? { headersFor: identityHeaders } : {}),
    })
  }
  throw new WritError(
    'gateway.upstream_unconfigured',
    `MCP server "${config.name}" has no transport`,
    { server: config.name },
  )
}

/**
 * Builds the object the pipeline and `Session` deliver responses to. It has the members of
 * `PostExchange` that they use; every response goes to `deliver` as serialised, redacted JSON.
 */
function createChildExchange(deliver: (id: JsonRpcId | null, json: string) => void): PostExchange {
  const exchange = {
    streaming: false,
    open: true,
    expect(): void {},
    begin(): void {},
    sendRelated(): boolean {
      return false
    },
    respond(id: JsonRpcId | null, json: string): boolean {
      deliver(id, json)
      return true
    },
    abandon(): void {},
    finish(): void {},
  }
  // NOTE: PostExchange has private fields, so TypeScript treats it nominally; this object has
  // every public member the pipeline and Session call.
  return exchange as unknown as PostExchange
}

/** Maximum time one upstream may take to start and respond to initialize, unless set per server. */
const DEFAULT_CHILD_STARTUP_MS = 30_000

/**
 * Starts a child's upstream and runs `initialize` (which sends the initialize request and
 * resolves with its response) within the server's start-up limit. On success the child records
 * the upstream's capabilities and becomes ready. On failure the child's session ends with reason
 * `upstream_start_failed`, so the aggregated session goes on without that server.
 */
export async function startAggregateChild(
  child: AggregateChild,
  initialize: () => Promise<JsonRpcMessage>,
): Promise<void> {
  const server = child.server
  const timeoutMs = child.session.config.startupTimeoutMs ?? DEFAULT_CHILD_STARTUP_MS
  try {
    const started = child.session.upstream!.start().then(initialize)
    const answer = await withTimeout(started, timeoutMs, server)
    if (answer.error !== undefined) {
      throw new WritError(
        'gateway.upstream_initialize_failed',
        `upstream server "${server}" rejected initialize: ${answer.error.message}`,
        { server },
      )
    }
    const result = (answer.result ?? {}) as { capabilities?: unknown; protocolVersion?: unknown }
    const capabilities = result.capabilities
    child.capabilities =
      typeof capabilities === 'object' && capabilities !== null
        ? (capabilities as Record<string, unknown>)
        : {}
    if (typeof result.protocolVersion === 'string') {
      child.session.protocolVersion = result.protocolVersion
    }
    child.ready = true
  } catch (error) {
    child.session.logger.warn({ error }, 'upstream left out of aggregated session')
    const cause = error instanceof Error ? error : new Error(String(error))
    await child.session.end({ reason: 'upstream_start_failed', error: cause })
  }
}

/** Resolves like `work`, or rejects naming the server once `ms` milliseconds pass. */
async function withTimeout<T>(work: Promise<T>, ms: number, server: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      reject(
        new WritError(
          'gateway.upstream_timeout',
          `upstream server "${server}" did not respond to initialize within ${ms} ms`,
          { server, timeoutMs: ms },
        ),
      )
    }, ms)
  })
  try {
    return await Promise.race([work, timeout])
  } finally {
    clearTimeout(timer)
  }
}
