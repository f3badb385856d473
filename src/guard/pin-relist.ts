/**
 * Re-listing on `notifications/tools/list_changed`: the gateway delays the notification, requests
 * the upstream's tools itself and pins the response, then delivers the notification. A
 * client that calls a tool after learning of the change is therefore decided on the new pins,
 * whether or not it lists the tools again.
 */

import { randomBytes } from 'node:crypto'
import type { JsonRpcMessage } from '../gateway/jsonrpc.js'
import type { PinOrigin, ToolPinGuard, ToolPinningMode } from './tool-pins.js'

/** How long a held `list_changed` waits for the upstream's `tools/list` response: 5 s. */
export const RELIST_TIMEOUT_MS = 5000

/** The session facts re-listing needs: the pin origin, its upstream and its pinning mode. */
export interface RelistSession extends PinOrigin {
  upstream: { send(message: JsonRpcMessage): void } | undefined
  config: { toolPinning?: ToolPinningMode }
  logger: { warn(fields: Record<string, unknown>, message: string): void }
}

/** The re-listing in flight for one session and the notifications waiting for it. */
interface Relist {
  id: string
  held: JsonRpcMessage[]
  timer: NodeJS.Timeout
}

const inFlight = new WeakMap<RelistSession, Relist>()
/** Notifications already held once, which `deliver` passes through unchanged. */
const released = new WeakSet<JsonRpcMessage>()

/**
 * Takes over an upstream message that re-listing handles and returns true: a `list_changed`
 * notification (held until the re-listing ends) or the response to the gateway's own
 * `tools/list`. Returns false for every other message, which the caller routes as usual.
 * `deliver` is the caller's own routing, called again with the held notifications.
 */
export function interceptListChanged(
  guard: ToolPinGuard | undefined,
  session: RelistSession,
  message: JsonRpcMessage,
  deliver: (message: JsonRpcMessage) => void,
): boolean {
  if (guard === undefined || released.has(message)) return false
  const relist = inFlight.get(session)
  if (message.method === 'notifications/tools/list_changed' && message.id === undefined) {
    if (relist !== undefined) relist.held.push(message)
    else startRelist(session, message, deliver)
    return true
  }
  if (relist === undefined || message.method !== undefined || message.id !== relist.id) return false
  const tools = (message.result as { tools?: unknown } | undefined)?.tools
  // NOTE: only the first page is pinned here; later pages are pinned when a client lists them.
  if (Array.isArray(tools)) guard.filterListed(session, session.config.toolPinning, tools)
  finishRelist(session, deliver)
  return true
}

function startRelist(
  session: RelistSession,
  notification: JsonRpcMessage,
  deliver: (message: JsonRpcMessage) => void,
): void {
  // 128 random bits, so a client request in the same session is very unlikely to use this id.
  const id = `writ-relist-${randomBytes(16).toString('hex')}`
  const timer = setTimeout(() => {
    session.logger.warn(
      { server: session.server },
      'upstream tools/list response timed out, list_changed delivered',
    )
    finishRelist(session, deliver)
  }, RELIST_TIMEOUT_MS)
  timer.unref()
  inFlight.set(session, { id, held: [notification], timer })
  session.upstream?.send({ jsonrpc: '2.0', id, method: 'tools/list' })
}

function finishRelist(session: RelistSession, deliver: (message: JsonRpcMessage) => void): void {
  const relist = inFlight.get(session)
  if (relist === undefined) return
  inFlight.delete(session)
  clearTimeout(relist.timer)
  for (const held of relist.held) {
    released.add(held)
    deliver(held)
  }
}
