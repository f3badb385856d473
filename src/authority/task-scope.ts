/**
 * Pure rules for task certificates: validating a requested scope, narrowing it to the parent's
 * task scope, capping the lifetime and limiting the delegation depth. No I/O, so each rule is
 * unit-tested on its own.
 *
 * A task scope lists server name patterns and tool name patterns (literals, globs or `^...$`
 * regular expressions, as in roles). The gateway checks both the scope and the roles copied from
 * the parent, so a task can never do more than its parent's roles allow. A certificate carries one
 * scope, so a child of a task does not keep its parent's scope. Every entry of the child's scope
 * must therefore provably lie inside the parent's scope, and entries that cannot be shown to do so
 * are rejected.
 */
import { randomBytes } from 'node:crypto'
import { WritError } from '../errors.js'
import type { TaskScope } from '../identity/types.js'
import { compilePattern, type Traits } from '../policy/pattern.js'

/** The lifetime of a task certificate when the request sets no `ttl`: ten minutes. */
export const DEFAULT_TASK_TTL_SECONDS = 600

/** How many delegations deep a task may sit when the server sets no limit: a task of a task. */
export const DEFAULT_MAX_TASK_DEPTH = 2

/** Maximum number of entries in a task's `servers` or `tools` list. */
export const MAX_TASK_PATTERNS = 32

/** Maximum length of one server or tool pattern of a task, in characters. */
export const MAX_TASK_PATTERN_LENGTH = 256

/** Maximum length of a task reason, in characters, because the reason is written into the certificate. */
export const MAX_TASK_REASON_LENGTH = 512

/** Lowercase base32 (RFC 4648 letters and digits 2-7): 32 symbols, so a byte modulo 32 is unbiased. */
const TASK_ID_ALPHABET = 'abcdefghijklmnopqrstuvwxyz234567'

/** Characters in a task id: 50 random bits. */
const TASK_ID_LENGTH = 10

/** The scope part of a task request, before it is narrowed to the parent. */
export interface RequestedScope {
  servers?: string[]
  tools: string[]
}

/** The bound that set a task certificate's lifetime. */
export type LifetimeLimit = 'request' | 'role' | 'parent'

/** The lifetime a task certificate gets. */
export interface TaskLifetime {
  ttlSeconds: number
  limitedBy: LifetimeLimit
}

/** Returns a new random task id of 10 lowercase letters and digits, such as `k3v9qa2mzx`. */
export function newTaskId(): string {
  let id = ''
  for (const byte of randomBytes(TASK_ID_LENGTH)) {
    id += TASK_ID_ALPHABET[byte % TASK_ID_ALPHABET.length]
  }
  return id
}

/**
 * Checks one requested pattern list (`servers` or `tools`) and returns it without duplicates.
 * Throws `task.invalid` naming the field and the bad entry: an empty list, too many entries, an
 * entry that is not a string, too long, or not a valid name pattern.
 */
export function checkPatternList(field: 'servers' | 'tools', value: unknown): string[] {
  if (!Array.isArray(value) || value.length === 0) {
    throw new WritError(
      'task.invalid',
      `task field "${field}" must be a non-empty list of name patterns, such as ["read_*"]`,
      { field },
    )
  }
  if (value.length > MAX_TASK_PATTERNS) {
    throw new WritError(
      'task.invalid',
      `task field "${field}" lists ${value.length} patterns; at most ${MAX_TASK_PATTERNS} are allowed`,
      { field, count: value.length, maximum: MAX_TASK_PATTERNS },
    )
  }
  for (const entry of value) checkPattern(field, entry)
  return [...new Set(value as string[])]
}

function checkPattern(field: string, entry: unknown): void {
  if (typeof entry !== 'string' || entry === '') {
    throw new WritError(
      'task.invalid',
      `task field "${field}" contains ${JSON.stringify(entry)}; each entry must be a non-empty string`,
      { field },
    )
  }
  if (entry.length > MAX_TASK_PATTERN_LENGTH) {
    throw new WritError(
      'task.invalid',
      `task field "${field}" contains a pattern of ${entry.length} characters; at most ${MAX_TASK_PATTERN_LENGTH} are allowed`,
      { field, length: entry.length, maximum: MAX_TASK_PATTERN_LENGTH },
    )
  }
  try {
    compilePattern(entry)
  } catch (error) {
    if (!(error instanceof WritError)) throw error
    throw new WritError(
      'task.invalid',
      `task field "${field}": ${error.message}`,
      { field, pattern: entry },
      { cause: error },
    )
  }
}

/**
 * Checks the reason a task states and returns it trimmed. Throws `task.invalid` when it is
 * missing, empty, longer than `MAX_TASK_REASON_LENGTH` or contains control characters, because it
 * is shown in audit listings and terminals.
 */
export function checkReason(value: unknown): string {
  if (typeof value !== 'string' || value.trim() === '') {
    throw new WritError(
      'task.invalid',
      'task field "reason" is required: say in a few words why the task needs access',
      { field: 'reason' },
    )
  }
  const reason = value.trim()
  if (reason.length > MAX_TASK_REASON_LENGTH) {
    throw new WritError(
      'task.invalid',
      `task reason is ${reason.length} characters long; at most ${MAX_TASK_REASON_LENGTH} are allowed`,
      { field: 'reason', length: reason.length, maximum: MAX_TASK_REASON_LENGTH },
    )
  }
  const control = /[\u0000-\u001f\u007f-\u009f]/.exec(reason)
  if (control) {
    const code = `U+${(control[0].codePointAt(0) as number).toString(16).padStart(4, '0')}`
    throw new WritError(
      'task.invalid',
      `task reason contains the control character ${code}; use plain text on one line`,
      { field: 'reason', character: code },
    )
  }
  return reason
}

/**
 * Narrows a requested scope to the parent's task scope and returns the child's scope.
 *
 * A parent without a task scope (a bot's or a person's own certificate) passes the request
 * through: the child's roles still bound it. A parent task's `servers` are inherited when the
 * request names none. Otherwise every requested entry must lie inside one of the parent's
 * entries, or the request fails with `task.scope_exceeded` naming the entry and the parent scope.
 */
export function narrowScope(
  parent: TaskScope | undefined,
  requested: RequestedScope,
  traits: Traits,
): RequestedScope {
  const servers = narrowList('servers', parent?.servers, requested.servers, traits)
  const tools = narrowList('tools', parent?.tools, requested.tools, traits) as string[]
  return servers === undefined ? { tools } : { servers, tools }
}

function narrowList(
  field: 'servers' | 'tools',
  parentEntries: readonly string[] | undefined,
  requested: string[] | undefined,
  traits: Traits,
): string[] | undefined {
  if (parentEntries === undefined) return requested
  if (requested === undefined) return [...parentEntries]
  for (const entry of requested) {
    if (!parentEntries.some((outer) => patternContains(outer, entry, traits))) {
      throw new WritError(
        'task.scope_exceeded',
        `task ${field} pattern "${entry}" is not within the parent task's ${field} [${parentEntries.join(', ')}]; request only names the parent task may use`,
        { field, pattern: entry, parent: [...parentEntries] },
      )
    }
  }
  return requested
}

/**
 * Reports whether every name `inner` matches is also matched by `outer`. The result may be a
 * false "no" (for regular expressions and trait placeholders, which are compared as text) but
 * never a false "yes".
 */
export function patternContains(outer: string, inner: string, traits: Traits = {}): boolean {
  if (outer === inner) return true
  const innerKind = simpleKind(inner)
  if (innerKind === 'literal') {
    try {
      return compilePattern(outer).matches(inner, traits)
    } catch (error) {
      if (error instanceof WritError) return false
      throw error
    }
  }
  return innerKind === 'glob' && simpleKind(outer) === 'glob' && globContains(outer, inner)
}

/** Classifies a pattern without placeholders; anything else counts as `other`. */
function simpleKind(pattern: string): 'literal' | 'glob' | 'other' {
  if (pattern.includes('{{') || pattern.startsWith('^') || pattern.endsWith('$')) return 'other'
  return pattern.includes('*') || pattern.includes('?') ? 'glob' : 'literal'
}

/**
 * Decides whether glob `outer` matches every name glob `inner` matches. It matches `outer` against
 * the text of `inner`, where only a `*` of `outer` may consume a `*` of `inner`, and only a `?` or
 * `*` of `outer` may consume a `?` of `inner`. Runs in O(|outer| x |inner|).
 */
export function globContains(outer: string, inner: string): boolean {
  const a = [...outer]
  const b = [...inner]
  // current[j] is true when outer[i..] covers inner[j..]; next is the same row for i + 1.
  let next: boolean[] = new Array(b.length + 1).fill(false)
  next[b.length] = true
  for (let i = a.length - 1; i >= 0; i--) {
    const current: boolean[] = new Array(b.length + 1).fill(false)
    const token = a[i] as string
    for (let j = b.length; j >= 0; j--) {
      if (token === '*') {
        current[j] = (next[j] as boolean) || (j < b.length && (current[j + 1] as boolean))
      } else if (j === b.length) {
        current[j] = false
      } else if (token === '?') {
        current[j] = b[j] !== '*' && (next[j + 1] as boolean)
      } else {
        current[j] = b[j] === token && (next[j + 1] as boolean)
      }
    }
    next = current
  }
  return next[0] as boolean
}

/**
 * Computes a task's lifetime: the requested seconds, cut to the smallest `maxTtl` of the roles
 * and to the time the parent certificate has left, rounded up to whole seconds. Throws
 * `task.parent_expiring` when the parent has less than one second left.
 */
export function taskLifetime(options: {
  now: number
  requestedSeconds: number
  roleMaxSeconds: number | undefined
  parentNotAfter: Date
}): TaskLifetime {
  const parentMs = options.parentNotAfter.getTime() - options.now
  if (parentMs < 1000) {
    throw new WritError(
      'task.parent_expiring',
      `the parent certificate expires at ${options.parentNotAfter.toISOString()}, too soon to issue a task under it; renew it first`,
      { parentNotAfter: options.parentNotAfter.toISOString() },
    )
  }
  let result: TaskLifetime = { ttlSeconds: options.requestedSeconds, limitedBy: 'request' }
  if (options.roleMaxSeconds !== undefined && options.roleMaxSeconds < result.ttlSeconds) {
    result = { ttlSeconds: options.roleMaxSeconds, limitedBy: 'role' }
  }
  // Rounded up so that the certificate can end exactly with the parent. The caller must also pass
  // the parent's notAfter to the CA as the hard limit.
  const parentSeconds = Math.ceil(parentMs / 1000)
  if (parentSeconds < result.ttlSeconds) result = { ttlSeconds: parentSeconds, limitedBy: 'parent' }
  return result
}

/**
 * Returns the depth of a child of a certificate at `parentDepth`, or throws
 * `task.depth_exceeded` naming both numbers when it would pass `maxDepth`.
 */
export function childDepth(parentDepth: number, maxDepth: number): number {
  const depth = parentDepth + 1
  if (depth > maxDepth) {
    throw new WritError(
      'task.depth_exceeded',
      `a task here would have delegation depth ${depth}, but this server allows at most ${maxDepth}; request the task from a certificate closer to the bot or person`,
      { depth, maximum: maxDepth },
    )
  }
  return depth
}
