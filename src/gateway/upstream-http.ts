import type { Logger } from '../log.js'
import type { HttpUpstreamConfig } from './deps.js'
import { createMcpHttpClient, type McpHttpClient } from './http-client.js'
import type { JsonRpcMessage } from './jsonrpc.js'
import type { Upstream, UpstreamEvents } from './upstream.js'

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
    headers: config.headers ?? {},
    logger,
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

  return { start: async () => {}, send, close, recentStderr: () => [] }
}
