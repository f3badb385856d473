import { createHash, X509Certificate } from 'node:crypto'
import { WritError } from '../errors.js'

/**
 * Computes the pin of a CA certificate: `sha256:` followed by the lowercase hex SHA-256 digest of
 * the certificate's DER SubjectPublicKeyInfo. The pin names the CA key, so it stays the same when
 * the CA certificate is reissued for the same key.
 *
 * @example
 *   caPin(readFileSync('writ-data/ca.pem', 'utf8')) // 'sha256:3f1c...'
 */
export function caPin(certPem: string | Buffer): string {
  let certificate: X509Certificate
  try {
    certificate = new X509Certificate(certPem)
  } catch (error) {
    throw new WritError(
      'identity.invalid_certificate',
      'cannot compute a CA pin: the certificate does not parse',
      {},
      { cause: error },
    )
  }
  const spki = certificate.publicKey.export({ type: 'spki', format: 'der' })
  return `sha256:${createHash('sha256').update(spki).digest('hex')}`
}

/** Reports whether `pin` has the `sha256:<64 lowercase hex digits>` form. */
export function isCaPin(pin: string): boolean {
  return /^sha256:[0-9a-f]{64}$/.test(pin)
}
