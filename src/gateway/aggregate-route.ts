import type { PostExchange } from './http-io.js'
import { classifyMessage, type JsonRpcMessage } from './jsonrpc.js'
import type { Session } from './session.js'

/**
 * The server name of sessions on the aggregated endpoint `/mcp`. It is not a valid DNS label, so
 * no configured server can have it.
 */
export const AGGREGATE_SERVER = '*'

/**
 * Passes a client message of an aggregated session straight to its aggregate upstream and
 * returns true; returns false for any other session. The aggregate runs the full pipeline
 * (policy, guards, audit) once per real server, so running it here with the server `*` would
 * count limits, approvals and pins twice under a name that no policy contains.
 */
export function forwardToAggregate(
  session: Session,
  message: JsonRpcMessage,
  exchange: PostExchange | undefined,
): boolean {
  if (session.server !== AGGREGATE_SERVER) return false
  const kind = classifyMessage(message)
  if (kind === 'request' && exchange !== undefined) session.track(message, exchange)
  if (kind === 'notification' && message.method === 'notifications/cancelled') {
    session.cancel((message.params as { requestId?: unknown } | undefined)?.requestId)
  }
  if (kind === 'response' || kind === 'error') session.takeServerRequest(message.id)
  session.forward(message, Promise.resolve(), () => {})
  return true
}
