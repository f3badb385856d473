/**
 * A minimal Streamable HTTP client for the benchmark: raw `node:http` or `node:https` requests
 * on a keep-alive agent, speaking JSON-RPC after `initialize` and `notifications/initialized`.
 * It accepts both `application/json` and `text/event-stream` responses. It is much cheaper per
 * call than the MCP SDK client, so the load generator takes less of the shared CPU.
 */
import http from 'node:http'
import https from 'node:https'

/** The protocol revision the benchmark clients request in `initialize`. */
export const BENCH_PROTOCOL_VERSION = '2025-06-18'

/** PEM client certificate, key and trusted CA bundle for mutual TLS. */
export interface ClientTls {
  cert: string
  key: string
  ca: string
}

interface JsonRpcResponse {
  jsonrpc: '2.0'
  id?: number | string | null
  result?: unknown
  error?: { code: number; message: string; data?: unknown }
}

interface RawResponse {
  status: number
  headers: http.IncomingHttpHeaders
  body: string
}

/** One MCP session over Streamable HTTP, with its own keep-alive connection. */
export class HttpMcpSession {
  private readonly url: URL
  private readonly agent: http.Agent
  private readonly request: typeof http.request
  private sessionId: string | undefined
  private protocolVersion = BENCH_PROTOCOL_VERSION
  private nextId = 1

  private constructor(url: URL, tls: ClientTls | undefined) {
    this.url = url
    const secure = url.protocol === 'https:'
    if (secure && tls === undefined) throw new TypeError(`${url} needs client TLS material`)
    // One socket per session: a session sends its calls one after another, like a single agent.
    this.agent = secure
      ? new https.Agent({ keepAlive: true, maxSockets: 1, ...tls })
      : new http.Agent({ keepAlive: true, maxSockets: 1 })
    this.request = secure ? https.request : http.request
  }

  /** Opens a session: `initialize`, then `notifications/initialized`. */
  static async open(url: string, tls?: ClientTls): Promise<HttpMcpSession> {
    const session = new HttpMcpSession(new URL(url), tls)
    const result = (await session.call('initialize', {
      protocolVersion: BENCH_PROTOCOL_VERSION,
      capabilities: {},
      clientInfo: { name: 'writ-bench', version: '1.0.0' },
    })) as { protocolVersion?: string }
    if (session.sessionId === undefined) {
      throw new Error(`${url} returned no Mcp-Session-Id header in its initialize response`)
    }
    if (typeof result.protocolVersion === 'string') session.protocolVersion = result.protocolVersion
    const notified = await session.post({ jsonrpc: '2.0', method: 'notifications/initialized' })
    if (notified.status !== 202 && notified.status !== 200) {
      throw new Error(`${url} rejected notifications/initialized with HTTP ${notified.status}`)
    }
    return session
  }

  /** Sends one JSON-RPC request and returns its result; a JSON-RPC error is thrown. */
  async call(method: string, params: unknown): Promise<unknown> {
    const id = this.nextId++
    const response = await this.post({ jsonrpc: '2.0', id, method, params })
    if (response.status !== 200) {
      throw new Error(
        `${method} failed with HTTP ${response.status}: ${response.body.slice(0, 200)}`,
      )
    }
    const header = response.headers['mcp-session-id']
    if (typeof header === 'string') this.sessionId = header
    const message = findResponse(response, id)
    if (message === undefined) {
      throw new Error(`${method} response has no JSON-RPC message with id ${id}`)
    }
    if (message.error) {
      throw new Error(
        `${method} returned JSON-RPC error ${message.error.code}: ${message.error.message}`,
      )
    }
    return message.result
  }

  /** Ends the session with DELETE and closes the connection. */
  async close(): Promise<void> {
    try {
      if (this.sessionId !== undefined) await this.send('DELETE', undefined)
    } catch {
      // The server may already be gone when the benchmark shuts down.
    }
    this.agent.destroy()
  }

  private post(message: unknown): Promise<RawResponse> {
    return this.send('POST', JSON.stringify(message))
  }

  private send(method: 'POST' | 'DELETE', body: string | undefined): Promise<RawResponse> {
    const headers: http.OutgoingHttpHeaders = {
      accept: 'application/json, text/event-stream',
      'mcp-protocol-version': this.protocolVersion,
    }
    if (body !== undefined) {
      headers['content-type'] = 'application/json'
      headers['content-length'] = Buffer.byteLength(body)
    }
    if (this.sessionId !== undefined) headers['mcp-session-id'] = this.sessionId
    return new Promise((resolve, reject) => {
      const request = this.request(
        {
          agent: this.agent,
          method,
          hostname: this.url.hostname,
          port: this.url.port,
          path: this.url.pathname,
          headers,
        },
        (response) => {
          const chunks: Buffer[] = []
          response.on('data', (chunk: Buffer) => chunks.push(chunk))
          response.on('end', () => {
            resolve({
              status: response.statusCode ?? 0,
              headers: response.headers,
              body: Buffer.concat(chunks).toString('utf8'),
            })
          })
          response.on('error', reject)
        },
      )
      request.on('error', reject)
      request.end(body)
    })
  }
}

function findResponse(response: RawResponse, id: number): JsonRpcResponse | undefined {
  const type = String(response.headers['content-type'] ?? '')
  const messages = type.startsWith('text/event-stream')
    ? parseSseMessages(response.body)
    : [JSON.parse(response.body) as JsonRpcResponse]
  return messages.find((message) => message.id === id)
}

/** Returns the JSON `data` of each event in a complete SSE body, skipping events without JSON. */
export function parseSseMessages(body: string): JsonRpcResponse[] {
  const messages: JsonRpcResponse[] = []
  for (const event of body.split(/\r?\n\r?\n/)) {
    const data: string[] = []
    for (const line of event.split(/\r?\n/)) {
      if (line.startsWith('data:')) data.push(line.slice(line.startsWith('data: ') ? 6 : 5))
    }
    if (data.length === 0) continue
    try {
      messages.push(JSON.parse(data.join('\n')) as JsonRpcResponse)
    } catch {
      // A priming event or a keep-alive comment carries no JSON-RPC message.
    }
  }
  return messages
}
