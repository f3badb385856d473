import type { IncomingMessage, ServerResponse } from 'node:http'
import { WritError } from '../errors.js'
import type { PeerIdentity } from '../identity/types.js'
import type { Logger } from '../log.js'
import type { AccessRequestService } from './access-requests.js'
import { readJsonBody, sendErrorReply, sendJson } from './routes.js'

/** The path prefix of the access request API. */
export const ACCESS_REQUESTS_PATH = '/v1/access-requests'

/** HTTP status per error code. A WritError code not listed here is a server fault (500). */
const STATUS_BY_CODE: Record<string, number> = {
  'request.invalid': 400,
  'request.invalid_json': 400,
  'request.too_large': 413,
  'request.method_not_allowed': 405,
  'request.not_found': 404,
  'csr.invalid': 400,
  'ca.validity_exhausted': 409,
  'access.unauthenticated': 401,
  'access.invalid': 400,
  'access.forbidden': 403,
  'access.role_not_found': 404,
  'access.not_requestable': 403,
  'access.ttl_too_long': 400,
  'access.request_not_found': 404,
  'access.self_review': 403,
  'access.review_forbidden': 403,
  'access.not_requester': 403,
  'access.already_decided': 409,
  'access.not_approved': 409,
  'access.expired': 409,
}

const ACTION_PATH = /^\/v1\/access-requests\/([A-Za-z0-9-]{1,64})\/(approve|deny|assume)$/

/** The HTTP handler for `/v1/access-requests` and its sub-paths. */
export interface AccessRequestRoutes {
  /** Handles one request; `peer` is the verified client certificate identity, if any. */
  handle(
    req: IncomingMessage,
    res: ServerResponse,
    peer: PeerIdentity | undefined,
    remote: string,
  ): Promise<void>
}

/**
 * Creates the access request routes. Every route needs a client certificate issued by this CA:
 *
 * - `GET /v1/access-requests` lists the caller's own requests and those it may review.
 * - `POST /v1/access-requests` with `{ roles, reason, ttl? }` creates a request.
 * - `POST /v1/access-requests/ID/approve` or `/deny` with `{ reason }` decides it.
 * - `POST /v1/access-requests/ID/assume` with `{ csr }` issues a certificate with the granted roles.
 *
 * @example
 *   const routes = createAccessRequestRoutes(service, logger)
 *   await routes.handle(req, res, identity, '127.0.0.1:53122')
 */
export function createAccessRequestRoutes(
  service: AccessRequestService,
  logger: Logger,
): AccessRequestRoutes {
  async function route(
    req: IncomingMessage,
    peer: PeerIdentity | undefined,
    remote: string,
  ): Promise<unknown> {
    const path = new URL(req.url ?? '/', 'https://writ.invalid').pathname
    const action = ACTION_PATH.exec(path)
    if (path !== ACCESS_REQUESTS_PATH && !action) {
      throw new WritError('request.not_found', `no access request route for ${path}`, { path })
    }

    const allowed = action ? ['POST'] : ['GET', 'POST']
    if (!allowed.includes(req.method ?? '')) {
      throw new WritError(
        'request.method_not_allowed',
        `${path} accepts ${allowed.join(' or ')} only, not ${req.method}`,
        { method: req.method, allow: allowed.join(', ') },
      )
    }

    if (!peer) {
      throw new WritError(
        'access.unauthenticated',
        'access requests require a valid client certificate issued by this Writ CA; renew or join again if it expired',
      )
    }

    if (!action) {
      if (req.method === 'GET') return { requests: await service.list(peer) }
      const body = await readJsonBody(req)
      const input = { roles: body.roles, reason: body.reason, ttl: body.ttl }
      return { request: await service.create(peer, input, remote) }
    }

    const id = action[1] as string
    const verb = action[2] as 'approve' | 'deny' | 'assume'
    const body = await readJsonBody(req)
    if (verb !== 'assume') {
      return { request: await service.decide(peer, id, verb, body.reason, remote) }
    }
    if (typeof body.csr !== 'string' || body.csr === '') {
      throw new WritError('request.invalid', 'request field "csr" must be a non-empty string', {
        field: 'csr',
      })
    }
    const result = await service.assume(peer, id, body.csr, remote)
    return {
      certificate: result.certificate,
      bundle: result.bundle,
      spiffeId: result.spiffeId,
      notAfter: result.notAfter.toISOString(),
      request: result.request,
    }
  }

  return {
    async handle(req, res, peer, remote) {
      try {
        sendJson(res, 200, await route(req, peer, remote))
      } catch (error) {
        sendErrorReply(req, res, error, {
          statusByCode: STATUS_BY_CODE,
          area: 'access',
          remote,
          logger,
          // The service logs and audits its own rejections, so only earlier failures are logged.
          logRejection: (rejected) => rejected.fields.auditId === undefined,
        })
      }
    },
  }
}
