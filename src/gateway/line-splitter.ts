/**
 * Splits a byte stream into newline-terminated lines. It works on bytes and decodes only whole
 * lines, so a multibyte UTF-8 character split across two reads is decoded intact.
 */
export class LineSplitter {
  #pending: Buffer[] = []
  #pendingBytes = 0
  readonly #maxLineBytes: number
  readonly #onLine: (line: string) => void
  readonly #onOverflow: (bytes: number) => void

  constructor(options: {
    onLine: (line: string) => void
    /** Longest line kept; a longer one is dropped and reported to `onOverflow`. */
    maxLineBytes?: number
    onOverflow?: (bytes: number) => void
  }) {
    this.#onLine = options.onLine
    this.#maxLineBytes = options.maxLineBytes ?? 64 * 1024 * 1024
    this.#onOverflow = options.onOverflow ?? (() => {})
  }

  /** Feeds one chunk and emits every line it completes. */
  push(chunk: Buffer): void {
    let start = 0
    let newline = chunk.indexOf(0x0a, start)
    while (newline !== -1) {
      this.#append(chunk.subarray(start, newline))
      this.#emit()
      start = newline + 1
      newline = chunk.indexOf(0x0a, start)
    }
    if (start < chunk.length) this.#append(chunk.subarray(start))
  }

  /** Emits a final line that had no newline, as at the end of a stream. */
  end(): void {
    if (this.#pendingBytes > 0) this.#emit()
  }

  #append(part: Buffer): void {
    if (part.length === 0) return
    this.#pendingBytes += part.length
    if (this.#pendingBytes <= this.#maxLineBytes) this.#pending.push(part)
  }

  #emit(): void {
    const bytes = this.#pendingBytes
    const parts = this.#pending
    this.#pending = []
    this.#pendingBytes = 0
    if (bytes > this.#maxLineBytes) {
      this.#onOverflow(bytes)
      return
    }
    const line = (parts.length === 1 ? parts[0]! : Buffer.concat(parts)).toString('utf8')
    const trimmed = line.endsWith('\r') ? line.slice(0, -1) : line
    if (trimmed.length > 0) this.#onLine(trimmed)
  }
}
