import { runAgent } from '../agent/agent.js'
import { createLogger } from '../log.js'
import { type Command, stringOption } from './command.js'
import { logLevelOption } from './start.js'

/** `writ agent`: joins with a one-time token, writes the identity files and keeps them fresh. */
export const agentCommand: Command = {
  name: 'agent',
  summary: 'join Writ and keep a short-lived certificate renewed in a directory',
  details:
    'With --token it generates a P-256 key, checks the server CA against --ca-pin, joins and\n' +
    'writes svid.pem, svid_key.pem (mode 0600) and bundle.pem into --dest. Without --token it\n' +
    'resumes the identity already in --dest. Unless --oneshot is given it then renews with the\n' +
    'current certificate when a third of its lifetime is left, retrying with backoff while the\n' +
    'server is unreachable. Logs go to standard error as JSON lines.',
  options: {
    server: {
      type: 'string',
      value: 'HOST:PORT',
      description: 'address of the Writ server (default: $WRIT_SERVER)',
    },
    token: {
      type: 'string',
      value: 'TOKEN',
      description: 'one-time join token printed by writ bots add (default: $WRIT_JOIN_TOKEN)',
    },
    'ca-pin': {
      type: 'string',
      value: 'PIN',
      description: 'sha256:<hex> pin of the CA public key, required with --token',
    },
    dest: {
      type: 'string',
      value: 'DIR',
      description: 'directory for the identity files (default: $WRIT_IDENTITY)',
    },
    oneshot: {
      type: 'boolean',
      description: 'get one certificate (join, or renew the stored one), write it and exit',
    },
    'log-level': {
      type: 'string',
      value: 'LEVEL',
      description: 'debug, info, warn or error (default info)',
    },
  },
  async run(input) {
    const logger = createLogger({ level: logLevelOption(input.values['log-level']) })
    const server = stringOption(input, 'server', process.env.WRIT_SERVER)
    const dest = stringOption(input, 'dest', process.env.WRIT_IDENTITY)
    const token = optionalString(input.values.token) ?? optionalString(process.env.WRIT_JOIN_TOKEN)
    const caPin = optionalString(input.values['ca-pin'])
    const controller = new AbortController()
    const stop = () => controller.abort()
    process.once('SIGINT', stop)
    process.once('SIGTERM', stop)
    try {
      const result = await runAgent({
        server,
        dest,
        oneshot: input.values.oneshot === true,
        logger,
        signal: controller.signal,
        ...(token ? { token } : {}),
        ...(caPin ? { caPin } : {}),
        onRenewed(identity, event) {
          process.stdout.write(
            `${event} ${identity.spiffeId} serial ${identity.serial}, ` +
              `valid until ${identity.notAfter.toISOString()}, files in ${dest}\n`,
          )
        },
      })
      return result.identity ? 0 : 1
    } finally {
      process.off('SIGINT', stop)
      process.off('SIGTERM', stop)
    }
  },
}

function optionalString(value: unknown): string | undefined {
  return typeof value === 'string' && value !== '' ? value : undefined
}
