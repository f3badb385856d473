import { type KeyObject, sign } from 'node:crypto'
import { AsnConvert } from '@peculiar/asn1-schema'
import {
  AlgorithmIdentifier,
  type Extension,
  Extensions,
  type Name,
  SubjectPublicKeyInfo,
  TBSCertificate,
  Validity,
  Version,
} from '@peculiar/asn1-x509'
import { ECDSA_WITH_SHA256 } from '../identity/csr.js'
import { encodeDerElement } from '../identity/der.js'

/** The fields of a certificate other than its signature. */
export interface CertificateTemplate {
  /** The DER INTEGER contents of the serial number: positive, at most 20 bytes. */
  serial: Uint8Array
  issuer: Name
  subject: Name
  spkiDer: Uint8Array
  notBefore: Date
  notAfter: Date
  extensions: Extension[]
}

const SIGNATURE_ALGORITHM = new AlgorithmIdentifier({ algorithm: ECDSA_WITH_SHA256 })
const SIGNATURE_ALGORITHM_DER = Buffer.from(AsnConvert.serialize(SIGNATURE_ALGORITHM))

/**
 * Encodes the TBSCertificate, signs it with ECDSA SHA-256 through node:crypto and returns the
 * certificate DER. The caller is responsible for the profile; this function only assembles.
 */
export function signCertificate(template: CertificateTemplate, signingKey: KeyObject): Buffer {
  const tbs = new TBSCertificate({
    version: Version.v3,
    serialNumber: toArrayBuffer(template.serial),
    signature: SIGNATURE_ALGORITHM,
    issuer: template.issuer,
    validity: new Validity({ notBefore: template.notBefore, notAfter: template.notAfter }),
    subject: template.subject,
    subjectPublicKeyInfo: AsnConvert.parse(template.spkiDer, SubjectPublicKeyInfo),
    extensions: new Extensions(template.extensions),
  })
  const tbsDer = Buffer.from(AsnConvert.serialize(tbs))
  // node:crypto returns ECDSA signatures DER-encoded, the form X.509 stores in the BIT STRING.
  const signature = sign('sha256', tbsDer, signingKey)
  const signatureBits = encodeDerElement(0x03, Buffer.from([0]), signature)
  return encodeDerElement(0x30, tbsDer, SIGNATURE_ALGORITHM_DER, signatureBits)
}

function toArrayBuffer(bytes: Uint8Array): ArrayBuffer {
  return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer
}
