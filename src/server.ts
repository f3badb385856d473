import { mkdirSync } from 'node:fs'
import { type IncomingMessage, type ServerResponse, STATUS_CODES } from 'node:http'
import { createServer, type Server } from 'node:https'
import type { AddressInfo } from 'node:net'
import type { TLSSocket } from 'node:tls'
import { taskCallerFields } from './audit/task-caller.js'
import type { AuditEventInput } from './audit/types.js'
import {
  ACCESS_REQUESTS_PATH,
  createAccessRequestRoutes,
} from './authority/access-request-routes.js'
import { createAccessRequestService } from './authority/access-requests.js'
import { createAuthority } from './authority/authority.js'
import { serverTlsOptions, watchCa } from './authority/ca-watch.js'
import { createIdentityJwtMinter } from './authority/identity-jwt.js'
import { createJwtSvidIssuer, loadOrCreateJwtSvidKey } from './authority/jwt-svid.js'
import { createJwtSvidRoutes, JWT_BUNDLE_PATH, JWT_SVID_PATH } from './authority/jwt-svid-routes.js'
import { createAuthorityRoutes } from './authority/routes.js'
import { createTaskAuthority } from './authority/tasks.js'
import { createPeopleRoutes, isUserRoute } from './authority/user-routes.js'
import { createWellKnownRoutes } from './authority/well-known.js'
import { WritError } from './errors.js'
import { AGGREGATE_SERVER, withAggregate } from './gateway/aggregate.js'
import type { GatewayDeps } from './gateway/deps.js'
import { WRIT_DENIED_CODE } from './gateway/jsonrpc.js'
import { createMcpHandler } from './gateway/mcp-handler.js'
import { createCallGuard } from './guard/approvals.js'
import { watchCallRules } from './guard/call-rules.js'
import type { LimitsSettings } from './guard/limits.js'
import { ToolPinGuard } from './guard/tool-pins.js'
import { claimDataDir, type Host, openHost } from './host.js'
import type { PeerIdentity } from './identity/types.js'
import { identityFromCertificate } from './identity/verify.js'
import { LockCache, watchLocks } from './lock-cache.js'
import type { Logger } from './log.js'
import { applyManifests } from './manifests.js'
import { readManifestFile } from './policy/manifest.js'
import { PolicyCache } from './policy-cache.js'

/** The request body limit for MCP messages when no option sets one: 4 MiB. */
export const DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024

export interface StartOptions {
  dataDir: string
  /** `HOST:PORT`; port 0 picks a free port. */
  listen: string
  configFiles?: string[]
  trustDomain?: string
  maxBodyBytes?: number
  logger: Logger
  /** `full` makes every audit commit wait for the disk (fsync); the default is `normal`. */
  auditSync?: 'full' | 'normal'
  /** How often the server looks for manifest changes made by other processes, in ms. */
  policyPollMs?: number
  /** How often the server looks for new or removed locks, in ms (default 250). */
  lockPollMs?: number
  /** The deepest task delegation allowed (a task of a bot is depth 1); the default is 2. */
  maxTaskDepth?: number
  /** Gateway-wide rate limit, response size limit and other limits-guard settings. */
  guard?: LimitsSettings
}

/** A running Writ server: the bound address and a way to stop it. */
export interface RunningWrit {
  /** The address clients dial, `HOST:PORT`, with the real port when 0 was requested. */
  address: string
  host: Host
  close(): Promise<void>
}

type AuthResult =
  | { ok: true; identity: PeerIdentity }
  | {
      ok: false
      reason: 'expired' | 'forbidden' | 'locked'
      message: string
      identity?: PeerIdentity
      /** The lock that refused the request, recorded in the audit event. */
      lockId?: string
    }

/** Starts the authority API and the MCP gateway on one HTTPS port with client certificates. */
export async function startWrit(options: StartOptions): Promise<RunningWrit> {
  const { hostname, port } = splitHostPort(options.listen)
  const logger = options.logger
  // Config files are read first, so a missing file fails before anything is created.
  const configs = (options.configFiles ?? []).map((file) => readManifestFile(file))
  mkdirSync(options.dataDir, { recursive: true, mode: 0o700 })
  const release = claimDataDir(options.dataDir)
  let host: Host
  try {
    host = await openHost(options.dataDir, {
      trustDomain: options.trustDomain,
      logger,
      synchronous: options.auditSync ?? 'normal',
    })
  } catch (error) {
    release()
    throw error
  }
  try {
    for (const config of configs) {
      const applied = await applyManifests(host, config.text, config.source, 'config')
      logger.info({ file: config.source, count: applied.length }, 'applied config manifests')
    }
    const policy = new PolicyCache(host.store, logger)
    await policy.refresh()
    const server = await listen(host, policy, options, hostname, port)
    const address = `${formatHost(hostname)}:${(server.address() as AddressInfo).port}`
    await host.store.setMeta('listen_address', address)
    const timer = setInterval(() => {
      policy.refresh().catch((error) => logger.error({ error }, 'policy refresh failed'))
    }, options.policyPollMs ?? 250)
    timer.unref()
    logger.info({ address, trustDomain: host.trustDomain, ca_pin: host.ca.pin }, 'writ started')
    return {
      address,
      host,
      async close() {
        clearInterval(timer)
        await server.shutdown()
        await host.close()
        release()
        logger.info({ address }, 'writ stopped')
      },
    }
  } catch (error) {
    await host.close()
    release()
    throw error
  }
}

async function listen(
  host: Host,
  policy: PolicyCache,
  options: StartOptions,
  hostname: string,
  port: number,
): Promise<Server & { shutdown(): Promise<void> }> {
  const logger = options.logger
  const tls = await host.ca.serverCertificate([hostname])
  const authority = createAuthority({
    ca: host.ca,
    store: host.store,
    audit: host.audit,
    clock: host.clock,
    logger,
    trustDomain: host.trustDomain,
  })
  const tasks = createTaskAuthority({
    ca: host.ca,
    store: host.store,
    audit: host.audit,
    clock: host.clock,
    logger,
    ...(options.maxTaskDepth === undefined ? {} : { maxDepth: options.maxTaskDepth }),
    roleMaxTtlSeconds: (roles) => policy.current().maxTtlSeconds(roles),
  })
  const authorityRoutes = createAuthorityRoutes(authority, logger, tasks)
  const accessRequestRoutes = createAccessRequestRoutes(
    createAccessRequestService({
      ca: host.ca,
      store: host.store,
      audit: host.audit,
      clock: host.clock,
      logger,
    }),
    logger,
  )
  const peopleRoutes = createPeopleRoutes({
    ca: host.ca,
    store: host.store,
    audit: host.audit,
    clock: host.clock,
    logger,
  })
  const jwtKey = await loadOrCreateJwtSvidKey(host.dataDir)
  const wellKnown = createWellKnownRoutes({ ca: host.ca, jwtKey })
  const jwtSvidRoutes = createJwtSvidRoutes({
    issuer: createJwtSvidIssuer({
      key: jwtKey,
      clock: host.clock,
    }),
    audit: host.audit,
    logger,
  })
  const callRules = await watchCallRules({
    store: host.store,
    logger,
    intervalMs: options.policyPollMs ?? 250,
  })
  // `writ tools approve` changes pins from another process; the watcher reloads them.
  const toolPins = new ToolPinGuard({
    store: host.store,
    audit: (event) => host.audit.record(event),
    clock: host.clock,
    logger,
  })
  await toolPins.refresh()
  const stopWatchingPins = toolPins.watch(options.policyPollMs)
  const gatewayDeps: GatewayDeps = {
    getServer: (name) => policy.upstream(name),
    decideServer: (identity, server) => policy.current().decideServer(identity.claims, server),
    decideTool: (identity, server, tool) =>
      policy.current().decideTool(identity.claims, server, tool),
    decideArguments: (identity, server, tool, args) =>
      policy.current().decideArguments(identity, server, tool, args),
    decideResource: (identity, server, uri) =>
      policy.current().decideResource(identity.claims, server, uri),
    decidePrompt: (identity, server, name) =>
      policy.current().decidePrompt(identity.claims, server, name),
    audit: (event) => host.audit.record(event),
    logger,
    clock: host.clock,
    limits: {
      maxBodyBytes: options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES,
      ...(options.guard === undefined ? {} : { guard: options.guard }),
    },
    roleRateLimits: (identity) => policy.roleRateLimits(identity),
    mintIdentityJwt: createIdentityJwtMinter({
      key: jwtKey,
      trustDomain: host.trustDomain,
      clock: host.clock,
    }),
    callGuard: createCallGuard({
      store: host.store,
      rules: () => callRules.current(),
      clock: host.clock,
      logger,
    }),
    toolPins,
  }
  // `/mcp` serves every server the caller may use as one, under the server name `*`.
  const mcp = createMcpHandler(
    withAggregate(gatewayDeps, {
      allowedServers: (identity) => policy.serversFor(identity).map((server) => server.name),
    }),
  )
  const locks = new LockCache(host.store, host.clock, logger)
  await locks.refresh()
  const identities = new WeakMap<TLSSocket, PeerIdentity>()

  /** Refuses a verified caller that a lock covers; certificate checks come first. */
  function checkLock(auth: AuthResult): AuthResult {
    if (!auth.ok) return auth
    const refusal = locks.check(auth.identity)
    if (refusal === undefined) return auth
    return {
      ok: false,
      reason: 'locked',
      message: refusal.message,
      identity: auth.identity,
      ...(refusal.lock === undefined ? {} : { lockId: refusal.lock.id }),
    }
  }

  /**
   * Responds 403 with `<area>.locked` when a lock covers the caller of a non-MCP route, so a
   * locked identity gets no task certificate, JWT-SVID or access request. Returns true if so.
   */
  async function refuseLockedPeer(
    req: IncomingMessage,
    res: ServerResponse,
    identity: PeerIdentity | undefined,
    area: string,
  ): Promise<boolean> {
    if (identity === undefined) return false
    const auth = checkLock({ ok: true, identity })
    if (auth.ok) return false
    const recorded = await recordRefusal(req, auth)
    req.resume()
    sendJson(
      res,
      403,
      { error: { code: `${area}.locked`, message: auth.message, requestId: recorded.id } },
      { connection: 'close' },
    )
    return true
  }

  function authenticate(req: IncomingMessage): AuthResult {
    const socket = req.socket as TLSSocket
    const cached = identities.get(socket)
    if (cached) return checkExpiry(cached, host.clock())
    const certificate = socket.getPeerCertificate(false)
    if (!certificate?.raw) {
      return { ok: false, reason: 'forbidden', message: 'client certificate required' }
    }
    let identity: PeerIdentity | undefined
    try {
      identity = identityFromCertificate(certificate.raw)
    } catch {
      identity = undefined
    }
    if (!socket.authorized) {
      const code = String(socket.authorizationError ?? 'unknown')
      if (code === 'CERT_HAS_EXPIRED') {
        return { ok: false, reason: 'expired', message: 'client certificate expired', identity }
      }
      return {
        ok: false,
        reason: 'forbidden',
        message: `client certificate not issued by this Writ CA (${code})`,
        identity,
      }
    }
    if (!identity) {
      return {
        ok: false,
        reason: 'forbidden',
        message: 'client certificate does not follow the Writ profile',
      }
    }
    identities.set(socket, identity)
    return checkExpiry(identity, host.clock())
  }

  async function recordRefusal(req: IncomingMessage, auth: AuthResult & { ok: false }) {
    const peer = remoteAddress(req)
    const event: AuditEventInput = {
      type: 'auth.refused',
      outcome: 'denied',
      reason: auth.reason,
      peer,
      details: {
        message: auth.message,
        path: req.url,
        ...(auth.lockId === undefined ? {} : { lockId: auth.lockId }),
      },
    }
    if (auth.identity) event.caller = callerOf(auth.identity)
    const recorded = await host.audit.record(event)
    logger.info({ peer, reason: auth.reason, detail: auth.message }, 'request refused')
    return recorded
  }

  async function refuse(
    req: IncomingMessage,
    res: ServerResponse,
    auth: AuthResult & { ok: false },
  ) {
    const recorded = await recordRefusal(req, auth)
    sendJson(res, auth.reason === 'locked' ? 403 : 401, {
      jsonrpc: '2.0',
      id: null,
      error: {
        code: WRIT_DENIED_CODE,
        message: auth.message,
        data: { reason: auth.reason, requestId: recorded.id },
      },
    })
  }

  async function route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'https://writ.invalid')
    const path = url.pathname
    if (path === '/healthz') return sendJson(res, 200, { status: 'ok' })
    if (path === '/v1/join' || path === '/v1/renew' || path === '/v1/task') {
      const auth = authenticate(req)
      // Renewal checks locks itself, against the store, so it can name them in its own errors.
      if (path === '/v1/task' && auth.ok) {
        if (await refuseLockedPeer(req, res, auth.identity, 'task')) return
      }
      await authorityRoutes.handle(
        req,
        res,
        auth.ok ? auth.identity : undefined,
        remoteAddress(req),
      )
      return
    }
    // Enrollment, login and single sign-on are how people get a certificate, so none needs one.
    if (isUserRoute(path)) return peopleRoutes.handle(req, res)
    if (path === JWT_SVID_PATH || path === JWT_BUNDLE_PATH) {
      const auth = authenticate(req)
      const peer = auth.ok ? auth.identity : undefined
      if (path === JWT_SVID_PATH && (await refuseLockedPeer(req, res, peer, 'jwt_svid'))) return
      return jwtSvidRoutes.handle(req, res, peer, remoteAddress(req))
    }
    if (path === ACCESS_REQUESTS_PATH || path.startsWith(`${ACCESS_REQUESTS_PATH}/`)) {
      const auth = authenticate(req)
      const peer = auth.ok ? auth.identity : undefined
      if (await refuseLockedPeer(req, res, peer, 'access')) return
      return accessRequestRoutes.handle(req, res, peer, remoteAddress(req))
    }
    const mcpMatch = /^\/mcp\/([a-z0-9-]+)\/?$/.exec(path)
    if (mcpMatch || path === '/mcp' || path === '/v1/mcp/servers') {
      const auth = checkLock(authenticate(req))
      if (!auth.ok) return refuse(req, res, auth)
      if (mcpMatch) {
        return mcp.handle(req, res, auth.identity, mcpMatch[1] as string, remoteAddress(req))
      }
      if (path === '/mcp') {
        return mcp.handle(req, res, auth.identity, AGGREGATE_SERVER, remoteAddress(req))
      }
      return sendJson(res, 200, { servers: policy.serversFor(auth.identity) })
    }
    if (wellKnown.matches(path)) return wellKnown.handle(req, res, path)
    sendJson(res, 404, { error: { code: 'http.not_found', message: `no route for ${path}` } })
  }

  const server = createServer(
    {
      ...serverTlsOptions(host.ca, tls),
      requestCert: true,
      rejectUnauthorized: false,
    },
    (req, res) => {
      route(req, res).catch((error: unknown) => {
        logger.error({ error, path: req.url, peer: remoteAddress(req) }, 'request failed')
        if (!res.headersSent) {
          sendJson(res, 500, { error: { code: 'http.internal', message: 'internal error' } })
        } else {
          res.destroy()
        }
      })
    },
  )
  // The agent's CA pin check opens a connection only to read the chain and then drops it. Failed
  // handshakes are therefore routine, so they go to the debug level.
  server.on('tlsClientError', (error) => {
    logger.debug({ error }, 'tls handshake failed')
  })
  await new Promise<void>((resolve, reject) => {
    const fail = (error: NodeJS.ErrnoException) => reject(listenError(error, hostname, port))
    server.once('error', fail)
    server.listen(port, hostname, () => {
      server.off('error', fail)
      resolve()
    })
  })
  const stopWatchingLocks = watchLocks({
    cache: locks,
    mcp,
    logger,
    ...(options.lockPollMs === undefined ? {} : { intervalMs: options.lockPollMs }),
  })
  // `writ ca rotate` changes the CA state from another process; the watcher swaps the TLS context.
  const caWatcher = watchCa({
    host,
    server,
    hostnames: [hostname],
    current: tls,
    logger,
    ...(options.policyPollMs === undefined ? {} : { intervalMs: options.policyPollMs }),
  })
  return Object.assign(server, {
    async shutdown() {
      caWatcher.stop()
      callRules.stop()
      stopWatchingLocks()
      stopWatchingPins()
      await mcp.closeAll()
      await toolPins.flush()
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    },
  })
}

function checkExpiry(identity: PeerIdentity, now: number): AuthResult {
  if (now >= identity.notAfter.getTime()) {
    return {
      ok: false,
      reason: 'expired',
      message: `client certificate expired at ${identity.notAfter.toISOString()}`,
      identity,
    }
  }
  return { ok: true, identity }
}

/** Copies the fields of a verified identity that every audit event records. */
export function callerOf(identity: PeerIdentity): NonNullable<AuditEventInput['caller']> {
  const caller: NonNullable<AuditEventInput['caller']> = {
    spiffeId: identity.spiffeId,
    kind: identity.claims.kind,
    roles: identity.claims.roles,
    serial: identity.serial,
  }
  if (identity.claims.task) caller.task = identity.claims.task.id
  Object.assign(caller, taskCallerFields(identity.spiffeId, identity.claims))
  return caller
}

function remoteAddress(req: IncomingMessage): string {
  const socket = req.socket
  return `${formatHost(socket.remoteAddress ?? 'unknown')}:${socket.remotePort ?? 0}`
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

/** Splits `HOST:PORT` (or `[v6]:PORT`), naming the value when it does not parse. */
export function splitHostPort(value: string): { hostname: string; port: number } {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(value.trim())
  const port = match ? Number(match[3]) : Number.NaN
  if (!match || port > 65535) {
    throw new WritError(
      'cli.invalid_address',
      `invalid address "${value}": expected HOST:PORT, such as 127.0.0.1:7443`,
      { value },
    )
  }
  return { hostname: (match[1] ?? match[2]) as string, port }
}

function formatHost(hostname: string): string {
  return hostname.includes(':') ? `[${hostname}]` : hostname
}

/** Names the address a listener could not bind and what to do about the usual causes. */
function listenError(error: NodeJS.ErrnoException, hostname: string, port: number): Error {
  const address = `${formatHost(hostname)}:${port}`
  const hints: Record<string, string> = {
    EADDRINUSE: 'another process listens there; stop it or pick another --listen port',
    EADDRNOTAVAIL: 'no network interface of this machine has that address; use one it has',
    EACCES: 'ports below 1024 need privileges; pick a higher --listen port',
  }
  const hint = hints[error.code ?? ''] ?? 'check the --listen address'
  return new WritError(
    'server.listen_failed',
    `cannot listen on ${address} (${error.code ?? error.message}): ${hint}`,
    { address, code: error.code },
    { cause: error },
  )
}
