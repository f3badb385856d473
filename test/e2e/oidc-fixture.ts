// Fixtures for single sign-on tests. A real OpenID Provider (the oidc-provider package) runs on
// 127.0.0.1, and a proxy in front of it pretends to be another issuer. A scripted browser follows
// the login redirects and submits the provider's development login and consent forms.
import { createServer, request, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { exportJWK, generateKeyPair } from 'jose'
import Provider from 'oidc-provider'

/** The groups each test account belongs to; any other login name has none. */
export const OIDC_ACCOUNTS: Record<string, string[]> = {
  'sso-alice': ['e2e-readers', 'staff'],
  'sso-nogroups': ['staff'],
}

export interface OidcProviderFixture {
  /** `http://127.0.0.1:PORT`, the provider's issuer. */
  issuer: string
  clientId: string
  clientSecret: string
  close(): Promise<void>
}

/**
 * Starts oidc-provider on 127.0.0.1 with one confidential native client whose redirect URI is
 * `http://127.0.0.1/callback` (any port, as RFC 8252 allows for loopback redirects). Accounts
 * carry `preferred_username` and `groups`, released for the `profile` and `groups` scopes.
 */
export async function startOidcProvider(): Promise<OidcProviderFixture> {
  const server = createServer()
  await listen(server)
  const issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  const { privateKey } = await generateKeyPair('RS256', { extractable: true })
  const signingKey = {
    ...(await exportJWK(privateKey)),
    kid: 'e2e-rs256',
    alg: 'RS256',
    use: 'sig',
  }
  const clientId = 'writ-e2e'
  const clientSecret = 'e2e-client-secret-4d1f7c9a2b'
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: clientId,
        client_secret: clientSecret,
        application_type: 'native',
        redirect_uris: ['http://127.0.0.1/callback'],
        grant_types: ['authorization_code'],
        response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_basic',
      },
    ],
    jwks: { keys: [signingKey] },
    cookies: { keys: ['e2e-cookie-signing-key-0b7e'] },
    scopes: ['openid', 'profile', 'groups'],
    claims: { openid: ['sub'], profile: ['preferred_username'], groups: ['groups'] },
    pkce: { required: () => true },
    async findAccount(_context: unknown, accountId: string) {
      return {
        accountId,
        async claims() {
          return {
            sub: accountId,
            preferred_username: accountId,
            groups: OIDC_ACCOUNTS[accountId] ?? [],
          }
        },
      }
    },
  })
  server.on('request', provider.callback())
  return { issuer, clientId, clientSecret, close: () => closeServer(server) }
}

export interface IssuerProxy {
  /** `http://127.0.0.1:PORT`: discovery here claims this URL as its issuer. */
  issuer: string
  /** `http://127.0.0.1:PORT/plain`: discovery here is passed on unchanged. */
  plainIssuer: string
  close(): Promise<void>
}

/**
 * Starts a proxy to the provider that plays a mix-up attacker. Its discovery document claims the
 * proxy as issuer and hides the provider's `iss` authorization response parameter, while the
 * endpoints still point at the real provider, which signs ID tokens with its own issuer. Under
 * `/plain` it passes discovery on unchanged.
 */
export async function startIssuerProxy(target: string): Promise<IssuerProxy> {
  const upstream = new URL(target)
  const server = createServer((req, res) => {
    const plain = req.url?.startsWith('/plain/') === true
    const path = plain ? (req.url as string).slice('/plain'.length) : (req.url ?? '/')
    const forwarded = request(
      {
        host: upstream.hostname,
        port: upstream.port,
        path,
        method: req.method,
        headers: req.headers,
      },
      (reply) => {
        if (plain || path !== '/.well-known/openid-configuration') {
          res.writeHead(reply.statusCode ?? 502, reply.headers)
          reply.pipe(res)
          return
        }
        const chunks: Buffer[] = []
        reply.on('data', (chunk: Buffer) => chunks.push(chunk))
        reply.on('end', () => {
          const document = JSON.parse(Buffer.concat(chunks).toString('utf8'))
          document.issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
          delete document.authorization_response_iss_parameter_supported
          const text = JSON.stringify(document)
          res.writeHead(200, {
            'content-type': 'application/json',
            'content-length': Buffer.byteLength(text),
          })
          res.end(text)
        })
      },
    )
    forwarded.on('error', () => res.destroy())
    req.pipe(forwarded)
  })
  await listen(server)
  const issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  return { issuer, plainIssuer: `${issuer}/plain`, close: () => closeServer(server) }
}

/**
 * Plays the browser: follows redirects from the authorization URL, keeps the provider's cookies,
 * submits the login form as `account` and the consent form, and returns the redirect to the
 * loopback callback without requesting it.
 */
export async function browseToCallback(authorizationUrl: string, account: string): Promise<URL> {
  const cookies = new Map<string, string>()
  let url = new URL(authorizationUrl)
  let init: { method: string; body?: string; headers: Record<string, string> } = {
    method: 'GET',
    headers: {},
  }
  for (let step = 0; step < 20; step++) {
    const cookieHeader = [...cookies].map(([name, value]) => `${name}=${value}`).join('; ')
    const response = await fetch(url, {
      ...init,
      headers: { ...init.headers, ...(cookieHeader ? { cookie: cookieHeader } : {}) },
      redirect: 'manual',
    })
    for (const line of response.headers.getSetCookie()) {
      const [pair] = line.split(';')
      const separator = (pair as string).indexOf('=')
      cookies.set(
        (pair as string).slice(0, separator).trim(),
        (pair as string).slice(separator + 1),
      )
    }
    const location = response.headers.get('location')
    if (response.status >= 300 && response.status < 400 && location) {
      const next = new URL(location, url)
      await response.body?.cancel()
      if (next.pathname === '/callback') return next
      url = next
      init = { method: 'GET', headers: {} }
      continue
    }
    const html = await response.text()
    const action = /<form[^>]*action="([^"]+)"/.exec(html)?.[1]
    const prompt = /name="prompt" value="([^"]+)"/.exec(html)?.[1]
    if (response.status !== 200 || !action || !prompt) {
      throw new Error(`the provider answered ${response.status} at ${url}: ${html.slice(0, 500)}`)
    }
    const form =
      prompt === 'login'
        ? new URLSearchParams({ prompt, login: account, password: 'any password' })
        : new URLSearchParams({ prompt })
    url = new URL(action.replaceAll('&amp;', '&'), url)
    init = {
      method: 'POST',
      body: form.toString(),
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
    }
  }
  throw new Error('the login did not reach the callback within 20 requests')
}

function listen(server: Server): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => resolve())
  })
}

function closeServer(server: Server): Promise<void> {
  server.closeAllConnections()
  return new Promise((resolve) => server.close(() => resolve()))
}
