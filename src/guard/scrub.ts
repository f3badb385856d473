/**
 * Scrubbing of text that upstream MCP servers send towards a client: terminal escape sequences
 * and invisible or bidirectional characters are removed, and secrets found by the pattern
 * detectors become `[REDACTED:<detector>]`.
 */

import { findSecrets, MIN_SECRET_LENGTH } from './secret-detectors.js'

/**
 * Terminal escape sequences, longest forms first: CSI (`ESC [` or C1 `0x9B`), then OSC, DCS, SOS,
 * PM and APC strings, then two-character escapes, then any other C0 or C1 control except tab,
 * line feed and carriage return. An unterminated string runs to the end of the text, because a
 * terminal would swallow the rest too.
 */
const TERMINAL_CONTROL =
  '(?:\\x1b\\[|\\x9b)[0-?]*[ -/]*[@-~]' +
  '|(?:\\x1b[\\]PX^_]|[\\x90\\x98\\x9d\\x9e\\x9f])[^\\x07\\x1b\\x9c]*(?:\\x07|\\x1b\\\\|\\x9c)?' +
  '|\\x1b[ -/]*[0-~]' +
  '|[\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f-\\x9f]'

/**
 * Invisible and bidirectional characters: zero-width space and non-joiner, the bidi marks,
 * embeddings, overrides and isolates, word joiner and invisible operators (U+2060 to U+2064),
 * byte order mark, Arabic letter mark and Mongolian vowel separator. The tag block (U+E0000 to
 * U+E007F) is removed because it can spell out text that a model reads and a person does not
 * see. A zero-width joiner is removed too, except between two pictographs, where it builds one
 * emoji.
 */
const INVISIBLE =
  '[\\u200b\\u200c\\u200e\\u200f\\u202a-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff\\u061c\\u180e]' +
  '|[\\u{e0000}-\\u{e007f}]' +
  '|\\u200d(?<!\\p{Extended_Pictographic}[\\u{fe0f}\\u{1f3fb}-\\u{1f3ff}]?\\u200d)' +
  '|\\u200d(?![\\p{Extended_Pictographic}])'

const HIDDEN = new RegExp(`(?<terminal>${TERMINAL_CONTROL})|(?<invisible>${INVISIBLE})`, 'gu')
/** Every character that can start a match of `HIDDEN`: one class, so clean text is scanned fast. */
const HAS_HIDDEN =
  /[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff\u061c\u180e\u{e0000}-\u{e007f}]/u

/** Counts of what a scrub removed or replaced, by kind and by secret detector. */
export class ScrubTally {
  /** Characters removed as parts of terminal escape sequences or lone control characters. */
  terminal = 0
  /** Invisible or bidirectional characters removed. */
  invisible = 0
  readonly redactions = new Map<string, number>()

  get changed(): boolean {
    return this.terminal > 0 || this.invisible > 0 || this.redactions.size > 0
  }

  /** Returns the tally as audit details: detector names and counts, never the values. */
  details(): Record<string, unknown> {
    const details: Record<string, unknown> = {}
    if (this.redactions.size > 0) {
      details.redactions = [...this.redactions].map(([detector, count]) => ({ detector, count }))
    }
    if (this.terminal > 0) details.removedTerminalChars = this.terminal
    if (this.invisible > 0) details.removedInvisibleChars = this.invisible
    return details
  }
}

/**
 * Removes terminal escapes and invisible characters from `text`, then replaces secrets, adding
 * what it did to `tally`. Returns `text` itself when nothing needed changing.
 *
 * @example scrubText('\x1b[31mghp_…\x1b[0m', tally) // '[REDACTED:github-token]'
 */
export function scrubText(text: string, tally: ScrubTally): string {
  return redactSecrets(stripHidden(text, tally), tally)
}

/** Removes terminal escape sequences and invisible characters, counting them in `tally`. */
export function stripHidden(text: string, tally: ScrubTally): string {
  if (!HAS_HIDDEN.test(text)) return text
  return text.replace(HIDDEN, (match, ...rest) => {
    const groups = rest.at(-1) as { terminal?: string }
    if (groups.terminal !== undefined) tally.terminal += match.length
    else tally.invisible += match.length
    return ''
  })
}

/** Replaces each secret in `text` with `[REDACTED:<detector>]`, counting them in `tally`. */
export function redactSecrets(text: string, tally: ScrubTally): string {
  if (text.length < MIN_SECRET_LENGTH) return text
  const secrets = findSecrets(text)
  if (secrets.length === 0) return text
  let redacted = ''
  let position = 0
  for (const secret of secrets) {
    redacted += `${text.slice(position, secret.start)}[REDACTED:${secret.detector}]`
    position = secret.end
    tally.redactions.set(secret.detector, (tally.redactions.get(secret.detector) ?? 0) + 1)
  }
  return redacted + text.slice(position)
}

/**
 * Scrubs every string in a JSON value, object keys included. Returns `value` itself when nothing
 * changed and a copy with the changed parts otherwise, so a clean message is not copied.
 */
export function scrubValue<T>(value: T, tally: ScrubTally): T {
  return mapStrings(value, (text) => scrubText(text, tally)) as T
}

/**
 * Replaces secrets in every string of a JSON value and leaves other characters alone, for copies
 * kept in the audit log. Returns `value` itself when it contains no secret.
 */
export function redactSecretsInValue<T>(value: T, tally = new ScrubTally()): T {
  return mapStrings(value, (text) => redactSecrets(text, tally)) as T
}

function mapStrings(value: unknown, map: (text: string) => string): unknown {
  if (typeof value === 'string') return map(value)
  if (Array.isArray(value)) {
    let copy: unknown[] | undefined
    for (let index = 0; index < value.length; index++) {
      const item = value[index]
      const mapped = mapStrings(item, map)
      if (mapped !== item) {
        copy ??= value.slice()
        copy[index] = mapped
      }
    }
    return copy ?? value
  }
  if (typeof value === 'object' && value !== null) {
    let changed = false
    const entries: Array<[string, unknown]> = []
    for (const [key, item] of Object.entries(value)) {
      const mappedKey = map(key)
      const mapped = mapStrings(item, map)
      if (mappedKey !== key || mapped !== item) changed = true
      entries.push([mappedKey, mapped])
    }
    return changed ? Object.fromEntries(entries) : value
  }
  return value
}
