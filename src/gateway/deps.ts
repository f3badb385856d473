import type { AuditEventInput } from '../audit/types.js'
import type { Clock } from '../clock.js'
import type { CallGuard } from '../guard/approvals.js'
import type { LimitsSettings, RateLimitConfig } from '../guard/limits.js'
import type { ToolPinGuard, ToolPinningMode } from '../guard/tool-pins.js'
import type { PeerIdentity } from '../identity/types.js'
import type { Logger } from '../log.js'
import type { DenialReason } from './jsonrpc.js'
import type { Session } from './session.js'
import type { Upstream, UpstreamEvents } from './upstream.js'

/** How to start a stdio upstream: one process per client session. */
export interface StdioUpstreamConfig {
  command: string
  args?: string[]
  /** Variables set over the minimal base environment (PATH and HOME). */
  env?: Record<string, string>
  cwd?: string
}

/** The URL of a Streamable HTTP upstream, with headers that may carry resolved secrets. */
export interface HttpUpstreamConfig {
  url: string
  headers?: Record<string, string>
  /** Sends the caller's identity as a short-lived signed JWT in a header of every request. */
  identityJwt?: IdentityJwtConfig
  /** Allows loopback, link-local and private addresses; cloud metadata addresses stay refused. */
  allowPrivateNetwork?: boolean
  /** Non-public addresses or CIDR ranges this upstream may reach, such as `10.1.0.0/16`. */
  allowAddresses?: string[]
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
  /** A server outside the operator's control: tool calls whose arguments carry a secret are denied. */
  external?: boolean
  /** Server-initiated requests the client may receive from this server; each is denied when unset. */
  allow?: ServerRequestAllowances
  /** How long start-up may take, from spawn to the initialize response (default 30 s). */
  startupTimeoutMs?: number
  /** How long one tools/call may wait for its response (default 60 s). */
  timeoutMs?: number
  /** Rate limits per principal on this server, replacing the gateway-wide default. */
  limits?: RateLimitConfig
  /** Whether new tools are trusted when first listed (the default) or held for approval. */
  toolPinning?: ToolPinningMode
}

/** The server-to-client requests an upstream may send, from the McpServer `spec.allow`. */
export interface ServerRequestAllowances {
  /** `sampling/createMessage`: the server asks the client's model for a completion. */
  sampling?: boolean
  /** `elicitation/create`: the server asks the user for input. */
  elicitation?: boolean
  /** `roots/list`: the server asks which directories the client exposes. */
  roots?: boolean
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
  /** Rate limits, timeouts, response size, circuit breaker and loop detector settings. */
  guard?: LimitsSettings
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
  /**
   * Checks the arguments of an allowed `tools/call` as they will be forwarded. When absent, no
   * argument rules apply.
   */
  decideArguments?(identity: PeerIdentity, server: string, tool: string, args: unknown): Decision
  /** Decides on a resource URI for `resources/*`; when absent, every resource is denied. */
  decideResource?(identity: PeerIdentity, server: string, uri: string): Decision
  /** Decides on a prompt name for `prompts/*`; when absent, every prompt is denied. */
  decidePrompt?(identity: PeerIdentity, server: string, name: string): Decision
  /** Writes an audit event and resolves once it is committed. */
  audit(event: AuditEventInput): Promise<{ id: string }>
  logger: Logger
  clock: Clock
  limits: GatewayLimits
  /** Signs identity JWTs for upstreams with `http.identityJwt`; such servers fail without it. */
  mintIdentityJwt?: MintIdentityJwt
  /** Returns the rate limits the caller's roles set, applied on top of the server's limits. */
  roleRateLimits?(identity: PeerIdentity): RateLimitConfig | undefined
  /** Holds calls for approval and applies flow policy; without it no call is held. */
  callGuard?: CallGuard
  /** Pins tool definitions and quarantines changed ones; without it nothing is pinned. */
  toolPins?: ToolPinGuard
  /**
   * Creates the upstream of a session whose server has no stdio or http transport, such as the
   * aggregated server `*`; returns undefined for servers it does not handle.
   */
  openUpstream?(session: Session, events: UpstreamEvents): Upstream | undefined
}
