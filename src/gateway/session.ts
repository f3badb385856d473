import type { ServerResponse } from 'node:http'
import { taskCallerFields } from '../audit/task-caller.js'
import type { AuditCaller, AuditEventInput } from '../audit/types.js'
import { refuseOversizedResponse } from '../guard/limits.js'
import type { PeerIdentity } from '../identity/types.js'
import type { Logger } from '../log.js'
import type { GatewayDeps, UpstreamConfig } from './deps.js'
import { idKey, type PostExchange } from './http-io.js'
import {
  classifyMessage,
  type DenialReason,
  denialResponse,
  errorResponse,
  INTERNAL_ERROR,
  type JsonRpcId,
  type JsonRpcMessage,
  progressTokenOf,
} from './jsonrpc.js'
import type { Redactor } from './redact.js'
import { encodeSseMessage } from './sse.js'
import type { Upstream } from './upstream.js'

/** A client request forwarded upstream that has no response yet. */
export interface PendingRequest {
  id: JsonRpcId
  method: string
  tool?: string
  progressToken?: JsonRpcId
  exchange: PostExchange
  startedAt: number
}

/** Maximum messages kept for a client with no open stream, after which the oldest are dropped. */
const MAX_BUFFERED_MESSAGES = 1000
/** Interval of SSE comments that keep idle GET streams from timing out in proxies. */
const KEEPALIVE_MS = 15_000
/** Maximum delay of `setTimeout` (about 24.8 days); a later expiry is checked again then. */
const MAX_TIMER_MS = 2 ** 31 - 1

/** The reason Writ ended a session it revoked, sent to every request still in flight. */
export interface SessionDenial {
  reason: DenialReason
  message: string
  /** Extra fields for the `session.end` audit event, such as the lock id. */
  details?: Record<string, unknown>
}

/**
 * One client session: a verified peer, one upstream, the requests in flight and where to deliver
 * what the upstream sends. It forwards messages in the order the client sent them.
 */
export class Session {
  readonly id: string
  readonly server: string
  readonly spiffeId: string
  serial: string
  identity: PeerIdentity
  caller: AuditCaller
  readonly peer: string
  readonly config: UpstreamConfig
  readonly redactor: Redactor
  readonly logger: Logger
  protocolVersion: string | undefined
  upstream: Upstream | undefined
  ended = false
  /** Why the session was ended when a lock or an expired certificate ended it. */
  endDenial: SessionDenial | undefined

  readonly #deps: GatewayDeps
  readonly #pending = new Map<string, PendingRequest>()
  readonly #serverRequests = new Map<string, string>()
  #buffered: string[] = []
  #eventStream: ServerResponse | undefined
  #keepalive: NodeJS.Timeout | undefined
  #queue: Promise<void> = Promise.resolve()
  #onEnd: (session: Session) => void
  #expiryTimer: NodeJS.Timeout | undefined
  /** Builds the response for requests that reach a session while or after it ends. */
  #closingResponse: ((id: JsonRpcId) => JsonRpcMessage) | undefined

  constructor(options: {
    id: string
    identity: PeerIdentity
    peer: string
    config: UpstreamConfig
    redactor: Redactor
    deps: GatewayDeps
    onEnd: (session: Session) => void
  }) {
    this.id = options.id
    this.identity = options.identity
    this.server = options.config.name
    this.spiffeId = options.identity.spiffeId
    this.serial = options.identity.serial
    this.caller = callerOf(options.identity)
    this.peer = options.peer
    this.config = options.config
    this.redactor = options.redactor
    this.#deps = options.deps
    this.#onEnd = options.onEnd
    this.logger = options.deps.logger.child({ session: this.id, server: this.server })
    this.#scheduleExpiry()
  }

  /**
   * Reports whether a request may use this session: it must come from the certificate that opened
   * it or from a renewal of it (same SPIFFE ID and bot instance). A renewed certificate replaces
   * the session's identity, so decisions use its current roles and expiry.
   */
  isBoundTo(identity: PeerIdentity): boolean {
    if (identity.spiffeId !== this.spiffeId) return false
    if (identity.serial === this.serial) return true
    const instance = this.identity.claims.botInstance
    if (instance === undefined || identity.claims.botInstance !== instance) return false
    if (identity.notAfter.getTime() < this.identity.notAfter.getTime()) return false
    this.identity = identity
    this.serial = identity.serial
    this.caller = callerOf(identity)
    this.#scheduleExpiry()
    return true
  }

  /** Ends the session when its certificate expires; a renewed certificate moves the deadline. */
  #scheduleExpiry(): void {
    clearTimeout(this.#expiryTimer)
    const delay = this.identity.notAfter.getTime() - this.#deps.clock()
    this.#expiryTimer = setTimeout(
      () => {
        if (this.ended) return
        if (this.#deps.clock() < this.identity.notAfter.getTime()) {
          this.#scheduleExpiry()
          return
        }
        const notAfter = this.identity.notAfter.toISOString()
        void this.end({
          reason: 'certificate_expired',
          denial: {
            reason: 'expired',
            message: `client certificate expired at ${notAfter}; renew it and start a new session`,
            details: { serial: this.serial, notAfter },
          },
        })
      },
      Math.min(Math.max(delay, 0), MAX_TIMER_MS),
    )
    this.#expiryTimer.unref()
  }

  /** Builds an audit event for this session with the caller, peer and server filled in. */
  auditEvent(event: Omit<AuditEventInput, 'caller' | 'peer' | 'server' | 'sessionId'>) {
    return {
      ...event,
      caller: this.caller,
      peer: this.peer,
      server: this.server,
      sessionId: this.id,
    } satisfies AuditEventInput
  }

  /** Records a request whose response the given exchange waits for. */
  /** Reports whether a client request with this id is still waiting for its response. */
  hasPending(id: JsonRpcId): boolean {
    return this.#pending.has(idKey(id))
  }

  track(message: JsonRpcMessage, exchange: PostExchange, tool?: string): PendingRequest {
    const id = message.id as JsonRpcId
    const pending: PendingRequest = {
      id,
      method: message.method ?? '',
      exchange,
      startedAt: this.#deps.clock(),
    }
    if (tool !== undefined) pending.tool = tool
    const token = progressTokenOf(message)
    if (token !== undefined) pending.progressToken = token
    exchange.expect(id)
    this.#pending.set(idKey(id), pending)
    if (this.#closingResponse !== undefined) this.answer(id, this.#closingResponse(id))
    return pending
  }

  /** Forgets a request the client cancelled, so its exchange does not wait for it. */
  cancel(requestId: unknown): void {
    if (typeof requestId !== 'string' && typeof requestId !== 'number') return
    const pending = this.#pending.get(idKey(requestId))
    if (pending === undefined) return
    this.#pending.delete(idKey(requestId))
    pending.exchange.abandon(requestId)
  }

  /** Responds to a tracked request locally, without the upstream. */
  answer(id: JsonRpcId, message: JsonRpcMessage): void {
    const pending = this.#pending.get(idKey(id))
    if (pending === undefined) return
    this.#pending.delete(idKey(id))
    this.#deliverResponse(pending, message)
  }

  /**
   * Forwards a message after `gate` resolves, keeping the client's order. When `gate` rejects
   * (the audit record could not be committed) the message is not forwarded and `onRefused` runs.
   */
  forward(message: JsonRpcMessage, gate: Promise<unknown>, onRefused: (error: unknown) => void) {
    const step = this.#queue.then(() => gate)
    this.#queue = step.then(
      () => {
        if (!this.ended) this.upstream?.send(message)
      },
      (error) => onRefused(error),
    )
  }

  /** Returns the method of a request the upstream sent to the client, forgetting it. */
  takeServerRequest(id: unknown): string | undefined {
    if (typeof id !== 'string' && typeof id !== 'number') return undefined
    const method = this.#serverRequests.get(idKey(id))
    this.#serverRequests.delete(idKey(id))
    return method
  }

  /** Routes one message from the upstream to the client. */
  receive(
    message: JsonRpcMessage,
    transform: (pending: PendingRequest, m: JsonRpcMessage) => JsonRpcMessage,
  ): void {
    // After the end starts, in-flight requests get the end's error, never a late result.
    if (this.ended) return
    const kind = classifyMessage(message)
    if (kind === 'response' || kind === 'error') {
      const id = message.id
      const pending = id === null || id === undefined ? undefined : this.#pending.get(idKey(id))
      if (pending === undefined) {
        this.logger.debug({ id }, 'upstream response matches no pending request, dropped')
        return
      }
      this.#pending.delete(idKey(pending.id))
      this.#deliverResponse(pending, transform(pending, message))
      return
    }
    if (kind === 'request')
      this.#serverRequests.set(idKey(message.id as JsonRpcId), message.method!)
    if (kind === undefined) {
      this.logger.debug({}, 'upstream sent a value that is not a JSON-RPC message, dropped')
      return
    }
    this.#deliverRelated(message)
  }

  #deliverResponse(pending: PendingRequest, message: JsonRpcMessage): void {
    const json = this.redactor.json(message)
    if (refuseOversizedResponse(this.#deps, this, pending, json)) return
    if (pending.exchange.respond(pending.id, json)) return
    // The client closed the POST before the response came, so the standalone stream takes it.
    this.#deliverJson(json)
  }

  #deliverRelated(message: JsonRpcMessage): void {
    const json = this.redactor.json(message)
    const exchange = this.#relatedExchange(message)
    if (exchange?.sendRelated(json)) return
    this.#deliverJson(json)
  }

  /**
   * Picks the POST stream a server message belongs on: the request whose progress token it
   * carries, or the only request in flight. Anything else goes to the standalone stream.
   */
  #relatedExchange(message: JsonRpcMessage): PostExchange | undefined {
    if (message.method === 'notifications/progress') {
      const token = (message.params as { progressToken?: unknown } | undefined)?.progressToken
      for (const pending of this.#pending.values()) {
        if (pending.progressToken === token) return pending.exchange
      }
      return undefined
    }
    if (this.#pending.size !== 1) return undefined
    const [only] = this.#pending.values()
    return only?.exchange.streaming ? only.exchange : undefined
  }

  #deliverJson(json: string): void {
    const stream = this.#eventStream
    if (stream !== undefined && !stream.writableEnded) {
      stream.write(encodeSseMessage(json))
      return
    }
    this.#buffered.push(json)
    if (this.#buffered.length > MAX_BUFFERED_MESSAGES) {
      this.#buffered.shift()
      this.logger.warn(
        { kept: MAX_BUFFERED_MESSAGES },
        'client has no open stream, oldest message dropped',
      )
    }
  }

  /** True while a standalone GET stream is open. */
  get hasEventStream(): boolean {
    return this.#eventStream !== undefined && !this.#eventStream.writableEnded
  }

  /** Makes `res` the standalone stream and sends everything buffered for it. */
  attachEventStream(res: ServerResponse): void {
    res.writeHead(200, {
      'content-type': 'text/event-stream',
      'cache-control': 'no-cache',
      connection: 'keep-alive',
      'mcp-session-id': this.id,
    })
    res.flushHeaders()
    this.#eventStream = res
    const buffered = this.#buffered
    this.#buffered = []
    for (const json of buffered) res.write(encodeSseMessage(json))
    this.#keepalive = setInterval(() => res.write(': keepalive\n\n'), KEEPALIVE_MS)
    this.#keepalive.unref()
    res.once('close', () => {
      if (this.#eventStream === res) this.#eventStream = undefined
      clearInterval(this.#keepalive)
    })
  }

  /**
   * Ends the session: every pending request gets an error, streams close, the upstream stops and
   * `session.end` is audited. With `denial` (a lock or an expired certificate) the audit record
   * is committed first, so each pending request gets a denial that names it.
   */
  async end(cause: { reason: string; error?: Error; denial?: SessionDenial }): Promise<void> {
    if (this.ended) return
    this.ended = true
    this.endDenial = cause.denial
    clearTimeout(this.#expiryTimer)
    this.#onEnd(this)
    if (cause.denial !== undefined) {
      await this.#endDenied(cause.reason, cause.denial)
      return
    }
    const message = clientEndMessage(this.server, cause.error)
    this.#closingResponse = (id) => errorResponse(id, INTERNAL_ERROR, message)
    this.#failPending()
    this.#eventStream?.end()
    clearInterval(this.#keepalive)
    const outcome = cause.error === undefined ? 'success' : 'error'
    await Promise.allSettled([
      this.upstream?.close(),
      this.#deps.audit(
        this.auditEvent({
          type: 'session.end',
          outcome,
          reason: cause.reason,
          ...(cause.error ? { details: { error: this.redactor.text(cause.error.message) } } : {}),
        }),
      ),
    ])
    if (cause.error === undefined) this.logger.info({ reason: cause.reason }, 'session ended')
    else this.logger.warn({ reason: cause.reason, error: cause.error }, 'session ended')
  }

  async #endDenied(reason: string, denial: SessionDenial): Promise<void> {
    let requestId: string | undefined
    try {
      const event = this.auditEvent({
        type: 'session.end',
        outcome: 'denied',
        reason,
        ...(denial.details === undefined ? {} : { details: denial.details }),
      })
      requestId = (await this.#deps.audit(event)).id
    } catch (error) {
      this.logger.error({ error, reason }, 'audit write failed')
    }
    this.#closingResponse = (id) =>
      requestId === undefined
        ? errorResponse(id, INTERNAL_ERROR, denial.message)
        : denialResponse(id, denial.reason, denial.message, requestId)
    this.#failPending()
    this.#eventStream?.end()
    clearInterval(this.#keepalive)
    await Promise.allSettled([this.upstream?.close()])
    this.logger.info({ reason, denial: denial.reason }, 'session ended')
  }

  #failPending(): void {
    const respond = this.#closingResponse
    if (respond === undefined) return
    for (const pending of [...this.#pending.values()]) {
      this.#pending.delete(idKey(pending.id))
      this.#deliverResponse(pending, respond(pending.id))
    }
  }
}

/** Copies the caller fields an audit record carries from a verified identity. */
export function callerOf(identity: PeerIdentity): AuditCaller {
  const caller: AuditCaller = {
    spiffeId: identity.spiffeId,
    kind: identity.claims.kind,
    roles: [...identity.claims.roles],
    serial: identity.serial,
  }
  if (identity.claims.task !== undefined) caller.task = identity.claims.task.id
  // A task's records name its reason and the certificate it was issued under.
  Object.assign(caller, taskCallerFields(identity.spiffeId, identity.claims))
  return caller
}

/** Short descriptions of upstream failures, for clients that must not see server-side details. */
const UPSTREAM_FAILURES: Record<string, string> = {
  'gateway.upstream_exited': 'it exited',
  'gateway.upstream_spawn_failed': 'it could not be started',
  'gateway.upstream_timeout': 'it did not answer initialize in time',
  'gateway.upstream_address_refused': 'its address is not allowed for upstream servers',
}

/**
 * Returns the message a client receives when its session ends. It names the server and what
 * went wrong but leaves out stderr output, commands and paths, which stay in the Writ log and
 * the audit record.
 */
function clientEndMessage(server: string, error: Error | undefined): string {
  if (error === undefined) return `session with upstream server "${server}" ended`
  const { code, fields } = error as { code?: unknown; fields?: Record<string, unknown> }
  let what = typeof code === 'string' ? UPSTREAM_FAILURES[code] : undefined
  if (code === 'gateway.upstream_exited' && fields !== undefined) {
    what = fields.signal
      ? `it exited on signal ${fields.signal}`
      : `it exited with code ${fields.code}`
  }
  return `upstream server "${server}" is unavailable: ${what ?? 'the session failed'}; the Writ server log has the details`
}
