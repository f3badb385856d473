import { WritError } from '../errors.js'

/** The longest SPIFFE ID the SPIFFE specification allows, in bytes of its UTF-8 form. */
export const MAX_SPIFFE_ID_BYTES = 2048

const SCHEME_PREFIX = 'spiffe://'
const TRUST_DOMAIN_CHARS = /^[a-z0-9._-]+$/
const SEGMENT_CHARS = /^[A-Za-z0-9._-]+$/

/** The outcome of `SpiffeId.tryParse`. */
export type SpiffeIdParseResult = { ok: true; id: SpiffeId } | { ok: false; reason: string }

/**
 * A SPIFFE ID such as `spiffe://writ.local/bot/ci-agent`. Instances exist only after parsing, so
 * holding one proves the text follows the SPIFFE ID rules.
 *
 * @example
 *   const id = SpiffeId.parse('spiffe://writ.local/bot/ci-agent')
 *   id.trustDomain // 'writ.local'
 *   id.child('task', 't-1').toString() // 'spiffe://writ.local/bot/ci-agent/task/t-1'
 */
export class SpiffeId {
  readonly #trustDomain: string
  readonly #path: string

  private constructor(trustDomain: string, path: string) {
    this.#trustDomain = trustDomain
    this.#path = path
    Object.freeze(this)
  }

  /** Parses a SPIFFE ID; throws `identity.invalid_spiffe_id` naming the value and the broken rule. */
  static parse(text: string): SpiffeId {
    const result = SpiffeId.tryParse(text)
    if (!result.ok) {
      throw new WritError(
        'identity.invalid_spiffe_id',
        `invalid SPIFFE ID "${truncate(text)}": ${result.reason}`,
        {
          value: text,
          reason: result.reason,
        },
      )
    }
    return result.id
  }

  /** Parses a SPIFFE ID and returns the broken rule instead of throwing. */
  static tryParse(text: string): SpiffeIdParseResult {
    const reason = findViolation(text)
    if (reason !== undefined) return { ok: false, reason }
    const rest = text.slice(SCHEME_PREFIX.length)
    const slash = rest.indexOf('/')
    const trustDomain = slash === -1 ? rest : rest.slice(0, slash)
    const path = slash === -1 ? '' : rest.slice(slash)
    return { ok: true, id: new SpiffeId(trustDomain, path) }
  }

  /**
   * Builds a SPIFFE ID from a trust domain and path segments, checking both.
   *
   * @example
   *   SpiffeId.fromParts('writ.local', ['bot', 'ci-agent']).toString()
   */
  static fromParts(trustDomain: string, segments: readonly string[]): SpiffeId {
    const path = segments.map((segment) => `/${segment}`).join('')
    return SpiffeId.parse(`${SCHEME_PREFIX}${trustDomain}${path}`)
  }

  /** The trust domain name, such as `writ.local`. */
  get trustDomain(): string {
    return this.#trustDomain
  }

  /** The path with its leading slash, such as `/bot/ci-agent`, or `''` for a trust domain ID. */
  get path(): string {
    return this.#path
  }

  /** The path segments, such as `['bot', 'ci-agent']`. */
  get segments(): string[] {
    return this.#path === '' ? [] : this.#path.slice(1).split('/')
  }

  /** Returns a new ID with the segments appended to this ID's path. */
  child(...segments: string[]): SpiffeId {
    return SpiffeId.fromParts(this.#trustDomain, [...this.segments, ...segments])
  }

  /** Reports whether this ID belongs to the trust domain. */
  memberOf(trustDomain: string): boolean {
    return this.#trustDomain === trustDomain
  }

  equals(other: SpiffeId): boolean {
    return this.toString() === other.toString()
  }

  toString(): string {
    return `${SCHEME_PREFIX}${this.#trustDomain}${this.#path}`
  }

  toJSON(): string {
    return this.toString()
  }
}

/** Returns the first SPIFFE ID rule that `text` breaks, or undefined when it breaks none. */
function findViolation(text: string): string | undefined {
  if (typeof text !== 'string' || text === '') return 'the ID is empty'
  if (Buffer.byteLength(text, 'utf8') > MAX_SPIFFE_ID_BYTES) {
    return `the ID is longer than ${MAX_SPIFFE_ID_BYTES} bytes`
  }
  if (!text.startsWith(SCHEME_PREFIX)) {
    return 'the scheme must be "spiffe" in lowercase, followed by "://"'
  }
  if (text.includes('?')) return 'a query is not allowed'
  if (text.includes('#')) return 'a fragment is not allowed'
  const rest = text.slice(SCHEME_PREFIX.length)
  const slash = rest.indexOf('/')
  const trustDomain = slash === -1 ? rest : rest.slice(0, slash)
  return checkTrustDomain(trustDomain) ?? (slash === -1 ? undefined : checkPath(rest.slice(slash)))
}

function checkTrustDomain(trustDomain: string): string | undefined {
  if (trustDomain === '') return 'the trust domain is missing'
  if (trustDomain.includes('@')) return 'user info is not allowed in the trust domain'
  if (trustDomain.includes(':')) return 'a port is not allowed in the trust domain'
  if (!TRUST_DOMAIN_CHARS.test(trustDomain)) {
    const bad = firstBadCharacter(trustDomain, TRUST_DOMAIN_CHARS)
    return `the trust domain contains "${bad}"; only lowercase letters, digits, ".", "-" and "_" are allowed`
  }
  return undefined
}

/** Checks a path that starts with "/". */
function checkPath(path: string): string | undefined {
  if (path === '/') return 'a trailing slash is not allowed'
  const segments = path.slice(1).split('/')
  for (const [index, segment] of segments.entries()) {
    if (segment === '') {
      return index === segments.length - 1
        ? 'a trailing slash is not allowed'
        : 'empty path segments are not allowed'
    }
    if (segment === '.' || segment === '..') {
      return `the path segment "${segment}" is not allowed`
    }
    if (!SEGMENT_CHARS.test(segment)) {
      const bad = firstBadCharacter(segment, SEGMENT_CHARS)
      return `the path segment "${segment}" contains "${bad}"; only letters, digits, ".", "-" and "_" are allowed`
    }
  }
  return undefined
}

function firstBadCharacter(text: string, allowed: RegExp): string {
  for (const character of text) {
    if (!allowed.test(character)) return character
  }
  return ''
}

function truncate(text: string): string {
  if (typeof text !== 'string') return String(text)
  return text.length > 120 ? `${text.slice(0, 120)}...` : text
}
