import type { PeerIdentity } from '../identity/types.js'
import {
  type AggregateChild,
  createAggregateChild,
  startAggregateChild,
} from './aggregate-child.js'
import { AggregateCatalog, LISTS, type ListKind, mergeCapabilities } from './aggregate-lists.js'
import { splitPlainName } from './aggregate-names.js'
import { AggregateLister } from './aggregate-relist.js'
import type { GatewayDeps } from './deps.js'
import { idKey } from './http-io.js'
import {
  classifyMessage,
  denialResponse,
  errorResponse,
  INTERNAL_ERROR,
  INVALID_REQUEST,
  type JsonRpcId,
  type JsonRpcMessage,
  METHOD_NOT_FOUND,
} from './jsonrpc.js'
import { SUPPORTED_PROTOCOL_VERSIONS } from './mcp-handler.js'
import { processClientMessage } from './pipeline.js'
import type { Session } from './session.js'
import type { Upstream, UpstreamEvents } from './upstream.js'

/** Options of the aggregated endpoint beyond the gateway's dependencies. */
export interface AggregateOptions {
  /** Returns the names of the servers the identity may use. */
  allowedServers(identity: PeerIdentity): string[]
}

const INVALID_PARAMS = -32602
/** The MCP error code for a resource URI no server provides. */
const RESOURCE_NOT_FOUND = -32002
const SERVER_INFO = { name: 'writ-aggregate', version: '1.0.0' }

/** A server-to-client request of one upstream, renamed so ids of different upstreams differ. */
interface ServerRequest {
  child: AggregateChild
  id: JsonRpcId
}

/**
 * The upstream of a session on `/mcp`: one session per server the caller may use, merged into
 * one MCP server. Tool and prompt names get a server prefix, resource URIs keep their upstream
 * form, and each call runs the pipeline of the server that owns it, with that server's policy,
 * guards and audit records.
 */
export class AggregateUpstream implements Upstream {
  readonly #parent: Session
  readonly #events: UpstreamEvents
  readonly #deps: GatewayDeps
  readonly #options: AggregateOptions
  readonly #children = new Map<string, AggregateChild>()
  readonly #catalog: AggregateCatalog
  readonly #lists: AggregateLister
  readonly #waiters = new Map<string, (message: JsonRpcMessage) => void>()
  /** Client request id to the upstream request it became, for cancellation. */
  readonly #forwarded = new Map<string, ServerRequest>()
  readonly #serverRequests = new Map<string, ServerRequest>()
  #nextId = 0
  #initialized = false
  #closed = false

  constructor(
    parent: Session,
    events: UpstreamEvents,
    deps: GatewayDeps,
    options: AggregateOptions,
  ) {
    this.#parent = parent
    this.#events = events
    this.#deps = deps
    this.#options = options
    this.#catalog = new AggregateCatalog(parent.logger)
    this.#lists = new AggregateLister({
      catalog: this.#catalog,
      children: () => this.#children,
      request: (child, method, params) => this.#request(child, method, params),
      notify: (method) => this.#emit({ jsonrpc: '2.0', method }),
      closed: () => this.#closed,
      logger: parent.logger,
    })
  }

  async start(): Promise<void> {}

  send(message: JsonRpcMessage): void {
    this.#receiveFromClient(message).catch((error: unknown) => {
      this.#parent.logger.error({ error, method: message.method }, 'aggregate request failed')
      const id = message.id
      if (classifyMessage(message) === 'request' && id !== undefined && id !== null) {
        this.#emit(errorResponse(id, INTERNAL_ERROR, 'internal gateway error'))
      }
    })
  }

  async close(): Promise<void> {
    this.#closed = true
    const children = [...this.#children.values()]
    await Promise.allSettled(
      children.map((child) => child.session.end({ reason: 'aggregate_closed' })),
    )
  }

  recentStderr(): string[] {
    const lines: string[] = []
    for (const child of this.#children.values()) {
      const stderr = child.session.upstream?.recentStderr() ?? []
      for (const line of stderr) lines.push(`${child.server}: ${line}`)
    }
    return lines
  }

  async #receiveFromClient(message: JsonRpcMessage): Promise<void> {
    const kind = classifyMessage(message)
    if (kind === 'request') {
      this.#emit(await this.#answer(message), message.method === 'initialize')
      return
    }
    if (kind === 'notification') {
      await this.#notifyChildren(message)
      return
    }
    const target = this.#serverRequests.get(idKey(message.id as JsonRpcId))
    if (target === undefined) return
    this.#serverRequests.delete(idKey(message.id as JsonRpcId))
    await processClientMessage(
      this.#deps,
      target.child.session,
      { ...message, id: target.id },
      undefined,
    )
  }

  async #answer(message: JsonRpcMessage): Promise<JsonRpcMessage> {
    const id = message.id as JsonRpcId
    switch (message.method) {
      case 'initialize':
        return this.#initialize(message)
      case 'ping':
        return { jsonrpc: '2.0', id, result: {} }
      case 'tools/list':
      case 'prompts/list':
        return this.#list(message, message.method === 'tools/list' ? 'tools' : 'prompts')
      case 'resources/list':
        return this.#list(message, 'resources')
      case 'resources/templates/list':
        return this.#list(message, 'resourceTemplates')
      case 'tools/call':
        return this.#routeByName(message, 'tools')
      case 'prompts/get':
        return this.#routeByName(message, 'prompts')
      case 'resources/read':
      case 'resources/subscribe':
      case 'resources/unsubscribe':
        return this.#routeByUri(message)
      case 'logging/setLevel':
        return this.#setLogLevel(message)
      default: {
        const method = JSON.stringify(String(message.method).slice(0, 64))
        return errorResponse(id, METHOD_NOT_FOUND, `method ${method} is not available on /mcp`)
      }
    }
  }

  async #initialize(message: JsonRpcMessage): Promise<JsonRpcMessage> {
    const id = message.id as JsonRpcId
    if (this.#initialized)
      return errorResponse(id, INVALID_REQUEST, 'session is already initialized')
    this.#initialized = true
    const params = message.params ?? {}
    const requested = String(params.protocolVersion)
    // NOTE: each upstream gets this version in its initialize request, but one that answers with
    // an older revision is not translated; its messages pass through as it sends them.
    const version = SUPPORTED_PROTOCOL_VERSIONS.includes(requested)
      ? requested
      : SUPPORTED_PROTOCOL_VERSIONS.at(-1)!
    // NOTE: the per-principal session cap counts this as one session, yet it starts one upstream
    // (a process for stdio servers) per allowed server.
    const servers = [...new Set(this.#options.allowedServers(this.#parent.identity))].sort()
    await Promise.all(
      servers.map((server) => this.#openChild(server, { ...params, protocolVersion: version })),
    )
    const ready = [...this.#children.values()].filter((child) => child.ready)
    this.#parent.logger.info(
      { servers: ready.map((child) => child.server), allowed: servers.length },
      'aggregated session started',
    )
    return {
      jsonrpc: '2.0',
      id,
      result: {
        protocolVersion: version,
        capabilities: mergeCapabilities(ready),
        serverInfo: SERVER_INFO,
      },
    }
  }

  /** Starts one server's session; a server that fails is left out and the others go on. */
  async #openChild(server: string, params: Record<string, unknown>): Promise<void> {
    const identity = this.#parent.identity
    const decision = this.#deps.decideServer(identity, server)
    if (decision.effect !== 'allow') return
    let child: AggregateChild
    try {
      const config = this.#deps.getServer(server)
      if (config === undefined) return
      child = createAggregateChild({
        id: this.#parent.id,
        parent: this.#parent,
        config,
        deps: this.#deps,
        events: {
          onResponse: (from, id, response) => this.#onChildResponse(from, id, response),
          onServerMessage: (from, serverMessage) => this.#onServerMessage(from, serverMessage),
          onEnd: (ended) => this.#onChildEnd(ended),
        },
      })
    } catch (error) {
      this.#parent.logger.error({ error, server }, 'upstream left out of aggregated session')
      return
    }
    this.#children.set(server, child)
    const startEvent = child.session.auditEvent({
      type: 'session.start',
      outcome: 'success',
      reason: decision.reason,
      ...(decision.rule === undefined ? {} : { rule: decision.rule }),
    })
    await this.#deps.audit(startEvent)
    await startAggregateChild(child, () => this.#initializeChild(child, params))
  }

  async #initializeChild(
    child: AggregateChild,
    params: Record<string, unknown>,
  ): Promise<JsonRpcMessage> {
    const id = ++this.#nextId
    const message: JsonRpcMessage = { jsonrpc: '2.0', id, method: 'initialize', params }
    const response = this.#waitFor(child, id)
    // initialize is not a pipeline method once a session exists, so it goes straight out.
    child.session.track(message, child.exchange)
    child.session.forward(message, Promise.resolve(), () => {})
    return response
  }

  /** Sends a request to one upstream through its pipeline and resolves with the response. */
  async #request(
    child: AggregateChild,
    method: string,
    params: Record<string, unknown> | undefined,
    clientId?: JsonRpcId,
  ): Promise<JsonRpcMessage> {
    // A renewed client certificate replaces the identity of every upstream session too.
    child.session.isBoundTo(this.#parent.identity)
    const id = ++this.#nextId
    const message: JsonRpcMessage = {
      jsonrpc: '2.0',
      id,
      method,
      ...(params === undefined ? {} : { params }),
    }
    const response = this.#waitFor(child, id)
    if (clientId !== undefined) this.#forwarded.set(idKey(clientId), { child, id })
    try {
      await processClientMessage(this.#deps, child.session, message, child.exchange)
      return await response
    } finally {
      if (clientId !== undefined) this.#forwarded.delete(idKey(clientId))
    }
  }

  #waitFor(child: AggregateChild, id: JsonRpcId): Promise<JsonRpcMessage> {
    return new Promise((resolve) => this.#waiters.set(waiterKey(child, id), resolve))
  }

  #onChildResponse(child: AggregateChild, id: JsonRpcId | null, message: JsonRpcMessage): void {
    if (id === null) return
    const waiter = this.#waiters.get(waiterKey(child, id))
    if (waiter === undefined) return
    this.#waiters.delete(waiterKey(child, id))
    waiter(message)
  }

  async #list(message: JsonRpcMessage, kind: ListKind): Promise<JsonRpcMessage> {
    const id = message.id as JsonRpcId
    // Every list is returned in one page, so no cursor this gateway issued exists.
    const cursor = message.params?.cursor
    if (cursor !== undefined) {
      const shown = JSON.stringify(String(cursor).slice(0, 64))
      const text = `unknown cursor ${shown}; /mcp returns every item in one page`
      return errorResponse(id, INVALID_PARAMS, text)
    }
    await this.#lists.refresh(kind === 'resourceTemplates' ? ['resourceTemplates'] : [kind])
    return { jsonrpc: '2.0', id, result: { [LISTS[kind].field]: this.#catalog.exposed(kind) } }
  }

  /**
   * Routes `tools/call` or `prompts/get` by its exposed name. A name the last listing did not
   * contain is split at the first `__`, so a call to a tool the caller may not see still gets the
   * owning server's decision and audit record. Names that were part of a collision route nowhere.
   */
  async #routeByName(message: JsonRpcMessage, kind: 'tools' | 'prompts'): Promise<JsonRpcMessage> {
    const id = message.id as JsonRpcId
    const params = message.params ?? {}
    const name = params.name
    const noun = kind === 'tools' ? 'tool' : 'prompt'
    if (typeof name !== 'string') {
      return errorResponse(id, INVALID_PARAMS, `params.name must be the ${noun} name as a string`)
    }
    let target = this.#catalog[kind].exposed.get(name)
    if (target === undefined && !this.#catalog[kind].ambiguous.has(name)) {
      await this.#lists.refresh([kind])
      target = this.#catalog[kind].exposed.get(name)
    }
    if (target === undefined && this.#catalog[kind].ambiguous.has(name)) {
      const shown = JSON.stringify(name.slice(0, 128))
      const text = `${noun} ${shown} is claimed by several upstream ${kind}, so none gets it`
      return this.#refuse(id, message.method!, 'name_collision', { [noun]: name }, text)
    }
    target ??= splitPlainName(name, this.#readyServers())
    const child = target === undefined ? undefined : this.#children.get(target.server)
    if (target === undefined || child === undefined) {
      const shown = JSON.stringify(name.slice(0, 128))
      const text = `unknown ${noun} ${shown}; names on /mcp are <server>__<name>`
      await this.#recordUnknown(message.method!, { [noun]: name.slice(0, 128) })
      return errorResponse(id, INVALID_PARAMS, text)
    }
    const response = await this.#request(
      child,
      message.method!,
      { ...params, name: target.name },
      id,
    )
    return { ...response, id }
  }

  async #routeByUri(message: JsonRpcMessage): Promise<JsonRpcMessage> {
    const id = message.id as JsonRpcId
    const params = message.params ?? {}
    const uri = params.uri
    if (typeof uri !== 'string') {
      return errorResponse(id, INVALID_PARAMS, 'params.uri must be the resource URI as a string')
    }
    let owner = this.#catalog.ownerOf(uri)
    if (owner === undefined) {
      await this.#lists.refresh(['resources', 'resourceTemplates'])
      owner = this.#catalog.ownerOf(uri)
    }
    if (owner === null) {
      return this.#refuse(
        id,
        message.method!,
        'resource_collision',
        { uri },
        `resource ${JSON.stringify(uri.slice(0, 256))} is provided by more than one server`,
      )
    }
    const child = owner === undefined ? undefined : this.#children.get(owner)
    if (child === undefined) {
      const text = `resource ${JSON.stringify(uri.slice(0, 256))} not found on any server`
      await this.#recordUnknown(message.method!, { uri: uri.slice(0, 256) })
      return errorResponse(id, RESOURCE_NOT_FOUND, text, { uri })
    }
    const response = await this.#request(child, message.method!, params, id)
    return { ...response, id }
  }

  async #setLogLevel(message: JsonRpcMessage): Promise<JsonRpcMessage> {
    const id = message.id as JsonRpcId
    const targets = [...this.#children.values()].filter(
      (child) => child.ready && child.capabilities.logging !== undefined,
    )
    const responses = await Promise.all(
      targets.map((child) => this.#request(child, 'logging/setLevel', message.params)),
    )
    const failed = responses.find((response) => response.error !== undefined)
    if (failed?.error !== undefined) return { ...failed, id }
    return { jsonrpc: '2.0', id, result: {} }
  }

  /** Audits a request naming nothing that a server of the session lists, so probes are seen. */
  async #recordUnknown(method: string, details: Record<string, unknown>): Promise<void> {
    const event = this.#parent.auditEvent({
      type: 'mcp.request',
      outcome: 'denied',
      method,
      reason: 'unknown_name',
      rule: 'aggregate/names',
      details,
    })
    await this.#deps.audit(event).catch((error: unknown) => {
      this.#parent.logger.error({ error, method }, 'audit write failed')
    })
  }

  /** Audits a request the aggregate itself refused and returns the denial for the client. */
  async #refuse(
    id: JsonRpcId,
    method: string,
    reason: string,
    details: Record<string, unknown>,
    text: string,
  ): Promise<JsonRpcMessage> {
    const record = await this.#deps.audit(
      this.#parent.auditEvent({
        type: 'mcp.request',
        outcome: 'denied',
        method,
        reason,
        rule: 'aggregate/names',
        details,
      }),
    )
    this.#parent.logger.info({ method, reason, ...details }, 'aggregated request rejected')
    return denialResponse(id, 'forbidden', text, record.id)
  }

  async #notifyChildren(message: JsonRpcMessage): Promise<void> {
    if (message.method === 'notifications/cancelled') {
      const requestId = (message.params as { requestId?: unknown } | undefined)?.requestId
      if (typeof requestId !== 'string' && typeof requestId !== 'number') return
      const target = this.#forwarded.get(idKey(requestId))
      if (target === undefined) return
      const cancel = { ...message, params: { ...message.params, requestId: target.id } }
      await processClientMessage(this.#deps, target.child.session, cancel, undefined)
      // The upstream session forgets a cancelled request, so its waiter is released here. The
      // client session dropped the request already and discards this response.
      const released = errorResponse(target.id, INTERNAL_ERROR, 'request cancelled by the client')
      this.#onChildResponse(target.child, target.id, released)
      return
    }
    for (const child of this.#children.values()) {
      if (!child.ready) continue
      child.session.isBoundTo(this.#parent.identity)
      await processClientMessage(this.#deps, child.session, message, undefined)
    }
  }

  #onServerMessage(child: AggregateChild, message: JsonRpcMessage): void {
    if (this.#closed) return
    if (classifyMessage(message) === 'request') {
      const id = `writ-aggregate-${++this.#nextId}`
      this.#serverRequests.set(idKey(id), { child, id: message.id as JsonRpcId })
      this.#emit({ ...message, id })
      return
    }
    switch (message.method) {
      case 'notifications/tools/list_changed':
        this.#lists.scheduleRelist('tools', child.server)
        return
      case 'notifications/prompts/list_changed':
        this.#lists.scheduleRelist('prompts', child.server)
        return
      case 'notifications/resources/list_changed':
        this.#lists.scheduleRelist('resources', child.server)
        return
      case 'notifications/resources/updated': {
        const uri = (message.params as { uri?: unknown } | undefined)?.uri
        // Only the server that owns a URI may report changes to it.
        if (typeof uri === 'string' && this.#catalog.ownerOf(uri) === child.server)
          this.#emit(message)
        return
      }
      case 'notifications/cancelled':
        this.#emit(this.#renameCancelled(child, message))
        return
      default:
        this.#emit(message)
    }
  }

  #renameCancelled(child: AggregateChild, message: JsonRpcMessage): JsonRpcMessage {
    const requestId = (message.params as { requestId?: unknown } | undefined)?.requestId
    for (const [key, request] of this.#serverRequests) {
      if (request.child === child && request.id === requestId) {
        this.#serverRequests.delete(key)
        return { ...message, params: { ...message.params, requestId: key.slice(2) } }
      }
    }
    return message
  }

  #onChildEnd(child: AggregateChild): void {
    this.#children.delete(child.server)
    for (const [key, request] of this.#serverRequests) {
      if (request.child === child) this.#serverRequests.delete(key)
    }
    if (this.#closed || !child.ready) return
    this.#lists.removeServer(child.server)
  }

  #readyServers(): string[] {
    return [...this.#children.values()].filter((child) => child.ready).map((child) => child.server)
  }

  /**
   * Delivers a message to the client session. Only the initialize response goes through the
   * handler's upstream events, because they register the session. Everything else was already
   * screened for the upstream it came from, and screening it again as server `*` would apply a
   * manifest that no server has.
   */
  #emit(message: JsonRpcMessage, initializeResponse = false): void {
    if (this.#parent.ended) return
    if (initializeResponse) this.#events.onMessage(message)
    else this.#parent.receive(message, (_pending, response) => response)
  }
}

function waiterKey(child: AggregateChild, id: JsonRpcId): string {
  return `${child.server}\0${idKey(id)}`
}
