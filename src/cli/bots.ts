import { MAX_BOT_TTL_SECONDS } from '../authority/authority.js'
import { enrollBot } from '../bots.js'
import { DEFAULT_LISTEN, openHost } from '../host.js'
import { parseDuration } from '../lib/duration.js'
import { type Command, DATA_DIR_OPTION, dataDirOption, JSON_OPTION, UsageError } from './command.js'

const NAME_PATTERN = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/

export const botsAddCommand: Command = {
  name: 'bots add',
  summary: 'create a bot (or update its roles) and print a single-use join token',
  args: 'NAME',
  arity: [1, 1],
  details:
    'The token expires in 1 hour and works once. Give it, with the server address and CA pin, to\n' +
    '"writ agent" on the machine where the bot runs.',
  options: {
    ...DATA_DIR_OPTION,
    roles: {
      type: 'string',
      value: 'R1,R2',
      description: 'comma-separated roles the bot holds (each must exist: see writ get roles)',
    },
    ttl: {
      type: 'string',
      value: 'DURATION',
      description: 'certificate lifetime, such as 30m or 1h (default 1h; role maxTtl caps it)',
    },
    ...JSON_OPTION,
  },
  async run(input) {
    const name = input.positionals[0] as string
    if (!NAME_PATTERN.test(name)) {
      throw new UsageError(
        `invalid bot name "${name}": use lowercase letters, digits and dashes, starting and ending with a letter or digit`,
      )
    }
    const roles = parseRoles(input.values.roles)
    const ttl = input.values.ttl as string | undefined
    if (ttl !== undefined) checkBotTtl(ttl)

    const host = await openHost(dataDirOption(input))
    try {
      for (const role of roles) {
        if (!(await host.store.getResource('Role', role))) {
          throw new UsageError(`role "${role}" not found; create it with writ apply -f FILE first`)
        }
      }
      const enrollment = await enrollBot(host, name, roles, ttl)
      const { token, expires } = enrollment
      const server = (await host.store.getMeta('listen_address')) ?? DEFAULT_LISTEN
      const result = { bot: name, roles, token, expires, server, caPin: host.ca.pin }
      if (input.values.json) {
        process.stdout.write(`${JSON.stringify(result, null, 2)}\n`)
        return 0
      }
      process.stdout.write(
        `bot "${name}" ${enrollment.created ? 'created' : 'updated'} with roles ${roles.join(', ')}\n` +
          `join token: ${token} (single use, expires ${expires})\n` +
          `server:     ${server}\n` +
          `CA pin:     ${host.ca.pin}\n\n` +
          'run the agent where the bot works:\n' +
          `  writ agent --server ${server} --token ${token} \\\n` +
          `    --ca-pin ${host.ca.pin} --dest ./${name}-identity\n`,
      )
      return 0
    } finally {
      await host.close()
    }
  },
}

function parseRoles(value: unknown): string[] {
  if (typeof value !== 'string' || value.trim() === '') {
    throw new UsageError('missing required option --roles R1,R2')
  }
  const roles = value.split(',').map((role) => role.trim())
  const bad = roles.find((role) => !NAME_PATTERN.test(role))
  if (bad !== undefined) throw new UsageError(`invalid role name "${bad}" in --roles`)
  return [...new Set(roles)]
}

/** The shortest bot TTL accepted: renewal needs a few seconds between certificates. */
const MIN_BOT_TTL_SECONDS = 5

function checkBotTtl(ttl: string): void {
  const seconds = parseDuration(ttl, '--ttl')
  if (seconds < MIN_BOT_TTL_SECONDS || seconds > MAX_BOT_TTL_SECONDS) {
    throw new UsageError(
      `invalid --ttl "${ttl}": use a duration from ${MIN_BOT_TTL_SECONDS}s to 24h, such as 1h`,
    )
  }
}
