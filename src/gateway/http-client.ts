import http from 'node:http'
import https from 'node:https'
import type { LookupFunction } from 'node:net'
import { WritError } from '../errors.js'
import { type Logger, silentLogger } from '../log.js'
import {
  classifyMessage,
  errorResponse,
  INTERNAL_ERROR,
  type JsonRpcId,
  type JsonRpcMessage,
  parseJson,
} from './jsonrpc.js'
import { SseParser } from './sse.js'

/** PEM client certificate, key and trusted CAs for mutual TLS. */
export interface TlsMaterial {
  cert: string | Buffer
  key: string | Buffer
  ca: string | Buffer | Array<string | Buffer>
}

export interface McpHttpClientOptions {
  url: string | URL
  /** Extra headers sent with every request, such as a resolved `Authorization` value. */
  headers?: Record<string, string>
  tls?: TlsMaterial
  logger?: Logger
  /** Receives every message the server sends: responses, notifications and server requests. */
  onMessage(message: JsonRpcMessage): void
  /** Called when the server answers 404 to a request that carried a session id. */
  onSessionLost?(): void
  /** Largest error body read from a failed response (default 1 MiB). */
  maxErrorBodyBytes?: number
  /**
   * Largest JSON response body read (default: no limit). A larger body fails the requests it
   * answers with an error naming the limit. Event streams are not limited by it.
   */
  maxBodyBytes?: number
  /**
   * Computes headers for each request, such as a short-lived identity token. Calls run one at a
   * time in the order of the requests, so requests still leave in the order `send` was called.
   */
  headersFor?(): Promise<Record<string, string>>
  /** Resolves host names at connect time, so each resolved address can be checked first. */
  lookup?: LookupFunction
}

/** A Streamable HTTP client for one MCP session, usable over plain HTTP or mutual TLS. */
export interface McpHttpClient {
  /**
   * POSTs one message (or a batch) and delivers what comes back through `onMessage`. Resolves
   * when the response body is fully read. When the exchange fails, each request in it receives a
   * JSON-RPC error response instead, so callers never wait forever.
   */
  send(message: JsonRpcMessage | JsonRpcMessage[]): Promise<void>
  /** Opens the GET stream for server-initiated messages; resolves `false` when the server has none. */
  openEventStream(): Promise<boolean>
  /** Replaces the client certificate for new connections; open connections keep the old one. */
  setTls(tls: TlsMaterial): void
  /** Ends the session with DELETE and closes every connection. */
  close(): Promise<void>
  readonly sessionId: string | undefined
  readonly protocolVersion: string | undefined
}

const ACCEPT_BOTH = 'application/json, text/event-stream'
/** Delay before reopening a GET stream that ended while the session was still open. */
const EVENT_STREAM_RETRY_MS = 1000
const EVENT_STREAM_MAX_RETRIES = 5

/**
 * Creates a Streamable HTTP client. It keeps connections alive and follows the session and
 * protocol-version headers of MCP revisions 2025-03-26 through 2025-11-25.
 *
 * @example
 *   const client = createMcpHttpClient({ url: 'http://127.0.0.1:3001/mcp', onMessage: console.log })
 *   await client.send({ jsonrpc: '2.0', id: 1, method: 'ping' })
 */
export function createMcpHttpClient(options: McpHttpClientOptions): McpHttpClient {
  const url = new URL(options.url)
  const secure = url.protocol === 'https:'
  if (!secure && url.protocol !== 'http:') {
    throw new TypeError(`MCP URL must use http or https, got ${url.protocol}`)
  }
  if (options.tls && !secure) throw new TypeError('tls options need an https URL')
  const logger = options.logger ?? silentLogger
  const maxErrorBodyBytes = options.maxErrorBodyBytes ?? 1024 * 1024
  let agent = makeAgent(secure, options.tls, options.lookup)
  let sessionId: string | undefined
  let protocolVersion: string | undefined
  let closed = false
  let eventStream: http.ClientRequest | undefined
  const openRequests = new Set<http.ClientRequest>()

  function baseHeaders(): Record<string, string> {
    const headers: Record<string, string> = { ...options.headers }
    if (sessionId !== undefined) headers['mcp-session-id'] = sessionId
    if (protocolVersion !== undefined) headers['mcp-protocol-version'] = protocolVersion
    return headers
  }

  let headerQueue: Promise<unknown> = Promise.resolve()

  /** Returns the `headersFor` headers, chained after the previous call to keep request order. */
  function dynamicHeaders(): Promise<Record<string, string>> {
    const hook = options.headersFor
    if (hook === undefined) return Promise.resolve({})
    const next = headerQueue.then(() => hook())
    headerQueue = next.catch(() => {})
    return next
  }

  function request(
    method: string,
    headers: Record<string, string>,
    body?: string,
  ): Promise<{ response: http.IncomingMessage; request: http.ClientRequest }> {
    return new Promise((resolve, reject) => {
      const client = secure ? https : http
      const outgoing = client.request(url, { method, headers, agent })
      openRequests.add(outgoing)
      outgoing.once('close', () => openRequests.delete(outgoing))
      outgoing.once('response', (response) => resolve({ response, request: outgoing }))
      outgoing.once('error', reject)
      outgoing.end(body)
    })
  }

  function deliver(message: unknown, initializeId: JsonRpcId | undefined): JsonRpcId | undefined {
    const kind = classifyMessage(message)
    if (kind === undefined) {
      logger.warn({ url: url.href }, 'server sent a value that is not a JSON-RPC message, skipped')
      return undefined
    }
    const typed = message as JsonRpcMessage
    if (kind === 'response' && initializeId !== undefined && typed.id === initializeId) {
      const version = (typed.result as { protocolVersion?: unknown } | undefined)?.protocolVersion
      if (typeof version === 'string') protocolVersion = version
    }
    options.onMessage(typed)
    return kind === 'response' || kind === 'error' ? (typed.id ?? undefined) : undefined
  }

  function failRequests(ids: Iterable<JsonRpcId>, message: string): void {
    for (const id of ids) options.onMessage(errorResponse(id, INTERNAL_ERROR, message))
  }

  async function send(message: JsonRpcMessage | JsonRpcMessage[]): Promise<void> {
    const messages = Array.isArray(message) ? message : [message]
    const waiting = new Set<JsonRpcId>()
    let initializeId: JsonRpcId | undefined
    for (const item of messages) {
      if (classifyMessage(item) !== 'request') continue
      waiting.add(item.id as JsonRpcId)
      if (item.method === 'initialize') initializeId = item.id as JsonRpcId
    }
    let extra: Record<string, string> = {}
    if (options.headersFor !== undefined) {
      try {
        extra = await dynamicHeaders()
      } catch (error) {
        logger.warn({ url: url.href, error }, 'MCP request headers could not be computed')
        failRequests(waiting, `cannot send to MCP server at ${url.host}: ${errorText(error)}`)
        return
      }
    }
    const headers = {
      ...baseHeaders(),
      ...extra,
      'content-type': 'application/json',
      accept: ACCEPT_BOTH,
    }
    const sentSession = sessionId
    try {
      const { response } = await request('POST', headers, JSON.stringify(message))
      const newSession = response.headers['mcp-session-id']
      if (typeof newSession === 'string' && newSession !== '') sessionId = newSession
      const status = response.statusCode ?? 0
      if (status === 404 && sentSession !== undefined) options.onSessionLost?.()
      if (status < 200 || status >= 300) {
        await readFailure(response, status, waiting)
        return
      }
      const type = mediaType(response.headers['content-type'])
      const markDone = (id: JsonRpcId | undefined) => id !== undefined && waiting.delete(id)
      if (type === 'text/event-stream') {
        await readEvents(response, (value) => markDone(deliver(value, initializeId)))
      } else if (type === 'application/json') {
        const body = await readBody(response, options.maxBodyBytes ?? Number.POSITIVE_INFINITY)
        for (const value of parseMessages(body)) markDone(deliver(value, initializeId))
      } else {
        response.resume()
      }
      if (waiting.size > 0) failRequests(waiting, `MCP server at ${url.host} sent no response`)
    } catch (error) {
      if (closed) return
      logger.warn({ url: url.href, error }, 'MCP POST failed')
      failRequests(waiting, `MCP server at ${url.host} is unreachable: ${errorText(error)}`)
    }
  }

  async function readFailure(
    response: http.IncomingMessage,
    status: number,
    waiting: Set<JsonRpcId>,
  ): Promise<void> {
    const body = await readBody(response, maxErrorBodyBytes).catch(() => '')
    // A JSON-RPC error in the body (such as a Writ denial) is more useful than the status alone.
    for (const value of parseMessages(body)) {
      const kind = classifyMessage(value)
      const id = (value as JsonRpcMessage).id
      if ((kind === 'error' || kind === 'response') && id !== null && id !== undefined) {
        if (waiting.delete(id)) options.onMessage(value as JsonRpcMessage)
      } else if (kind === 'error' && waiting.size === 1) {
        const [only] = waiting
        waiting.clear()
        options.onMessage({ ...(value as JsonRpcMessage), id: only! })
      }
    }
    if (waiting.size === 0) return
    logger.warn({ url: url.href, status }, 'MCP POST rejected')
    failRequests(waiting, `MCP server at ${url.host} answered HTTP ${status}`)
  }

  async function openEventStream(attempt = 0): Promise<boolean> {
    if (closed || eventStream !== undefined) return eventStream !== undefined
    const extra = options.headersFor === undefined ? {} : await dynamicHeaders()
    const headers = { ...baseHeaders(), ...extra, accept: 'text/event-stream' }
    const { response, request: outgoing } = await request('GET', headers)
    const status = response.statusCode ?? 0
    if (status === 405) {
      response.resume()
      return false
    }
    if (status < 200 || status >= 300) {
      response.resume()
      throw new WritError('gateway.event_stream_failed', `GET stream answered HTTP ${status}`, {
        url: url.href,
        status,
      })
    }
    eventStream = outgoing
    readEvents(response, (value) => deliver(value, undefined))
      .catch((error) => {
        if (!closed) logger.debug({ url: url.href, error }, 'GET stream failed')
      })
      .finally(() => {
        eventStream = undefined
        if (!closed && attempt < EVENT_STREAM_MAX_RETRIES) reopenLater(attempt + 1)
      })
    return true
  }

  function reopenLater(attempt: number): void {
    const timer = setTimeout(() => {
      openEventStream(attempt).catch((error) =>
        logger.warn({ url: url.href, error }, 'GET stream reopen failed'),
      )
    }, EVENT_STREAM_RETRY_MS)
    timer.unref()
  }

  function setTls(tls: TlsMaterial): void {
    if (!secure) throw new TypeError('tls options need an https URL')
    const previous = agent
    agent = makeAgent(true, tls, options.lookup)
    // Idle connections were made with the old certificate; close them so the next request
    // connects with the new one. Busy ones, such as the GET stream, finish on the old one.
    for (const sockets of Object.values(previous.freeSockets)) {
      for (const socket of sockets ?? []) socket.destroy()
    }
  }

  async function close(): Promise<void> {
    if (closed) return
    closed = true
    eventStream?.destroy()
    if (sessionId !== undefined) {
      try {
        const extra = options.headersFor === undefined ? {} : await dynamicHeaders()
        const { response } = await request('DELETE', { ...baseHeaders(), ...extra })
        response.resume()
      } catch (error) {
        logger.debug({ url: url.href, error }, 'MCP DELETE failed')
      }
    }
    for (const outgoing of openRequests) outgoing.destroy()
    agent.destroy()
  }

  return {
    send,
    openEventStream: () => openEventStream(),
    setTls,
    close,
    get sessionId() {
      return sessionId
    },
    get protocolVersion() {
      return protocolVersion
    },
  }
}

function makeAgent(
  secure: boolean,
  tls: TlsMaterial | undefined,
  lookup: LookupFunction | undefined,
): http.Agent {
  const resolve = lookup === undefined ? {} : { lookup }
  if (!secure) return new http.Agent({ keepAlive: true, ...resolve })
  return new https.Agent({
    keepAlive: true,
    cert: tls?.cert,
    key: tls?.key,
    ca: tls?.ca,
    ...resolve,
  })
}

function mediaType(header: string | undefined): string {
  return (header ?? '').split(';')[0]!.trim().toLowerCase()
}

function parseMessages(body: string): unknown[] {
  const parsed = parseJson(body)
  if (!parsed.ok) return []
  return Array.isArray(parsed.value) ? parsed.value : [parsed.value]
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error)
}

async function readBody(response: http.IncomingMessage, maxBytes: number): Promise<string> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of response as AsyncIterable<Buffer>) {
    size += chunk.length
    if (size > maxBytes) {
      response.destroy()
      throw new WritError('gateway.response_too_large', `response exceeds ${maxBytes} bytes`, {
        maxBytes,
      })
    }
    chunks.push(chunk)
  }
  return Buffer.concat(chunks).toString('utf8')
}

async function readEvents(
  response: http.IncomingMessage,
  onValue: (value: unknown) => void,
): Promise<void> {
  const parser = new SseParser((event) => {
    if (event.event !== 'message' || event.data === '') return
    const parsed = parseJson(event.data)
    if (parsed.ok) onValue(parsed.value)
  })
  for await (const chunk of response as AsyncIterable<Buffer>) parser.push(chunk)
  parser.end()
}
