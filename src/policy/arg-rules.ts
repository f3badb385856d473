/**
 * Argument rules: CEL expressions that a Role's `allow` block attaches to tool patterns.
 *
 * ```yaml
 * allow:
 *   mcpServers: { env: dev }
 *   tools: ['read_*', 'write_file', 'fetch']
 *   args:
 *     - tools: ['write_file', 'edit_*']          # name patterns, as in allow.tools
 *       rule: "isWithin(args.path, '/workspace')"
 *     - tools: ['fetch']
 *       rule: "hostIn(args.url, ['example.com'])"
 * ```
 *
 * A rule can read these variables and nothing else:
 *
 * - `args`: the `arguments` object of the `tools/call` request, as the gateway forwards it,
 * - `tool` and `server`: the tool and MCP server names,
 * - `principal`: the caller from its certificate, with `spiffeId`, `kind`, `roles` and `traits`.
 *
 * Besides the CEL standard functions and macros (`has`, `size`, `startsWith`, `matches`, `all`,
 * `exists`), a rule may call the helpers of `arg-helpers.ts`: `isWithin(path, dir)`,
 * `hostIn(url, domains)` and `emailDomainIn(address, domains)`.
 *
 * A rule is type-checked when its role is loaded: one that does not parse, names another
 * variable or function, or cannot return a boolean is rejected with `policy.invalid_arg_rule`.
 * At call time, a rule allows the call only when it evaluates to `true`; `false`, any other value
 * and an evaluation error (such as reading `args.path` when the argument is absent, for which
 * `has(args.path)` tests) deny it.
 */
import { Environment } from '@marcbachmann/cel-js'
import { WritError } from '../errors.js'
import type { PeerIdentity } from '../identity/types.js'
import { emailDomainIn, hostIn, isWithin } from './arg-helpers.js'

/** One entry of `allow.args` as written in a Role manifest. */
export interface ArgRuleSpec {
  /** Tool name patterns the rule applies to: literals, globs or `^...$` regular expressions. */
  tools: string[]
  /** A CEL expression that must evaluate to `true` for a call to be forwarded. */
  rule: string
}

/** The variables of one call that a rule evaluates. */
export interface ArgRuleInput {
  args: unknown
  tool: string
  server: string
  principal: Pick<PeerIdentity, 'spiffeId' | 'claims'>
}

/** The outcome of one rule: passed, or failed with the value or error that failed it. */
export type ArgRuleResult = { ok: true } | { ok: false; detail: string }

/** A type-checked rule, ready to evaluate. */
export type CompiledArgRule = (input: ArgRuleInput) => ArgRuleResult

/** 4096 characters: the longest rule accepted; a longer one belongs in several rules. */
export const MAX_RULE_LENGTH = 4096

/** The variables a rule may name. */
export const RULE_VARIABLES = ['args', 'tool', 'server', 'principal'] as const

/** The helper functions a rule may call besides the CEL standard library. */
export const RULE_HELPERS = ['isWithin', 'hostIn', 'emailDomainIn'] as const

const environment = new Environment({
  limits: { maxAstNodes: 1000, maxDepth: 32, maxListElements: 256, maxCallArguments: 8 },
})
  .registerVariable('args', 'map')
  .registerVariable('tool', 'string')
  .registerVariable('server', 'string')
  .registerVariable('principal', 'map')
  .registerFunction('isWithin(dyn, string): bool', isWithin)
  .registerFunction('hostIn(dyn, list<string>): bool', hostIn)
  .registerFunction('emailDomainIn(dyn, list<string>): bool', emailDomainIn)

/**
 * Type-checks and compiles one rule. Throws `policy.invalid_arg_rule` naming the rule when it is
 * too long, does not parse, names a variable or function other than the allowed ones, or has a
 * type other than bool (or dyn, which is checked at call time).
 *
 * @example compileArgRule("isWithin(args.path, '/workspace')")(input).ok
 */
export function compileArgRule(source: string): CompiledArgRule {
  if (typeof source !== 'string') throw new TypeError('an argument rule must be a string')
  if (source.trim().length === 0) throw invalidRule(source, 'the rule is empty')
  if (source.length > MAX_RULE_LENGTH) {
    throw invalidRule(
      source,
      `the rule has ${source.length} characters, at most ${MAX_RULE_LENGTH}`,
    )
  }
  let checked: ReturnType<Environment['check']>
  try {
    checked = environment.check(source)
  } catch (error) {
    throw invalidRule(source, firstLine(error), error)
  }
  if (!checked.valid) throw invalidRule(source, firstLine(checked.error), checked.error)
  if (checked.type !== 'bool' && checked.type !== 'dyn') {
    throw invalidRule(source, `the rule returns ${checked.type}, expected a bool`)
  }
  const program = environment.parse(source)

  return function evaluateArgRule(input) {
    let value: unknown
    try {
      value = program(contextOf(input))
    } catch (error) {
      return { ok: false, detail: `evaluation failed: ${firstLine(error)}` }
    }
    if (value === true) return { ok: true }
    return { ok: false, detail: value === false ? 'the rule is false' : 'the rule is not a bool' }
  }
}

function contextOf(input: ArgRuleInput): Record<string, unknown> {
  const { claims, spiffeId } = input.principal
  return {
    args: input.args,
    tool: input.tool,
    server: input.server,
    principal: {
      spiffeId,
      kind: claims.kind,
      roles: [...claims.roles],
      traits: Object.fromEntries(
        Object.entries(claims.traits).map(([name, values]) => [name, [...values]]),
      ),
    },
  }
}

/** Returns the first line of an error message; cel-js appends a source excerpt below it. */
function firstLine(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error)
  return message.split('\n', 1)[0] ?? message
}

function invalidRule(source: string, problem: string, cause?: unknown): WritError {
  const shown = source.length > 200 ? `${source.slice(0, 200)}…` : source
  return new WritError(
    'policy.invalid_arg_rule',
    `invalid argument rule ${JSON.stringify(shown)}: ${problem} (rules may use ${RULE_VARIABLES.join(', ')} and ${RULE_HELPERS.join(', ')})`,
    { rule: shown },
    cause === undefined ? undefined : { cause },
  )
}
