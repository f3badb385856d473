/** Replacement for every secret value found in logged, audited or returned content. */
export const REDACTED = '[REDACTED]'

/** Replaces secret values in text and in JSON values, built once per upstream. */
export interface Redactor {
  text(value: string): string
  /** Returns the value unchanged when it contains no secret, or a redacted deep copy. */
  value<T>(value: T): T
  /** Serialises a value to JSON with every secret replaced. */
  json(value: unknown): string
}

/** Returns a secret as written, JSON-escaped once and JSON-escaped twice, without repeats. */
function escapedForms(secret: string): string[] {
  const once = JSON.stringify(secret).slice(1, -1)
  const twice = JSON.stringify(once).slice(1, -1)
  return [secret, once, twice]
}

/**
 * Creates a redactor for the given secret values. Empty strings are ignored because they would
 * match everywhere.
 *
 * @example createRedactor(['hunter2']).text('token=hunter2') // 'token=[REDACTED]'
 */
export function createRedactor(secrets: readonly string[]): Redactor {
  // A secret can reach a string in escaped form too: a tool that returns JSON as text (an
  // environment dump, say) carries a newline or quote in a secret as `\n` or `\"`, and that text
  // serialised again escapes it twice. Every form is searched for, longest first, so a secret
  // that contains another is replaced whole.
  const values = [
    ...new Set(secrets.filter((secret) => secret.length > 0).flatMap(escapedForms)),
  ].sort((a, b) => b.length - a.length)
  const escaped = [...new Set(values.map((form) => JSON.stringify(form).slice(1, -1)))]

  function text(input: string): string {
    let output = input
    for (const secret of values) {
      if (output.includes(secret)) output = output.replaceAll(secret, REDACTED)
    }
    return output
  }

  function walk(input: unknown): unknown {
    if (typeof input === 'string') return text(input)
    if (Array.isArray(input)) return input.map(walk)
    if (typeof input === 'object' && input !== null) {
      const copy: Record<string, unknown> = {}
      for (const [key, item] of Object.entries(input)) copy[text(key)] = walk(item)
      return copy
    }
    return input
  }

  function json(input: unknown): string {
    const serialised = JSON.stringify(input)
    if (values.length === 0) return serialised
    // Checking the serialised form first keeps the common case (no secret present) to one scan.
    if (!escaped.some((secret) => serialised.includes(secret))) return serialised
    return JSON.stringify(walk(input))
  }

  function value<T>(input: T): T {
    if (values.length === 0) return input
    const serialised = JSON.stringify(input)
    if (serialised === undefined || !escaped.some((secret) => serialised.includes(secret))) {
      return input
    }
    return walk(input) as T
  }

  return { text, value, json }
}
