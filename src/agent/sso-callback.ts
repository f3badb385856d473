/**
 * The loopback HTTP listener that receives the OpenID Provider's redirect after a browser login
 * (RFC 8252 section 7.3). It listens on 127.0.0.1 only and accepts one callback whose `state`
 * matches the login it belongs to.
 */
import { createServer, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { WritError } from '../errors.js'

/** The path of the redirect URI. */
export const CALLBACK_PATH = '/callback'

/** The query parameters of the authorization response. */
export interface CallbackParameters {
  code: string
  state: string
  /** The issuer (RFC 9207), when the provider sends it. */
  iss?: string
}

/** A callback that arrived; `reply` sends the result page to the waiting browser. */
export interface ReceivedCallback {
  parameters: CallbackParameters
  reply(ok: boolean, message: string): void
}

export interface CallbackListener {
  /** `http://127.0.0.1:PORT/callback`. */
  redirectUri: string
  /**
   * Waits for the callback with `state`. A request with another state gets an error page and is
   * otherwise ignored. Rejects with `sso.authorization_failed` when the provider reports an error, or
   * `sso.callback_timeout` after `timeoutMs`.
   */
  waitForCallback(state: string, timeoutMs: number): Promise<ReceivedCallback>
  close(): Promise<void>
}

/**
 * Starts listening on 127.0.0.1:`port` (0 picks a free port). Throws `sso.callback_listen_failed`
 * naming the port when it is taken.
 */
export async function listenForCallback(port: number): Promise<CallbackListener> {
  let onCallback: ((url: URL, res: ServerResponse) => void) | undefined
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1')
    if (req.method !== 'GET' || url.pathname !== CALLBACK_PATH || !onCallback) {
      sendPage(res, 404, 'Not found.')
      return
    }
    onCallback(url, res)
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', (error) => {
      reject(
        new WritError(
          'sso.callback_listen_failed',
          `cannot listen for the login callback on 127.0.0.1:${port}: ${(error as NodeJS.ErrnoException).code ?? error.message}; free the port or try again`,
          { port },
          { cause: error },
        ),
      )
    })
    server.listen(port, '127.0.0.1', () => resolve())
  })
  const bound = (server.address() as AddressInfo).port

  return {
    redirectUri: `http://127.0.0.1:${bound}${CALLBACK_PATH}`,
    waitForCallback(state, timeoutMs) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          onCallback = undefined
          reject(
            new WritError(
              'sso.callback_timeout',
              `no login callback arrived within ${Math.round(timeoutMs / 1000)} s; run writ login --sso again`,
            ),
          )
        }, timeoutMs)
        onCallback = (url, res) => {
          const parameters = url.searchParams
          if (parameters.get('state') !== state) {
            // Another login's response, or a forged one: it must not end this login.
            sendPage(res, 400, 'This login response does not belong to the running writ login.')
            return
          }
          clearTimeout(timer)
          onCallback = undefined
          const error = parameters.get('error')
          if (error !== null) {
            const description = parameters.get('error_description')
            sendPage(res, 400, `Login failed: ${error}. Return to the terminal.`)
            reject(
              new WritError(
                'sso.authorization_failed',
                `the OpenID Provider returned ${error}${description ? `: ${description}` : ''}`,
                { error },
              ),
            )
            return
          }
          const code = parameters.get('code')
          if (!code) {
            sendPage(res, 400, 'The login response has no code.')
            reject(new WritError('sso.authorization_failed', 'the login callback has no code'))
            return
          }
          const iss = parameters.get('iss')
          resolve({
            parameters: { code, state, ...(iss === null ? {} : { iss }) },
            reply: (ok, message) => sendPage(res, ok ? 200 : 400, message),
          })
        }
      })
    },
    close() {
      // Every page is sent with `connection: close`, so waiting for open connections is brief.
      const closed = new Promise<void>((resolve) => server.close(() => resolve()))
      server.closeIdleConnections()
      return closed
    },
  }
}

function sendPage(res: ServerResponse, status: number, message: string): void {
  const escaped = message.replace(/[&<>"']/g, (character) => `&#${character.charCodeAt(0)};`)
  const html = `<!doctype html><meta charset="utf-8"><title>Writ login</title><p>${escaped}</p>\n`
  res.writeHead(status, {
    'content-type': 'text/html; charset=utf-8',
    'content-length': Buffer.byteLength(html),
    'cache-control': 'no-store',
    connection: 'close',
  })
  res.end(html)
}
