/** JSON-RPC 2.0 message shapes as MCP uses them, plus the error objects the gateway sends. */

export type JsonRpcId = string | number

/** Any JSON-RPC message; unknown fields are kept so that pass-through preserves them. */
export interface JsonRpcMessage {
  jsonrpc: '2.0'
  id?: JsonRpcId | null
  method?: string
  params?: Record<string, unknown>
  result?: unknown
  error?: JsonRpcErrorObject
  [field: string]: unknown
}

export interface JsonRpcErrorObject {
  code: number
  message: string
  data?: unknown
}

export type MessageKind = 'request' | 'notification' | 'response' | 'error'

export const PARSE_ERROR = -32700
export const INVALID_REQUEST = -32600
export const METHOD_NOT_FOUND = -32601
export const INTERNAL_ERROR = -32603

/**
 * The one code every Writ denial carries, taken from the range JSON-RPC leaves to
 * implementations (-32000 to -32099). Clients branch on `error.data.reason`.
 */
export const WRIT_DENIED_CODE = -32003

/** Why Writ denied a message; sent to the client as `error.data.reason`. */
export type DenialReason =
  | 'forbidden'
  | 'needs_approval'
  | 'quarantined'
  | 'rate_limited'
  | 'locked'
  | 'expired'
  | 'too_large'

export const DENIAL_REASONS: readonly DenialReason[] = [
  'forbidden',
  'needs_approval',
  'quarantined',
  'rate_limited',
  'locked',
  'expired',
  'too_large',
]

/**
 * The deepest nesting of arrays and objects accepted in one JSON text. Serialising a value nested
 * tens of thousands of levels deep overflows the stack, so a client or upstream could otherwise
 * crash the gateway with one message; real MCP messages stay far below this.
 */
export const MAX_JSON_DEPTH = 128

/**
 * Parses JSON text. Returns `ok: false` with `reason: 'syntax'` when it is not JSON and
 * `reason: 'depth'` when arrays and objects nest deeper than `MAX_JSON_DEPTH`.
 */
export function parseJson(
  text: string,
): { ok: true; value: unknown } | { ok: false; reason: 'syntax' | 'depth' } {
  if (nestingDepth(text) > MAX_JSON_DEPTH) return { ok: false, reason: 'depth' }
  try {
    return { ok: true, value: JSON.parse(text) }
  } catch {
    return { ok: false, reason: 'syntax' }
  }
}

/** Returns the deepest bracket nesting in JSON text, ignoring brackets inside strings. */
function nestingDepth(text: string): number {
  let depth = 0
  let deepest = 0
  let inString = false
  for (let index = 0; index < text.length; index++) {
    const code = text.charCodeAt(index)
    if (inString) {
      if (code === 0x5c)
        index++ // a backslash escapes the next character
      else if (code === 0x22) inString = false
    } else if (code === 0x22) {
      inString = true
    } else if (code === 0x5b || code === 0x7b) {
      depth++
      if (depth > deepest) deepest = depth
    } else if (code === 0x5d || code === 0x7d) {
      depth--
    }
  }
  return deepest
}

/**
 * Classifies one JSON-RPC message, or returns `undefined` for anything that is not one.
 *
 * @example classifyMessage({ jsonrpc: '2.0', id: 1, method: 'ping' }) // 'request'
 */
export function classifyMessage(value: unknown): MessageKind | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined
  const message = value as Record<string, unknown>
  if (message.jsonrpc !== '2.0') return undefined
  const hasId = 'id' in message
  if (typeof message.method === 'string') {
    if (!hasId) return 'notification'
    return isRequestId(message.id) ? 'request' : undefined
  }
  if (!hasId || !(isRequestId(message.id) || message.id === null)) return undefined
  if ('result' in message) return 'response'
  if (isErrorObject(message.error)) return 'error'
  return undefined
}

/** Reports whether a value is a message of the given kind. */
export function isMessageOfKind(value: unknown, kind: MessageKind): value is JsonRpcMessage {
  return classifyMessage(value) === kind
}

function isRequestId(id: unknown): id is JsonRpcId {
  return typeof id === 'string' || (typeof id === 'number' && Number.isFinite(id))
}

function isErrorObject(value: unknown): value is JsonRpcErrorObject {
  if (typeof value !== 'object' || value === null) return false
  const error = value as Record<string, unknown>
  return typeof error.code === 'number' && typeof error.message === 'string'
}

/** Builds a JSON-RPC error response. */
export function errorResponse(
  id: JsonRpcId | null | undefined,
  code: number,
  message: string,
  data?: unknown,
): JsonRpcMessage {
  const error: JsonRpcErrorObject = data === undefined ? { code, message } : { code, message, data }
  return { jsonrpc: '2.0', id: id ?? null, error }
}

/**
 * Builds the error a client receives when Writ denies a message. The message is short; the role
 * and rule that decided stay in the audit record that `requestId` names.
 *
 * @example denialResponse(7, 'forbidden', 'tool "write_file" is not allowed', 'evt_123')
 */
export function denialResponse(
  id: JsonRpcId | null | undefined,
  reason: DenialReason,
  message: string,
  requestId: string,
): JsonRpcMessage {
  return errorResponse(id, WRIT_DENIED_CODE, message, { reason, requestId })
}

/** Returns the `_meta.progressToken` of a request, if it has one. */
export function progressTokenOf(message: JsonRpcMessage): JsonRpcId | undefined {
  const meta = message.params?._meta
  if (typeof meta !== 'object' || meta === null) return undefined
  const token = (meta as Record<string, unknown>).progressToken
  return typeof token === 'string' || typeof token === 'number' ? token : undefined
}
