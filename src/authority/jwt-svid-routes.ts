import { type IncomingMessage, type ServerResponse, STATUS_CODES } from 'node:http'
import type { AuditCaller } from '../audit/types.js'
import { WritError } from '../errors.js'
import type { PeerIdentity } from '../identity/types.js'
import type { Logger } from '../log.js'
import type { AuditRecorder } from './authority.js'
import type { JwtSvidIssuer, JwtSvidRequest } from './jwt-svid.js'
import { readJsonBody, sendErrorReply } from './routes.js'

/** The route that signs a JWT-SVID for the mTLS caller. */
export const JWT_SVID_PATH = '/v1/jwt-svid'

/** The route that publishes the JWT-SVID signing keys as a JWK Set. */
export const JWT_BUNDLE_PATH = '/v1/jwt-bundle'

/** HTTP status per error code; any other failure is a server fault (500). */
const STATUS_BY_CODE: Record<string, number> = {
  'request.invalid': 400,
  'request.invalid_json': 400,
  'request.too_large': 413,
  'request.method_not_allowed': 405,
  'jwt_svid.invalid_request': 400,
  'jwt_svid.unauthenticated': 401,
  'jwt_svid.certificate_expired': 401,
  'jwt_svid.forbidden': 403,
}

/** The HTTP handler for `POST /v1/jwt-svid` and `GET /v1/jwt-bundle`. */
export interface JwtSvidRoutes {
  /**
   * Handles one request to either path. `peer` is the verified client certificate identity, if
   * any, and `remote` the peer's `address:port` for the audit log.
   */
  handle(
    req: IncomingMessage,
    res: ServerResponse,
    peer: PeerIdentity | undefined,
    remote: string,
  ): Promise<void>
}

/**
 * Creates the JWT-SVID routes. The bundle is public and needs no client certificate. A token is
 * signed only for the SPIFFE ID of the caller's verified certificate, and every issuance or
 * rejection of an authenticated caller is audited as `jwt_svid.issue`.
 *
 * @example
 *   const routes = createJwtSvidRoutes({ issuer, audit: host.audit, logger })
 *   await routes.handle(req, res, identity, '127.0.0.1:53122')
 */
export function createJwtSvidRoutes(options: {
  issuer: JwtSvidIssuer
  audit: AuditRecorder
  logger: Logger
}): JwtSvidRoutes {
  const { issuer, audit, logger } = options

  async function issue(
    req: IncomingMessage,
    peer: PeerIdentity | undefined,
    remote: string,
  ): Promise<Record<string, unknown>> {
    if (!peer) {
      throw new WritError(
        'jwt_svid.unauthenticated',
        'a JWT-SVID requires a valid client certificate issued by this Writ CA',
      )
    }
    const caller = callerFor(peer)
    try {
      const request = readRequest(await readJsonBody(req))
      const issued = await issuer.issue(peer, request)
      const details = {
        audience: request.audience,
        jti: issued.id,
        expiresAt: issued.expiresAt.toISOString(),
      }
      await audit.record({
        type: 'jwt_svid.issue',
        outcome: 'success',
        caller,
        peer: remote,
        details,
      })
      logger.info({ spiffe_id: issued.spiffeId, jti: issued.id, peer: remote }, 'JWT-SVID issued')
      return {
        token: issued.token,
        spiffeId: issued.spiffeId,
        expiresAt: issued.expiresAt.toISOString(),
      }
    } catch (error) {
      if (!(error instanceof WritError)) throw error
      const recorded = await audit.record({
        type: 'jwt_svid.issue',
        outcome: 'denied',
        reason: auditReason(error.code),
        caller,
        peer: remote,
        details: { message: error.message },
      })
      logger.info(
        { code: error.code, spiffe_id: peer.spiffeId, peer: remote, audit_id: recorded.id },
        'JWT-SVID request rejected',
      )
      throw new WritError(
        error.code,
        error.message,
        { ...error.fields, auditId: recorded.id },
        { cause: error },
      )
    }
  }

  return {
    async handle(req, res, peer, remote) {
      const path = new URL(req.url ?? '/', 'https://writ.invalid').pathname
      const method = path === JWT_BUNDLE_PATH ? 'GET' : 'POST'
      try {
        if (req.method !== method) {
          throw new WritError(
            'request.method_not_allowed',
            `${path} accepts ${method} only, not ${req.method}`,
            { method: req.method },
          )
        }
        const body = path === JWT_BUNDLE_PATH ? issuer.bundle() : await issue(req, peer, remote)
        sendJson(res, 200, body)
      } catch (error) {
        sendErrorReply(req, res, error, {
          statusByCode: STATUS_BY_CODE,
          area: 'JWT-SVID',
          remote,
          logger,
          allow: method,
          logRejection: () => false,
        })
      }
    },
  }
}

/** Reads `{ audience: string[], spiffe_id?: string }`; the issuer checks the values. */
function readRequest(body: Record<string, unknown>): JwtSvidRequest {
  const spiffeId = body.spiffe_id
  if (spiffeId !== undefined && typeof spiffeId !== 'string') {
    throw new WritError('request.invalid', 'request field "spiffe_id" must be a string', {
      field: 'spiffe_id',
    })
  }
  const request: JwtSvidRequest = { audience: body.audience as string[] }
  if (spiffeId) request.spiffeId = spiffeId
  return request
}

/** Converts an error code to an audit reason: `jwt_svid.forbidden` to `forbidden`. */
function auditReason(code: string): string {
  return code.startsWith('jwt_svid.') ? code.slice('jwt_svid.'.length) : code.replace('.', '_')
}

function callerFor(identity: PeerIdentity): AuditCaller {
  const caller: AuditCaller = {
    spiffeId: identity.spiffeId,
    kind: identity.claims.kind,
    roles: identity.claims.roles,
    serial: identity.serial,
  }
  if (identity.claims.task) caller.task = identity.claims.task.id
  return caller
}

function sendJson(
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
