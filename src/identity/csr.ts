import { createPublicKey, type KeyObject, verify } from 'node:crypto'
import { AsnConvert } from '@peculiar/asn1-schema'
import {
  type Attribute,
  Extensions,
  id_ce_subjectAltName,
  SubjectAlternativeName,
} from '@peculiar/asn1-x509'
import { WritError } from '../errors.js'
import { CsrAsn, EXTENSION_REQUEST_OID } from './csr-asn.js'
import { readCommonName } from './name.js'
import { pemToDer } from './pem.js'

/** ecdsa-with-SHA256 (RFC 5758), the only CSR signature algorithm the authority accepts. */
export const ECDSA_WITH_SHA256 = '1.2.840.10045.4.3.2'

/** A CSR whose self-signature checked out and whose key is ECDSA P-256. */
export interface VerifiedCsr {
  publicKey: KeyObject
  /** The DER SubjectPublicKeyInfo, copied into the issued certificate unchanged. */
  spkiDer: Uint8Array
  commonName?: string
  /** Every URI in a subjectAltName extension request, in order. */
  uriSans: string[]
}

/**
 * Parses a PEM PKCS#10 request, checks its self-signature and requires an ECDSA P-256 key.
 * Throws `csr.invalid` naming the check that failed.
 *
 * @example
 *   const csr = verifyCsr(body.csr)
 */
export function verifyCsr(pem: string): VerifiedCsr {
  if (typeof pem !== 'string') throw invalidCsr('the CSR must be a PEM string')
  const der = pemToDer(pem, ['CERTIFICATE REQUEST', 'NEW CERTIFICATE REQUEST'], 'csr.invalid')
  let parsed: CsrAsn
  try {
    parsed = AsnConvert.parse(der, CsrAsn)
  } catch (error) {
    throw invalidCsr('the CSR is not a valid PKCS#10 structure', error)
  }
  const spkiDer = new Uint8Array(parsed.info.subjectPKInfoRaw ?? new ArrayBuffer(0))
  const publicKey = readP256PublicKey(spkiDer)
  checkSignature(parsed, publicKey)
  const csr: VerifiedCsr = { publicKey, spkiDer, uriSans: readUriSans(parsed.info.attributes) }
  const commonName = readCommonName(parsed.info.subject)
  if (commonName !== undefined) csr.commonName = commonName
  return csr
}

function readP256PublicKey(spkiDer: Uint8Array): KeyObject {
  let key: KeyObject
  try {
    key = createPublicKey({ key: Buffer.from(spkiDer), format: 'der', type: 'spki' })
  } catch (error) {
    throw invalidCsr('the CSR public key does not parse', error)
  }
  const curve = key.asymmetricKeyDetails?.namedCurve
  if (key.asymmetricKeyType !== 'ec' || curve !== 'prime256v1') {
    const found = `${key.asymmetricKeyType ?? 'unknown'}${curve ? ` ${curve}` : ''}`
    throw invalidCsr(`the CSR key must be ECDSA P-256, found ${found}`)
  }
  return key
}

function checkSignature(parsed: CsrAsn, publicKey: KeyObject): void {
  const algorithm = parsed.signatureAlgorithm.algorithm
  if (algorithm !== ECDSA_WITH_SHA256) {
    throw invalidCsr(`the CSR signature algorithm ${algorithm} is not ecdsa-with-SHA256`)
  }
  const info = Buffer.from(parsed.infoRaw ?? new ArrayBuffer(0))
  if (!verify('sha256', info, publicKey, Buffer.from(parsed.signature))) {
    throw invalidCsr('the CSR signature does not match its public key')
  }
}

function readUriSans(attributes: Attribute[]): string[] {
  const uris: string[] = []
  for (const attribute of attributes) {
    if (attribute.type !== EXTENSION_REQUEST_OID) continue
    for (const value of attribute.values) {
      for (const extension of parseOrThrow(value, Extensions, 'extension request')) {
        if (extension.extnID !== id_ce_subjectAltName) continue
        const names = parseOrThrow(
          extension.extnValue.buffer,
          SubjectAlternativeName,
          'subjectAltName',
        )
        for (const name of names) {
          if (name.uniformResourceIdentifier !== undefined)
            uris.push(name.uniformResourceIdentifier)
        }
      }
    }
  }
  return uris
}

function parseOrThrow<T>(der: ArrayBuffer, type: new () => T, what: string): T {
  try {
    return AsnConvert.parse(der, type)
  } catch (error) {
    throw invalidCsr(`the CSR ${what} does not parse`, error)
  }
}

function invalidCsr(message: string, cause?: unknown): WritError {
  return new WritError('csr.invalid', message, {}, cause ? { cause } : undefined)
}
