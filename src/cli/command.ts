import { parseArgs } from 'node:util'
import { isWritError } from '../errors.js'

/** One flag of a command, as shown by `--help`. */
export interface OptionSpec {
  type: 'string' | 'boolean'
  description: string
  /** Shown in help as the value's placeholder, such as `HOST:PORT`. */
  value?: string
  default?: string | boolean
  multiple?: boolean
  short?: string
}

/** A leaf command such as `writ bots add`. `run` returns the process exit code. */
export interface Command {
  name: string
  summary: string
  /** Positional arguments as shown in usage, such as `NAME` or `KIND [NAME]`. */
  args?: string
  /** Fewest and most positional arguments accepted. */
  arity?: [number, number]
  details?: string
  options: Record<string, OptionSpec>
  /** Commands reached as `writ NAME SUB` when SUB is the first argument, such as `task issue`. */
  subcommands?: Record<string, Command>
  run(input: CommandInput): Promise<number>
}

export interface CommandInput {
  values: Record<string, string | boolean | string[] | undefined>
  positionals: string[]
}

/** A usage mistake: printed with a hint to `--help`, exit code 2. */
export class UsageError extends Error {
  override name = 'UsageError'
}

/** Options shared by every command that reads or writes the Writ host's data directory. */
export const DATA_DIR_OPTION: Record<string, OptionSpec> = {
  'data-dir': {
    type: 'string',
    value: 'DIR',
    description: 'Writ data directory (default: $WRIT_DATA_DIR or ./writ-data)',
  },
}

/** Options shared by client commands that talk to a running Writ server. */
export const CLIENT_OPTIONS: Record<string, OptionSpec> = {
  server: {
    type: 'string',
    value: 'HOST:PORT',
    description:
      'address of the Writ server (default: $WRIT_SERVER, the server of writ login, or 127.0.0.1:7443)',
  },
  identity: {
    type: 'string',
    value: 'DIR',
    description:
      'directory with svid.pem, svid_key.pem and bundle.pem written by writ agent (default: $WRIT_IDENTITY, else the certificate of writ login)',
  },
}

export const JSON_OPTION: Record<string, OptionSpec> = {
  json: { type: 'boolean', description: 'print machine-readable JSON instead of text' },
}

/** Formats the help text for a command from its spec, so every flag is documented. */
export function formatHelp(path: string, command: Command): string {
  // Options must come before a `--` that starts another program's arguments.
  const usage = command.args?.startsWith('-- ')
    ? `[options] ${command.args}`
    : `${command.args ? `${command.args} ` : ''}[options]`
  const lines = [`usage: writ ${path} ${usage}`, '']
  lines.push(command.summary)
  if (command.details) lines.push('', command.details)
  const entries = Object.entries(command.options)
  lines.push('', 'options:')
  const labels = entries.map(([name, spec]) => {
    const short = spec.short ? `-${spec.short}, ` : ''
    return `  ${short}--${name}${spec.type === 'string' ? ` ${spec.value ?? 'VALUE'}` : ''}`
  })
  labels.push('  -h, --help')
  const width = Math.max(...labels.map((label) => label.length)) + 2
  entries.forEach(([, spec], index) => {
    lines.push(`${(labels[index] as string).padEnd(width)}${spec.description}`)
  })
  lines.push(`${'  -h, --help'.padEnd(width)}show this help`)
  return `${lines.join('\n')}\n`
}

/** Parses argv for one command and runs it, turning errors into messages and exit codes. */
export async function runCommand(path: string, command: Command, argv: string[]): Promise<number> {
  // Arguments after `--` belong to another program (writ task -- COMMAND), so its --help is not ours.
  const terminator = argv.indexOf('--')
  const own = terminator === -1 ? argv : argv.slice(0, terminator)
  if (own.includes('--help') || own.includes('-h')) {
    process.stdout.write(formatHelp(path, command))
    return 0
  }
  try {
    const input = parseCommandArgs(path, command, argv)
    return await command.run(input)
  } catch (error) {
    return reportError(path, error)
  }
}

function parseCommandArgs(path: string, command: Command, argv: string[]): CommandInput {
  const options: Record<
    string,
    { type: 'string' | 'boolean'; multiple?: boolean; short?: string; default?: string | boolean }
  > = {}
  for (const [name, spec] of Object.entries(command.options)) {
    options[name] = { type: spec.type }
    if (spec.multiple) options[name].multiple = true
    if (spec.short) options[name].short = spec.short
    if (spec.default !== undefined) options[name].default = spec.default
  }
  let parsed: ReturnType<typeof parseArgs>
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals: true, strict: true })
  } catch (error) {
    throw new UsageError((error as Error).message.replace(/^.*?: /, '').split('. To ')[0])
  }
  const [min, max] = command.arity ?? [0, 0]
  const count = parsed.positionals.length
  if (count < min) {
    throw new UsageError(`missing argument: writ ${path} expects ${command.args ?? ''}`.trim())
  }
  if (count > max) {
    throw new UsageError(`unexpected argument "${parsed.positionals[max]}"`)
  }
  return { values: parsed.values as CommandInput['values'], positionals: parsed.positionals }
}

function reportError(path: string, error: unknown): number {
  if (error instanceof UsageError) {
    process.stderr.write(`writ ${path}: ${error.message}\nrun "writ ${path} --help" for usage\n`)
    return 2
  }
  if (isWritError(error)) {
    process.stderr.write(`writ ${path}: ${error.message} [${error.code}]\n`)
    return 1
  }
  const message = error instanceof Error ? error.message : String(error)
  process.stderr.write(`writ ${path}: ${message}\n`)
  if (process.env.WRIT_DEBUG && error instanceof Error) process.stderr.write(`${error.stack}\n`)
  return 1
}

/** Reads a string option, throwing a usage error naming the flag when a required one is missing. */
export function stringOption(
  input: CommandInput,
  name: string,
  fallback?: string | undefined,
): string {
  const value = input.values[name]
  if (typeof value === 'string' && value !== '') return value
  if (fallback !== undefined && fallback !== '') return fallback
  throw new UsageError(`missing required option --${name}`)
}

/** Returns the data directory from --data-dir, $WRIT_DATA_DIR or ./writ-data. */
export function dataDirOption(input: CommandInput): string {
  const value = input.values['data-dir']
  if (typeof value === 'string' && value !== '') return value
  return process.env.WRIT_DATA_DIR || 'writ-data'
}
