import { checkUpstreamUrl, guardedLookup } from '../guard/upstream-address.js'
import type { Logger } from '../log.js'
import type { HttpUpstreamConfig } from './deps.js'
import { createMcpHttpClient, type McpHttpClient } from './http-client.js'
import type { JsonRpcMessage } from './jsonrpc.js'
import type { Upstream, UpstreamEvents } from './upstream.js'

/**
 * 64 MiB: the largest JSON response body read from an upstream, the same bound as a stdio line,
 * so a hostile upstream cannot fill memory. The gateway's response size limit applies after it.
 * NOTE: messages on an SSE stream are not bounded by it.
 */
const MAX_UPSTREAM_BODY_BYTES = 64 * 1024 * 1024

export interface HttpUpstreamOptions {
  server: string
  config: HttpUpstreamConfig
  events: UpstreamEvents
  logger: Logger
  /** Computes per-request headers, such as the caller's identity JWT; see `McpHttpClientOptions`. */
  headersFor?: () => Promise<Record<string, string>>
}

/**
 * Connects to a Streamable HTTP upstream for one client session. Messages are POSTed in the order
 * `send` receives them; the GET stream opens after the client's `notifications/initialized`,
 * as the MCP SDK client does.
 */
export function createHttpUpstream(options: HttpUpstreamOptions): Upstream {
  const { server, config, events, logger } = options
  let closed = false
  const client: McpHttpClient = createMcpHttpClient({
    url: config.url,
    // Upstream requests carry only the manifest's headers, the identity JWT and the MCP session
    // and protocol headers. Nothing from the client's HTTP request is copied, so identity headers
    // a client sends (Authorization, Cookie, X-Forwarded-*, X-Writ-*) never reach the upstream.
    headers: config.headers ?? {},
    logger,
    // Every address a host name resolves to is checked when a connection opens.
    lookup: guardedLookup(server, config),
    maxBodyBytes: MAX_UPSTREAM_BODY_BYTES,
    ...(options.headersFor === undefined ? {} : { headersFor: options.headersFor }),
    onMessage: (message) => {
      if (!closed) events.onMessage(message)
    },
    onSessionLost: () => {
      if (closed) return
      closed = true
      events.onClose(new Error(`upstream server "${server}" ended the session`))
      void client.close()
    },
  })

  function send(message: JsonRpcMessage): void {
    if (closed) return
    const isInitialized = message.method === 'notifications/initialized' && !('id' in message)
    const sent = client.send(message)
    if (!isInitialized) return
    sent
      .then(() => client.openEventStream())
      .catch((error) => logger.warn({ server, error }, 'upstream GET stream failed to open'))
  }

  async function close(): Promise<void> {
    if (closed) return
    closed = true
    await client.close()
    events.onClose()
  }

  // A literal IP address or a metadata host name in the URL is refused before any connection.
  const start = async () => checkUpstreamUrl(server, config.url, config)
  return { start, send, close, recentStderr: () => [] }
}
