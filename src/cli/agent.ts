import { runAgent } from '../agent/agent.js'
import { startWorkloadApi, type WorkloadApi } from '../agent/workload-api.js'
import { DEFAULT_SERVICE_ACCOUNT_TOKEN_PATH } from '../kube/token-file.js'
import { createLogger } from '../log.js'
import { type Command, stringOption, UsageError } from './command.js'
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
    'server is unreachable. With --workload-api it also serves the SPIFFE Workload API on a Unix\n' +
    'socket: X.509-SVID and bundle streams that follow each renewal, and JWT-SVIDs signed by the\n' +
    'server. With --join-method kubernetes it joins with the projected service-account token in\n' +
    '--token-path instead of a one-time token, and --token names the Kubernetes JoinToken; it\n' +
    'reads the file again for every join and joins again if the certificate expired.\n' +
    'Logs go to standard error as JSON lines.',
  options: {
    server: {
      type: 'string',
      value: 'HOST:PORT',
      description: 'address of the Writ server (default: $WRIT_SERVER)',
    },
    token: {
      type: 'string',
      value: 'TOKEN',
      description:
        'one-time join token printed by writ bots add, or with --join-method kubernetes the JoinToken name (default: $WRIT_JOIN_TOKEN)',
    },
    'ca-pin': {
      type: 'string',
      value: 'PIN',
      description: 'sha256:<hex> pin of the CA public key, required with --token',
    },
    'join-method': {
      type: 'string',
      value: 'METHOD',
      description: 'token (default) or kubernetes (join with a service-account token)',
    },
    'token-path': {
      type: 'string',
      value: 'PATH',
      description: `service-account token file for --join-method kubernetes (default ${DEFAULT_SERVICE_ACCOUNT_TOKEN_PATH})`,
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
    'workload-api': {
      type: 'string',
      value: 'unix:///PATH',
      description:
        'also serve the SPIFFE Workload API over gRPC on this Unix socket (mode 0600), with the identity kept renewed',
    },
  },
  async run(input) {
    const logger = createLogger({ level: logLevelOption(input.values['log-level']) })
    const server = stringOption(input, 'server', process.env.WRIT_SERVER)
    const dest = stringOption(input, 'dest', process.env.WRIT_IDENTITY)
    const token = optionalString(input.values.token) ?? optionalString(process.env.WRIT_JOIN_TOKEN)
    const caPin = optionalString(input.values['ca-pin'])
    const workloadAddress = optionalString(input.values['workload-api'])
    const kubernetes = kubernetesOptions(input.values['join-method'], input.values['token-path'])
    if (workloadAddress && input.values.oneshot === true) {
      throw new UsageError(
        '--workload-api needs a running agent and cannot be combined with --oneshot',
      )
    }
    const controller = new AbortController()
    const stop = () => controller.abort()
    process.once('SIGINT', stop)
    process.once('SIGTERM', stop)
    let workloadApi: WorkloadApi | undefined
    try {
      // Bound before joining, so a socket problem never costs the one-time token.
      if (workloadAddress) {
        workloadApi = await startWorkloadApi({ address: workloadAddress, server, logger })
        process.stdout.write(
          `serving the SPIFFE Workload API on unix://${workloadApi.socketPath}\n`,
        )
      }
      const result = await runAgent({
        server,
        dest,
        oneshot: input.values.oneshot === true,
        logger,
        signal: controller.signal,
        ...(token ? { token } : {}),
        ...(caPin ? { caPin } : {}),
        ...kubernetes,
        onRenewed(identity, event) {
          process.stdout.write(
            `${event} ${identity.spiffeId} serial ${identity.serial}, ` +
              `valid until ${identity.notAfter.toISOString()}, files in ${dest}\n`,
          )
          workloadApi?.setIdentity(identity)
        },
      })
      return result.identity ? 0 : 1
    } finally {
      await workloadApi?.close()
      process.off('SIGINT', stop)
      process.off('SIGTERM', stop)
    }
  },
}

/** Reads --join-method and --token-path, which only a Kubernetes join uses. */
function kubernetesOptions(
  method: unknown,
  tokenPath: unknown,
): { joinMethod?: 'kubernetes'; tokenPath?: string } {
  const name = optionalString(method) ?? 'token'
  if (name !== 'token' && name !== 'kubernetes') {
    throw new UsageError(`invalid --join-method "${name}": expected token or kubernetes`)
  }
  const path = optionalString(tokenPath)
  if (name === 'token') {
    if (path !== undefined) throw new UsageError('--token-path needs --join-method kubernetes')
    return {}
  }
  return path === undefined ? { joinMethod: name } : { joinMethod: name, tokenPath: path }
}

function optionalString(value: unknown): string | undefined {
  return typeof value === 'string' && value !== '' ? value : undefined
}
