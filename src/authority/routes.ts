import { type IncomingMessage, type ServerResponse, STATUS_CODES } from 'node:http'
import { WritError } from '../errors.js'
import type { PeerIdentity } from '../identity/types.js'
import type { Logger } from '../log.js'
import type { Authority, JoinResult } from './authority.js'
import type { TaskAuthority } from './tasks.js'

/** The largest request body the join and renew routes read: 64 KiB, far above a CSR's size. */
export const MAX_AUTHORITY_BODY_BYTES = 64 * 1024

/** HTTP status per error code; a WritError code not listed here is a server fault (500). */
const STATUS_BY_CODE: Record<string, number> = {
  'request.invalid': 400,
  'request.invalid_json': 400,
  'request.too_large': 413,
  'request.method_not_allowed': 405,
  'request.not_found': 404,
  'csr.invalid': 400,
  'join.token_unknown': 403,
  'join.token_used': 403,
  'join.token_expired': 403,
  'join.bot_not_found': 404,
  'join.role_not_found': 404,
  'join.kubernetes_invalid': 403,
  'join.kubernetes_unavailable': 503,
  'renew.unauthenticated': 401,
  'renew.forbidden': 403,
  'renew.bot_not_found': 404,
  'renew.role_not_found': 404,
  'join.locked': 403,
  'renew.locked': 403,
  'renew.generation_stale': 403,
  'task.locked': 403,
  'task.invalid': 400,
  'task.unauthenticated': 401,
  'task.forbidden': 403,
  'task.depth_exceeded': 403,
  'task.scope_exceeded': 403,
  'task.parent_expiring': 403,
}

/** The HTTP handler for `POST /v1/join`, `POST /v1/renew` and, when enabled, `POST /v1/task`. */
export interface AuthorityRoutes {
  /**
   * Handles one request. `peer` is the verified client certificate identity, if any, and
   * `remote` the peer's `address:port` for the audit log.
   */
  handle(
    req: IncomingMessage,
    res: ServerResponse,
    peer: PeerIdentity | undefined,
    remote: string,
  ): Promise<void>
}

/**
 * Creates the HTTP routes of the authority. Join needs no client certificate because the token
 * authenticates it; renew needs the client certificate of the bot being renewed. `/v1/task` is
 * served only when `tasks` is given and needs the client certificate the task is issued under.
 *
 * @example
 *   const routes = createAuthorityRoutes(authority, logger)
 *   await routes.handle(req, res, identity, '127.0.0.1:53122')
 */
export function createAuthorityRoutes(
  authority: Authority,
  logger: Logger,
  tasks?: TaskAuthority,
): AuthorityRoutes {
  async function route(
    req: IncomingMessage,
    peer: PeerIdentity | undefined,
    remote: string,
  ): Promise<JoinResult> {
    const path = new URL(req.url ?? '/', 'https://writ.invalid').pathname
    const isTask = path === '/v1/task' && tasks !== undefined
    if (path !== '/v1/join' && path !== '/v1/renew' && !isTask) {
      throw new WritError('request.not_found', `no authority route for ${path}`, { path })
    }
    if (req.method !== 'POST') {
      throw new WritError(
        'request.method_not_allowed',
        `${path} accepts POST only, not ${req.method}`,
        { method: req.method },
      )
    }
    if (isTask) {
      // The task service checks the caller and every body field itself, so it can audit both.
      return tasks.issue(peer, await readJsonBody(req), remote)
    }
    if (path === '/v1/join') {
      const body = await readJsonBody(req)
      const token = requireString(body, 'token')
      const csrPem = requireString(body, 'csr')
      if (body.method === 'kubernetes') {
        const serviceAccountToken = requireString(body, 'serviceAccountToken')
        return authority.join({ method: 'kubernetes', token, serviceAccountToken, csrPem }, remote)
      }
      if (body.method !== undefined && body.method !== 'token') {
        throw new WritError(
          'request.invalid',
          'request field "method" must be "token" or "kubernetes"; omit it for a one-time token',
          { field: 'method' },
        )
      }
      return authority.join({ token, csrPem }, remote)
    }
    if (!peer) {
      throw new WritError(
        'renew.unauthenticated',
        'renewal requires a valid client certificate issued by this Writ CA; join again if the certificate expired',
      )
    }
    const body = await readJsonBody(req)
    return authority.renew(peer, requireString(body, 'csr'), remote)
  }

  return {
    async handle(req, res, peer, remote) {
      try {
        const result = await route(req, peer, remote)
        // A task result adds its task id, depth, scope and lifetime to the four common fields.
        sendJson(res, 200, { ...result, notAfter: result.notAfter.toISOString() })
      } catch (error) {
        sendErrorReply(req, res, error, {
          statusByCode: STATUS_BY_CODE,
          area: 'authority',
          remote,
          logger,
          allow: 'POST',
          // The authority logs its own refusals; only failures before it are logged here.
          logRejection: (rejected) =>
            rejected.code.startsWith('request.') || rejected.code === 'renew.unauthenticated',
        })
      }
    },
  }
}

/** How one family of authority routes turns a thrown error into an HTTP error reply. */
export interface ErrorReplyOptions {
  /** HTTP status per error code; codes not listed, and errors that are not WritErrors, give 500. */
  statusByCode: Record<string, number>
  /** Names the route family in log messages, such as `authority` or `user`. */
  area: string
  remote: string
  logger: Logger
  /** Whether a rejection is logged here; services that log and audit their own return false. */
  logRejection(error: WritError): boolean
  /** The Allow header of a 405; without it the error's `allow` field is used. */
  allow?: string
}

/**
 * Sends `{ error: { code, message, requestId? } }` for a thrown error. An unexpected error is
 * logged and answered with a generic 500, so no internal detail reaches the caller. A 429 with
 * `retryAfterSeconds` sets Retry-After, and a request whose body was not read to the end gets
 * `connection: close`, because the unread rest would be taken for the next request.
 */
export function sendErrorReply(
  req: IncomingMessage,
  res: ServerResponse,
  error: unknown,
  options: ErrorReplyOptions,
): void {
  const { logger, remote, area } = options
  const status = error instanceof WritError ? (options.statusByCode[error.code] ?? 500) : 500
  if (status === 500) {
    logger.error({ error, path: req.url, peer: remote }, `${area} request failed`)
    sendJson(res, 500, {
      error: { code: 'http.internal', message: 'internal error; see the Writ server log' },
    })
    return
  }
  const writError = error as WritError
  if (options.logRejection(writError)) {
    logger.info({ code: writError.code, path: req.url, peer: remote }, `${area} request rejected`)
  }
  const body: { code: string; message: string; requestId?: string } = {
    code: writError.code,
    message: writError.message,
  }
  const auditId = writError.fields.auditId
  if (typeof auditId === 'string') body.requestId = auditId
  const headers: Record<string, string> = {}
  if (status === 405) headers.allow = options.allow ?? String(writError.fields.allow)
  const retryAfter = writError.fields.retryAfterSeconds
  if (status === 429 && typeof retryAfter === 'number') headers['retry-after'] = String(retryAfter)
  if (status === 413 || !req.complete) headers.connection = 'close'
  sendJson(res, status, { error: body }, headers)
  if (!req.complete) req.resume()
}

/** Reads at most `MAX_AUTHORITY_BODY_BYTES` and parses them as a JSON object. */
export async function readJsonBody(req: IncomingMessage): Promise<Record<string, unknown>> {
  const declared = Number(req.headers['content-length'])
  if (Number.isFinite(declared) && declared > MAX_AUTHORITY_BODY_BYTES) throw tooLarge()
  const text = await readLimited(req)
  let parsed: unknown
  try {
    parsed = JSON.parse(text)
  } catch {
    // The parser's message quotes the body, which contains the join token, so it is dropped.
    throw new WritError('request.invalid_json', 'request body is not valid JSON')
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new WritError('request.invalid', 'request body must be a JSON object')
  }
  return parsed as Record<string, unknown>
}

/**
 * Collects the body as text. Past the limit it stops collecting and rejects but leaves the
 * stream open, because destroying the request would close the socket before the 413 is sent.
 */
function readLimited(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let size = 0
    const onData = (chunk: Buffer) => {
      size += chunk.length
      if (size <= MAX_AUTHORITY_BODY_BYTES) {
        chunks.push(chunk)
        return
      }
      req.off('data', onData)
      req.off('end', onEnd)
      reject(tooLarge())
    }
    const onEnd = () => resolve(Buffer.concat(chunks).toString('utf8'))
    req.on('data', onData)
    req.once('end', onEnd)
    req.once('error', reject)
  })
}

function requireString(body: Record<string, unknown>, field: string): string {
  const value = body[field]
  if (typeof value !== 'string' || value === '') {
    const found = value === undefined ? 'it is missing' : `found ${describeType(value)}`
    throw new WritError(
      'request.invalid',
      `request field "${field}" must be a non-empty string; ${found}`,
      { field },
    )
  }
  return value
}

function describeType(value: unknown): string {
  if (value === null) return 'null'
  if (Array.isArray(value)) return 'an array'
  if (value === '') return 'an empty string'
  return `a ${typeof value}`
}

function tooLarge(): WritError {
  return new WritError(
    'request.too_large',
    `request body is larger than ${MAX_AUTHORITY_BODY_BYTES} bytes`,
    { limit: MAX_AUTHORITY_BODY_BYTES },
  )
}

export function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  const text = JSON.stringify(body)
  res.writeHead(status, STATUS_CODES[status] ?? '', {
    ...headers,
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
  })
  res.end(text)
}
