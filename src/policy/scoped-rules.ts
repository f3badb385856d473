/**
 * The parts of a role that govern more than tool names: resource URI and prompt name patterns,
 * and argument rules. `policy.ts` compiles them with the rest of the role and calls the decisions
 * here after the server decision, so the same semantics apply:
 *
 * - Resources and prompts: a `deny.resources` or `deny.prompts` match in any role of the caller
 *   wins on every server. Otherwise an `allow` pattern of a role whose `allow.mcpServers` selects
 *   the server allows. A role without these fields allows no resource or prompt.
 * - Argument rules: every `allow.args` entry whose tool patterns match, in every role of the
 *   caller that selects the server, must evaluate to `true`. A second role that allows the same
 *   tool without a rule does not lift the first role's rule, so adding a role never removes a
 *   check on arguments.
 */
import type { Decision } from '../gateway/deps.js'
import { type ArgRuleInput, type CompiledArgRule, compileArgRule } from './arg-rules.js'
import { compilePattern, type NamePattern, type Traits } from './pattern.js'
import type { RoleRules } from './specs.js'

/** The kind of name a scoped decision matches: resource URIs or prompt names. */
export type ScopedKind = 'resources' | 'prompts'

interface ArgRule {
  index: number
  tools: NamePattern[]
  source: string
  evaluate: CompiledArgRule
}

/** The compiled resource, prompt and argument rules of one role. */
export interface ScopedRules {
  allow: Record<ScopedKind, NamePattern[]>
  deny: Record<ScopedKind, NamePattern[]>
  args: ArgRule[]
}

/** A role as these decisions need it. */
export interface ScopedRole {
  name: string
  allowedServers: ReadonlySet<string>
  scoped: ScopedRules
}

/** Compiles the scoped rules of a role; `at` rethrows a compile error naming role and field. */
export function compileScopedRules(
  allow: RoleRules | undefined,
  deny: RoleRules | undefined,
  at: <T>(field: string, compile: () => T) => T,
): ScopedRules {
  const patterns = (block: 'allow' | 'deny', rules: RoleRules | undefined, kind: ScopedKind) =>
    (rules?.[kind] ?? []).map((source, index) =>
      at(`spec.${block}.${kind}[${index}]`, () => compilePattern(source)),
    )
  return {
    allow: {
      resources: patterns('allow', allow, 'resources'),
      prompts: patterns('allow', allow, 'prompts'),
    },
    deny: {
      resources: patterns('deny', deny, 'resources'),
      prompts: patterns('deny', deny, 'prompts'),
    },
    args: (allow?.args ?? []).map((entry, index) => ({
      index,
      source: entry.rule,
      tools: entry.tools.map((tool, toolIndex) =>
        at(`spec.allow.args[${index}].tools[${toolIndex}]`, () => compilePattern(tool)),
      ),
      evaluate: at(`spec.allow.args[${index}].rule`, () => compileArgRule(entry.rule)),
    })),
  }
}

/**
 * Decides on a resource URI or prompt name for a caller already allowed on `server`. Returns
 * the deny or allow that matched, or undefined when nothing matched (default deny).
 */
export function decideScoped(
  roles: readonly ScopedRole[],
  kind: ScopedKind,
  server: string,
  name: string,
  traits: Traits,
): Decision | undefined {
  const what = kind === 'resources' ? 'resource' : 'prompt'
  // Denies run first and the first match ends the decision: a deny must win over any allow.
  for (const role of roles) {
    const index = role.scoped.deny[kind].findIndex((pattern) => pattern.matches(name, traits))
    if (index >= 0) {
      const pattern = quote((role.scoped.deny[kind][index] as NamePattern).source)
      return {
        effect: 'deny',
        reason: `role ${quote(role.name)} denies ${what} ${quote(name)} by pattern ${pattern}`,
        rule: `role/${role.name}/deny/${kind}[${index}]`,
        denial: 'forbidden',
      }
    }
  }
  for (const role of roles) {
    if (!role.allowedServers.has(server)) continue
    const index = role.scoped.allow[kind].findIndex((pattern) => pattern.matches(name, traits))
    if (index >= 0) {
      const pattern = quote((role.scoped.allow[kind][index] as NamePattern).source)
      return {
        effect: 'allow',
        reason: `role ${quote(role.name)} allows ${what} ${quote(name)} on server ${quote(server)} by pattern ${pattern}`,
        rule: `role/${role.name}/allow/${kind}[${index}]`,
      }
    }
  }
  return undefined
}

/**
 * Evaluates every argument rule that applies to a call, returning the first that fails as a
 * deny, or undefined when all pass (or none applies).
 */
export function checkArgRules(
  roles: readonly ScopedRole[],
  input: ArgRuleInput,
  traits: Traits,
): Decision | undefined {
  for (const role of roles) {
    if (!role.allowedServers.has(input.server)) continue
    for (const rule of role.scoped.args) {
      if (!rule.tools.some((pattern) => pattern.matches(input.tool, traits))) continue
      const result = rule.evaluate(input)
      if (result.ok) continue
      return {
        effect: 'deny',
        reason: `role ${quote(role.name)} argument rule ${quote(rule.source)} rejects the arguments of tool ${quote(input.tool)}: ${result.detail}`,
        rule: `role/${role.name}/allow/args[${rule.index}]`,
        denial: 'forbidden',
      }
    }
  }
  return undefined
}

/**
 * Reports whether a resource URI has a `..` path segment, raw or percent-encoded, or a control
 * character. Such a URI could match an allowed prefix pattern (`file:///workspace/*`) while an
 * upstream resolves it outside that prefix.
 */
export function isUnsafeResourceUri(uri: string): boolean {
  if (/[\u0000-\u001f\u007f]/.test(uri)) return true
  let decoded = uri
  for (let pass = 0; pass < 3 && decoded.includes('%'); pass++) {
    try {
      decoded = decodeURIComponent(decoded)
    } catch {
      return true
    }
  }
  if (/[\u0000-\u001f\u007f]/.test(decoded)) return true
  return decoded
    .replaceAll('\\', '/')
    .split(/[/?#]/)
    .some((segment) => /^[. ]+$/.test(segment) && segment !== '.')
}

/** Quotes a name for a reason, shortened so a hostile name cannot flood the audit log. */
function quote(name: string): string {
  return JSON.stringify(name.length > 128 ? `${name.slice(0, 128)}…` : name)
}
