/**
 * Pattern detectors for secrets in free text: private keys, cloud and SaaS tokens, JWTs and
 * high-entropy values that follow `Bearer` or an `api_key=`-style name. All detectors are joined
 * into one regular expression, so a string is scanned once however many detectors there are.
 */

/** One secret found in a string: the detector that matched and the characters to replace. */
export interface SecretMatch {
  detector: string
  start: number
  end: number
}

/**
 * One detector. `pattern` is a regular expression source without flags and without capture
 * groups of its own. When `prefix` is set, the match is `prefix` followed by `pattern`, and only
 * the `pattern` part is the secret (the prefix is context such as `aws_secret_access_key=`).
 * `refine` returns the detector name to report for a candidate, or `undefined` for a candidate
 * that has the shape but is not a secret.
 */
interface Detector {
  name: string
  pattern: string
  prefix?: string
  refine?: (value: string) => string | undefined
}

/** Matches `word` in any letter case, for context words inside a case-sensitive expression. */
function anyCase(word: string): string {
  return [...word]
    .map((char) => {
      const lower = char.toLowerCase()
      const upper = char.toUpperCase()
      return lower === upper ? char.replace(/[.*+?^${}()|[\]\\-]/g, '\\$&') : `[${lower}${upper}]`
    })
    .join('')
}

/** A separator between the words of a key name: `_`, `-`, `.`, a space or nothing. */
const SEPARATOR = '[_.\\s-]?'
/** The characters between a key name and its value in JSON, YAML, env files and query strings. */
const ASSIGN = `["']?\\s*[:=]\\s*["']?`

/** 3.5 bits per character: the minimum Shannon entropy for a generic value to count as a secret. */
const MIN_GENERIC_ENTROPY = 3.5

/**
 * Returns the Shannon entropy of `value` in bits per character. Random tokens of the base64 or
 * hex alphabets score well above 3.5, words and repeated characters below it.
 */
export function shannonEntropy(value: string): number {
  const counts = new Map<string, number>()
  for (const char of value) counts.set(char, (counts.get(char) ?? 0) + 1)
  let entropy = 0
  for (const count of counts.values()) {
    const share = count / value.length
    entropy -= share * Math.log2(share)
  }
  return entropy
}

function highEntropy(name: string): (value: string) => string | undefined {
  return (value) => (shannonEntropy(value) >= MIN_GENERIC_ENTROPY ? name : undefined)
}

/** Accepts a JWT only when its header is base64url JSON naming an `alg`, as RFC 7515 requires. */
function isJwt(value: string): boolean {
  const header = value.slice(0, value.indexOf('.'))
  try {
    const decoded = JSON.parse(Buffer.from(header, 'base64url').toString('utf8')) as unknown
    if (typeof decoded !== 'object' || decoded === null) return false
    return typeof (decoded as { alg?: unknown }).alg === 'string'
  } catch {
    return false
  }
}

/**
 * Every detector, most specific first: where two match at the same position, the earlier one
 * wins. The leftmost match wins over both, so a JWT after `Bearer` is found by `bearer-token`,
 * which reports it as `jwt`.
 */
const DETECTORS: readonly Detector[] = [
  {
    name: 'private-key',
    // A key cut off before its END line is still replaced up to the end of its base64 body.
    pattern:
      '-----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----(?:[\\s\\S]*?-----END[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----|[A-Za-z0-9+/=\\s\\\\:-]*)',
  },
  { name: 'aws-access-key', pattern: '\\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\\b' },
  {
    name: 'aws-secret-key',
    prefix: `${anyCase('aws')}${SEPARATOR}(?:${anyCase('secret')}${SEPARATOR}(?:${anyCase('access')}${SEPARATOR})?${anyCase('key')}|${anyCase('sk')})${ASSIGN}`,
    pattern: '[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+])',
  },
  {
    name: 'github-token',
    pattern: '\\b(?:gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{50,240})\\b',
  },
  { name: 'gitlab-token', pattern: '\\bglpat-[A-Za-z0-9_-]{20,}' },
  { name: 'slack-token', pattern: '\\bxox[abposre]-[A-Za-z0-9-]{10,250}' },
  {
    name: 'slack-webhook',
    pattern: 'https://hooks\\.slack\\.com/services/T[A-Za-z0-9_]+/B[A-Za-z0-9_]+/[A-Za-z0-9_]+',
  },
  { name: 'google-api-key', pattern: '\\bAIza[0-9A-Za-z_-]{35}' },
  { name: 'stripe-key', pattern: '\\b(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{16,247}' },
  { name: 'anthropic-key', pattern: '\\bsk-ant-[A-Za-z0-9]{2,10}-[A-Za-z0-9_-]{32,}' },
  {
    name: 'openai-key',
    pattern:
      '\\bsk-(?:proj|svcacct|admin)-[A-Za-z0-9_-]{32,}|\\bsk-[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20}',
  },
  { name: 'npm-token', pattern: '\\bnpm_[A-Za-z0-9]{36}\\b' },
  {
    name: 'jwt',
    pattern: '\\beyJ[A-Za-z0-9_-]{8,}\\.[A-Za-z0-9_-]{2,}\\.[A-Za-z0-9_-]*',
    refine: (value) => (isJwt(value) ? 'jwt' : undefined),
  },
  {
    name: 'bearer-token',
    prefix: `\\b${anyCase('bearer')}\\s+`,
    pattern: '[\\w.~+/-]{20,}=*',
    refine: (value) => (isJwt(value) ? 'jwt' : highEntropy('bearer-token')(value)),
  },
  {
    name: 'url-password',
    prefix: '\\b[a-zA-Z][a-zA-Z0-9+.-]{1,20}://[^\\s/:@]{1,128}:',
    pattern: '[^\\s/@]{3,128}(?=@)',
  },
  {
    name: 'generic-api-key',
    prefix: `(?:${[
      `${anyCase('api')}${SEPARATOR}${anyCase('key')}`,
      `${anyCase('access')}${SEPARATOR}${anyCase('token')}`,
      `${anyCase('auth')}${SEPARATOR}${anyCase('token')}`,
      `${anyCase('client')}${SEPARATOR}${anyCase('secret')}`,
      `${anyCase('secret')}${SEPARATOR}${anyCase('key')}`,
    ].join('|')})${ASSIGN}`,
    pattern: '[\\w.~+/-]{16,}',
    refine: highEntropy('generic-api-key'),
  },
]

/**
 * 20 characters: no detector matches a shorter string (an AWS access key id is exactly 20), so
 * shorter strings skip the scan.
 */
export const MIN_SECRET_LENGTH = 20

/**
 * The joined expression. Detector `i` owns groups `p<i>` (its prefix, possibly empty) and `s<i>`
 * (the secret), so the match shows which detector fired and where the secret starts.
 */
const COMBINED_SOURCE = DETECTORS.map(
  (detector, index) => `(?<p${index}>${detector.prefix ?? ''})(?<s${index}>${detector.pattern})`,
).join('|')

/** Builds a fresh global expression, because `lastIndex` makes a shared one unsafe to re-enter. */
function combinedPattern(): RegExp {
  return new RegExp(COMBINED_SOURCE, 'g')
}

const SHARED = combinedPattern()

/**
 * Returns every secret in `text`, in order, without overlaps. Candidates that a detector's check
 * rejects (a `Bearer` value with low entropy, an `eyJ…` string that is not a JWT) are skipped,
 * and the scan resumes one character after their start.
 *
 * @example findSecrets('key AKIAIOSFODNN7EXAMPLE') // [{ detector: 'aws-access-key', start: 4, end: 24 }]
 */
export function findSecrets(text: string): SecretMatch[] {
  if (text.length < MIN_SECRET_LENGTH) return []
  const pattern = SHARED.lastIndex === 0 ? SHARED : combinedPattern()
  const found: SecretMatch[] = []
  try {
    for (let match = pattern.exec(text); match !== null; match = pattern.exec(text)) {
      const hit = classify(match)
      if (hit !== undefined) found.push(hit)
      else pattern.lastIndex = match.index + 1
    }
  } finally {
    pattern.lastIndex = 0
  }
  return found
}

function classify(match: RegExpExecArray): SecretMatch | undefined {
  const groups = match.groups ?? {}
  for (let index = 0; index < DETECTORS.length; index++) {
    const secret = groups[`s${index}`]
    if (secret === undefined) continue
    const detector = DETECTORS[index]!
    const name = detector.refine === undefined ? detector.name : detector.refine(secret)
    if (name === undefined) return undefined
    const start = match.index + (groups[`p${index}`] ?? '').length
    return { detector: name, start, end: start + secret.length }
  }
  return undefined
}
