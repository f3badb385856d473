import type { IncomingMessage, ServerResponse } from 'node:http'
import type { JsonRpcId, JsonRpcMessage } from './jsonrpc.js'
import { encodeSseMessage } from './sse.js'

/** Result of reading a request body under a size limit. */
export type BodyResult = { ok: true; text: string } | { ok: false; tooLarge: true }

/** Reads the request body, stopping as soon as it exceeds `maxBytes`. */
export async function readLimitedBody(req: IncomingMessage, maxBytes: number): Promise<BodyResult> {
  const declared = Number(req.headers['content-length'])
  if (Number.isFinite(declared) && declared > maxBytes) {
    req.resume()
    return { ok: false, tooLarge: true }
  }
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length
    if (size > maxBytes) {
      // Keep draining without storing, so the 413 reaches a client that is still sending.
      req.resume()
      return { ok: false, tooLarge: true }
    }
    chunks.push(chunk)
  }
  return { ok: true, text: Buffer.concat(chunks).toString('utf8') }
}

/** Writes a JSON body (a message, a batch or nothing) with the given status. */
export function writeJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  if (res.headersSent) {
    res.end()
    return
  }
  const text = body === undefined ? '' : JSON.stringify(body)
  res.writeHead(status, {
    ...headers,
    ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    'content-length': Buffer.byteLength(text),
  })
  res.end(text)
}

/** Reports whether an Accept header lists a media type (or a wildcard covering it). */
export function accepts(header: string | undefined, type: string): boolean {
  if (header === undefined) return false
  const [major] = type.split('/')
  return header.split(',').some((part) => {
    const range = part.split(';')[0]!.trim().toLowerCase()
    return range === type || range === `${major}/*` || range === '*/*'
  })
}

/** Returns a key that tells the request ids 1 and "1" apart. */
export function idKey(id: JsonRpcId): string {
  return typeof id === 'number' ? `n:${id}` : `s:${id}`
}

/**
 * The reply to one POST that contained requests. In stream mode it is an SSE response that also
 * carries related server messages and ends after the last response; in JSON mode it collects the
 * responses and writes them as one body.
 */
export class PostExchange {
  readonly streaming: boolean
  readonly #res: ServerResponse
  readonly #batch: boolean
  readonly #outstanding = new Set<string>()
  readonly #collected: string[] = []
  readonly #headers: () => Record<string, string>
  #closed = false

  constructor(options: {
    res: ServerResponse
    streaming: boolean
    batch: boolean
    /** Headers computed when the reply starts, such as the new session id. */
    headers: () => Record<string, string>
  }) {
    this.#res = options.res
    this.streaming = options.streaming
    this.#batch = options.batch
    this.#headers = options.headers
    this.#res.once('close', () => {
      this.#closed = true
    })
  }

  /** True while the client can still receive messages on this exchange. */
  get open(): boolean {
    return !this.#closed && !this.#res.writableEnded
  }

  expect(id: JsonRpcId): void {
    this.#outstanding.add(idKey(id))
  }

  /** Starts the SSE reply, so a client sees headers before the first response. */
  begin(): void {
    if (!this.streaming || this.#res.headersSent) return
    this.#res.writeHead(200, {
      ...this.#headers(),
      'content-type': 'text/event-stream',
      'cache-control': 'no-cache',
      connection: 'keep-alive',
    })
    this.#res.flushHeaders()
  }

  /** Sends a serialised related message; only stream mode carries these. */
  sendRelated(json: string): boolean {
    if (!this.streaming || !this.open) return false
    this.begin()
    this.#res.write(encodeSseMessage(json))
    return true
  }

  /** Delivers the serialised response to one of this exchange's requests. */
  respond(id: JsonRpcId | null, json: string): boolean {
    if (!this.open) return false
    if (this.streaming) {
      this.begin()
      this.#res.write(encodeSseMessage(json))
    } else {
      this.#collected.push(json)
    }
    this.#settle(id)
    return true
  }

  /** Stops waiting for a request that will get no response, such as a cancelled one. */
  abandon(id: JsonRpcId): void {
    this.#settle(id)
  }

  /** Ends the reply now, writing whatever was collected. */
  finish(): void {
    if (this.#res.writableEnded) return
    if (this.streaming) {
      this.begin()
      this.#res.end()
      return
    }
    const body =
      this.#batch || this.#collected.length !== 1
        ? `[${this.#collected.join(',')}]`
        : this.#collected[0]!
    this.#res.writeHead(200, {
      ...this.#headers(),
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(body),
    })
    this.#res.end(body)
  }

  #settle(id: JsonRpcId | null): void {
    if (id !== null) this.#outstanding.delete(idKey(id))
    if (this.#outstanding.size === 0) this.finish()
  }
}

/** Serialises a message for the client; the session passes its redactor's `json`. */
export type Serialise = (message: JsonRpcMessage) => string
