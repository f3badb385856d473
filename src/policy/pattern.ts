/**
 * Name patterns for tools and servers. A pattern is one of:
 *
 * - a literal (`read_file`), equal to exactly that name,
 * - a glob (`read_*`), where `*` matches any run of characters and `?` exactly one character,
 *   and every other character (`.`, `+`, `(`) is literal,
 * - a regular expression written `^...$`, matched against the whole name with RE2 syntax.
 *
 * Every glob and regular expression runs on re2js, a linear-time engine, so a pattern such as
 * `^(a+)+$` cannot stall the gateway. Patterns are compiled with the DOTALL flag, so `.` and `*`
 * also match a line break and a name cannot slip past a deny rule by containing one.
 *
 * A pattern may contain `{{traits.NAME}}` placeholders, replaced at match time by the caller's
 * certificate traits: a trait with several values matches any of them, and a missing or empty
 * trait makes the pattern match nothing. Values are inserted as literal text, so a trait value of
 * `*` or `.*` matches only itself.
 */
import { RE2JS, RE2JSException } from 're2js'
import { WritError } from '../errors.js'

/** Certificate traits: each name maps to its values. */
export type Traits = Readonly<Record<string, readonly string[]>>

/** A compiled name pattern. */
export interface NamePattern {
  /** The pattern as written in the manifest. */
  readonly source: string
  /** True when the pattern contains `{{traits.NAME}}` placeholders. */
  readonly usesTraits: boolean
  /** Reports whether `name` matches, expanding placeholders from `traits`. */
  matches(name: string, traits?: Traits): boolean
}

type PatternKind = 'literal' | 'glob' | 'regex'
type Segment = { text: string } | { trait: string }

/** Number of trait expansions kept per pattern before the cache starts over. */
const EXPANSION_CACHE_SIZE = 256

/**
 * Compiles a literal, glob or anchored regular expression into a matcher.
 * Throws `policy.invalid_pattern` naming the pattern when it is empty, half-anchored (`^foo` or
 * `foo$`), not valid RE2 syntax, or has a malformed placeholder.
 *
 * @example compilePattern('read_*').matches('read_file') // true
 */
export function compilePattern(source: string): NamePattern {
  if (typeof source !== 'string') throw new TypeError('a name pattern must be a string')
  if (source.length === 0) {
    throw invalidPattern(
      source,
      'use a name, a glob such as read_*, or a regular expression such as ^read_.*$',
    )
  }
  const kind = kindOf(source)
  const segments = parsePlaceholders(source)
  if (segments.every((segment) => 'text' in segment)) return compileFixed(source, kind)
  return compileTemplate(source, kind, segments)
}

function kindOf(source: string): PatternKind {
  const starts = source.startsWith('^')
  const ends = source.endsWith('$')
  if (starts && ends && source.length >= 2) return 'regex'
  if (starts || ends) {
    throw invalidPattern(source, 'a regular expression must start with ^ and end with $')
  }
  return source.includes('*') || source.includes('?') ? 'glob' : 'literal'
}

function compileFixed(source: string, kind: PatternKind): NamePattern {
  if (kind === 'literal') {
    return { source, usesTraits: false, matches: (name) => name === source }
  }
  const expression = kind === 'glob' ? globToRegex(source) : source
  const compiled = compileRegex(source, expression, kind)
  return { source, usesTraits: false, matches: (name) => compiled.testExact(name) }
}

/**
 * Compiles a pattern with placeholders. The pattern is checked once with a stand-in value, so a
 * syntax error surfaces when the role loads, and compiled again for each distinct set of trait
 * values it meets.
 */
function compileTemplate(source: string, kind: PatternKind, segments: Segment[]): NamePattern {
  const names = [
    ...new Set(segments.flatMap((segment) => ('trait' in segment ? [segment.trait] : []))),
  ]
  compileRegex(
    source,
    buildExpression(kind, segments, () => ['x']),
    kind,
  )
  const cache = new Map<string, RE2JS | null>()

  function expand(traits: Traits): RE2JS | null {
    const key = JSON.stringify(names.map((name) => traits[name] ?? []))
    const cached = cache.get(key)
    if (cached !== undefined) return cached
    let compiled: RE2JS | null = null
    if (names.every((name) => (traits[name]?.length ?? 0) > 0)) {
      const expression = buildExpression(kind, segments, (name) => traits[name] ?? [])
      compiled = tryCompile(expression)
    }
    if (cache.size >= EXPANSION_CACHE_SIZE) cache.clear()
    cache.set(key, compiled)
    return compiled
  }

  return {
    source,
    usesTraits: true,
    matches(name, traits = {}) {
      return expand(traits)?.testExact(name) ?? false
    },
  }
}

function buildExpression(
  kind: PatternKind,
  segments: Segment[],
  valuesOf: (trait: string) => readonly string[],
): string {
  let expression = ''
  for (const segment of segments) {
    if ('trait' in segment) {
      expression += `(?:${valuesOf(segment.trait).map(RE2JS.quote).join('|')})`
    } else if (kind === 'regex') {
      expression += segment.text
    } else {
      expression += globToRegex(segment.text)
    }
  }
  return expression
}

/** Splits `read_{{traits.team}}_*` into text and placeholder segments. */
function parsePlaceholders(source: string): Segment[] {
  const segments: Segment[] = []
  let rest = source
  for (;;) {
    const open = rest.indexOf('{{')
    if (open < 0) break
    const close = rest.indexOf('}}', open + 2)
    if (close < 0)
      throw invalidPattern(source, 'a placeholder opened with {{ is not closed with }}')
    const inner = rest.slice(open + 2, close).trim()
    const trait = inner.startsWith('traits.') ? inner.slice('traits.'.length) : ''
    if (trait.length === 0 || /[\s{}]/.test(trait)) {
      throw invalidPattern(source, `unknown placeholder {{${inner}}}, expected {{traits.NAME}}`)
    }
    if (open > 0) segments.push({ text: rest.slice(0, open) })
    segments.push({ trait })
    rest = rest.slice(close + 2)
  }
  if (rest.length > 0) segments.push({ text: rest })
  return segments
}

/** Turns a glob into an RE2 expression: `*` to `.*`, `?` to `.`, everything else quoted. */
function globToRegex(glob: string): string {
  let expression = ''
  let literal = ''
  for (const char of glob) {
    if (char !== '*' && char !== '?') {
      literal += char
      continue
    }
    if (literal.length > 0) expression += RE2JS.quote(literal)
    literal = ''
    expression += char === '*' ? '.*' : '.'
  }
  if (literal.length > 0) expression += RE2JS.quote(literal)
  return expression
}

function compileRegex(source: string, expression: string, kind: PatternKind): RE2JS {
  try {
    return RE2JS.compile(expression, RE2JS.DOTALL)
  } catch (error) {
    if (!(error instanceof RE2JSException)) throw error
    const detail = 'error' in error && typeof error.error === 'string' ? error.error : error.message
    const what = kind === 'regex' ? 'regular expression' : 'name pattern'
    throw new WritError(
      'policy.invalid_pattern',
      `invalid ${what} "${source}": ${detail} (expected RE2 syntax between ^ and $)`,
      { pattern: source },
      { cause: error },
    )
  }
}

/**
 * Compiles one expansion. Quoted values keep it valid except where a placeholder sits inside a
 * construct such as a character class, and then the pattern matches nothing.
 */
function tryCompile(expression: string): RE2JS | null {
  try {
    return RE2JS.compile(expression, RE2JS.DOTALL)
  } catch (error) {
    if (error instanceof RE2JSException) return null
    throw error
  }
}

function invalidPattern(source: string, expected: string): WritError {
  return new WritError('policy.invalid_pattern', `invalid name pattern "${source}": ${expected}`, {
    pattern: source,
  })
}
