import { WritError } from '../errors.js'

const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----([A-Za-z0-9+/=\s]*?)-----END \1-----/g

/** Splits PEM text into the DER bytes of every block whose label is one of `labels`. */
export function pemBlocks(text: string, labels: readonly string[]): Buffer[] {
  const blocks: Buffer[] = []
  for (const match of text.matchAll(PEM_BLOCK)) {
    if (labels.includes(match[1] as string)) {
      blocks.push(Buffer.from((match[2] as string).replace(/\s+/g, ''), 'base64'))
    }
  }
  return blocks
}

/** Decodes exactly one PEM block with one of `labels`; throws `code` naming what was found. */
export function pemToDer(text: string, labels: readonly string[], code: string): Buffer {
  const blocks = pemBlocks(text, labels)
  if (blocks.length !== 1) {
    throw new WritError(
      code,
      `expected one PEM block labelled ${labels[0]}, found ${blocks.length}`,
      {
        found: blocks.length,
      },
    )
  }
  return blocks[0] as Buffer
}

/** Encodes DER bytes as a PEM block with 64-character lines and a trailing newline. */
export function derToPem(der: ArrayBuffer | Uint8Array, label: string): string {
  const base64 = Buffer.from(der instanceof Uint8Array ? der : new Uint8Array(der)).toString(
    'base64',
  )
  const lines = base64.match(/.{1,64}/g) ?? []
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`
}
