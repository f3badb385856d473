import type { PeerIdentity } from '../identity/types.js'
import { AGGREGATE_SERVER } from './aggregate-route.js'
import { type AggregateOptions, AggregateUpstream } from './aggregate-session.js'
import type { Decision, GatewayDeps, UpstreamConfig } from './deps.js'

export { AGGREGATE_SERVER } from './aggregate-route.js'

/**
 * Start-up time of a whole aggregated session. Each upstream has its own limit (its manifest's,
 * else 30 s) and is left out when it misses it, so the session responds before this limit ends it.
 */
const AGGREGATE_STARTUP_MS = 60_000

/**
 * Adds the aggregated server `*` to the gateway's dependencies, so `handle(..., '*', ...)`
 * serves `/mcp`. A caller may open it when at least one server allows them; each upstream
 * inside it is decided, guarded and audited with the unchanged `deps`.
 *
 * @example
 *   const mcp = createMcpHandler(withAggregate(deps, { allowedServers: (id) => ['files'] }))
 */
export function withAggregate(deps: GatewayDeps, options: AggregateOptions): GatewayDeps {
  const config: UpstreamConfig = {
    name: AGGREGATE_SERVER,
    secrets: [],
    startupTimeoutMs: AGGREGATE_STARTUP_MS,
  }
  function decideAggregate(identity: PeerIdentity): Decision {
    const servers = options.allowedServers(identity)
    if (servers.length > 0) return { effect: 'allow', reason: 'role_grants_some_server' }
    return { effect: 'deny', reason: 'no_role_grants_any_server' }
  }
  return {
    ...deps,
    getServer: (name) => (name === AGGREGATE_SERVER ? config : deps.getServer(name)),
    decideServer: (identity, server) =>
      server === AGGREGATE_SERVER ? decideAggregate(identity) : deps.decideServer(identity, server),
    openUpstream: (session, events) => {
      if (session.server === AGGREGATE_SERVER) {
        return new AggregateUpstream(session, events, deps, options)
      }
      return deps.openUpstream?.(session, events)
    },
  }
}
