/**
 * JSON over HTTPS to a cluster endpoint (OIDC discovery, JWKS, TokenReview), with the CA the
 * JoinToken names, a timeout and a size limit. Redirects are not followed.
 */
import { readFile } from 'node:fs/promises'
import type { IncomingMessage } from 'node:http'
import { request } from 'node:https'
import type { ClusterTrust } from './join-spec.js'

/** How long one request to the cluster may take: 5 seconds. */
export const CLUSTER_REQUEST_TIMEOUT_MS = 5000

/** The largest response read from the cluster: 1 MiB, far above a JWKS or a TokenReview. */
const MAX_RESPONSE_BYTES = 1024 * 1024

/** A failed request to the cluster. The message names the URL and never includes credentials. */
export class ClusterRequestError extends Error {
  override name = 'ClusterRequestError'
  readonly status: number | undefined

  constructor(message: string, status?: number, options?: { cause?: unknown }) {
    super(message, options)
    this.status = status
  }
}

export interface ClusterRequest {
  method: 'GET' | 'POST'
  url: string
  trust: ClusterTrust
  body?: unknown
  headers?: Record<string, string>
  timeoutMs?: number
}

/** A parsed JSON response with its status; bodies that are not JSON raise ClusterRequestError. */
export interface ClusterResponse {
  status: number
  body: unknown
}

/**
 * Sends one request and parses the JSON response of any status, so callers can read the
 * Kubernetes `Status` object of a 4xx. Network failures, timeouts, non-JSON bodies and non-https
 * URLs raise ClusterRequestError.
 */
export async function requestClusterJson(options: ClusterRequest): Promise<ClusterResponse> {
  const url = new URL(options.url)
  if (url.protocol !== 'https:') {
    throw new ClusterRequestError(`refusing ${options.url}: only https URLs are used`)
  }
  const ca = await readTrust(options.trust)
  const payload = options.body === undefined ? undefined : Buffer.from(JSON.stringify(options.body))
  const timeoutMs = options.timeoutMs ?? CLUSTER_REQUEST_TIMEOUT_MS
  const headers: Record<string, string | number> = {
    accept: 'application/json',
    ...options.headers,
  }
  if (payload) {
    headers['content-type'] = 'application/json'
    headers['content-length'] = payload.length
  }
  return new Promise((resolve, reject) => {
    const outgoing = request(
      url,
      { method: options.method, agent: false, headers, ...(ca === undefined ? {} : { ca }) },
      (response) => {
        readBody(response, options.url).then(
          (text) => resolve(parseResponse(options.url, response.statusCode ?? 0, text)),
          reject,
        )
      },
    )
    outgoing.setTimeout(timeoutMs, () => {
      outgoing.destroy(
        new ClusterRequestError(`${options.url} did not respond within ${timeoutMs} ms`),
      )
    })
    outgoing.once('error', (error) => {
      if (error instanceof ClusterRequestError) return reject(error)
      const code = (error as NodeJS.ErrnoException).code ?? error.message
      reject(
        new ClusterRequestError(`request to ${options.url} failed (${code})`, undefined, {
          cause: error,
        }),
      )
    })
    outgoing.end(payload)
  })
}

async function readTrust(trust: ClusterTrust): Promise<string | undefined> {
  if (trust.ca !== undefined) return trust.ca
  if (trust.caFile === undefined) return undefined
  try {
    return await readFile(trust.caFile, 'utf8')
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'read failed'
    throw new ClusterRequestError(`failed to read caFile ${trust.caFile} (${code})`, undefined, {
      cause: error,
    })
  }
}

function readBody(response: IncomingMessage, url: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let size = 0
    response.on('data', (chunk: Buffer) => {
      size += chunk.length
      if (size > MAX_RESPONSE_BYTES) {
        response.destroy()
        reject(new ClusterRequestError(`${url} sent more than ${MAX_RESPONSE_BYTES} bytes`))
        return
      }
      chunks.push(chunk)
    })
    response.once('end', () => resolve(Buffer.concat(chunks).toString('utf8')))
    response.once('error', (error) =>
      reject(
        new ClusterRequestError(`reading ${url} failed: ${error.message}`, undefined, {
          cause: error,
        }),
      ),
    )
  })
}

function parseResponse(url: string, status: number, text: string): ClusterResponse {
  try {
    return { status, body: JSON.parse(text) as unknown }
  } catch (error) {
    throw new ClusterRequestError(
      `${url} returned HTTP ${status} with a body that is not JSON`,
      status,
      {
        cause: error,
      },
    )
  }
}
