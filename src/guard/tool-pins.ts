/**
 * Tool pinning: the gateway records the digest of every tool definition an upstream lists and
 * shows or forwards only tools whose current definition is approved. A tool that changes after
 * approval (a "rug pull") is quarantined until an operator approves the new definition.
 */

import type { AuditEventInput } from '../audit/types.js'
import type { Clock } from '../clock.js'
import { WritError } from '../errors.js'
import { canonicalJson, digestJson } from '../gateway/canonical-json.js'
import type { Decision } from '../gateway/deps.js'
import type { Logger } from '../log.js'
import type { ToolPinFinding, ToolPinRecord, ToolPinStore } from '../store/tool-pin-store.js'
import { type LintFinding, lintToolDefinition, type ToolDefinition } from './tool-lint.js'

/** The treatment of a server's new tools: trusted when first listed, or held for approval. */
export type ToolPinningMode = 'trust-on-first-use' | 'require-approval'

export const TOOL_PINNING_MODES: readonly ToolPinningMode[] = [
  'trust-on-first-use',
  'require-approval',
]

export const DEFAULT_TOOL_PINNING: ToolPinningMode = 'trust-on-first-use'

/** The approver recorded for a definition trusted on first sight. */
export const TRUST_ON_FIRST_USE_APPROVER = 'trust-on-first-use'

/** How often `watch` reloads pins changed by other processes, such as `writ tools approve`. */
export const DEFAULT_PIN_POLL_MS = 250

/** The session facts the guard needs: the server name and a builder for its audit events. */
export interface PinOrigin {
  server: string
  auditEvent(
    event: Omit<AuditEventInput, 'caller' | 'peer' | 'server' | 'sessionId'>,
  ): AuditEventInput
}

/** A refused tool call: the audit reason and rule, and `quarantined` for the client. */
export interface PinDenial {
  effect: 'deny'
  reason: 'tool_definition_changed' | 'tool_not_approved'
  rule: string
  denial: 'quarantined'
}

/** The facts recorded about one listed definition: its digest, text and linter findings. */
interface Observation {
  server: string
  tool: string
  digest: string
  definition: string
  findings: ToolPinFinding[]
  mode: ToolPinningMode
  now: number
}

/** Returns the pinned fields of a listed tool; `title` is pinned too, because clients show it. */
export function pinnedDefinition(tool: ToolDefinition): ToolDefinition {
  const { name, title, description, inputSchema, outputSchema, annotations } = tool
  return { name, title, description, inputSchema, outputSchema, annotations }
}

/**
 * Returns the pin after `observation`, or undefined when the definition is the one already
 * recorded. A pure function, run inside the store transaction so concurrent writers agree.
 */
export function nextPin(
  current: ToolPinRecord | undefined,
  observation: Observation,
): ToolPinRecord | undefined {
  if (current !== undefined && current.digest === observation.digest) return undefined
  const seen = {
    server: observation.server,
    tool: observation.tool,
    digest: observation.digest,
    definition: observation.definition,
    findings: observation.findings,
    changed: observation.now,
  }
  if (current === undefined) {
    // Flagged definitions are held even under trust on first use.
    const trusted = observation.mode === 'trust-on-first-use' && observation.findings.length === 0
    if (!trusted) return { ...seen, state: 'pending', firstSeen: observation.now }
    return {
      ...seen,
      state: 'approved',
      firstSeen: observation.now,
      approvedDigest: observation.digest,
      approvedBy: TRUST_ON_FIRST_USE_APPROVER,
      approvedAt: observation.now,
    }
  }
  let state: ToolPinRecord['state'] =
    current.approvedDigest === undefined ? 'pending' : 'quarantined'
  // A server that returns to the approved definition gets it back without a new approval.
  if (observation.digest === current.approvedDigest) state = 'approved'
  return { ...current, ...seen, state }
}

/**
 * Approves the definition last seen for `server`/`tool` and audits it. With `digest`, approves
 * only that definition, so an operator never approves a change made after they reviewed it.
 *
 * @throws WritError `tools.pin_not_found` when the gateway has never listed that tool, and
 *   `tools.digest_mismatch` when the definition last seen has another digest than `digest`.
 */
export async function approveToolPin(options: {
  store: ToolPinStore
  audit: (event: AuditEventInput) => Promise<{ id: string }>
  server: string
  tool: string
  approver: string
  now: number
  digest?: string
}): Promise<{ pin: ToolPinRecord; changed: boolean }> {
  const { server, tool } = options
  const result = await options.store.updateToolPin(server, tool, (current) => {
    if (current === undefined) {
      throw new WritError(
        'tools.pin_not_found',
        `MCP server "${server}" has no recorded tool "${tool}"; list its tools through the gateway first and check the name with writ tools ls ${server}`,
        { server, tool },
      )
    }
    if (options.digest !== undefined && options.digest !== current.digest) {
      throw new WritError(
        'tools.digest_mismatch',
        `tool "${tool}" of MCP server "${server}" now has digest ${current.digest}, not ${options.digest}; review it again with writ tools ls ${server} --json`,
        { server, tool, expected: options.digest, actual: current.digest },
      )
    }
    if (current.state === 'approved') return undefined
    return {
      ...current,
      state: 'approved',
      approvedDigest: current.digest,
      approvedBy: options.approver,
      approvedAt: options.now,
    }
  })
  const pin = result.after as ToolPinRecord
  const changed = result.before?.state !== 'approved'
  if (changed) {
    await options.audit({
      type: 'tool.approved',
      outcome: 'success',
      reason: 'operator_approved',
      server,
      tool,
      details: {
        approver: options.approver,
        digest: pin.digest,
        ...(result.before?.approvedDigest === undefined
          ? {}
          : { previousDigest: result.before.approvedDigest }),
        findings: pin.findings,
      },
    })
  }
  return { pin, changed }
}

/**
 * Returns the policy decision for a tool call, or the pin denial when policy allows the call but
 * the tool's definition is not approved. Policy goes first, so a caller learns nothing about the
 * pins of tools it may not use.
 */
export function decideWithPins(
  guard: ToolPinGuard | undefined,
  server: { name: string; toolPinning?: ToolPinningMode },
  tool: string,
  decision: Decision,
): Decision {
  if (guard === undefined || decision.effect !== 'allow') return decision
  return guard.checkCall(server.name, server.toolPinning, tool) ?? decision
}

/**
 * Keeps the pins in memory so the gateway can decide synchronously on each `tools/list` response
 * and `tools/call`, writes changes through to the store and reloads pins that other processes
 * change.
 */
export class ToolPinGuard {
  readonly #store: ToolPinStore
  readonly #audit: (event: AuditEventInput) => Promise<{ id: string }>
  readonly #clock: Clock
  readonly #logger: Logger
  #pins = new Map<string, ToolPinRecord>()
  #version = -1
  /** Store writes in the order they were queued; a reload waits for them. */
  #writes: Promise<unknown> = Promise.resolve()
  /** Counts local changes, so a reload that raced with one is discarded. */
  #localChanges = 0

  constructor(options: {
    store: ToolPinStore
    audit: (event: AuditEventInput) => Promise<{ id: string }>
    clock: Clock
    logger: Logger
  }) {
    this.#store = options.store
    this.#audit = options.audit
    this.#clock = options.clock
    this.#logger = options.logger
  }

  /**
   * Records every tool of a `tools/list` result and returns those whose current definition is
   * approved. New and changed definitions are linted, stored and audited in the background. The
   * in-memory pin changes at once, so the next call is already decided on it.
   */
  filterListed(origin: PinOrigin, mode: ToolPinningMode | undefined, tools: unknown[]): unknown[] {
    const now = this.#clock()
    return tools.filter((tool) => {
      const name = (tool as { name?: unknown } | null)?.name
      if (typeof name !== 'string') return true
      const pin = this.#observe(origin, mode ?? DEFAULT_TOOL_PINNING, tool as ToolDefinition, now)
      return pin.state === 'approved'
    })
  }

  /**
   * Returns a denial for a call to a tool whose definition is not approved, or undefined. Under
   * `require-approval` a tool never listed through the gateway is refused as well.
   */
  checkCall(
    server: string,
    mode: ToolPinningMode | undefined,
    tool: string,
  ): PinDenial | undefined {
    const effective = mode ?? DEFAULT_TOOL_PINNING
    const rule = `toolPinning:${effective}`
    const pin = this.#pins.get(pinKey(server, tool))
    // NOTE: under trust on first use, a tool never listed through the gateway has no pin yet, so
    // its call is forwarded. Its definition was never shown to the client through Writ either.
    if (pin === undefined) {
      if (effective === 'trust-on-first-use') return undefined
      return { effect: 'deny', reason: 'tool_not_approved', rule, denial: 'quarantined' }
    }
    if (pin.state === 'approved') return undefined
    const reason = pin.state === 'quarantined' ? 'tool_definition_changed' : 'tool_not_approved'
    return { effect: 'deny', reason, rule, denial: 'quarantined' }
  }

  /** Reloads every pin when the store's pin version moved, after queued writes have landed. */
  async refresh(): Promise<void> {
    await this.#writes
    const version = await this.#store.toolPinVersion()
    if (version === this.#version) return
    const started = this.#localChanges
    const pins = await this.#store.listToolPins()
    if (started !== this.#localChanges) return
    this.#pins = new Map(pins.map((pin) => [pinKey(pin.server, pin.tool), pin]))
    this.#version = version
  }

  /** Reloads pins every `intervalMs` until the returned function is called. */
  watch(intervalMs = DEFAULT_PIN_POLL_MS): () => void {
    const timer = setInterval(() => {
      this.refresh().catch((error) => this.#logger.error({ error }, 'tool pin refresh failed'))
    }, intervalMs)
    timer.unref()
    return () => clearInterval(timer)
  }

  /** Resolves once every queued store write and its audit event are done. */
  async flush(): Promise<void> {
    await this.#writes
  }

  #observe(origin: PinOrigin, mode: ToolPinningMode, tool: ToolDefinition, now: number) {
    const server = origin.server
    const definition = pinnedDefinition(tool)
    const digest = digestJson(definition)
    const key = pinKey(server, tool.name)
    const current = this.#pins.get(key)
    if (current !== undefined && current.digest === digest) return current
    const observation: Observation = {
      server,
      tool: tool.name,
      digest,
      definition: canonicalJson(definition),
      findings: lintToolDefinition(definition, this.#lintContext(server)).map(storedFinding),
      mode,
      now,
    }
    const next = nextPin(current, observation) as ToolPinRecord
    this.#pins.set(key, next)
    this.#localChanges++
    this.#writes = this.#writes.then(() => this.#persist(origin, observation))
    return next
  }

  async #persist(origin: PinOrigin, observation: Observation): Promise<void> {
    try {
      const { server, tool } = observation
      const result = await this.#store.updateToolPin(server, tool, (current) =>
        nextPin(current, observation),
      )
      // Another session or process recorded this definition first and wrote the audit event.
      if (result.after === undefined || result.before?.digest === result.after.digest) return
      await this.#audit(origin.auditEvent(pinEvent(result.before, result.after, observation.mode)))
      if (result.after.state !== 'approved') {
        this.#logger.warn(
          { server, tool, state: result.after.state, findings: result.after.findings.length },
          'tool held until an operator approves it',
        )
      }
    } catch (error) {
      this.#logger.error(
        { error, server: observation.server, tool: observation.tool },
        'tool pin write failed',
      )
    }
  }

  #lintContext(server: string) {
    const otherTools: string[] = []
    const otherServers = new Set<string>()
    for (const pin of this.#pins.values()) {
      if (pin.server === server) continue
      otherTools.push(pin.tool)
      otherServers.add(pin.server)
    }
    return { otherTools, otherServers }
  }
}

function pinEvent(
  before: ToolPinRecord | undefined,
  after: ToolPinRecord,
  mode: ToolPinningMode,
): Omit<AuditEventInput, 'caller' | 'peer' | 'server' | 'sessionId'> {
  const held = after.state !== 'approved'
  const details: Record<string, unknown> = {
    state: after.state,
    digest: after.digest,
    findings: after.findings,
  }
  if (before !== undefined) details.previousDigest = before.digest
  if (after.approvedDigest !== undefined) details.approvedDigest = after.approvedDigest
  let reason = 'trust_on_first_use'
  if (before !== undefined) {
    reason = held ? 'definition_changed' : 'approved_definition_restored'
  } else if (after.findings.length > 0) {
    reason = 'description_flagged'
  } else if (held) {
    reason = 'approval_required'
  }
  return {
    type: before === undefined ? 'tool.pinned' : 'tool.changed',
    outcome: held ? 'denied' : 'success',
    reason,
    rule: `toolPinning:${mode}`,
    tool: after.tool,
    details,
  }
}

function storedFinding(finding: LintFinding): ToolPinFinding {
  return { rule: finding.rule, field: finding.field, match: finding.match }
}

function pinKey(server: string, tool: string): string {
  return `${server}\u0000${tool}`
}
