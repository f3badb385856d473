/**
 * Holds tool calls for a person's approval and tracks untrusted content per principal.
 *
 * A call needs approval when a role rule requires it (see `call-rules.ts`), or when it goes to a
 * server labelled `external` after the caller received results from a server labelled
 * `untrusted` or `private`. A held call waits while the store is polled for a decision, which
 * `writ approvals approve|deny` writes from another process. An approval is bound to the caller
 * (SPIFFE ID plus bot instance, or certificate serial), the server, the tool and the digest of
 * the exact arguments, lets one call through, and expires.
 */
import { randomBytes } from 'node:crypto'
import type { Clock } from '../clock.js'
import type { DenialReason } from '../gateway/jsonrpc.js'
import type { PeerIdentity } from '../identity/types.js'
import type { Logger } from '../log.js'
import type { Store, ToolApprovalRecord } from '../store/store.js'
import {
  type ApprovalRequirement,
  type CallRules,
  DEFAULT_APPROVAL_TTL_SECONDS,
  type FlowKind,
} from './call-rules.js'

/** 250 ms: how often a held call reads its approval from the store. */
export const DEFAULT_APPROVAL_POLL_MS = 250
/** 5: the maximum number of pending approvals per SPIFFE ID; further requests are rate limited. */
export const DEFAULT_MAX_PENDING_APPROVALS = 5
/** Entries in the taint table after which expired ones are swept. */
const TAINT_SWEEP_SIZE = 10_000

/** One tool call as the pipeline hands it over, after the role decision allowed it. */
export interface HeldCall {
  identity: PeerIdentity
  server: string
  tool: string
  /** `sha256:<hex>` of the canonical JSON of the arguments. */
  argsDigest: string
  /** The arguments with secrets redacted, stored for the approver to read. */
  redactedArgs: unknown
  /** Returns true once the client closed the request or the session ended, ending the hold. */
  abandoned(): boolean
}

/** The guard's verdict on a call: proceed, deny, or drop because the client went away. */
export type CallVerdict =
  | { effect: 'proceed' }
  | {
      effect: 'proceed'
      /** The approval that released the call, for the audit record. */
      approval: { id: string; rule: string; approvedBy: string; reason: string }
    }
  | {
      effect: 'deny'
      denial: DenialReason
      /** The client's message; it names the approval id where there is one. */
      message: string
      reason: string
      rule: string
      details?: Record<string, unknown>
    }
  /** The client went away while the call was held; nothing is sent and nothing forwarded. */
  | { effect: 'abandoned'; approvalId: string; rule: string }

/** The approval and flow guard used by the gateway pipeline. */
export interface CallGuard {
  /** Decides whether a call proceeds, waiting for a person's decision when it is held. */
  check(call: HeldCall): Promise<CallVerdict>
  /** Records that a result from `server` reached the caller, tainting them if it is flagged. */
  observeResult(identity: PeerIdentity, server: string): void
  /** The taint kinds the caller currently carries, for tests and diagnostics. */
  taintOf(identity: PeerIdentity): FlowKind[]
  /**
   * Denies a pending approval whose session ended (a lock, an expired certificate), so a later
   * approval cannot release the same call once the caller is unlocked.
   */
  cancel(approvalId: string, reason: string): Promise<void>
}

export interface CallGuardOptions {
  store: Store
  /** Returns the rules of the current policy version. */
  rules(): CallRules
  clock: Clock
  logger: Logger
  pollMs?: number
  maxPendingPerPrincipal?: number
}

/** Returns the binding an approval is tied to: the bot instance, else the certificate serial. */
export function bindingOf(identity: PeerIdentity): string {
  const instance = identity.claims.botInstance
  return instance === undefined ? `serial:${identity.serial}` : `instance:${instance}`
}

/** Creates the guard; it keeps taint in memory, so it lasts as long as the gateway process. */
export function createCallGuard(options: CallGuardOptions): CallGuard {
  const { store, clock, logger } = options
  const pollMs = options.pollMs ?? DEFAULT_APPROVAL_POLL_MS
  const maxPending = options.maxPendingPerPrincipal ?? DEFAULT_MAX_PENDING_APPROVALS
  /** Taint per principal key, each kind with the time (ms) it ends. */
  const taints = new Map<string, Map<FlowKind, number>>()

  function principalKey(identity: PeerIdentity): string {
    return `${identity.spiffeId} ${bindingOf(identity)}`
  }

  function taintOf(identity: PeerIdentity): FlowKind[] {
    const entry = taints.get(principalKey(identity))
    if (entry === undefined) return []
    const now = clock()
    return [...entry].filter(([, until]) => until > now).map(([kind]) => kind)
  }

  function observeResult(identity: PeerIdentity, server: string): void {
    const flow = options.rules().flowOf(server)
    const kinds = (['untrusted', 'private'] as const).filter((kind) => flow.has(kind))
    if (kinds.length === 0) return
    if (taints.size >= TAINT_SWEEP_SIZE) sweep()
    const key = principalKey(identity)
    const entry = taints.get(key) ?? new Map<FlowKind, number>()
    // The taint lasts as long as the certificate that received the content.
    const until = identity.notAfter.getTime()
    for (const kind of kinds) entry.set(kind, Math.max(entry.get(kind) ?? 0, until))
    taints.set(key, entry)
    logger.info({ spiffeId: identity.spiffeId, server, kinds }, 'caller received flagged content')
  }

  function sweep(): void {
    const now = clock()
    for (const [key, entry] of taints) {
      for (const [kind, until] of entry) if (until <= now) entry.delete(kind)
      if (entry.size === 0) taints.delete(key)
    }
  }

  /** Returns what the call needs: nothing, a denial by flow policy, or an approval. */
  function requirementOf(
    call: HeldCall,
  ): ApprovalRequirement | Extract<CallVerdict, { effect: 'deny' }> | undefined {
    const rules = options.rules()
    const claims = call.identity.claims
    if (rules.flowOf(call.server).has('external')) {
      const taint = taintOf(call.identity)
      if (taint.length > 0) {
        const rule = `flow/${taint.join('+')}-to-external`
        const setting = rules.onTaintedSink(claims)
        if (setting.mode === 'deny') {
          return {
            effect: 'deny',
            denial: 'forbidden',
            message: `tool ${quote(call.tool)} on external server ${quote(call.server)} is not allowed after this caller received ${taint.join(' and ')} content`,
            reason: `call to external server ${quote(call.server)} after ${taint.join(' and ')} content, refused by ${setting.rule}`,
            rule,
            details: { taint, setting: setting.rule },
          }
        }
        return { rule, ttlSeconds: DEFAULT_APPROVAL_TTL_SECONDS }
      }
    }
    return rules.approvalFor(claims, call.server, call.tool)
  }

  async function check(call: HeldCall): Promise<CallVerdict> {
    const requirement = requirementOf(call)
    if (requirement === undefined) return { effect: 'proceed' }
    if ('effect' in requirement) return requirement

    const binding = bindingOf(call.identity)
    // An approval granted after an earlier hold timed out lets the identical retry through.
    const earlier = await store.consumeToolApproval({
      spiffeId: call.identity.spiffeId,
      binding,
      server: call.server,
      tool: call.tool,
      argsDigest: call.argsDigest,
      now: clock(),
    })
    if (earlier !== undefined) return released(earlier)

    const now = clock()
    const pending = await store.countPendingToolApprovals(call.identity.spiffeId, now)
    if (pending >= maxPending) {
      return {
        effect: 'deny',
        denial: 'rate_limited',
        message: `tool ${quote(call.tool)} needs approval, but this caller already has ${pending} calls waiting for approval (limit ${maxPending}); wait for a decision`,
        reason: `approval limit reached: ${pending} pending, at most ${maxPending} per principal`,
        rule: requirement.rule,
      }
    }

    const record: ToolApprovalRecord = {
      id: `apr_${randomBytes(16).toString('hex')}`,
      spiffeId: call.identity.spiffeId,
      binding,
      server: call.server,
      tool: call.tool,
      argsDigest: call.argsDigest,
      args: call.redactedArgs,
      rule: requirement.rule,
      state: 'pending',
      created: now,
      expires: now + requirement.ttlSeconds * 1000,
    }
    await store.createToolApproval(record)
    logger.info(
      { approval: record.id, spiffeId: record.spiffeId, tool: call.tool, rule: record.rule },
      'tool call held for approval',
    )
    return waitForDecision(call, record)
  }

  async function waitForDecision(call: HeldCall, record: ToolApprovalRecord): Promise<CallVerdict> {
    for (;;) {
      await new Promise((resolve) => setTimeout(resolve, pollMs))
      if (call.abandoned()) {
        logger.info({ approval: record.id }, 'held tool call abandoned by the client')
        return { effect: 'abandoned', approvalId: record.id, rule: record.rule }
      }
      const current = await store.getToolApproval(record.id)
      if (current?.state === 'approved') {
        const used = await store.consumeToolApproval({
          id: record.id,
          spiffeId: record.spiffeId,
          binding: record.binding,
          server: record.server,
          tool: record.tool,
          argsDigest: record.argsDigest,
          now: clock(),
        })
        if (used !== undefined) return released(used)
      }
      if (current?.state === 'denied') {
        return {
          effect: 'deny',
          denial: 'forbidden',
          message: `tool ${quote(call.tool)} was denied by an approver: ${current.decisionReason ?? ''}`,
          reason: `approval ${record.id} denied by ${current.decidedBy ?? 'unknown'}`,
          rule: record.rule,
          details: {
            approval: {
              id: record.id,
              deniedBy: current.decidedBy,
              reason: current.decisionReason,
            },
          },
        }
      }
      // Approved but not consumable (expired in between) or expired while pending.
      if (current === undefined || current.state !== 'pending' || clock() >= record.expires) {
        return {
          effect: 'deny',
          denial: 'needs_approval',
          message: `tool ${quote(call.tool)} needs approval and approval ${record.id} expired without a decision; call again to request a new one`,
          reason: `approval ${record.id} expired without a decision`,
          rule: record.rule,
          details: { approval: { id: record.id } },
        }
      }
    }
  }

  function released(record: ToolApprovalRecord): CallVerdict {
    logger.info(
      { approval: record.id, approvedBy: record.decidedBy, tool: record.tool },
      'held tool call approved',
    )
    return {
      effect: 'proceed',
      approval: {
        id: record.id,
        rule: record.rule,
        approvedBy: record.decidedBy ?? 'unknown',
        reason: record.decisionReason ?? '',
      },
    }
  }

  async function cancel(approvalId: string, reason: string): Promise<void> {
    const decision = { state: 'denied' as const, decidedBy: 'writ', reason, decided: clock() }
    await store.decideToolApproval(approvalId, decision)
  }

  return { check, observeResult, taintOf, cancel }
}

/** Quotes a name for a message, shortened so a hostile tool name cannot flood a log. */
function quote(name: string): string {
  return JSON.stringify(name.length > 128 ? `${name.slice(0, 128)}…` : name)
}
