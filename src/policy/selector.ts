/**
 * Label selectors choose MCP servers by their `metadata.labels`. A selector matches a server when
 * every entry matches: `env: dev` needs the label `env` with the value `dev`, and `env: '*'` needs
 * the label `env` with any value. The single entry `'*': '*'` matches every server, labelled or
 * not, and other entries beside it still have to match. An empty selector matches nothing, so a
 * selector left blank by mistake never grants access to every server.
 */
import { WritError } from '../errors.js'

/** A compiled label selector. */
export interface LabelSelector {
  /** The selector as written in the manifest. */
  readonly source: Readonly<Record<string, string>>
  /** Reports whether a server with these labels is selected. */
  matches(labels: Readonly<Record<string, string>> | undefined): boolean
}

/** The key and value that together select every server. */
export const WILDCARD = '*'

/**
 * Compiles a label selector. Throws `policy.invalid_selector` naming the entry when a value is
 * not a string or the key `*` has a value other than `*`.
 *
 * @example compileSelector({ env: 'dev' }).matches({ env: 'dev', team: 'a' }) // true
 */
export function compileSelector(source: Readonly<Record<string, string>>): LabelSelector {
  const entries = Object.entries(source)
  for (const [key, value] of entries) {
    if (typeof value !== 'string') {
      throw new WritError(
        'policy.invalid_selector',
        `invalid label selector: the value of "${key}" must be a string`,
        { key },
      )
    }
    if (key === WILDCARD && value !== WILDCARD) {
      throw new WritError(
        'policy.invalid_selector',
        `invalid label selector entry "*": "${value}": the key * selects every server and needs the value *`,
        { key, value },
      )
    }
  }
  const frozen = Object.freeze({ ...source })
  if (entries.length === 0) return { source: frozen, matches: () => false }
  return {
    source: frozen,
    matches(labels = {}) {
      return entries.every(([key, value]) => {
        if (key === WILDCARD) return true
        if (!Object.hasOwn(labels, key)) return false
        return value === WILDCARD || labels[key] === value
      })
    },
  }
}
