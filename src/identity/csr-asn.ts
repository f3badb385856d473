import { AsnProp, AsnPropTypes, AsnType, AsnTypeTypes } from '@peculiar/asn1-schema'
import { AlgorithmIdentifier, Attribute, Name, SubjectPublicKeyInfo } from '@peculiar/asn1-x509'

/** PKCS#9 extensionRequest (RFC 2985), the CSR attribute that carries requested extensions. */
export const EXTENSION_REQUEST_OID = '1.2.840.113549.1.9.14'

// PKCS#10 (RFC 2986) schemas. Parsing keeps the DER of the request info and of the public key
// (the `...Raw` fields), because the signature covers those exact bytes.

/** `CertificationRequestInfo`. */
export class CsrInfoAsn {
  version = 0
  subject = new Name()
  subjectPKInfo = new SubjectPublicKeyInfo()
  subjectPKInfoRaw?: ArrayBuffer
  attributes: Attribute[] = []
}
AsnType({ type: AsnTypeTypes.Sequence })(CsrInfoAsn)
AsnProp({ type: AsnPropTypes.Integer })(CsrInfoAsn.prototype, 'version')
AsnProp({ type: Name })(CsrInfoAsn.prototype, 'subject')
AsnProp({ type: SubjectPublicKeyInfo, raw: true })(CsrInfoAsn.prototype, 'subjectPKInfo')
AsnProp({ type: Attribute, repeated: 'set', context: 0, implicit: true, optional: true })(
  CsrInfoAsn.prototype,
  'attributes',
)

/** `CertificationRequest`. */
export class CsrAsn {
  info = new CsrInfoAsn()
  infoRaw?: ArrayBuffer
  signatureAlgorithm = new AlgorithmIdentifier()
  signature = new ArrayBuffer(0)
}
AsnType({ type: AsnTypeTypes.Sequence })(CsrAsn)
AsnProp({ type: CsrInfoAsn, raw: true })(CsrAsn.prototype, 'info')
AsnProp({ type: AlgorithmIdentifier })(CsrAsn.prototype, 'signatureAlgorithm')
AsnProp({ type: AsnPropTypes.BitString })(CsrAsn.prototype, 'signature')
