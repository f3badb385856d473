import type { JsonRpcMessage } from './jsonrpc.js'

/** Callbacks an upstream transport reports to; the session owns them. */
export interface UpstreamEvents {
  onMessage(message: JsonRpcMessage): void
  /** Called once when the upstream is gone; `error` names the server and the cause. */
  onClose(error?: Error): void
}

/** One connection to an upstream MCP server, private to one client session. */
export interface Upstream {
  /** Resolves once the transport can take messages; rejects naming the server. */
  start(): Promise<void>
  /** Sends one message; failures arrive as error responses or through `onClose`. */
  send(message: JsonRpcMessage): void
  close(): Promise<void>
  /** The last lines the upstream wrote to standard error, already redacted. */
  recentStderr(): string[]
}
