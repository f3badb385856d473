import type { ServerResponse } from 'node:http'
import type { AuditCaller, AuditEventInput } from '../audit/types.js'
import type { PeerIdentity } from '../identity/types.js'
import type { Logger } from '../log.js'
import type { GatewayDeps, UpstreamConfig } from './deps.js'
import { idKey, type PostExchange } from './http-io.js'
import {
  classifyMessage,
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

  readonly #deps: GatewayDeps
  readonly #pending = new Map<string, PendingRequest>()
  readonly #serverRequests = new Map<string, string>()
  #buffered: string[] = []
  #eventStream: ServerResponse | undefined
  #keepalive: NodeJS.Timeout | undefined
  #queue: Promise<void> = Promise.resolve()
  #onEnd: (session: Session) => void

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
    return true
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
   * `session.end` is audited.
   */
  async end(cause: { reason: string; error?: Error }): Promise<void> {
    if (this.ended) return
    this.ended = true
    this.#onEnd(this)
    const message = cause.error?.message ?? `session with upstream server "${this.server}" ended`
    for (const pending of [...this.#pending.values()]) {
      this.#pending.delete(idKey(pending.id))
      this.#deliverResponse(pending, errorResponse(pending.id, INTERNAL_ERROR, message))
    }
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
    this.logger.info({ reason: cause.reason }, 'session ended')
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
  return caller
}
