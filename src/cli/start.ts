import { DEFAULT_MAX_RESPONSE_BYTES, type LimitsSettings } from '../guard/limits.js'
import { DEFAULT_LISTEN } from '../host.js'
import { createLogger, type LogLevel } from '../log.js'
import { DEFAULT_MAX_BODY_BYTES, startWrit } from '../server.js'
import { type Command, DATA_DIR_OPTION, dataDirOption, UsageError } from './command.js'

/** `writ start`: runs the authority and the gateway until interrupted. */
export const startCommand: Command = {
  name: 'start',
  summary: 'start the Writ server (authority API and MCP gateway on one HTTPS port)',
  details:
    'On first run it creates the data directory, an ECDSA P-256 CA and a TLS certificate for the\n' +
    'listener. Logs go to standard error as JSON lines. Stop it with Ctrl-C (SIGINT) or SIGTERM.',
  options: {
    ...DATA_DIR_OPTION,
    listen: {
      type: 'string',
      value: 'HOST:PORT',
      description: `address to listen on (default ${DEFAULT_LISTEN}; port 0 picks a free port)`,
    },
    config: {
      type: 'string',
      value: 'FILE',
      multiple: true,
      description:
        'YAML file of manifests (Role, Bot, McpServer, ...) to apply at start; repeatable',
    },
    'trust-domain': {
      type: 'string',
      value: 'NAME',
      description:
        'SPIFFE trust domain, fixed when the data directory is created (default writ.local)',
    },
    'max-body-bytes': {
      type: 'string',
      value: 'BYTES',
      description: `largest MCP request body accepted (default ${DEFAULT_MAX_BODY_BYTES}, 4 MiB)`,
    },
    'audit-sync': {
      type: 'string',
      value: 'MODE',
      description:
        'normal (default): audit commits survive a crash of Writ; full: each commit also waits for the disk, so it survives power loss, at a cost in throughput',
    },
    'log-level': {
      type: 'string',
      value: 'LEVEL',
      description: 'debug, info, warn or error (default info)',
    },
    'rate-limit': {
      type: 'string',
      value: 'CALLS',
      description:
        'tool calls per minute each principal may make on each MCP server whose manifest sets no limits (default: no limit)',
    },
    'max-response-bytes': {
      type: 'string',
      value: 'BYTES',
      description: `largest upstream response passed to a client (default ${DEFAULT_MAX_RESPONSE_BYTES}, 8 MiB)`,
    },
  },
  async run(input) {
    const logger = createLogger({ level: logLevelOption(input.values['log-level']) })
    const running = await startWrit({
      dataDir: dataDirOption(input),
      listen: (input.values.listen as string | undefined) ?? DEFAULT_LISTEN,
      configFiles: (input.values.config as string[] | undefined) ?? [],
      trustDomain: input.values['trust-domain'] as string | undefined,
      maxBodyBytes: byteOption(input.values['max-body-bytes'], '--max-body-bytes'),
      auditSync: auditSyncOption(input.values['audit-sync']),
      guard: guardSettings(input.values),
      logger,
    })
    process.stdout.write(
      `writ listening on https://${running.address}\n` +
        `trust domain ${running.host.trustDomain}, CA pin ${running.host.ca.pin}\n`,
    )
    await waitForSignal()
    await running.close()
    return 0
  },
}

/** Resolves when the process receives SIGINT or SIGTERM. */
export function waitForSignal(): Promise<string> {
  return new Promise((resolve) => {
    const onSignal = (signal: string) => {
      process.off('SIGINT', onSignal)
      process.off('SIGTERM', onSignal)
      resolve(signal)
    }
    process.on('SIGINT', onSignal)
    process.on('SIGTERM', onSignal)
  })
}

export function logLevelOption(value: unknown): LogLevel {
  if (value === undefined) return 'info'
  if (value === 'debug' || value === 'info' || value === 'warn' || value === 'error') return value
  throw new UsageError(`invalid --log-level "${String(value)}": use debug, info, warn or error`)
}

function auditSyncOption(value: unknown): 'full' | 'normal' {
  if (value === undefined || value === 'normal') return 'normal'
  if (value === 'full') return 'full'
  throw new UsageError(`invalid --audit-sync "${String(value)}": use normal or full`)
}

function byteOption(value: unknown, flag: string): number | undefined {
  if (value === undefined) return undefined
  const bytes = Number(value)
  if (!Number.isInteger(bytes) || bytes < 1024) {
    throw new UsageError(
      `invalid ${flag} "${String(value)}": use a whole number of bytes, at least 1024`,
    )
  }
  return bytes
}

/** Builds the limits-guard settings from `--rate-limit` and `--max-response-bytes`. */
function guardSettings(values: Record<string, unknown>): LimitsSettings {
  const settings: LimitsSettings = {}
  const rate = values['rate-limit']
  if (rate !== undefined) {
    const calls = Number(rate)
    if (!/^\d+$/.test(String(rate)) || calls < 1 || calls > 100_000) {
      throw new UsageError(
        `invalid --rate-limit "${String(rate)}": use a whole number of calls per minute from 1 to 100000`,
      )
    }
    settings.rateLimit = { callsPerMinute: calls }
  }
  const bytes = byteOption(values['max-response-bytes'], '--max-response-bytes')
  if (bytes !== undefined) settings.maxResponseBytes = bytes
  return settings
}
