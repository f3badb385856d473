// End-to-end tests of `writ login --sso` against a real OpenID Provider (oidc-provider) started on
// 127.0.0.1: the built CLI, a real `writ start`, and a scripted browser.
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { pemBlocks } from '../../src/identity/pem.js'
import { identityFromCertificate } from '../../src/identity/verify.js'
import {
  auditSearch,
  CLI,
  type CommandResult,
  type GatewaySetup,
  httpsRequest,
  removeTemporaryDirectories,
  runWrit,
  startGatewaySetup,
  TRUST_DOMAIN,
  temporaryDirectory,
} from './harness.js'
import {
  browseToCallback,
  type IssuerProxy,
  type OidcProviderFixture,
  startIssuerProxy,
  startOidcProvider,
} from './oidc-fixture.js'

let provider: OidcProviderFixture
let proxy: IssuerProxy
let setup: GatewaySetup

function connectorManifest(name: string, issuer: string): string {
  return `apiVersion: writ.dev/v1alpha1
kind: OidcConnector
metadata: { name: ${name} }
spec:
  issuer: ${issuer}
  clientId: writ-e2e
  clientSecret: '\${env:WRIT_E2E_OIDC_SECRET}'
  scopes: [openid, profile, groups]
  roleMappings:
    - { claim: groups, value: e2e-readers, roles: [e2e-reader] }
`
}

before(async () => {
  provider = await startOidcProvider()
  proxy = await startIssuerProxy(provider.issuer)
  const config = join(temporaryDirectory('sso-config'), 'sso.yaml')
  writeFileSync(
    config,
    [
      connectorManifest('corp', provider.issuer),
      connectorManifest('mixup', proxy.issuer),
      connectorManifest('plain-mixup', proxy.plainIssuer),
    ].join('---\n'),
  )
  // `writ start` inherits this process's environment, where the secret reference resolves.
  process.env.WRIT_E2E_OIDC_SECRET = provider.clientSecret
  setup = await startGatewaySetup('sso', ['--config', config])
})

after(async () => {
  await setup?.server.stop()
  await proxy?.close()
  await provider?.close()
  removeTemporaryDirectories()
})

/** A running `writ login --sso` and the authorization URL it printed. */
interface SsoLogin {
  authorizationUrl: string
  home: string
  exited: Promise<CommandResult>
}

/**
 * Starts `writ login --sso CONNECTOR --no-browser` in a new WRIT_HOME and waits for the URL it
 * prints. With `again`, it runs a plain `writ login --no-browser` in an earlier login's home.
 */
async function startSsoLogin(connector: string, again?: { home: string }): Promise<SsoLogin> {
  const home = again?.home ?? temporaryDirectory(`home-${connector}`)
  const target = again
    ? []
    : ['--sso', connector, '--server', setup.server.address, '--ca-pin', setup.server.caPin]
  const child = spawn(process.execPath, [CLI, 'login', ...target, '--no-browser', '--json'], {
    env: { ...process.env, WRIT_HOME: home, WRIT_IDENTITY: '', WRIT_SERVER: '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let stdout = ''
  let stderr = ''
  child.stdout.setEncoding('utf8').on('data', (text: string) => {
    stdout += text
  })
  const exited = new Promise<CommandResult>((resolve) => {
    child.on('close', (code) => resolve({ code, stdout, stderr }))
  })
  const authorizationUrl = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`writ login printed no URL within 20 s\nstderr: ${stderr}`))
    }, 20_000)
    child.stderr.setEncoding('utf8').on('data', (text: string) => {
      stderr += text
      const url = /log in:\n {2}(\S+)\n/.exec(stderr)?.[1]
      if (url) {
        clearTimeout(timer)
        resolve(url)
      }
    })
    child.once('close', () => {
      clearTimeout(timer)
      reject(new Error(`writ login exited before printing a URL\nstderr: ${stderr}`))
    })
  })
  return { authorizationUrl, home, exited }
}

/** Delivers a callback to the CLI's loopback listener, as the browser would. */
async function deliver(callback: URL): Promise<{ status: number; text: string }> {
  const response = await fetch(callback)
  return { status: response.status, text: await response.text() }
}

describe('single sign-on with a real OpenID Provider', () => {
  let login: SsoLogin
  let callback: URL
  let result: CommandResult
  let forged: { status: number; text: string }
  let page: { status: number; text: string }

  before(async () => {
    login = await startSsoLogin('corp')
    callback = await browseToCallback(login.authorizationUrl, 'sso-alice')
    const wrongState = new URL(callback)
    wrongState.searchParams.set('state', 'forged-state-value')
    forged = await deliver(wrongState)
    page = await deliver(callback)
    result = await login.exited
  })

  it('authorization URL uses PKCE and a nonce', () => {
    const url = new URL(login.authorizationUrl)
    assert.equal(url.origin, provider.issuer)
    assert.equal(url.searchParams.get('code_challenge_method'), 'S256')
    assert.match(url.searchParams.get('code_challenge') ?? '', /^[A-Za-z0-9_-]{43}$/)
    assert.match(url.searchParams.get('nonce') ?? '', /^[A-Za-z0-9_-]{43}$/)
    assert.match(
      url.searchParams.get('redirect_uri') ?? '',
      /^http:\/\/127\.0\.0\.1:\d+\/callback$/,
    )
  })

  it('callback with another state is ignored', () => {
    assert.equal(forged.status, 400)
    assert.match(forged.text, /does not belong to the running writ login/)
  })

  it('login issues a user certificate with mapped roles', () => {
    assert.equal(result.code, 0, result.stderr)
    assert.equal(page.status, 200)
    assert.match(page.text, /Logged in to Writ/)
    const summary = JSON.parse(result.stdout) as { spiffeId: string; roles: string[] }
    assert.equal(summary.spiffeId, `spiffe://${TRUST_DOMAIN}/user/sso-alice`)
    assert.deepEqual(summary.roles, ['e2e-reader'])
    const certPem = readFileSync(join(login.home, 'identity', 'svid.pem'), 'utf8')
    const identity = identityFromCertificate(pemBlocks(certPem, ['CERTIFICATE'])[0] as Buffer)
    assert.equal(identity.claims.kind, 'user')
    assert.equal(identity.name, 'sso-alice')
  })

  it("mcp ls as the person shows the role's tools", async () => {
    const listed = await runWrit(['mcp', 'ls', '--json'], {
      env: { WRIT_HOME: login.home, WRIT_IDENTITY: '', WRIT_SERVER: '' },
    })
    assert.equal(listed.code, 0, listed.stderr)
    const servers = JSON.parse(listed.stdout) as Array<{ name: string; tools: string[] }>
    assert.deepEqual(servers.find((entry) => entry.name === 'notes')?.tools, [
      'read_note',
      'leak_secret',
      'emoji',
    ])
  })

  it('replayed state is rejected', async () => {
    const bundle = readFileSync(join(login.home, 'identity', 'bundle.pem'), 'utf8')
    const reply = await httpsRequest(setup.server.address, '/v1/sso/finish', {
      tls: { ca: bundle },
      body: JSON.stringify({
        state: callback.searchParams.get('state'),
        code: callback.searchParams.get('code'),
        iss: callback.searchParams.get('iss'),
        codeVerifier: 'a'.repeat(43),
        csr: readFileSync(join(login.home, 'identity', 'svid.pem'), 'utf8'),
      }),
    })
    assert.equal(reply.status, 403)
    const error = (JSON.parse(reply.body.toString('utf8')) as { error: Record<string, string> })
      .error
    assert.equal(error.code, 'sso.state_invalid')
    assert.match(error.message as string, /unknown, expired or already used/)
    const events = await auditSearch(setup.dataDir, ['--limit', '1000'])
    const replay = events.find((event) => event.id === error.requestId)
    assert.equal(replay?.type, 'login')
    assert.equal(replay?.outcome, 'denied')
    assert.equal(replay?.reason, 'state_used')
  })

  it('plain writ login repeats the connector', async () => {
    // No --sso, --server or --ca-pin: the profile and the saved bundle of the first login suffice.
    const again = await startSsoLogin('corp', { home: login.home })
    assert.equal(new URL(again.authorizationUrl).origin, provider.issuer)
    const page = await deliver(await browseToCallback(again.authorizationUrl, 'sso-alice'))
    const second = await again.exited
    assert.equal(second.code, 0, second.stderr)
    assert.equal(page.status, 200)
    const summary = JSON.parse(second.stdout) as { spiffeId: string }
    assert.equal(summary.spiffeId, `spiffe://${TRUST_DOMAIN}/user/sso-alice`)
  })

  it('successful login is audited', async () => {
    const events = await auditSearch(setup.dataDir, [
      '--principal',
      `spiffe://${TRUST_DOMAIN}/user/sso-alice`,
    ])
    const success = events.find((event) => event.type === 'login')
    assert.equal(success?.outcome, 'success')
    assert.equal(success?.details?.method, 'sso')
    assert.equal(success?.details?.connector, 'corp')
  })
})

describe('single sign-on rejections', () => {
  it('account without mapped groups gets no certificate', async () => {
    const login = await startSsoLogin('corp')
    const page = await deliver(await browseToCallback(login.authorizationUrl, 'sso-nogroups'))
    const result = await login.exited
    assert.equal(result.code, 1)
    assert.match(
      result.stderr,
      /no roleMappings of connector "corp" match the claims of "sso-nogroups".*\[sso\.no_roles\]/,
    )
    assert.equal(page.status, 400)
    assert.match(page.text, /Writ login failed/)
  })

  it('response from another issuer is rejected', async () => {
    const login = await startSsoLogin('mixup')
    await deliver(await browseToCallback(login.authorizationUrl, 'sso-alice'))
    const result = await login.exited
    assert.equal(result.code, 1)
    assert.ok(
      result.stderr.includes(
        `the authorization response comes from issuer "${provider.issuer}", not the configured "${proxy.issuer}"`,
      ),
      result.stderr,
    )
    assert.match(result.stderr, /\[sso\.issuer_mismatch\]/)
  })

  it('ID token from another issuer is rejected', async () => {
    const login = await startSsoLogin('mixup')
    const callback = await browseToCallback(login.authorizationUrl, 'sso-alice')
    // Without the iss parameter the check falls to the ID token's own iss claim.
    callback.searchParams.delete('iss')
    await deliver(callback)
    const result = await login.exited
    assert.equal(result.code, 1)
    assert.ok(
      result.stderr.includes(
        `the ID token was rejected: it names issuer "${provider.issuer}", not the configured "${proxy.issuer}"`,
      ),
      result.stderr,
    )
    assert.match(result.stderr, /\[sso\.id_token_invalid\]/)
  })

  it('discovery naming another issuer is rejected', async () => {
    const home = temporaryDirectory('home-plain')
    const result = await runWrit(
      [
        'login',
        '--sso',
        'plain-mixup',
        '--server',
        setup.server.address,
        '--ca-pin',
        setup.server.caPin,
        '--no-browser',
      ],
      { env: { WRIT_HOME: home } },
    )
    assert.equal(result.code, 1)
    assert.ok(
      result.stderr.includes(
        `names issuer "${provider.issuer}", not the configured "${proxy.plainIssuer}"`,
      ),
      result.stderr,
    )
    assert.match(result.stderr, /\[sso\.issuer_mismatch\]/)
  })

  it('unknown connector is named', async () => {
    const result = await runWrit(
      [
        'login',
        '--sso',
        'no-such-connector',
        '--server',
        setup.server.address,
        '--ca-pin',
        setup.server.caPin,
        '--no-browser',
      ],
      { env: { WRIT_HOME: temporaryDirectory('home-unknown') } },
    )
    assert.equal(result.code, 1)
    assert.match(
      result.stderr,
      /connector "no-such-connector" does not exist.*\[sso\.connector_not_found\]/,
    )
  })
})
