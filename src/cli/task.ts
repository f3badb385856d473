import { spawn } from 'node:child_process'
import { realpathSync, rmSync } from 'node:fs'
import { chmod, mkdtemp } from 'node:fs/promises'
import { constants, tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { writeIdentity } from '../agent/files.js'
import { generateAgentKeys } from '../agent/keys.js'
import { type IssuedTask, requestTask } from '../agent/task-client.js'
import { formatDuration } from '../lib/duration.js'
import { clientOptions, IDENTITY_FILES, readClientTls } from './client-identity.js'
import {
  CLIENT_OPTIONS,
  type Command,
  type CommandInput,
  JSON_OPTION,
  type OptionSpec,
  stringOption,
  UsageError,
} from './command.js'

/** Signals `writ task` passes on to COMMAND, so COMMAND decides how to stop. */
const FORWARDED_SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP']

/** The exit status a shell uses when it cannot find the command to run. */
const COMMAND_NOT_FOUND_STATUS = 127

/** The options `writ task` and `writ task issue` share. */
const TASK_OPTIONS: Record<string, OptionSpec> = {
  servers: {
    type: 'string',
    value: 'NAMES',
    multiple: true,
    description:
      'MCP server names or name patterns the task may use, comma-separated or repeated (default: every server the parent may use)',
  },
  tools: {
    type: 'string',
    value: 'PATTERNS',
    multiple: true,
    description:
      'tool names or patterns (read_*, ^get_.*$) the task may call, comma-separated or repeated; required',
  },
  ttl: {
    type: 'string',
    value: 'DURATION',
    description:
      'lifetime such as 90s, 10m or 1h (default 10m); capped by the roles and the parent',
  },
  reason: {
    type: 'string',
    value: 'TEXT',
    description:
      'why the task needs access, recorded in the certificate and the audit log; required',
  },
  ...CLIENT_OPTIONS,
}

const SCOPE_DETAILS =
  'The task certificate carries the roles of the certificate in --identity (the parent) plus the\n' +
  'requested servers and tools, and the gateway allows only what both allow. Its SPIFFE ID is the\n' +
  "parent's followed by /task/<id>, and it never outlives the parent. A task can issue a task\n" +
  "of its own within its scope, up to the server's delegation depth (2 unless configured).\n" +
  'A regular expression (^...$) is never split at commas.'

/** `writ task issue`: writes a task certificate into a directory instead of running a command. */
export const taskIssueCommand: Command = {
  name: 'task issue',
  summary: 'issue a narrowed task certificate and write it to a directory',
  details:
    'Generates a P-256 key, requests a task certificate and writes svid.pem, svid_key.pem (mode\n' +
    '0600) and bundle.pem into --dest, which is created with mode 0700 if missing. Prints the\n' +
    'SPIFFE ID and the expiry. Delete the directory when the task is done.\n\n' +
    SCOPE_DETAILS,
  options: {
    dest: {
      type: 'string',
      value: 'DIR',
      description: 'directory for the task identity files; required, and not the --identity one',
    },
    ...TASK_OPTIONS,
    ...JSON_OPTION,
  },
  async run(input) {
    const dest = stringOption(input, 'dest')
    const { server, identityDir } = clientOptions(input)
    if (samePath(dest, identityDir)) {
      throw new UsageError(
        `--dest ${dest} is the parent identity directory; choose another, or the parent's key would be overwritten`,
      )
    }
    const task = await issueTask(input, server, identityDir)
    await writeIdentity(dest, task)
    if (input.values.json) {
      process.stdout.write(`${JSON.stringify(taskSummary(task, dest), null, 2)}\n`)
      return 0
    }
    process.stdout.write(
      `spiffe_id: ${task.spiffeId}\nexpires:   ${task.notAfter.toISOString()}\n` +
        `task:      ${task.taskId} (depth ${task.depth}, serial ${task.serial})\n` +
        `files:     ${join(dest, IDENTITY_FILES.cert)}, ${IDENTITY_FILES.key}, ${IDENTITY_FILES.bundle}\n`,
    )
    return 0
  },
}

/** `writ task -- COMMAND`: runs a command under a task certificate that is deleted afterwards. */
export const taskCommand: Command = {
  name: 'task',
  summary: 'run a command under a narrowed, short-lived task certificate',
  args: '-- COMMAND [ARGS...]',
  arity: [1, Number.MAX_SAFE_INTEGER],
  details:
    'Generates a P-256 key, requests a task certificate and writes it into a new private\n' +
    'directory (mode 0700, key mode 0600). Then runs COMMAND with WRIT_IDENTITY set to that\n' +
    'directory and WRIT_SERVER to the server address, so writ mcp connect, writ mcp ls and a\n' +
    'nested writ task inside COMMAND use the task certificate. SIGINT, SIGTERM and SIGHUP are\n' +
    'passed on to COMMAND. When COMMAND exits the directory and its key are deleted and writ task\n' +
    "exits with COMMAND's status (128 + the signal number if a signal ended it, 127 if COMMAND\n" +
    'cannot be started). Put COMMAND after "--" so its own options are not read as writ\'s.\n' +
    'Writ prints the task\'s SPIFFE ID, expiry and directory on standard error. "writ task issue\n' +
    '--dest DIR" writes the files instead.\n\n' +
    SCOPE_DETAILS,
  options: TASK_OPTIONS,
  subcommands: { issue: taskIssueCommand },
  async run(input) {
    const [command, ...args] = input.positionals as [string, ...string[]]
    const { server, identityDir } = clientOptions(input)
    const task = await issueTask(input, server, identityDir)
    const dir = await mkdtemp(join(tmpdir(), 'writ-task-'))
    const removeDir = () => rmSync(dir, { recursive: true, force: true })
    // The exit hook also removes the key when writ itself fails before COMMAND ends.
    process.once('exit', removeDir)
    try {
      await chmod(dir, 0o700)
      await writeIdentity(dir, task)
      process.stderr.write(
        `writ task: running ${command} as ${task.spiffeId} until ${task.notAfter.toISOString()}, files in ${dir}\n`,
      )
      return await runChild(command, args, {
        ...process.env,
        WRIT_IDENTITY: dir,
        WRIT_SERVER: server,
      })
    } finally {
      removeDir()
      process.off('exit', removeDir)
    }
  },
}

/** Generates a key, requests the task certificate and reports a capped lifetime on stderr. */
async function issueTask(
  input: CommandInput,
  server: string,
  identityDir: string,
): Promise<IssuedTask> {
  const tools = patternList(input.values.tools)
  if (tools === undefined) {
    throw new UsageError('missing required option --tools: list the tools the task may call')
  }
  const reason = stringOption(input, 'reason')
  const servers = patternList(input.values.servers)
  const ttl = input.values.ttl
  const tls = readClientTls(identityDir)
  const task = await requestTask({
    server,
    parent: { certPem: String(tls.cert), keyPem: String(tls.key), bundlePem: String(tls.ca) },
    keys: await generateAgentKeys(),
    tools,
    reason,
    ...(servers === undefined ? {} : { servers }),
    ...(typeof ttl === 'string' && ttl !== '' ? { ttl } : {}),
  })
  if (task.lifetimeLimitedBy !== 'request') {
    const by =
      task.lifetimeLimitedBy === 'parent'
        ? "the parent certificate's remaining lifetime"
        : 'the smallest maxTtl of the roles'
    process.stderr.write(
      `writ task: lifetime capped to ${formatDuration(task.ttlSeconds)} by ${by}\n`,
    )
  }
  return task
}

/** Runs COMMAND with inherited stdio, passing signals on, and returns the status to exit with. */
function runChild(command: string, args: string[], env: NodeJS.ProcessEnv): Promise<number> {
  return new Promise((done) => {
    const child = spawn(command, args, { stdio: 'inherit', env })
    const forward = (signal: NodeJS.Signals) => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal)
    }
    for (const signal of FORWARDED_SIGNALS) process.on(signal, forward)
    const finish = (status: number) => {
      for (const signal of FORWARDED_SIGNALS) process.off(signal, forward)
      done(status)
    }
    child.once('error', (error: NodeJS.ErrnoException) => {
      process.stderr.write(
        `writ task: failed to start ${command}: ${error.code ?? error.message}\n`,
      )
      finish(COMMAND_NOT_FOUND_STATUS)
    })
    child.once('exit', (code, signal) => {
      if (signal !== null) finish(128 + (constants.signals[signal] ?? 0))
      else finish(code ?? 1)
    })
  })
}

/**
 * Splits repeated, comma-separated option values into patterns. A value written as a regular
 * expression (`^...$`) stays whole, because commas are legal inside one.
 */
export function patternList(values: unknown): string[] | undefined {
  if (!Array.isArray(values)) return undefined
  const patterns: string[] = []
  for (const value of values as string[]) {
    const trimmed = value.trim()
    if (trimmed.startsWith('^') && trimmed.endsWith('$')) {
      patterns.push(trimmed)
      continue
    }
    for (const part of trimmed.split(',')) {
      if (part.trim() !== '') patterns.push(part.trim())
    }
  }
  return patterns.length === 0 ? undefined : patterns
}

function taskSummary(task: IssuedTask, dest: string): Record<string, unknown> {
  return {
    spiffeId: task.spiffeId,
    taskId: task.taskId,
    serial: task.serial,
    parentSpiffeId: task.parentSpiffeId,
    depth: task.depth,
    notAfter: task.notAfter.toISOString(),
    ttlSeconds: task.ttlSeconds,
    lifetimeLimitedBy: task.lifetimeLimitedBy,
    dest: resolve(dest),
  }
}

function samePath(first: string, second: string): boolean {
  const canonical = (path: string) => {
    try {
      return realpathSync(path)
    } catch {
      return resolve(path)
    }
  }
  return canonical(first) === canonical(second)
}
