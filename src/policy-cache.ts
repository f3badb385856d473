import { readFileSync } from 'node:fs'
import type { UpstreamConfig } from './gateway/deps.js'
import type { RateLimitConfig } from './guard/limits.js'
import { roleRateLimits, strictestLimits } from './guard/limits-spec.js'
import { serverTrustConfig } from './guard/server-trust-spec.js'
import type { PeerIdentity } from './identity/types.js'
import type { Logger } from './log.js'
import { compilePolicy, type Policy } from './policy/policy.js'
import type { Resource } from './policy/resource.js'
import { resolveServerSpec } from './policy/secrets.js'
import type { McpServerSpec } from './policy/specs.js'
import type { Store } from './store/store.js'

/** A server as `writ mcp ls` shows it to a caller who may use it. */
export interface ServerSummary {
  name: string
  description?: string
  labels: Record<string, string>
  transport: 'stdio' | 'http'
}

/**
 * Keeps the compiled policy and resolved upstreams in step with the store. Other processes (the
 * admin CLI) change manifests in the same database, so `refresh` compares the policy version and
 * recompiles only when it moved.
 */
export class PolicyCache {
  #version = -1
  #policy: Policy = compilePolicy([], [])
  #servers = new Map<string, Resource>()
  #upstreams = new Map<string, UpstreamConfig | Error>()
  #roleLimits = new Map<string, RateLimitConfig>()

  constructor(
    private readonly store: Store,
    private readonly logger: Logger,
    private readonly env: NodeJS.ProcessEnv = process.env,
  ) {}

  /** Recompiles roles and servers when any manifest changed since the last refresh. */
  async refresh(): Promise<void> {
    const version = await this.store.policyVersion()
    if (version === this.#version) return
    const roles = await this.store.listResources('Role')
    const servers = await this.store.listResources('McpServer')
    this.#policy = compilePolicy(roles, servers)
    this.#roleLimits = roleRateLimits(roles)
    this.#servers = new Map(servers.map((server) => [server.metadata.name, server]))
    this.#upstreams.clear()
    this.#version = version
    this.logger.info({ version, roles: roles.length, servers: servers.length }, 'policy loaded')
  }

  /** Returns the strictest rate limits among the caller's roles, or undefined if none sets any. */
  roleRateLimits(identity: PeerIdentity): RateLimitConfig | undefined {
    if (this.#roleLimits.size === 0) return undefined
    return strictestLimits(identity.claims.roles, this.#roleLimits)
  }

  current(): Policy {
    return this.#policy
  }

  /**
   * Returns the upstream configuration with `${env:...}` and `${file:...}` references resolved,
   * or undefined for an unknown server. A reference that cannot be resolved throws, naming it.
   */
  upstream(name: string): UpstreamConfig | undefined {
    const cached = this.#upstreams.get(name)
    if (cached instanceof Error) throw cached
    if (cached) return cached
    const resource = this.#servers.get(name)
    if (!resource) return undefined
    try {
      const config = toUpstreamConfig(resource, this.env)
      this.#upstreams.set(name, config)
      return config
    } catch (error) {
      this.logger.error({ server: name, error }, 'upstream configuration invalid')
      this.#upstreams.set(name, error as Error)
      throw error
    }
  }

  /** Lists the servers the caller's roles allow, for `writ mcp ls`. */
  serversFor(identity: PeerIdentity): ServerSummary[] {
    const summaries: ServerSummary[] = []
    for (const [name, resource] of this.#servers) {
      if (this.#policy.decideServer(identity.claims, name).effect !== 'allow') continue
      const spec = resource.spec as { description?: string; http?: unknown }
      const summary: ServerSummary = {
        name,
        labels: resource.metadata.labels ?? {},
        transport: spec.http ? 'http' : 'stdio',
      }
      if (spec.description) summary.description = spec.description
      summaries.push(summary)
    }
    return summaries
  }
}

function toUpstreamConfig(resource: Resource, env: NodeJS.ProcessEnv): UpstreamConfig {
  const resolved = resolveServerSpec(
    resource.spec as never,
    env,
    readFileSync,
    resource.metadata.name,
  )
  const toolPinning = (resource.spec as McpServerSpec).toolPinning
  return {
    name: resource.metadata.name,
    ...resolved.spec,
    ...(toolPinning === undefined ? {} : { toolPinning }),
    ...serverTrustConfig(resource),
    secrets: resolved.secrets,
  } as UpstreamConfig
}
