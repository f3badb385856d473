/**
 * Approval and flow rules, read from Role and McpServer manifests.
 *
 * A role requires a person's approval for tools with `allow.approval`:
 *
 *   allow:
 *     mcpServers: { env: prod }
 *     tools: ['deploy_*', 'read_*']
 *     approval: { tools: ['deploy_*'], ttl: 5m }
 *
 * The approval patterns apply on the servers that the same role's `allow.mcpServers` selects,
 * whichever role allows the tool. `ttl` (default 5m) is how long a request for approval stays
 * open and how long a granted approval may wait to be used.
 *
 * Servers carry flow labels in `metadata.labels['writ.dev/flow']`: `untrusted` (its results may
 * contain instructions written by someone else), `private` (its results are private data) and
 * `external` (calls to it leave the organisation). A server may carry several, joined by dots,
 * such as `untrusted.external`. A role sets what happens to a call to an external server after
 * the caller received untrusted or private content: `flow: { onTaintedSink: approve | deny }`.
 * The strictest setting among the caller's roles applies, and `approve` is the default.
 */
import { WritError } from '../errors.js'
import type { WritClaims } from '../identity/types.js'
import { parseDuration } from '../lib/duration.js'
import type { Logger } from '../log.js'
import {
  atField,
  expectKnownFields,
  expectMapping,
  expectString,
  expectStringList,
  FieldError,
  type FieldPath,
} from '../policy/fields.js'
import { compilePattern, type NamePattern } from '../policy/pattern.js'
import type { Resource } from '../policy/resource.js'
import { compileSelector } from '../policy/selector.js'
import type { Store } from '../store/store.js'

/** The label that marks a server as an untrusted source, private data or an external sink. */
export const FLOW_LABEL = 'writ.dev/flow'
export const FLOW_KINDS = ['untrusted', 'private', 'external'] as const
export type FlowKind = (typeof FLOW_KINDS)[number]
export const TAINTED_SINK_MODES = ['approve', 'deny'] as const
export type TaintedSinkMode = (typeof TAINTED_SINK_MODES)[number]

/** 5 minutes: how long an approval request stays open when the role sets no `ttl`. */
export const DEFAULT_APPROVAL_TTL_SECONDS = 300

/** The role rule that requires approval for one call. */
export interface ApprovalRequirement {
  /** The rule for the audit record, such as `role/ops/allow/approval/tools[0]`. */
  rule: string
  ttlSeconds: number
}

/** Approval and flow rules compiled from one policy version. */
export interface CallRules {
  /** Returns the first role rule that requires approval for `tool` on `server`, if any. */
  approvalFor(claims: WritClaims, server: string, tool: string): ApprovalRequirement | undefined
  /** The flow labels of a server; empty for unlabelled or unknown servers. */
  flowOf(server: string): ReadonlySet<FlowKind>
  /** Returns the setting for calls to an external sink once the caller is tainted. */
  onTaintedSink(claims: WritClaims): { mode: TaintedSinkMode; rule: string }
}

interface CompiledApprovalRole {
  name: string
  servers: ReadonlySet<string>
  tools: NamePattern[]
  ttlSeconds: number
  onTaintedSink: TaintedSinkMode | undefined
}

/**
 * Compiles the approval and flow rules of roles and servers. Resources of other kinds are
 * ignored. Throws `policy.invalid_role` naming the role and field when a role no longer compiles.
 */
export function compileCallRules(roles: readonly Resource[], servers: readonly Resource[]) {
  const flows = new Map<string, ReadonlySet<FlowKind>>()
  const serverLabels = new Map<string, Readonly<Record<string, string>>>()
  for (const server of servers) {
    if (server.kind !== 'McpServer') continue
    const labels = server.metadata.labels ?? {}
    serverLabels.set(server.metadata.name, labels)
    const label = labels[FLOW_LABEL]
    // A stored label that no longer parses marks nothing rather than failing the whole policy.
    flows.set(server.metadata.name, label === undefined ? new Set() : tryParseFlow(label))
  }
  const compiled = new Map<string, CompiledApprovalRole>()
  for (const role of roles) {
    if (role.kind !== 'Role') continue
    compiled.set(role.metadata.name, compileRole(role, serverLabels))
  }

  const rules: CallRules = {
    approvalFor(claims, server, tool) {
      for (const name of claims.roles) {
        const role = compiled.get(name)
        if (role === undefined || !role.servers.has(server)) continue
        const index = role.tools.findIndex((pattern) => pattern.matches(tool, claims.traits))
        if (index >= 0) {
          return {
            rule: `role/${role.name}/allow/approval/tools[${index}]`,
            ttlSeconds: role.ttlSeconds,
          }
        }
      }
      return undefined
    },
    flowOf(server) {
      return flows.get(server) ?? new Set()
    },
    onTaintedSink(claims) {
      let result: { mode: TaintedSinkMode; rule: string } = {
        mode: 'approve',
        rule: 'flow/default',
      }
      for (const name of claims.roles) {
        const mode = compiled.get(name)?.onTaintedSink
        if (mode === 'deny') return { mode, rule: `role/${name}/flow/onTaintedSink` }
        if (mode === 'approve') result = { mode, rule: `role/${name}/flow/onTaintedSink` }
      }
      return result
    },
  }
  return rules
}

function compileRole(
  role: Resource,
  serverLabels: ReadonlyMap<string, Readonly<Record<string, string>>>,
): CompiledApprovalRole {
  const name = role.metadata.name
  const spec = role.spec as {
    allow?: { mcpServers?: Record<string, string>; approval?: { tools?: string[]; ttl?: string } }
    flow?: { onTaintedSink?: TaintedSinkMode }
  }
  const approval = spec.allow?.approval
  const servers = new Set<string>()
  const selectorSource = spec.allow?.mcpServers
  if (approval !== undefined && selectorSource !== undefined) {
    const selector = atRole(name, 'spec.allow.mcpServers', () => compileSelector(selectorSource))
    for (const [server, labels] of serverLabels) {
      if (selector.matches(labels)) servers.add(server)
    }
  }
  const ttl = approval?.ttl
  return {
    name,
    servers,
    tools: (approval?.tools ?? []).map((source, index) =>
      atRole(name, `spec.allow.approval.tools[${index}]`, () => compilePattern(source)),
    ),
    ttlSeconds:
      ttl === undefined
        ? DEFAULT_APPROVAL_TTL_SECONDS
        : atRole(name, 'spec.allow.approval.ttl', () => parseDuration(ttl, 'ttl')),
    onTaintedSink: spec.flow?.onTaintedSink,
  }
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

/**
 * Parses a `writ.dev/flow` label value such as `untrusted.external`. Throws `policy.invalid_flow`
 * naming the value and the accepted kinds.
 */
export function parseFlowLabel(value: string): Set<FlowKind> {
  const kinds = new Set<FlowKind>()
  for (const part of value.split('.')) {
    if (!(FLOW_KINDS as readonly string[]).includes(part)) {
      throw new WritError(
        'policy.invalid_flow',
        `invalid ${FLOW_LABEL} label ${JSON.stringify(value)}: use ${FLOW_KINDS.join(', ')} or several joined by dots, such as untrusted.external`,
        { value },
      )
    }
    kinds.add(part as FlowKind)
  }
  return kinds
}

function tryParseFlow(value: string): Set<FlowKind> {
  try {
    return parseFlowLabel(value)
  } catch {
    return new Set()
  }
}

/** The maximum approval `ttl` a role may set: 1 day. */
const MAX_APPROVAL_TTL_SECONDS = 86_400

/** Validates `allow.approval` of a role manifest, throwing a `FieldError` at the bad field. */
export function validateApprovalRules(value: unknown, path: FieldPath): void {
  const approval = expectMapping(value, path)
  expectKnownFields(approval, path, ['tools', 'ttl'])
  if (approval.tools === undefined) {
    throw new FieldError([...path, 'tools'], 'missing required field, expected tool patterns')
  }
  const tools = expectStringList(approval.tools, [...path, 'tools'])
  tools.forEach((tool, index) => {
    atField([...path, 'tools', index], () => compilePattern(tool))
  })
  if (approval.ttl !== undefined) {
    const ttl = expectString(approval.ttl, [...path, 'ttl'])
    const seconds = atField([...path, 'ttl'], () => parseDuration(ttl, 'ttl'))
    if (seconds > MAX_APPROVAL_TTL_SECONDS) {
      throw new FieldError(
        [...path, 'ttl'],
        `approval ttl "${ttl}" is longer than the maximum of 24h`,
      )
    }
  }
}

/** Validates the `flow` block of a role manifest. */
export function validateRoleFlow(value: unknown, path: FieldPath): void {
  const flow = expectMapping(value, path)
  expectKnownFields(flow, path, ['onTaintedSink'])
  if (flow.onTaintedSink === undefined) return
  const mode = expectString(flow.onTaintedSink, [...path, 'onTaintedSink'])
  if (!(TAINTED_SINK_MODES as readonly string[]).includes(mode)) {
    throw new FieldError(
      [...path, 'onTaintedSink'],
      `invalid value ${JSON.stringify(mode)}: use ${TAINTED_SINK_MODES.join(' or ')}`,
    )
  }
}

/** Validates the `writ.dev/flow` label of a manifest, if it has one. */
export function validateFlowLabel(labels: Record<string, string>, path: FieldPath): void {
  const value = labels[FLOW_LABEL]
  if (value === undefined) return
  atField([...path, FLOW_LABEL], () => parseFlowLabel(value))
}

/** Approval and flow rules kept in step with the store, recompiled when the policy changes. */
export interface CallRulesWatch {
  current(): CallRules
  /** Recompiles when the policy version moved; keeps the last rules when compiling fails. */
  refresh(): Promise<void>
  stop(): void
}

/** Loads the rules now and then rechecks the policy version every `intervalMs`. */
export async function watchCallRules(options: {
  store: Pick<Store, 'policyVersion' | 'listResources'>
  logger: Logger
  intervalMs: number
}): Promise<CallRulesWatch> {
  const { store, logger } = options
  let version = -1
  let rules = compileCallRules([], [])
  async function refresh(): Promise<void> {
    const next = await store.policyVersion()
    if (next === version) return
    const roles = await store.listResources('Role')
    const servers = await store.listResources('McpServer')
    rules = compileCallRules(roles, servers)
    version = next
  }
  await refresh()
  const timer = setInterval(() => {
    refresh().catch((error) => logger.error({ error }, 'approval and flow rules refresh failed'))
  }, options.intervalMs)
  timer.unref()
  return { current: () => rules, refresh, stop: () => clearInterval(timer) }
}
