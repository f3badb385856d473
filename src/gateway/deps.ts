import type { AuditEventInput } from '../audit/types.js'
import type { Clock } from '../clock.js'
import type { PeerIdentity } from '../identity/types.js'
import type { Logger } from '../log.js'
import type { DenialReason } from './jsonrpc.js'

/** How to start a stdio upstream: one process per client session. */
export interface StdioUpstreamConfig {
  command: string
  args?: string[]
  /** Variables set over the minimal base environment (PATH and HOME). */
  env?: Record<string, string>
  cwd?: string
}

/** Where a Streamable HTTP upstream listens, with headers that may carry resolved secrets. */
export interface HttpUpstreamConfig {
  url: string
  headers?: Record<string, string>
  /** Sends the caller's identity as a short-lived signed JWT in a header of every request. */
  identityJwt?: IdentityJwtConfig
}

/** The header and lifetime of the identity JWT an HTTP upstream receives. */
export interface IdentityJwtConfig {
  /** The header name; `Authorization` gets `Bearer <jwt>`, any other header the bare JWT. */
  header: string
  /** The token lifetime in seconds, at most 300. */
  ttlSeconds: number
}

/** Signs an identity JWT for `identity` with `aud` set to `audience`; times in ms. */
export type MintIdentityJwt = (
  identity: PeerIdentity,
  audience: string,
  ttlSeconds: number,
) => Promise<{ token: string; issuedAt: number; expiresAt: number }>

/** One upstream MCP server with its secrets already resolved. */
export interface UpstreamConfig {
  name: string
  stdio?: StdioUpstreamConfig
  http?: HttpUpstreamConfig
  /** Resolved secret values, replaced with `[REDACTED]` wherever the gateway logs or returns them. */
  secrets: string[]
  /** How long start-up may take, from spawn to the initialize response (default 30 s). */
  startupTimeoutMs?: number
}

/** A policy verdict with the reason and rule that the audit record names. */
export interface Decision {
  effect: 'allow' | 'deny'
  reason: string
  rule?: string
  /** The reason sent to the client on a deny; `forbidden` when absent. */
  denial?: DenialReason
}

/** Request limits applied before a message is parsed. */
export interface GatewayLimits {
  maxBodyBytes: number
  /**
   * Most live sessions one SPIFFE ID may hold at once (default 32). Each stdio session runs an
   * upstream process, so without a cap one caller could exhaust the host.
   */
  maxSessionsPerPrincipal?: number
}

/** The default of `GatewayLimits.maxSessionsPerPrincipal`. */
export const DEFAULT_MAX_SESSIONS_PER_PRINCIPAL = 32

/** 4 MiB: the default maximum size of one POST body. */
export const DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024

/** Everything the gateway needs from the rest of Writ, injected so tests can supply their own. */
export interface GatewayDeps {
  /** Returns the resolved upstream config, or `undefined` when no server has that name. */
  getServer(name: string): UpstreamConfig | undefined
  decideServer(identity: PeerIdentity, server: string): Decision
  decideTool(identity: PeerIdentity, server: string, tool: string): Decision
  /** Writes an audit event and resolves once it is committed. */
  audit(event: AuditEventInput): Promise<{ id: string }>
  logger: Logger
  clock: Clock
  limits: GatewayLimits
  /** Signs identity JWTs for upstreams with `http.identityJwt`; such servers fail without it. */
  mintIdentityJwt?: MintIdentityJwt
}
