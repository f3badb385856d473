import { readFileSync } from 'node:fs'
import { type IncomingMessage, type ServerResponse, STATUS_CODES } from 'node:http'
import { createServer, type Server } from 'node:https'
import type { AddressInfo } from 'node:net'
import type { TLSSocket } from 'node:tls'
import type { AuditEventInput } from './audit/types.js'
import { createAuthority } from './authority/authority.js'
import { createAuthorityRoutes } from './authority/routes.js'
import { WritError } from './errors.js'
import { WRIT_DENIED_CODE } from './gateway/jsonrpc.js'
import { createMcpHandler } from './gateway/mcp-handler.js'
import { type Host, openHost } from './host.js'
import type { PeerIdentity } from './identity/types.js'
import { identityFromCertificate } from './identity/verify.js'
import type { Logger } from './log.js'
import { applyManifests } from './manifests.js'
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
  | { ok: false; reason: 'expired' | 'forbidden'; message: string; identity?: PeerIdentity }

/** Starts the authority API and the MCP gateway on one HTTPS port with client certificates. */
export async function startWrit(options: StartOptions): Promise<RunningWrit> {
  const { hostname, port } = splitHostPort(options.listen)
  const logger = options.logger
  const host = await openHost(options.dataDir, {
    trustDomain: options.trustDomain,
    logger,
    synchronous: options.auditSync ?? 'normal',
  })
  try {
    for (const file of options.configFiles ?? []) {
      const applied = await applyManifests(host, readFileSync(file, 'utf8'), file, 'config')
      logger.info({ file, count: applied.length }, 'applied config manifests')
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
        logger.info({ address }, 'writ stopped')
      },
    }
  } catch (error) {
    await host.close()
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
  const authorityRoutes = createAuthorityRoutes(authority, logger)
  const mcp = createMcpHandler({
    getServer: (name) => policy.upstream(name),
    decideServer: (identity, server) => policy.current().decideServer(identity.claims, server),
    decideTool: (identity, server, tool) =>
      policy.current().decideTool(identity.claims, server, tool),
    audit: (event) => host.audit.record(event),
    logger,
    clock: host.clock,
    limits: { maxBodyBytes: options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES },
  })
  const identities = new WeakMap<TLSSocket, PeerIdentity>()

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

  async function refuse(
    req: IncomingMessage,
    res: ServerResponse,
    auth: AuthResult & { ok: false },
  ) {
    const peer = remoteAddress(req)
    const event: AuditEventInput = {
      type: 'auth.refused',
      outcome: 'denied',
      reason: auth.reason,
      peer,
      details: { message: auth.message, path: req.url },
    }
    if (auth.identity) event.caller = callerOf(auth.identity)
    const recorded = await host.audit.record(event)
    logger.info({ peer, reason: auth.reason, detail: auth.message }, 'request refused')
    sendJson(res, 401, {
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
    if (path === '/v1/join' || path === '/v1/renew') {
      const auth = authenticate(req)
      await authorityRoutes.handle(
        req,
        res,
        auth.ok ? auth.identity : undefined,
        remoteAddress(req),
      )
      return
    }
    const mcpMatch = /^\/mcp\/([a-z0-9-]+)\/?$/.exec(path)
    if (mcpMatch || path === '/v1/mcp/servers') {
      const auth = authenticate(req)
      if (!auth.ok) return refuse(req, res, auth)
      if (mcpMatch) {
        return mcp.handle(req, res, auth.identity, mcpMatch[1] as string, remoteAddress(req))
      }
      return sendJson(res, 200, { servers: policy.serversFor(auth.identity) })
    }
    sendJson(res, 404, { error: { code: 'http.not_found', message: `no route for ${path}` } })
  }

  const server = createServer(
    {
      key: tls.keyPem,
      cert: `${tls.certPem.trim()}\n${host.ca.certPem.trim()}\n`,
      ca: host.ca.bundlePem,
      requestCert: true,
      rejectUnauthorized: false,
      minVersion: 'TLSv1.2',
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
    server.once('error', reject)
    server.listen(port, hostname, () => {
      server.off('error', reject)
      resolve()
    })
  })
  return Object.assign(server, {
    async shutdown() {
      await mcp.closeAll()
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
  return caller
}

function remoteAddress(req: IncomingMessage): string {
  const socket = req.socket
  return `${formatHost(socket.remoteAddress ?? 'unknown')}:${socket.remotePort ?? 0}`
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body)
  res.writeHead(status, STATUS_CODES[status] ?? '', {
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
