/**
 * Role-based decisions for MCP servers and tools, compiled once per policy version.
 *
 * Semantics, for a caller whose certificate lists `claims.roles` (names with no Role are ignored,
 * and the default-deny reason lists them):
 *
 * 1. An unknown server is denied.
 * 2. A task certificate that lists `task.servers` or `task.tools` is limited to names matching
 *    those patterns, on top of its roles: a task narrows its parent's rights, never widens them.
 * 3. Server access: denied when any of the caller's roles has `deny.mcpServers` selecting the
 *    server, else allowed when any has `allow.mcpServers` selecting it, else denied by default.
 * 4. Tool access needs server access first. Then every `deny.tools` pattern of every role of the
 *    caller applies on every server, whatever that role's selectors say. Denies are checked before
 *    allows and a single match wins, so adding a role or a server can never lift a deny.
 * 5. A tool is allowed when a role whose `allow.mcpServers` selects the server has a matching
 *    `allow.tools` pattern. Tools allowed by a role apply only on the servers that role selects.
 * 6. Anything else is denied by default.
 *
 * 7. Resources, prompts and argument rules follow the same order; see `scoped-rules.ts`.
 *
 * Each decision carries `rule`, naming what decided: `role/NAME/deny/tools[0]`,
 * `role/NAME/allow/mcpServers`, `role/NAME/allow/args[0]`, `role/NAME/deny/resources[0]`,
 * `task/servers`, `task/tools`, `unknown-server`, `unsafe-uri` or `default-deny`.
 */
import { WritError } from '../errors.js'
import type { Decision } from '../gateway/deps.js'
import type { PeerIdentity, WritClaims } from '../identity/types.js'
import { parseDuration } from '../lib/duration.js'
import { compilePattern, type NamePattern, type Traits } from './pattern.js'
import type { Resource } from './resource.js'
import {
  checkArgRules,
  compileScopedRules,
  decideScoped,
  isUnsafeResourceUri,
  type ScopedKind,
  type ScopedRules,
} from './scoped-rules.js'
import { compileSelector } from './selector.js'
import type { RoleRules, RoleSpec } from './specs.js'

/** A compiled policy: roles and servers of one policy version. */
export interface Policy {
  /** Decides whether the caller may open a session with `server`. */
  decideServer(claims: WritClaims, server: string): Decision
  /** Decides whether the caller may see and call `tool` on `server`. */
  decideTool(claims: WritClaims, server: string, tool: string): Decision
  /**
   * Evaluates the argument rules that apply to a call the caller may make, on the arguments the
   * gateway will forward. Returns a deny naming the failed rule, or an allow.
   */
  decideArguments(
    caller: Pick<PeerIdentity, 'spiffeId' | 'claims'>,
    server: string,
    tool: string,
    args: unknown,
  ): Decision
  /** Decides whether the caller may see and read the resource `uri` on `server`. */
  decideResource(claims: WritClaims, server: string, uri: string): Decision
  /** Decides whether the caller may see and get the prompt `name` on `server`. */
  decidePrompt(claims: WritClaims, server: string, name: string): Decision
  /** Names of the servers the caller may use, sorted. */
  allowedServers(claims: WritClaims): string[]
  /** The smallest `maxTtl` of the named roles in seconds, or undefined when none sets one. */
  maxTtlSeconds(roleNames: readonly string[]): number | undefined
  /** Names of the defined roles, sorted. */
  roleNames(): string[]
}

interface CompiledRole {
  name: string
  maxTtlSeconds: number | undefined
  /** Servers selected by `allow.mcpServers`, resolved against the servers known at compile time. */
  allowedServers: ReadonlySet<string>
  deniedServers: ReadonlySet<string>
  allowTools: NamePattern[]
  denyTools: NamePattern[]
  /** Resource, prompt and argument rules. */
  scoped: ScopedRules
}

/** Number of compiled task scope patterns kept across decisions before the cache starts over. */
const TASK_PATTERN_CACHE_SIZE = 1024

/**
 * Compiles roles and servers into a policy. Resources of other kinds are ignored.
 * Throws `policy.invalid_role` naming the role and field when a stored role no longer compiles.
 *
 * @example compilePolicy(roles, servers).decideTool(claims, 'files', 'read_file').effect
 */
export function compilePolicy(roles: readonly Resource[], servers: readonly Resource[]): Policy {
  const serverLabels = new Map<string, Readonly<Record<string, string>>>()
  for (const server of servers) {
    if (server.kind === 'McpServer')
      serverLabels.set(server.metadata.name, server.metadata.labels ?? {})
  }
  const compiled = new Map<string, CompiledRole>()
  for (const role of roles) {
    if (role.kind === 'Role') compiled.set(role.metadata.name, compileRole(role, serverLabels))
  }
  const taskPatterns = new Map<string, NamePattern | null>()

  function rolesOf(claims: WritClaims): { known: CompiledRole[]; unknown: string[] } {
    const known: CompiledRole[] = []
    const unknown: string[] = []
    for (const name of claims.roles) {
      const role = compiled.get(name)
      if (role) known.push(role)
      else unknown.push(name)
    }
    return { known, unknown }
  }

  /** Matches a name against task scope entries. An entry that does not compile matches nothing. */
  function matchesTaskScope(entries: readonly string[], name: string, traits: Traits): boolean {
    return entries.some((entry) => {
      let pattern = taskPatterns.get(entry)
      if (pattern === undefined) {
        pattern = tryCompilePattern(entry)
        if (taskPatterns.size >= TASK_PATTERN_CACHE_SIZE) taskPatterns.clear()
        taskPatterns.set(entry, pattern)
      }
      return pattern?.matches(name, traits) ?? false
    })
  }

  function decideServer(claims: WritClaims, server: string): Decision {
    if (!serverLabels.has(server)) {
      return deny(`unknown MCP server ${quote(server)}`, 'unknown-server')
    }
    const taskServers = claims.task?.servers
    if (taskServers && !matchesTaskScope(taskServers, server, claims.traits)) {
      return deny(
        `task ${quote(claims.task?.id ?? '')} does not include server ${quote(server)}`,
        'task/servers',
      )
    }
    const { known, unknown } = rolesOf(claims)
    for (const role of known) {
      if (role.deniedServers.has(server)) {
        return deny(
          `role ${quote(role.name)} denies server ${quote(server)}`,
          ruleOf(role, 'deny', 'mcpServers'),
        )
      }
    }
    for (const role of known) {
      if (role.allowedServers.has(server)) {
        return allow(
          `role ${quote(role.name)} allows server ${quote(server)}`,
          ruleOf(role, 'allow', 'mcpServers'),
        )
      }
    }
    return deny(
      `no role of the caller allows server ${quote(server)}${rolesNote(claims, unknown)}`,
      'default-deny',
    )
  }

  function decideTool(claims: WritClaims, server: string, tool: string): Decision {
    const serverDecision = decideServer(claims, server)
    if (serverDecision.effect !== 'allow') return serverDecision
    if (tool.length === 0) return deny('the tool name is empty', 'default-deny')
    const taskTools = claims.task?.tools
    if (taskTools && !matchesTaskScope(taskTools, tool, claims.traits)) {
      return deny(
        `task ${quote(claims.task?.id ?? '')} does not include tool ${quote(tool)}`,
        'task/tools',
      )
    }
    const { known, unknown } = rolesOf(claims)
    // Denies run first and the first match ends the decision: a deny must win over any allow.
    for (const role of known) {
      const index = role.denyTools.findIndex((pattern) => pattern.matches(tool, claims.traits))
      if (index >= 0) {
        const pattern = quote((role.denyTools[index] as NamePattern).source)
        return deny(
          `role ${quote(role.name)} denies tool ${quote(tool)} by pattern ${pattern}`,
          `${ruleOf(role, 'deny', 'tools')}[${index}]`,
        )
      }
    }
    for (const role of known) {
      if (!role.allowedServers.has(server)) continue
      const index = role.allowTools.findIndex((pattern) => pattern.matches(tool, claims.traits))
      if (index >= 0) {
        const pattern = quote((role.allowTools[index] as NamePattern).source)
        return allow(
          `role ${quote(role.name)} allows tool ${quote(tool)} on server ${quote(server)} by pattern ${pattern}`,
          `${ruleOf(role, 'allow', 'tools')}[${index}]`,
        )
      }
    }
    return deny(
      `no role of the caller allows tool ${quote(tool)} on server ${quote(server)}${rolesNote(claims, unknown)}`,
      'default-deny',
    )
  }

  function decideArguments(
    caller: Pick<PeerIdentity, 'spiffeId' | 'claims'>,
    server: string,
    tool: string,
    args: unknown,
  ): Decision {
    const { claims } = caller
    const toolDecision = decideTool(claims, server, tool)
    if (toolDecision.effect !== 'allow') return toolDecision
    const input = { args, tool, server, principal: caller }
    const failed = checkArgRules(rolesOf(claims).known, input, claims.traits)
    return failed ?? allow(`no argument rule rejects the call of tool ${quote(tool)}`, 'args')
  }

  function decideNamed(claims: WritClaims, server: string, kind: ScopedKind, name: string) {
    const what = kind === 'resources' ? 'resource' : 'prompt'
    const serverDecision = decideServer(claims, server)
    if (serverDecision.effect !== 'allow') return serverDecision
    if (name.length === 0) return deny(`the ${what} name is empty`, 'default-deny')
    // A task scope lists servers and tools only, so a task limited to tools gets no resources
    // or prompts: that would widen the scope it was issued with.
    if (claims.task?.tools) {
      return deny(
        `task ${quote(claims.task.id)} is limited to tools and includes no ${what} ${quote(name)}`,
        'task/tools',
      )
    }
    if (kind === 'resources' && isUnsafeResourceUri(name)) {
      return deny(
        `resource URI ${quote(name)} has a ".." segment or a control character`,
        'unsafe-uri',
      )
    }
    const { known, unknown } = rolesOf(claims)
    const decided = decideScoped(known, kind, server, name, claims.traits)
    return (
      decided ??
      deny(
        `no role of the caller allows ${what} ${quote(name)} on server ${quote(server)}${rolesNote(claims, unknown)}`,
        'default-deny',
      )
    )
  }

  return {
    decideServer,
    decideTool,
    decideArguments,
    decideResource: (claims, server, uri) => decideNamed(claims, server, 'resources', uri),
    decidePrompt: (claims, server, name) => decideNamed(claims, server, 'prompts', name),
    allowedServers(claims) {
      return [...serverLabels.keys()]
        .filter((server) => decideServer(claims, server).effect === 'allow')
        .sort()
    },
    maxTtlSeconds(roleNames) {
      let smallest: number | undefined
      for (const name of roleNames) {
        const ttl = compiled.get(name)?.maxTtlSeconds
        if (ttl !== undefined && (smallest === undefined || ttl < smallest)) smallest = ttl
      }
      return smallest
    },
    roleNames() {
      return [...compiled.keys()].sort()
    },
  }
}

function compileRole(
  role: Resource,
  serverLabels: ReadonlyMap<string, Readonly<Record<string, string>>>,
): CompiledRole {
  const name = role.metadata.name
  const spec = role.spec as RoleSpec
  return {
    name,
    maxTtlSeconds: atRole(name, 'spec.maxTtl', () =>
      spec.maxTtl === undefined ? undefined : parseDuration(spec.maxTtl, 'maxTtl'),
    ),
    allowedServers: selectServers(name, 'allow', spec.allow, serverLabels),
    deniedServers: selectServers(name, 'deny', spec.deny, serverLabels),
    allowTools: compileTools(name, 'allow', spec.allow),
    denyTools: compileTools(name, 'deny', spec.deny),
    scoped: compileScopedRules(spec.allow, spec.deny, (field, compile) =>
      atRole(name, field, compile),
    ),
  }
}

function selectServers(
  role: string,
  block: 'allow' | 'deny',
  rules: RoleRules | undefined,
  serverLabels: ReadonlyMap<string, Readonly<Record<string, string>>>,
): ReadonlySet<string> {
  if (rules?.mcpServers === undefined) return new Set()
  const mcpServers = rules.mcpServers
  const selector = atRole(role, `spec.${block}.mcpServers`, () => compileSelector(mcpServers))
  const selected = new Set<string>()
  for (const [server, labels] of serverLabels) {
    if (selector.matches(labels)) selected.add(server)
  }
  return selected
}

function compileTools(
  role: string,
  block: 'allow' | 'deny',
  rules: RoleRules | undefined,
): NamePattern[] {
  return (rules?.tools ?? []).map((source, index) =>
    atRole(role, `spec.${block}.tools[${index}]`, () => compilePattern(source)),
  )
}

/** Runs a compiler, rethrowing its error as `policy.invalid_role` naming the role and field. */
function atRole<T>(role: string, field: string, compile: () => T): T {
  try {
    return compile()
  } catch (error) {
    if (!(error instanceof WritError)) throw error
    throw new WritError(
      'policy.invalid_role',
      `role "${role}": ${field}: ${error.message}`,
      { role, field },
      { cause: error },
    )
  }
}

function tryCompilePattern(source: string): NamePattern | null {
  try {
    return compilePattern(source)
  } catch (error) {
    if (error instanceof WritError) return null
    throw error
  }
}

function ruleOf(
  role: CompiledRole,
  block: 'allow' | 'deny',
  field: 'mcpServers' | 'tools',
): string {
  return `role/${role.name}/${block}/${field}`
}

function rolesNote(claims: WritClaims, unknown: readonly string[]): string {
  if (claims.roles.length === 0) return ' (the caller holds no roles)'
  if (unknown.length === 0) return ''
  return ` (roles not defined: ${unknown.join(', ')})`
}

/** Quotes a name for a reason, shortened so a hostile tool name cannot flood the audit log. */
function quote(name: string): string {
  return JSON.stringify(name.length > 128 ? `${name.slice(0, 128)}…` : name)
}

function allow(reason: string, rule: string): Decision {
  return { effect: 'allow', reason, rule }
}

function deny(reason: string, rule: string): Decision {
  return { effect: 'deny', reason, rule, denial: 'forbidden' }
}
