import { createHash, X509Certificate } from 'node:crypto'
import { WritError } from '../errors.js'

const PIN_PATTERN = /^sha256:[0-9a-f]{64}$/

/**
 * Normalises a CA pin given on the command line to `sha256:<64 lowercase hex digits>`.
 * Accepts any letter case; throws `agent.ca_pin_invalid` showing the expected form otherwise.
 *
 * @example
 *   parseCaPin('SHA256:AB12…') // 'sha256:ab12…'
 */
export function parseCaPin(text: string): string {
  const pin = text.trim().toLowerCase()
  if (!PIN_PATTERN.test(pin)) {
    throw new WritError(
      'agent.ca_pin_invalid',
      `invalid CA pin "${text}": expected sha256: followed by 64 hex digits (the SHA-256 of the CA public key)`,
      { pin: text },
    )
  }
  return pin
}

/**
 * Computes the pin of a certificate: SHA-256 over the DER SubjectPublicKeyInfo, so the pin stays
 * the same when the CA certificate is re-issued for the same key.
 *
 * @example
 *   computeSpkiPin(caPem) // 'sha256:3f0c…'
 */
export function computeSpkiPin(certificate: string | Buffer): string {
  const spki = new X509Certificate(certificate).publicKey.export({ type: 'spki', format: 'der' })
  return `sha256:${createHash('sha256').update(spki).digest('hex')}`
}
