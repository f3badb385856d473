import type { IncomingMessage } from 'node:http'
import { request } from 'node:https'
import { WritError } from '../errors.js'
import { connectionError, responseError, timeoutError } from './agent-errors.js'
import type { ServerAddress } from './server-address.js'

/** The largest response body the agent reads; an issued certificate and bundle are a few KiB. */
const MAX_RESPONSE_BYTES = 1024 * 1024

/** TLS material for one request: the CA to trust and, for mTLS, the client certificate and key. */
export interface RequestTls {
  ca: string
  cert?: string
  key?: string
}

/**
 * Posts a JSON body over HTTPS, verifying the server against `tls.ca` and its host name, and
 * returns the parsed 200 body. Any other status becomes a WritError from `responseError`.
 */
export function postJson(
  address: ServerAddress,
  path: string,
  body: unknown,
  tls: RequestTls,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<unknown> {
  const payload = Buffer.from(JSON.stringify(body))
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: address.host,
        port: address.port,
        path,
        method: 'POST',
        agent: false,
        ...tls,
        ...(signal ? { signal } : {}),
        headers: { 'content-type': 'application/json', 'content-length': payload.length },
      },
      (res) => {
        readBody(address, res)
          .then((text) => resolve(settle(address, res.statusCode ?? 0, text)))
          .catch(reject)
      },
    )
    req.setTimeout(timeoutMs, () => {
      req.destroy(timeoutError(address, timeoutMs))
    })
    req.once('error', (error) => {
      reject(error instanceof WritError ? error : connectionError(address, error))
    })
    req.end(payload)
  })
}

function readBody(address: ServerAddress, res: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let size = 0
    res.on('data', (chunk: Buffer) => {
      size += chunk.length
      if (size > MAX_RESPONSE_BYTES) {
        res.destroy()
        reject(invalidResponse(address, `the response is larger than ${MAX_RESPONSE_BYTES} bytes`))
        return
      }
      chunks.push(chunk)
    })
    res.once('end', () => resolve(Buffer.concat(chunks).toString('utf8')))
    res.once('error', (error) => reject(connectionError(address, error)))
  })
}

function settle(address: ServerAddress, status: number, text: string): unknown {
  let parsed: unknown
  try {
    parsed = text ? JSON.parse(text) : undefined
  } catch {
    if (status === 200) throw invalidResponse(address, 'the response body is not JSON')
  }
  if (status !== 200) throw responseError(address, status, parsed)
  return parsed
}

/** The error for a 200 answer the agent cannot use. */
export function invalidResponse(address: ServerAddress, reason: string): WritError {
  return new WritError(
    'agent.response_invalid',
    `the Writ server at ${address.text} sent an unusable response: ${reason}`,
    { server: address.text, reason },
  )
}
