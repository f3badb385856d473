import { createPrivateKey, KeyObject, sign, webcrypto } from 'node:crypto'
import { AsnConvert, OctetString } from '@peculiar/asn1-schema'
import {
  AlgorithmIdentifier,
  Attribute,
  Extension,
  Extensions,
  GeneralName,
  id_ce_subjectAltName,
  SubjectAlternativeName,
  SubjectPublicKeyInfo,
} from '@peculiar/asn1-x509'
import { WritError } from '../errors.js'
import { ECDSA_WITH_SHA256 } from './csr.js'
import { CsrAsn, CsrInfoAsn, EXTENSION_REQUEST_OID } from './csr-asn.js'
import { commonNameOnly } from './name.js'
import { derToPem } from './pem.js'
import { SpiffeId } from './spiffe-id.js'

type CryptoKey = webcrypto.CryptoKey
type CryptoKeyPair = webcrypto.CryptoKeyPair

/** The key algorithm of every Writ key: ECDSA on the P-256 curve. */
export const KEY_ALGORITHM: webcrypto.EcKeyGenParams = { name: 'ECDSA', namedCurve: 'P-256' }

/** The signature algorithm Writ uses with P-256 keys. */
export const SIGNING_ALGORITHM: webcrypto.EcdsaParams = { name: 'ECDSA', hash: 'SHA-256' }

/**
 * Generates an extractable ECDSA P-256 key pair. The private key stays with the caller; only the
 * CSR built from it is sent to the authority.
 *
 * @example
 *   const keys = await generateKeyPair()
 */
export async function generateKeyPair(): Promise<CryptoKeyPair> {
  return (await webcrypto.subtle.generateKey(KEY_ALGORITHM, true, [
    'sign',
    'verify',
  ])) as CryptoKeyPair
}

/** Options for `createCsr`. */
export interface CsrOptions {
  /** The principal's name, written as the subject CN. */
  commonName: string
  /** The SPIFFE ID the certificate is for, written as the one URI SAN of the request. */
  spiffeId?: SpiffeId | string
}

/**
 * Creates a PKCS#10 certificate signing request in PEM form, signed with the pair's private key.
 *
 * @example
 *   const csrPem = await createCsr(keys, { commonName: 'ci-agent' })
 */
export async function createCsr(keys: CryptoKeyPair, options: CsrOptions): Promise<string> {
  const info = new CsrInfoAsn()
  info.subject = commonNameOnly(options.commonName)
  const spki = KeyObject.from(keys.publicKey).export({ type: 'spki', format: 'der' })
  info.subjectPKInfo = AsnConvert.parse(spki, SubjectPublicKeyInfo)
  if (options.spiffeId !== undefined) {
    info.attributes = [uriSanRequest(SpiffeId.parse(String(options.spiffeId)))]
  }
  const infoDer = Buffer.from(AsnConvert.serialize(info))
  // node:crypto signs ECDSA in the DER form that PKCS#10 stores; WebCrypto would return r || s.
  const signature = sign('sha256', infoDer, KeyObject.from(keys.privateKey))
  const request = new CsrAsn()
  request.info = info
  request.signatureAlgorithm = new AlgorithmIdentifier({ algorithm: ECDSA_WITH_SHA256 })
  request.signature = new Uint8Array(signature).buffer
  return derToPem(AsnConvert.serialize(request), 'CERTIFICATE REQUEST')
}

function uriSanRequest(id: SpiffeId): Attribute {
  const names = new SubjectAlternativeName([
    new GeneralName({ uniformResourceIdentifier: id.toString() }),
  ])
  const extension = new Extension({
    extnID: id_ce_subjectAltName,
    critical: false,
    extnValue: new OctetString(AsnConvert.serialize(names)),
  })
  return new Attribute({
    type: EXTENSION_REQUEST_OID,
    values: [AsnConvert.serialize(new Extensions([extension]))],
  })
}

/**
 * Exports a private key as an unencrypted PKCS#8 PEM block. Callers write it with file mode 0600.
 *
 * @example
 *   writeFileSync('svid_key.pem', await exportPrivateKeyPem(keys.privateKey), { mode: 0o600 })
 */
export async function exportPrivateKeyPem(key: CryptoKey | KeyObject): Promise<string> {
  const keyObject = key instanceof KeyObject ? key : KeyObject.from(key)
  return keyObject.export({ type: 'pkcs8', format: 'pem' }).toString()
}

/**
 * Imports a PKCS#8 (or SEC1) PEM private key as an ECDSA P-256 signing key. Throws
 * `identity.invalid_key` when the text is not a private key or the curve is not P-256.
 *
 * @example
 *   const key = await importPrivateKeyPem(readFileSync('svid_key.pem', 'utf8'))
 */
export async function importPrivateKeyPem(pem: string): Promise<CryptoKey> {
  const keyObject = readP256PrivateKey(pem)
  const der = keyObject.export({ type: 'pkcs8', format: 'der' })
  return webcrypto.subtle.importKey('pkcs8', der, KEY_ALGORITHM, true, ['sign'])
}

/** Reads a PEM private key as a node:crypto KeyObject, requiring ECDSA P-256. */
export function readP256PrivateKey(pem: string): KeyObject {
  let keyObject: KeyObject
  try {
    keyObject = createPrivateKey({ key: pem, format: 'pem' })
  } catch (error) {
    throw new WritError(
      'identity.invalid_key',
      'private key PEM does not parse',
      {},
      { cause: error },
    )
  }
  const curve = keyObject.asymmetricKeyDetails?.namedCurve
  if (keyObject.asymmetricKeyType !== 'ec' || curve !== 'prime256v1') {
    throw new WritError(
      'identity.invalid_key',
      `private key must be ECDSA P-256, found ${keyObject.asymmetricKeyType} ${curve ?? ''}`.trim(),
      { type: keyObject.asymmetricKeyType, curve },
    )
  }
  return keyObject
}
