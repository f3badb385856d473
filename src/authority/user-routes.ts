import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Clock } from '../clock.js'
import { WritError } from '../errors.js'
import type { Logger } from '../log.js'
import type { Store } from '../store/store.js'
import type { AuditRecorder } from './authority.js'
import type { CertificateAuthority } from './ca.js'
import { readJsonBody, sendErrorReply, sendJson } from './routes.js'
import { createSsoService, type SsoService } from './sso.js'
import type { UserCertificate } from './user-certificates.js'
import { createUserService, type RequestPeer, type UserService } from './users.js'

/** HTTP status per error code; a WritError code not listed here is a server fault (500). */
const STATUS_BY_CODE: Record<string, number> = {
  'request.invalid': 400,
  'request.invalid_json': 400,
  'request.too_large': 413,
  'request.method_not_allowed': 405,
  'request.not_found': 404,
  'csr.invalid': 400,
  'ca.validity_exhausted': 409,
  'password.too_short': 400,
  'password.too_long': 400,
  'enroll.code_unknown': 403,
  'enroll.code_used': 403,
  'enroll.code_expired': 403,
  'login.failed': 401,
  'login.throttled': 429,
  'login.locked': 403,
  'login.role_not_found': 404,
  'sso.connector_not_found': 404,
  'sso.redirect_uri_invalid': 400,
  'sso.state_invalid': 403,
  'sso.pkce_mismatch': 403,
  'sso.issuer_mismatch': 403,
  'sso.id_token_invalid': 403,
  'sso.token_exchange_failed': 502,
  'sso.discovery_failed': 502,
  'sso.userinfo_failed': 502,
  'sso.secret_unresolved': 500,
  'sso.username_invalid': 403,
  'sso.username_conflict': 409,
  'sso.no_roles': 403,
  'sso.locked': 403,
  'sso.role_not_found': 404,
}

/** Reports whether these routes serve `path`, which `server.ts` sends here without a client certificate. */
export function isUserRoute(path: string): boolean {
  return path === '/v1/users/enroll' || path === '/v1/login' || path.startsWith('/v1/sso/')
}

const CONNECTOR_PATH = /^\/v1\/sso\/connectors\/([a-z0-9-]{1,63})$/

/** The HTTP handler for enrollment, password login and single sign-on. */
export interface UserRoutes {
  handle(req: IncomingMessage, res: ServerResponse): Promise<void>
}

/** Creates the user and single sign-on services and their routes, for `server.ts`. */
export function createPeopleRoutes(options: {
  ca: CertificateAuthority
  store: Store
  audit: AuditRecorder
  clock: Clock
  logger: Logger
}): UserRoutes {
  return createUserRoutes(createUserService(options), createSsoService(options), options.logger)
}

/**
 * Creates the routes of people. None needs a client certificate, because each one is how a
 * person gets a certificate in the first place:
 *
 * - `POST /v1/users/enroll` with `{ user, code, password }` returns the TOTP secret.
 * - `POST /v1/login` with `{ user, password, otp, csr }` returns a certificate.
 * - `GET /v1/sso/connectors/NAME` returns `{ name, redirectPort? }`.
 * - `POST /v1/sso/start` with `{ connector, redirectUri, codeChallenge }` returns the
 *   authorization URL and the state.
 * - `POST /v1/sso/finish` with `{ state, code, iss?, codeVerifier, csr }` returns a certificate.
 *
 * @example
 *   const routes = createUserRoutes(users, sso, logger)
 *   await routes.handle(req, res)
 */
export function createUserRoutes(users: UserService, sso: SsoService, logger: Logger): UserRoutes {
  async function route(req: IncomingMessage, peer: RequestPeer): Promise<unknown> {
    const path = new URL(req.url ?? '/', 'https://writ.invalid').pathname
    const connector = CONNECTOR_PATH.exec(path)
    if (connector) {
      requireMethod(req, path, 'GET')
      return sso.describeConnector(connector[1] as string)
    }
    requireMethod(req, path, 'POST')
    const body = await readJsonBody(req)
    switch (path) {
      case '/v1/users/enroll': {
        const request = {
          user: stringField(body, 'user'),
          code: stringField(body, 'code'),
          password: stringField(body, 'password'),
        }
        return users.enroll(request, peer)
      }
      case '/v1/login': {
        const request = {
          user: stringField(body, 'user'),
          password: stringField(body, 'password'),
          otp: stringField(body, 'otp'),
          csrPem: stringField(body, 'csr'),
        }
        return certificateBody(await users.login(request, peer))
      }
      case '/v1/sso/start': {
        const request = {
          connector: stringField(body, 'connector'),
          redirectUri: stringField(body, 'redirectUri'),
          codeChallenge: stringField(body, 'codeChallenge'),
        }
        const started = await sso.start(request, peer.text)
        return { ...started, expires: started.expires.toISOString() }
      }
      case '/v1/sso/finish': {
        const request = {
          state: stringField(body, 'state'),
          code: stringField(body, 'code'),
          codeVerifier: stringField(body, 'codeVerifier'),
          csrPem: stringField(body, 'csr'),
          ...(body.iss === undefined ? {} : { iss: stringField(body, 'iss') }),
        }
        return certificateBody(await sso.finish(request, peer.text))
      }
      default:
        throw new WritError('request.not_found', `no route for ${path}`, { path })
    }
  }

  return {
    async handle(req, res) {
      const peer = requestPeer(req)
      try {
        sendJson(res, 200, await route(req, peer))
      } catch (error) {
        sendErrorReply(req, res, error, {
          statusByCode: STATUS_BY_CODE,
          area: 'user',
          remote: peer.text,
          logger,
          // The services log and audit their own rejections, so only earlier failures are logged.
          logRejection: (rejected) => rejected.fields.auditId === undefined,
        })
      }
    },
  }
}

/** Returns the client's IP address, which throttling counts, and `address:port` for the audit log. */
function requestPeer(req: IncomingMessage): RequestPeer {
  const address = req.socket.remoteAddress ?? 'unknown'
  const host = address.includes(':') ? `[${address}]` : address
  return { address, text: `${host}:${req.socket.remotePort ?? 0}` }
}

function certificateBody(certificate: UserCertificate): Record<string, unknown> {
  return {
    certificate: certificate.certificate,
    bundle: certificate.bundle,
    spiffeId: certificate.spiffeId,
    notAfter: certificate.notAfter.toISOString(),
    roles: certificate.claims.roles,
  }
}

function requireMethod(req: IncomingMessage, path: string, method: string): void {
  if (req.method !== method) {
    throw new WritError(
      'request.method_not_allowed',
      `${path} accepts ${method} only, not ${req.method}`,
      { method: req.method, allow: method },
    )
  }
}

function stringField(body: Record<string, unknown>, field: string): string {
  const value = body[field]
  if (typeof value !== 'string' || value === '') {
    throw new WritError('request.invalid', `request field "${field}" must be a non-empty string`, {
      field,
    })
  }
  return value
}
