import { WritError } from '../errors.js'

const UNIT_SECONDS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400 }

/**
 * Parses a duration such as `90s`, `10m`, `1h`, `1h30m` or `2d` into whole seconds.
 * Throws `duration.invalid` naming the value when it does not parse or is not positive.
 */
export function parseDuration(text: string, field = 'duration'): number {
  const trimmed = text.trim()
  if (!/^(\d+[smhd])+$/.test(trimmed)) {
    throw new WritError(
      'duration.invalid',
      `invalid ${field} "${text}": use a number with a unit s, m, h or d, such as 10m or 1h30m`,
      { field, value: text },
    )
  }
  let seconds = 0
  for (const match of trimmed.matchAll(/(\d+)([smhd])/g)) {
    seconds += Number(match[1]) * (UNIT_SECONDS[match[2] as string] as number)
  }
  if (seconds <= 0) {
    throw new WritError('duration.invalid', `invalid ${field} "${text}": must be more than zero`, {
      field,
      value: text,
    })
  }
  if (!Number.isSafeInteger(seconds) || seconds > MAX_DURATION_SECONDS) {
    throw new WritError(
      'duration.invalid',
      `invalid ${field} "${text}": must be at most ${MAX_DURATION_SECONDS / 86400}d`,
      { field, value: text },
    )
  }
  return seconds
}

/** The longest duration accepted anywhere: 3650 days, the default lifetime of the CA itself. */
export const MAX_DURATION_SECONDS = 3650 * 86400

/** Formats whole seconds as the shortest duration string, such as `1h30m`. */
export function formatDuration(seconds: number): string {
  if (seconds <= 0) return '0s'
  let rest = Math.floor(seconds)
  let text = ''
  for (const [unit, size] of [
    ['d', 86400],
    ['h', 3600],
    ['m', 60],
    ['s', 1],
  ] as const) {
    const count = Math.floor(rest / size)
    if (count > 0) {
      text += `${count}${unit}`
      rest -= count * size
    }
  }
  return text
}
