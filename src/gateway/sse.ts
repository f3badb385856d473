/** Server-Sent Events: a parser for reading streams and an encoder for writing them. */

/** One dispatched event. `event` is `message` when the stream named none. */
export interface SseEvent {
  event: string
  data: string
  id?: string
  retry?: number
}

/**
 * Parses an SSE byte stream as the HTML living standard describes it: lines end in CR, LF or
 * CRLF, `data` lines join with LF, comments start with a colon, and an event is dispatched at a
 * blank line. Bytes are decoded with a streaming decoder, so split characters survive.
 */
export class SseParser {
  readonly #decoder = new TextDecoder('utf-8')
  readonly #onEvent: (event: SseEvent) => void
  #buffer = ''
  #data: string[] = []
  #event = ''
  #id: string | undefined
  #retry: number | undefined
  #sawCarriageReturn = false

  constructor(onEvent: (event: SseEvent) => void) {
    this.#onEvent = onEvent
  }

  push(chunk: Uint8Array): void {
    this.#feed(this.#decoder.decode(chunk, { stream: true }))
  }

  end(): void {
    this.#feed(this.#decoder.decode())
  }

  #feed(text: string): void {
    let input = text
    // A CRLF split across chunks: the LF belongs to the line already ended by the CR.
    if (this.#sawCarriageReturn && input.startsWith('\n')) input = input.slice(1)
    this.#sawCarriageReturn = false
    this.#buffer += input
    let start = 0
    for (let index = 0; index < this.#buffer.length; index++) {
      const char = this.#buffer[index]
      if (char !== '\n' && char !== '\r') continue
      this.#line(this.#buffer.slice(start, index))
      if (char === '\r') {
        if (index + 1 === this.#buffer.length) this.#sawCarriageReturn = true
        else if (this.#buffer[index + 1] === '\n') index++
      }
      start = index + 1
    }
    this.#buffer = this.#buffer.slice(start)
  }

  #line(line: string): void {
    if (line === '') {
      this.#dispatch()
      return
    }
    if (line.startsWith(':')) return
    const colon = line.indexOf(':')
    const field = colon === -1 ? line : line.slice(0, colon)
    let value = colon === -1 ? '' : line.slice(colon + 1)
    if (value.startsWith(' ')) value = value.slice(1)
    if (field === 'data') this.#data.push(value)
    else if (field === 'event') this.#event = value
    else if (field === 'id' && !value.includes('\0')) this.#id = value
    else if (field === 'retry' && /^\d+$/.test(value)) this.#retry = Number(value)
  }

  #dispatch(): void {
    const event: SseEvent = { event: this.#event || 'message', data: this.#data.join('\n') }
    if (this.#id !== undefined) event.id = this.#id
    if (this.#retry !== undefined) event.retry = this.#retry
    const hasData = this.#data.length > 0
    this.#data = []
    this.#event = ''
    this.#retry = undefined
    if (hasData) this.#onEvent(event)
  }
}

/** Encodes one JSON message as an SSE `message` event. */
export function encodeSseMessage(json: string): string {
  // JSON.stringify output has no raw line breaks, so one data line carries the whole message.
  return `event: message\ndata: ${json}\n\n`
}
