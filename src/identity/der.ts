/** One DER element: its tag byte and where its header and contents sit in the input. */
export interface DerElement {
  tag: number
  /** Offset of the tag byte. */
  start: number
  /** Offset of the first content byte. */
  contentStart: number
  /** Offset just past the last content byte. */
  end: number
}

/**
 * Reads the DER element that starts at `offset`, or returns undefined when the bytes are not a
 * complete single-byte-tag element with a definite length. Only the header is checked.
 */
export function readDerElement(bytes: Uint8Array, offset: number): DerElement | undefined {
  if (offset + 2 > bytes.length) return undefined
  const tag = bytes[offset] as number
  if ((tag & 0x1f) === 0x1f) return undefined
  let length = bytes[offset + 1] as number
  let contentStart = offset + 2
  if (length & 0x80) {
    const count = length & 0x7f
    if (count === 0 || count > 4 || contentStart + count > bytes.length) return undefined
    length = 0
    for (let index = 0; index < count; index++) {
      length = length * 256 + (bytes[contentStart + index] as number)
    }
    contentStart += count
  }
  const end = contentStart + length
  if (end > bytes.length) return undefined
  return { tag, start: offset, contentStart, end }
}

/** Splits the contents of a constructed element into its child elements, or undefined if malformed. */
export function readDerChildren(bytes: Uint8Array, parent: DerElement): DerElement[] | undefined {
  const children: DerElement[] = []
  let offset = parent.contentStart
  while (offset < parent.end) {
    const child = readDerElement(bytes, offset)
    if (!child || child.end > parent.end) return undefined
    children.push(child)
    offset = child.end
  }
  return children
}

/** Converts any binary input to a Uint8Array view without copying. */
export function toBytes(data: ArrayBuffer | ArrayBufferView): Uint8Array {
  if (data instanceof Uint8Array) return data
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
  return new Uint8Array(data)
}

/** Encodes a DER element with the given tag around already encoded contents. */
export function encodeDerElement(tag: number, ...contents: Uint8Array[]): Buffer {
  const length = contents.reduce((total, part) => total + part.length, 0)
  return Buffer.concat([Buffer.from([tag]), encodeDerLength(length), ...contents])
}

function encodeDerLength(length: number): Buffer {
  if (length < 0x80) return Buffer.from([length])
  const bytes: number[] = []
  for (let rest = length; rest > 0; rest = Math.floor(rest / 256)) bytes.unshift(rest % 256)
  return Buffer.from([0x80 | bytes.length, ...bytes])
}

/**
 * Encodes a dotted OID as the contents of a DER OBJECT IDENTIFIER (without tag and length).
 * Arcs are read as BigInt, because UUID-derived arcs under `2.25` exceed 2^53.
 */
export function encodeOidContents(oid: string): Buffer {
  const arcs = oid.split('.').map((arc) => BigInt(arc))
  const [first, second, ...rest] = arcs
  if (first === undefined || second === undefined || first > 2n) {
    throw new TypeError(`invalid OID "${oid}"`)
  }
  const bytes: number[] = []
  for (const arc of [first * 40n + second, ...rest]) {
    const groups: number[] = [Number(arc & 0x7fn)]
    for (let value = arc >> 7n; value > 0n; value >>= 7n) {
      groups.unshift(Number(value & 0x7fn) | 0x80)
    }
    bytes.push(...groups)
  }
  return Buffer.from(bytes)
}
