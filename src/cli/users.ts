import { connectTrusted, enrollUser } from '../agent/login-client.js'
import { WritError } from '../errors.js'
import { DEFAULT_LISTEN, openHost } from '../host.js'
import { addUser } from '../users.js'
import { type Command, DATA_DIR_OPTION, dataDirOption, JSON_OPTION, UsageError } from './command.js'
import { resolveServer, resolveTrust, TRUST_OPTIONS } from './login.js'
import { promptHidden, readStdinLine } from './prompt.js'
import { readProfile, writeProfile } from './writ-home.js'

const NAME_PATTERN = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/

export const usersAddCommand: Command = {
  name: 'users add',
  summary: 'create a person (or change their roles) and print a one-time enrollment code',
  args: 'NAME',
  arity: [1, 1],
  details:
    'The code expires in 24 hours and works once; a new code replaces the older unused ones. Give\n' +
    'it to the person with the server address and CA pin. They run "writ users enroll" to set a\n' +
    'password and get a TOTP secret, then "writ login". Run it again for a user who lost their\n' +
    'password or authenticator: enrolling with the new code replaces both.',
  options: {
    ...DATA_DIR_OPTION,
    roles: {
      type: 'string',
      value: 'R1,R2',
      description:
        'comma-separated roles (each must exist: see writ get roles); required for a new user',
    },
    ...JSON_OPTION,
  },
  async run(input) {
    const name = input.positionals[0] as string
    if (!NAME_PATTERN.test(name)) {
      throw new UsageError(
        `invalid user name "${name}": use lowercase letters, digits and dashes, starting and ending with a letter or digit`,
      )
    }
    const roles = input.values.roles === undefined ? undefined : parseRoles(input.values.roles)
    const host = await openHost(dataDirOption(input))
    try {
      for (const role of roles ?? []) {
        if (!(await host.store.getResource('Role', role))) {
          throw new UsageError(`role "${role}" not found; create it with writ apply -f FILE first`)
        }
      }
      if (roles === undefined && !(await host.store.getResource('User', name))) {
        throw new UsageError(`user "${name}" does not exist yet; give its roles with --roles R1,R2`)
      }
      const enrollment = await addUser(host, name, roles)
      const server = (await host.store.getMeta('listen_address')) ?? DEFAULT_LISTEN
      const result = { ...enrollment, server, caPin: host.ca.pin }
      if (input.values.json) {
        process.stdout.write(`${JSON.stringify(result, null, 2)}\n`)
        return 0
      }
      process.stdout.write(
        `user "${name}" ${enrollment.created ? 'created' : 'updated'} with roles ${enrollment.roles.join(', ')}\n` +
          `enrollment code: ${enrollment.code} (single use, expires ${enrollment.expires})\n` +
          `server:          ${server}\n` +
          `CA pin:          ${host.ca.pin}\n\n` +
          `the person enrolls with:\n` +
          `  writ users enroll --server ${server} --user ${name} \\\n` +
          `    --code ${enrollment.code} --ca-pin ${host.ca.pin}\n`,
      )
      return 0
    } finally {
      await host.close()
    }
  },
}

export const usersEnrollCommand: Command = {
  name: 'users enroll',
  summary: 'set your password with a one-time enrollment code and get your TOTP secret',
  details:
    'Asks for a new password twice (at least 12 characters), sends it with the code over TLS to\n' +
    'the server, whose CA is checked against --ca-pin first, and prints an otpauth:// URI to add\n' +
    'to an authenticator app. The server address and pin are remembered in $WRIT_HOME (default\n' +
    '~/.writ) for writ login.',
  options: {
    ...TRUST_OPTIONS,
    user: { type: 'string', value: 'NAME', description: 'your user name' },
    code: {
      type: 'string',
      value: 'CODE',
      description: 'the enrollment code from writ users add',
    },
    'password-stdin': {
      type: 'boolean',
      description: 'read the password from the first line of standard input instead of asking',
    },
    ...JSON_OPTION,
  },
  async run(input) {
    const server = resolveServer(input)
    const user = requiredString(input.values.user, '--user NAME')
    const code = requiredString(input.values.code, '--code CODE')
    const trust = resolveTrust(server, input.values['ca-pin'])
    const password = input.values['password-stdin'] ? await readStdinLine() : await askNewPassword()
    const trusted = await connectTrusted(server, trust)
    const result = await enrollUser(trusted, { user, code, password })
    const previous = readProfile()
    const caPin = trusted.caPin ?? (previous?.server === server ? previous.caPin : undefined)
    writeProfile({ server, user: result.user, ...(caPin ? { caPin } : {}) })
    if (input.values.json) {
      process.stdout.write(`${JSON.stringify(result, null, 2)}\n`)
      return 0
    }
    process.stdout.write(
      `enrolled ${result.user} (${result.spiffeId})\n\n` +
        'add this TOTP secret to your authenticator app now; it is not shown again:\n' +
        `  ${result.otpauthUri}\n` +
        `  secret (to type in): ${result.totpSecret}\n\n` +
        'then log in with:\n' +
        `  writ login --server ${server} --user ${result.user}\n`,
    )
    return 0
  },
}

async function askNewPassword(): Promise<string> {
  const fallback = '--password-stdin'
  const first = await promptHidden('new password (at least 12 characters)', fallback)
  const second = await promptHidden('repeat the new password', fallback)
  if (first !== second) {
    throw new WritError('cli.password_mismatch', 'the two passwords differ; run the command again')
  }
  return first
}

function requiredString(value: unknown, flag: string): string {
  if (typeof value === 'string' && value.trim() !== '') return value.trim()
  throw new UsageError(`missing required option ${flag}`)
}

function parseRoles(value: unknown): string[] {
  if (typeof value !== 'string' || value.trim() === '') {
    throw new UsageError('invalid --roles: give comma-separated role names, such as R1,R2')
  }
  const roles = value.split(',').map((role) => role.trim())
  const bad = roles.find((role) => !NAME_PATTERN.test(role))
  if (bad !== undefined) throw new UsageError(`invalid role name "${bad}" in --roles`)
  return [...new Set(roles)]
}
