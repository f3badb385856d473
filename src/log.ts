/**
 * Structured operational logging: static messages, variables in fields, one JSON line per entry.
 * Audit events are separate (see `src/audit/`); never pass secrets as fields.
 */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error'

export interface Logger {
  debug(fields: Record<string, unknown>, message: string): void
  info(fields: Record<string, unknown>, message: string): void
  warn(fields: Record<string, unknown>, message: string): void
  error(fields: Record<string, unknown>, message: string): void
  child(fields: Record<string, unknown>): Logger
}

const LEVEL_ORDER: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 }

/** Creates a logger that writes JSON lines to `sink` (standard error by default). */
export function createLogger(
  options: {
    level?: LogLevel
    sink?: (line: string) => void
    base?: Record<string, unknown>
    now?: () => number
  } = {},
): Logger {
  const threshold = LEVEL_ORDER[options.level ?? 'info']
  const sink = options.sink ?? ((line: string) => process.stderr.write(`${line}\n`))
  const now = options.now ?? Date.now
  const base = options.base ?? {}

  function write(level: LogLevel, fields: Record<string, unknown>, message: string): void {
    if (LEVEL_ORDER[level] < threshold) return
    const entry = { time: new Date(now()).toISOString(), level, msg: message, ...base, ...fields }
    sink(JSON.stringify(entry, errorReplacer))
  }

  return {
    debug: (fields, message) => write('debug', fields, message),
    info: (fields, message) => write('info', fields, message),
    warn: (fields, message) => write('warn', fields, message),
    error: (fields, message) => write('error', fields, message),
    child: (fields) => createLogger({ ...options, base: { ...base, ...fields } }),
  }
}

/** A logger that drops every entry, for libraries and tests that pass no logger. */
export const silentLogger: Logger = {
  debug: () => {},
  info: () => {},
  warn: () => {},
  error: () => {},
  child: () => silentLogger,
}

function errorReplacer(_key: string, value: unknown): unknown {
  if (value instanceof Error) {
    const code = (value as { code?: unknown }).code
    return { name: value.name, message: value.message, ...(code === undefined ? {} : { code }) }
  }
  if (typeof value === 'bigint') return value.toString()
  return value
}
