/**
 * Time-based one-time passwords (TOTP, RFC 6238) over HOTP (RFC 4226), and the `otpauth://` URI
 * that authenticator apps read. Writ issues SHA-1, 6-digit, 30-second codes, the parameters every
 * common authenticator app supports; the other algorithms exist for the RFC 6238 test vectors.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto'

export type TotpAlgorithm = 'sha1' | 'sha256' | 'sha512'

export interface TotpParameters {
  algorithm: TotpAlgorithm
  digits: number
  /** The length of one time step, in seconds. */
  periodSeconds: number
}

/** The parameters of every secret Writ issues. */
export const WRIT_TOTP: Readonly<TotpParameters> = {
  algorithm: 'sha1',
  digits: 6,
  periodSeconds: 30,
}

/** 20 bytes: the secret length RFC 4226 recommends (160 bits, the SHA-1 output size). */
export const TOTP_SECRET_BYTES = 20

/**
 * How many time steps before and after the current one a code may come from: one each way, so a
 * code typed just before its step ends still works and small clock differences are tolerated.
 */
export const TOTP_ALLOWED_DRIFT_STEPS = 1

const BASE32_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567'

/** Generates a new random TOTP secret. */
export function generateTotpSecret(): Buffer {
  return randomBytes(TOTP_SECRET_BYTES)
}

/** Returns the time step that contains `timeMs`: whole periods since the Unix epoch. */
export function totpStep(timeMs: number, parameters: TotpParameters = WRIT_TOTP): number {
  return Math.floor(timeMs / 1000 / parameters.periodSeconds)
}

/**
 * Computes the HOTP value (RFC 4226 section 5.3) for one counter, as a zero-padded decimal string.
 *
 * @example hotp(Buffer.from('12345678901234567890'), 0, WRIT_TOTP) // '755224'
 */
export function hotp(secret: Buffer, counter: number, parameters: TotpParameters): string {
  if (!Number.isSafeInteger(counter) || counter < 0) {
    throw new TypeError(`HOTP counter must be a non-negative safe integer, got ${counter}`)
  }
  if (!Number.isInteger(parameters.digits) || parameters.digits < 6 || parameters.digits > 10) {
    throw new TypeError(`HOTP digits must be an integer from 6 to 10, got ${parameters.digits}`)
  }
  const message = Buffer.alloc(8)
  message.writeBigUInt64BE(BigInt(counter))
  const mac = createHmac(parameters.algorithm, secret).update(message).digest()
  // Dynamic truncation: the low 4 bits of the last byte pick where 31 bits are read from.
  const offset = (mac[mac.length - 1] as number) & 0x0f
  const binary = mac.readUInt32BE(offset) & 0x7fffffff
  return (binary % 10 ** parameters.digits).toString().padStart(parameters.digits, '0')
}

/**
 * Computes the TOTP code for the time step that contains `timeMs`.
 *
 * @example totp(secret, Date.now()) // '492039'
 */
export function totp(
  secret: Buffer,
  timeMs: number,
  parameters: TotpParameters = WRIT_TOTP,
): string {
  return hotp(secret, totpStep(timeMs, parameters), parameters)
}

/**
 * Checks a code against the steps around `timeMs` (see `TOTP_ALLOWED_DRIFT_STEPS`) and returns
 * the step it matches, or undefined. Every candidate is compared in constant time. The caller
 * must reject a step at or before the last one it accepted, because a code may be used once.
 */
export function matchTotpStep(
  secret: Buffer,
  code: string,
  timeMs: number,
  parameters: TotpParameters = WRIT_TOTP,
): number | undefined {
  const typed = Buffer.from(code.replace(/\s/g, ''), 'utf8')
  const current = totpStep(timeMs, parameters)
  let matched: number | undefined
  for (let drift = -TOTP_ALLOWED_DRIFT_STEPS; drift <= TOTP_ALLOWED_DRIFT_STEPS; drift++) {
    const step = current + drift
    if (step < 0) continue
    const expected = Buffer.from(hotp(secret, step, parameters), 'utf8')
    // Every step is checked, so the time taken does not reveal which one matched.
    if (expected.length === typed.length && timingSafeEqual(expected, typed)) matched ??= step
  }
  return matched
}

/** Encodes bytes as RFC 4648 base32 without padding, the form `otpauth://` URIs carry. */
export function encodeBase32(bytes: Buffer): string {
  let text = ''
  let buffer = 0
  let bits = 0
  for (const byte of bytes) {
    buffer = (buffer << 8) | byte
    bits += 8
    while (bits >= 5) {
      text += BASE32_ALPHABET[(buffer >>> (bits - 5)) & 31]
      bits -= 5
    }
    buffer &= (1 << bits) - 1
  }
  if (bits > 0) text += BASE32_ALPHABET[(buffer << (5 - bits)) & 31]
  return text
}

/**
 * Decodes RFC 4648 base32, ignoring case, spaces, dashes and padding. Throws a `TypeError` naming
 * the first character outside the alphabet.
 */
export function decodeBase32(text: string): Buffer {
  const bytes: number[] = []
  let buffer = 0
  let bits = 0
  for (const character of text.toUpperCase().replace(/[\s=-]/g, '')) {
    const value = BASE32_ALPHABET.indexOf(character)
    if (value < 0) throw new TypeError(`invalid base32 character ${JSON.stringify(character)}`)
    buffer = ((buffer << 5) | value) & 0xfff
    bits += 5
    if (bits >= 8) {
      bytes.push((buffer >>> (bits - 8)) & 0xff)
      bits -= 8
    }
  }
  return Buffer.from(bytes)
}

/**
 * Builds the `otpauth://totp/` URI (the Key Uri Format that Google Authenticator defined and other
 * apps follow) that authenticator apps import, usually from a QR code.
 *
 * @example otpauthUri(secret, { issuer: 'Writ writ.local', account: 'alice' })
 */
export function otpauthUri(
  secret: Buffer,
  label: { issuer: string; account: string },
  parameters: TotpParameters = WRIT_TOTP,
): string {
  const path = `${encodeURIComponent(label.issuer)}:${encodeURIComponent(label.account)}`
  const query = new URLSearchParams({
    secret: encodeBase32(secret),
    issuer: label.issuer,
    algorithm: parameters.algorithm.toUpperCase(),
    digits: String(parameters.digits),
    period: String(parameters.periodSeconds),
  })
  return `otpauth://totp/${path}?${query.toString().replaceAll('+', '%20')}`
}
