import { spawn } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { writeIdentity } from '../agent/files.js'
import type { IssuedIdentity } from '../agent/issued.js'
import { generateAgentKeys } from '../agent/keys.js'
import {
  connectTrusted,
  describeConnector,
  finishSso,
  loginWithPassword,
  type ServerTrust,
  startSso,
  type TrustedServer,
} from '../agent/login-client.js'
import { listenForCallback } from '../agent/sso-callback.js'
import { pemBlocks } from '../identity/pem.js'
import { identityFromCertificate } from '../identity/verify.js'
import {
  type Command,
  type CommandInput,
  JSON_OPTION,
  type OptionSpec,
  UsageError,
} from './command.js'
import { promptHidden, promptLine, readStdinLine } from './prompt.js'
import {
  existingLoginIdentityDir,
  type LoginProfile,
  loginIdentityDir,
  readProfile,
  writeProfile,
} from './writ-home.js'

/** How long `writ login --sso` waits for the browser to come back: 5 minutes. */
export const SSO_CALLBACK_TIMEOUT_MS = 5 * 60_000

/** The options naming the Writ server and how to trust it. */
export const TRUST_OPTIONS: Record<string, OptionSpec> = {
  server: {
    type: 'string',
    value: 'HOST:PORT',
    description: 'address of the Writ server (default: $WRIT_SERVER, else the last login)',
  },
  'ca-pin': {
    type: 'string',
    value: 'PIN',
    description:
      'sha256:<hex> pin of the Writ CA, needed the first time; later logins trust the saved bundle',
  },
}

/** Returns --server, $WRIT_SERVER or the server of the last login or enrollment. */
export function resolveServer(input: CommandInput): string {
  const value = input.values.server
  if (typeof value === 'string' && value !== '') return value
  const server = process.env.WRIT_SERVER || readProfile()?.server
  if (!server) throw new UsageError('missing --server HOST:PORT (or $WRIT_SERVER)')
  return server
}

/**
 * Decides how to trust the server: an explicit pin first, then the bundle saved by the last login
 * to the same server, then the pin saved by the last enrollment.
 */
export function resolveTrust(server: string, caPinOption: unknown): ServerTrust {
  if (typeof caPinOption === 'string' && caPinOption !== '') return { caPin: caPinOption }
  const profile = readProfile()
  if (profile?.server === server) {
    const dir = existingLoginIdentityDir()
    if (dir) {
      try {
        return { bundlePem: readFileSync(join(dir, 'bundle.pem'), 'utf8') }
      } catch {
        // Without the bundle the saved pin still identifies the server.
      }
    }
    if (profile.caPin) return { caPin: profile.caPin }
  }
  throw new UsageError(
    `missing --ca-pin PIN: the first login to ${server} needs the pin of its CA (writ start and writ users add print it)`,
  )
}

export const loginCommand: Command = {
  name: 'login',
  summary: 'log in as a person and store an 8-hour certificate in $WRIT_HOME (default ~/.writ)',
  details:
    'With --user it asks for your password and the 6-digit code of your authenticator app. With\n' +
    '--sso NAME it prints (and, unless --no-browser, opens) the login page of the OpenID Provider\n' +
    'and waits for the browser to return to a callback on 127.0.0.1. Either way it generates a\n' +
    'P-256 key, gets a certificate for your roles (8 hours, or less if a role sets maxTtl) and\n' +
    'writes svid.pem, svid_key.pem and bundle.pem into $WRIT_HOME/identity, which writ mcp and\n' +
    'writ task use when --identity is not given. Repeated failures are throttled.',
  options: {
    ...TRUST_OPTIONS,
    user: {
      type: 'string',
      value: 'NAME',
      description: 'your user name (default: the user of the last login)',
    },
    sso: {
      type: 'string',
      value: 'CONNECTOR',
      description: 'log in through the single sign-on connector of this name instead',
    },
    'password-stdin': {
      type: 'boolean',
      description: 'read the password from the first line of standard input instead of asking',
    },
    otp: {
      type: 'string',
      value: 'CODE',
      description: 'the current 6-digit code instead of asking for it',
    },
    'no-browser': {
      type: 'boolean',
      description: 'with --sso: only print the login URL, do not open a browser',
    },
    ...JSON_OPTION,
  },
  async run(input) {
    const server = resolveServer(input)
    const trust = resolveTrust(server, input.values['ca-pin'])
    if (input.values.sso !== undefined && input.values.user !== undefined) {
      throw new UsageError('give either --user or --sso, not both')
    }
    const connector = connectorOption(input, server)

    const trusted = await connectTrusted(server, trust)
    const identity = connector
      ? await ssoLogin(trusted, connector, input.values['no-browser'] === true)
      : await passwordLogin(trusted, server, input)
    const dir = loginIdentityDir()
    await writeIdentity(dir, {
      certPem: identity.certPem,
      keyPem: identity.keyPem,
      bundlePem: identity.bundlePem,
    })

    const claims = readClaims(identity.certPem)
    const previous = readProfile()
    const caPin = trusted.caPin ?? (previous?.server === server ? previous.caPin : undefined)
    const profile: LoginProfile = {
      server,
      ...(caPin ? { caPin } : {}),
      ...(connector ? { connector } : { user: claims.name }),
      spiffeId: identity.spiffeId,
      notAfter: identity.notAfter.toISOString(),
    }
    writeProfile(profile)

    const summary = {
      spiffeId: identity.spiffeId,
      roles: claims.roles,
      notAfter: identity.notAfter.toISOString(),
      identity: dir,
    }
    if (input.values.json) {
      process.stdout.write(`${JSON.stringify(summary, null, 2)}\n`)
    } else {
      process.stdout.write(
        `logged in as ${summary.spiffeId} with roles ${summary.roles.join(', ')}\n` +
          `certificate valid until ${summary.notAfter}, files in ${dir}\n`,
      )
    }
    return 0
  },
}

/**
 * Returns the connector of --sso. Without --sso and any password option, a server whose last
 * login used single sign-on gets its connector again, so a plain `writ login` repeats it.
 */
function connectorOption(input: CommandInput, server: string): string | undefined {
  if (typeof input.values.sso === 'string') return input.values.sso
  const passwordOptions = ['user', 'password-stdin', 'otp'] as const
  if (passwordOptions.some((name) => input.values[name] !== undefined)) return undefined
  const profile = readProfile()
  return profile?.server === server && profile.user === undefined ? profile.connector : undefined
}

async function passwordLogin(
  trusted: TrustedServer,
  server: string,
  input: CommandInput,
): Promise<IssuedIdentity> {
  const profile = readProfile()
  const user =
    typeof input.values.user === 'string' && input.values.user !== ''
      ? input.values.user
      : profile?.server === server
        ? profile.user
        : undefined
  if (!user) throw new UsageError('missing --user NAME (or --sso CONNECTOR)')
  const password = input.values['password-stdin']
    ? await readStdinLine()
    : await promptHidden('password', '--password-stdin')
  const otp =
    typeof input.values.otp === 'string'
      ? input.values.otp
      : await promptLine('one-time code from your authenticator app', '--otp CODE')
  const keys = await generateAgentKeys()
  return loginWithPassword(trusted, { user, password, otp, keys })
}

/**
 * Runs the authorization code flow with PKCE: the verifier stays here, the server builds the
 * authorization URL, and the code from the loopback callback goes back to the server, which
 * has the client secret and checks the provider's response.
 */
async function ssoLogin(
  trusted: TrustedServer,
  connector: string,
  noBrowser: boolean,
): Promise<IssuedIdentity> {
  const { redirectPort } = await describeConnector(trusted, connector)
  const listener = await listenForCallback(redirectPort ?? 0)
  try {
    const codeVerifier = randomBytes(32).toString('base64url')
    const codeChallenge = createHash('sha256').update(codeVerifier).digest('base64url')
    const started = await startSso(trusted, {
      connector,
      redirectUri: listener.redirectUri,
      codeChallenge,
    })
    process.stderr.write(`open this URL in a browser to log in:\n  ${started.authorizationUrl}\n`)
    if (!noBrowser) openBrowser(started.authorizationUrl)
    const callback = await listener.waitForCallback(started.state, SSO_CALLBACK_TIMEOUT_MS)
    try {
      const keys = await generateAgentKeys()
      const identity = await finishSso(trusted, { ...callback.parameters, codeVerifier, keys })
      callback.reply(true, 'Logged in to Writ. You can close this window.')
      return identity
    } catch (error) {
      callback.reply(false, `Writ login failed: ${(error as Error).message}`)
      throw error
    }
  } finally {
    await listener.close()
  }
}

/** Opens the URL with the desktop's handler; failures are ignored because the URL is printed. */
function openBrowser(url: string): void {
  const [command, args] =
    process.platform === 'darwin'
      ? ['open', [url]]
      : process.platform === 'win32'
        ? ['cmd', ['/c', 'start', '', url]]
        : ['xdg-open', [url]]
  try {
    const child = spawn(command as string, args as string[], { detached: true, stdio: 'ignore' })
    child.on('error', () => {})
    child.unref()
  } catch {
    // The URL is on standard error for the person to open.
  }
}

function readClaims(certPem: string): { name: string; roles: string[] } {
  const der = pemBlocks(certPem, ['CERTIFICATE'])[0] as Buffer
  const identity = identityFromCertificate(der)
  return { name: identity.name, roles: identity.claims.roles }
}
