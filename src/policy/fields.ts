/**
 * Field checks shared by the manifest validators. Each check throws a `FieldError` carrying the
 * path of the offending field. `parseManifests` turns it into a `manifest.invalid` error that also
 * names the file, the document and the line.
 */
import { WritError } from '../errors.js'
import { parseDuration } from '../lib/duration.js'

/** The location of a field inside a document, such as `['spec', 'allow', 'tools', 1]`. */
export type FieldPath = readonly (string | number)[]

/** A validation failure at one field. */
export class FieldError extends Error {
  readonly path: FieldPath

  constructor(path: FieldPath, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'FieldError'
    this.path = path
  }
}

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]*$/
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/
const LABEL_NAME = /^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/
const ISO_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$/

/** 63 characters: the longest resource name, label name or label value, as in Kubernetes. */
export const MAX_NAME_LENGTH = 63

/** Formats a path as `spec.allow.tools[1]`, quoting keys that are not identifiers. */
export function formatPath(path: FieldPath): string {
  let text = ''
  for (const part of path) {
    if (typeof part === 'number') text += `[${part}]`
    else if (IDENTIFIER.test(part)) text += text.length === 0 ? part : `.${part}`
    else text += `[${JSON.stringify(part)}]`
  }
  return text
}

/** Describes a parsed value for an error message, such as `the number 5` or `a list`. */
export function describeValue(value: unknown): string {
  if (value === null || value === undefined) return 'nothing'
  if (Array.isArray(value)) return 'a list'
  if (value instanceof Date) return 'a timestamp (quote it to make it a string)'
  switch (typeof value) {
    case 'string':
      return `the string ${JSON.stringify(value)}`
    case 'number':
      return `the number ${value} (quote it to make it a string)`
    case 'boolean':
      return `the boolean ${value} (quote it to make it a string)`
    case 'object':
      return 'a mapping'
    default:
      return `a ${typeof value}`
  }
}

/** Checks that a value is a mapping (a YAML map or JSON object) and returns it. */
export function expectMapping(value: unknown, path: FieldPath): Record<string, unknown> {
  if (
    typeof value === 'object' &&
    value !== null &&
    !Array.isArray(value) &&
    !(value instanceof Date)
  ) {
    return value as Record<string, unknown>
  }
  throw new FieldError(path, `expected a mapping, got ${describeValue(value)}`)
}

/**
 * Rejects any key of `object` that is not in `allowed`, naming the key and the allowed ones. A
 * misspelt field is an error rather than ignored, because an ignored deny rule would grant access.
 */
export function expectKnownFields(
  object: Record<string, unknown>,
  path: FieldPath,
  allowed: readonly string[],
): void {
  for (const key of Object.keys(object)) {
    if (!allowed.includes(key)) {
      throw new FieldError(
        [...path, key],
        `unknown field ${JSON.stringify(key)} (allowed fields: ${allowed.join(', ')})`,
      )
    }
  }
}

/** Checks that a required field is present, saying what belongs there. */
export function expectPresent(
  object: Record<string, unknown>,
  key: string,
  path: FieldPath,
  expected: string,
): unknown {
  const value = object[key]
  if (value === undefined || value === null) {
    throw new FieldError([...path, key], `missing required field, expected ${expected}`)
  }
  return value
}

/** Checks that a value is a non-empty string and returns it. */
export function expectString(value: unknown, path: FieldPath): string {
  if (typeof value !== 'string') {
    throw new FieldError(path, `expected a string, got ${describeValue(value)}`)
  }
  if (value.length === 0) throw new FieldError(path, 'expected a non-empty string')
  return value
}

/** Checks an optional string field: absent is fine, anything else must be a non-empty string. */
export function optionalString(
  object: Record<string, unknown>,
  key: string,
  path: FieldPath,
): string | undefined {
  const value = object[key]
  return value === undefined ? undefined : expectString(value, [...path, key])
}

/** Checks that a value is a list of non-empty strings and returns it. */
export function expectStringList(value: unknown, path: FieldPath): string[] {
  if (!Array.isArray(value)) {
    throw new FieldError(path, `expected a list of strings, got ${describeValue(value)}`)
  }
  return value.map((item, index) => expectString(item, [...path, index]))
}

/** Checks that a value is a mapping whose values are all strings (possibly empty). */
export function expectStringMap(value: unknown, path: FieldPath): Record<string, string> {
  const map = expectMapping(value, path)
  for (const [key, item] of Object.entries(map)) {
    if (typeof item !== 'string') {
      throw new FieldError([...path, key], `expected a string, got ${describeValue(item)}`)
    }
  }
  return map as Record<string, string>
}

/** Checks a resource name: lowercase letters, digits and `-`, as a DNS label. */
export function expectName(value: unknown, path: FieldPath): string {
  const name = expectString(value, path)
  if (name.length > MAX_NAME_LENGTH || !DNS_LABEL.test(name)) {
    throw new FieldError(
      path,
      `invalid name ${JSON.stringify(name)}: use at most ${MAX_NAME_LENGTH} lowercase letters, ` +
        `digits and '-', starting and ending with a letter or digit`,
    )
  }
  return name
}

/** Checks a label key: an optional DNS prefix and `/`, then a name such as `env` or `app.kind`. */
export function checkLabelKey(key: string, path: FieldPath): void {
  const slash = key.lastIndexOf('/')
  const prefix = slash < 0 ? '' : key.slice(0, slash)
  const name = slash < 0 ? key : key.slice(slash + 1)
  const prefixValid = slash < 0 || (prefix.length <= 253 && DNS_SUBDOMAIN.test(prefix))
  if (!prefixValid || name.length > MAX_NAME_LENGTH || !LABEL_NAME.test(name)) {
    throw new FieldError(
      path,
      `invalid label key ${JSON.stringify(key)}: use at most ${MAX_NAME_LENGTH} letters, digits, ` +
        `'-', '_' or '.', starting and ending with a letter or digit, with an optional DNS prefix and '/'`,
    )
  }
}

/** Checks a label value: empty, or up to 63 letters, digits, `-`, `_` and `.`. */
export function checkLabelValue(value: string, path: FieldPath): void {
  if (value.length > MAX_NAME_LENGTH || (value.length > 0 && !LABEL_NAME.test(value))) {
    throw new FieldError(
      path,
      `invalid label value ${JSON.stringify(value)}: use at most ${MAX_NAME_LENGTH} letters, ` +
        `digits, '-', '_' or '.', starting and ending with a letter or digit`,
    )
  }
}

/** Checks a duration such as `10m` or `1h30m` and returns it unchanged. */
export function expectDuration(value: unknown, path: FieldPath): string {
  const text = expectString(value, path)
  try {
    parseDuration(text)
  } catch (error) {
    if (error instanceof WritError) throw new FieldError(path, error.message, { cause: error })
    throw error
  }
  return text
}

/** Checks an ISO 8601 time with a zone, such as `2030-01-01T00:00:00Z`, and returns it. */
export function expectTime(value: unknown, path: FieldPath): string {
  const text = expectString(value, path)
  if (!ISO_TIME.test(text) || Number.isNaN(Date.parse(text))) {
    throw new FieldError(
      path,
      `invalid time ${JSON.stringify(text)}: use an ISO 8601 time with a zone, such as 2030-01-01T00:00:00Z`,
    )
  }
  return text
}

/** Rethrows a `WritError` from a compiler (pattern, selector, reference) as a field error. */
export function atField<T>(path: FieldPath, compile: () => T): T {
  try {
    return compile()
  } catch (error) {
    if (error instanceof WritError) throw new FieldError(path, error.message, { cause: error })
    throw error
  }
}
