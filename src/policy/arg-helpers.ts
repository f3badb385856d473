/**
 * Helper functions that argument rules call: path containment, URL host matching and e-mail
 * domain matching. Each returns false for anything it cannot read with certainty, so a value
 * crafted to be parsed one way here and another way by the upstream server is rejected rather
 * than allowed. None of them does I/O: the gateway cannot see the upstream's file system, so it
 * cannot resolve symbolic links, and a symbolic link inside an allowed directory that points out
 * of it is for the upstream server to refuse.
 */

/** Percent-decoding passes tried before a path that still changes is rejected as over-encoded. */
const MAX_DECODE_PASSES = 3

/** Schemes whose URLs `hostIn` reads; any other scheme matches nothing. */
const HOST_SCHEMES = ['http:', 'https:', 'ws:', 'wss:']

// Control characters never appear in a path, URL or address the helpers accept, nor does
// whitespace in a URL or address.
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/
const CONTROL_OR_SPACE = /[\u0000-\u0020\u007f-\u009f\u2028\u2029\s]/
const ABSOLUTE_URL = /^[a-z][a-z0-9+.-]*:\/\//i
const IPV4 = /^\d{1,3}(\.\d{1,3}){3}$/

/**
 * Reports whether `path` names `dir` or something inside it. Both must be absolute POSIX paths.
 * Before comparing, backslashes count as `/`, percent-encoding is decoded, repeated slashes
 * collapse and `.` segments drop. Rejected outright: non-strings, NUL and other control
 * characters, relative paths, `~` home references, a leading `//` or `\\` (a UNC share on
 * Windows), malformed percent-encoding, and any `..` segment or segment of only dots and spaces.
 * A `..` is rejected even when it would stay inside, because an upstream that follows symbolic
 * links resolves `link/..` to the parent of the link's target, not lexically.
 *
 * @example isWithin('/workspace//notes/./a.txt', '/workspace') // true
 */
export function isWithin(path: unknown, dir: unknown): boolean {
  if (typeof path !== 'string' || typeof dir !== 'string') return false
  const base = normalizePath(dir)
  if (base === undefined) return false
  for (const candidate of variantsOf(path)) {
    const normalized = normalizePath(candidate)
    if (normalized === undefined) return false
    if (!(normalized === base || base === '/' || normalized.startsWith(`${base}/`))) return false
  }
  return true
}

/**
 * Returns the path and, when Unicode compatibility folding changes it, the folded form too, so
 * that a fullwidth solidus or dot that an upstream folds to `/` or `.` is checked as well.
 */
function variantsOf(path: string): string[] {
  const folded = path.normalize('NFKC')
  return folded === path ? [path] : [path, folded]
}

/** Returns the absolute, normalised form of `path`, or undefined when it is rejected. */
export function normalizePath(path: string): string | undefined {
  const decoded = percentDecode(path)
  if (decoded === undefined || decoded.length === 0) return undefined
  if (CONTROL.test(decoded)) return undefined
  const slashed = decoded.replaceAll('\\', '/')
  if (!slashed.startsWith('/') || slashed.startsWith('//')) return undefined
  const segments: string[] = []
  for (const segment of slashed.split('/')) {
    if (segment === '' || segment === '.') continue
    // `..`, and names of only dots and spaces that Windows trims to `..` or `.`.
    if (/^[. ]+$/.test(segment)) return undefined
    if (segment.startsWith('~')) return undefined
    segments.push(segment)
  }
  return `/${segments.join('/')}`
}

/** Decodes percent-encoding until the text stops changing, or returns undefined. */
function percentDecode(text: string): string | undefined {
  let current = text
  for (let pass = 0; pass < MAX_DECODE_PASSES; pass++) {
    if (!current.includes('%')) return current
    let next: string
    try {
      next = decodeURIComponent(current)
    } catch {
      return undefined
    }
    if (next === current) return current
    current = next
  }
  return current.includes('%') ? undefined : current
}

/**
 * Reports whether `url` is an http, https, ws or wss URL whose host equals one of `domains` or
 * is a subdomain of one. Rejected: URLs with user information (`https://good.com@evil.com`),
 * backslashes, whitespace or control characters, URLs without a host, and scheme-relative or
 * relative references. Hosts compare after lowercasing, IDNA conversion and dropping a trailing
 * dot. An IP address matches only an identical entry, never as a "subdomain".
 *
 * @example hostIn('https://api.example.com/v1', ['example.com']) // true
 */
export function hostIn(url: unknown, domains: unknown): boolean {
  if (typeof url !== 'string' || !Array.isArray(domains)) return false
  if (CONTROL_OR_SPACE.test(url) || url.includes('\\') || !ABSOLUTE_URL.test(url)) return false
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch {
    return false
  }
  if (!HOST_SCHEMES.includes(parsed.protocol)) return false
  if (parsed.username !== '' || parsed.password !== '') return false
  // The URL parser drops an empty user information part (`http://@evil.com`); reject it too.
  const authority = url.slice(url.indexOf('//') + 2).split(/[/?#]/, 1)[0] ?? ''
  if (authority.includes('@')) return false
  const host = canonicalHost(parsed.hostname)
  return host !== undefined && matchesDomain(host, domains)
}

/**
 * Reports whether `address` is a plain e-mail address (`local@domain`, no display name, comment,
 * quoting or route) whose domain equals one of `domains` or is a subdomain of one. Addresses with
 * more than one `@`, angle brackets, commas, semicolons, colons, quotes, parentheses, whitespace
 * or control characters are rejected, because mail software may read another domain out of them.
 *
 * @example emailDomainIn('dev@mail.example.com', ['example.com']) // true
 */
export function emailDomainIn(address: unknown, domains: unknown): boolean {
  if (typeof address !== 'string' || !Array.isArray(domains)) return false
  if (CONTROL_OR_SPACE.test(address) || /[<>,;:"()[\]\\]/.test(address)) return false
  const at = address.indexOf('@')
  if (at <= 0 || at !== address.lastIndexOf('@')) return false
  const domainPart = address.slice(at + 1)
  if (domainPart.length === 0 || domainPart.includes('%')) return false
  const domain = canonicalHost(domainPart)
  if (domain === undefined || IPV4.test(domain)) return false
  return matchesDomain(domain, domains)
}

/** Lowercases and IDNA-converts a host name, dropping one trailing dot. */
function canonicalHost(host: string): string | undefined {
  const trimmed = host.endsWith('.') ? host.slice(0, -1) : host
  if (trimmed.length === 0) return undefined
  if (trimmed.startsWith('[')) return trimmed.toLowerCase()
  // A port, even the scheme's default one that the URL parser drops, makes it no host name.
  if (/[:/?#@\\]/.test(trimmed)) return undefined
  let parsed: URL
  try {
    parsed = new URL(`http://${trimmed}/`)
  } catch {
    return undefined
  }
  if (parsed.username !== '' || parsed.port !== '' || parsed.pathname !== '/') return undefined
  return parsed.hostname.endsWith('.') ? parsed.hostname.slice(0, -1) : parsed.hostname
}

/** Compares a canonical host with each entry: equal, or a subdomain unless it is an IP address. */
function matchesDomain(host: string, domains: readonly unknown[]): boolean {
  const isAddress = IPV4.test(host) || host.startsWith('[')
  for (const entry of domains) {
    if (typeof entry !== 'string') continue
    const domain = canonicalHost(entry)
    if (domain === undefined) continue
    if (host === domain) return true
    if (!isAddress && host.endsWith(`.${domain}`)) return true
  }
  return false
}
