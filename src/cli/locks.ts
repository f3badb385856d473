import { userInfo } from 'node:os'
import { createLock, listActiveLocks, removeLock } from '../authority/lock-service.js'
import {
  describeTarget,
  LOCK_TARGET_FLAGS,
  LOCK_TARGET_KINDS,
  type Lock,
  type LockTarget,
  type LockTargetKind,
  parseLockTarget,
} from '../authority/locks.js'
import { WritError } from '../errors.js'
import { type Host, openHost } from '../host.js'
import { parseDuration } from '../lib/duration.js'
import {
  type Command,
  type CommandInput,
  DATA_DIR_OPTION,
  dataDirOption,
  JSON_OPTION,
  type OptionSpec,
} from './command.js'

/** Option name of each target kind, such as `bot-instance` for `botInstance`. */
const TARGET_OPTIONS = Object.fromEntries(
  LOCK_TARGET_KINDS.map((kind) => [kind, LOCK_TARGET_FLAGS[kind].slice(2)]),
) as Record<LockTargetKind, string>

const TARGET_HELP: Record<LockTargetKind, string> = {
  user: 'lock a person by user name: every certificate of theirs, tasks included',
  bot: 'lock a bot by name: every instance, certificate and task of it',
  botInstance: 'lock one joined copy of a bot (its bot instance UUID from the audit log)',
  role: 'lock every certificate that carries this role',
  task: 'lock a task id and the tasks delegated from it',
  serial: 'lock one certificate by serial number (hex) and the tasks issued under it',
  token: 'lock a JoinToken by name (writ get jointokens), so no one can join with it',
}

const targetOptionSpecs: Record<string, OptionSpec> = Object.fromEntries(
  LOCK_TARGET_KINDS.map((kind) => [
    TARGET_OPTIONS[kind],
    { type: 'string', value: 'VALUE', description: TARGET_HELP[kind] },
  ]),
)

export const lockCommand: Command = {
  name: 'lock',
  summary: 'lock a user, bot, bot instance, role, task, certificate or join token',
  details:
    'Give exactly one target option. A running server ends the MCP sessions the lock covers within\n' +
    'one second and refuses their requests, renewals and joins until the lock expires (--ttl) or\n' +
    'writ unlock removes it. Prints the lock id.',
  options: {
    ...DATA_DIR_OPTION,
    ...targetOptionSpecs,
    message: {
      type: 'string',
      value: 'TEXT',
      description: 'why the target is locked; the locked caller sees it (required)',
    },
    ttl: {
      type: 'string',
      value: 'DURATION',
      description: 'remove the lock after this long, such as 30m or 2h (default: until unlocked)',
    },
    ...JSON_OPTION,
  },
  async run(input) {
    const target = readTarget(input)
    const ttl = input.values.ttl
    const ttlSeconds = typeof ttl === 'string' ? parseDuration(ttl, '--ttl') : undefined
    const message = typeof input.values.message === 'string' ? input.values.message : ''
    const host = await openHost(dataDirOption(input))
    try {
      const lock = await createLock(host, {
        target,
        message,
        createdBy: cliActor(),
        ...(ttlSeconds === undefined ? {} : { ttlSeconds }),
      })
      await warnIfUnknown(host, target)
      if (input.values.json) {
        process.stdout.write(`${JSON.stringify(lock, null, 2)}\n`)
      } else {
        process.stdout.write(`${lock.id}\n`)
      }
      return 0
    } finally {
      await host.close()
    }
  },
}

export const locksCommand: Command = {
  name: 'locks',
  summary: 'list the locks in force',
  options: { ...DATA_DIR_OPTION, ...JSON_OPTION },
  async run(input) {
    const host = await openHost(dataDirOption(input))
    try {
      const locks = await listActiveLocks(host.store, host.clock())
      if (input.values.json) {
        process.stdout.write(`${JSON.stringify(locks, null, 2)}\n`)
      } else {
        process.stdout.write(formatLocks(locks))
      }
      return 0
    } finally {
      await host.close()
    }
  },
}

export const unlockCommand: Command = {
  name: 'unlock',
  summary: 'remove a lock by id',
  args: 'ID',
  arity: [1, 1],
  details:
    'Access returns at the next request. Sessions the lock ended stay ended; clients start new ones.',
  options: { ...DATA_DIR_OPTION },
  async run(input) {
    const id = input.positionals[0] as string
    const host = await openHost(dataDirOption(input))
    try {
      const lock = await removeLock(host, id, cliActor())
      process.stdout.write(
        `${lock.id} removed: ${describeTarget(lock.target)} is no longer locked\n`,
      )
      return 0
    } finally {
      await host.close()
    }
  },
}

/** Reads the one target option, naming the options when none or several are given. */
function readTarget(input: CommandInput): LockTarget {
  const given = LOCK_TARGET_KINDS.filter((kind) => input.values[TARGET_OPTIONS[kind]] !== undefined)
  const flags = LOCK_TARGET_KINDS.map((kind) => LOCK_TARGET_FLAGS[kind]).join(', ')
  if (given.length !== 1) {
    const found =
      given.length === 0
        ? 'none was given'
        : `got ${given.map((kind) => LOCK_TARGET_FLAGS[kind]).join(' and ')}`
    throw new WritError('lock.invalid_target', `give exactly one of ${flags}; ${found}`, {
      given: given.map((kind) => LOCK_TARGET_FLAGS[kind]),
    })
  }
  const kind = given[0] as LockTargetKind
  return parseLockTarget(kind, String(input.values[TARGET_OPTIONS[kind]]))
}

/** The manifest kind that names each lock target which has one, for the existence check. */
const TARGET_RESOURCE_KINDS = {
  bot: 'Bot',
  user: 'User',
  role: 'Role',
  token: 'JoinToken',
} as const

/**
 * Warns on stderr when the locked name matches no manifest, because a mistyped name would leave
 * the real principal working while the operator believes it is locked. The lock is kept: it
 * also covers a principal created later under that name.
 */
async function warnIfUnknown(host: Host, target: LockTarget): Promise<void> {
  const [kind, value] = Object.entries(target)[0] as [string, string]
  const resourceKind = TARGET_RESOURCE_KINDS[kind as keyof typeof TARGET_RESOURCE_KINDS]
  if (resourceKind === undefined) return
  if ((await host.store.getResource(resourceKind, value)) !== undefined) return
  process.stderr.write(
    `warning: no ${resourceKind} named "${value}" exists; check the name with writ get ${resourceKind} (the lock is kept and covers one created later)\n`,
  )
}

/** Names the person at the keyboard in `createdBy`, such as `cli:alice`. */
function cliActor(): string {
  try {
    return `cli:${userInfo().username}`
  } catch {
    // userInfo throws when the user id has no passwd entry, as in some containers.
    return 'cli'
  }
}

function formatLocks(locks: Lock[]): string {
  if (locks.length === 0) return 'no active locks\n'
  const header = ['ID', 'TARGET', 'EXPIRES', 'CREATED BY', 'MESSAGE']
  const rows = locks.map((lock) => [
    lock.id,
    describeTarget(lock.target),
    lock.expires ?? 'never',
    lock.createdBy,
    lock.message,
  ])
  const widths = header.map((title, column) =>
    Math.max(title.length, ...rows.map((row) => (row[column] as string).length)),
  )
  const lines = [header, ...rows].map((row) =>
    row
      .map((cell, column) =>
        column < row.length - 1 ? cell.padEnd(widths[column] as number) : cell,
      )
      .join('  '),
  )
  return `${lines.join('\n')}\n`
}
