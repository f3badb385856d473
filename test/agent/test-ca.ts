import {
  generateKeyPairSync,
  type KeyObject,
  randomBytes,
  sign,
  verify,
  X509Certificate,
} from 'node:crypto'
import { CertificationRequest } from '@peculiar/asn1-csr'
import { AsnConvert, OctetString } from '@peculiar/asn1-schema'
import {
  AlgorithmIdentifier,
  AttributeTypeAndValue,
  AttributeValue,
  BasicConstraints,
  Certificate,
  ExtendedKeyUsage,
  Extension,
  Extensions,
  GeneralName,
  id_ce_basicConstraints,
  id_ce_extKeyUsage,
  id_ce_keyUsage,
  id_ce_subjectAltName,
  id_kp_clientAuth,
  id_kp_serverAuth,
  KeyUsage,
  KeyUsageFlags,
  Name,
  RelativeDistinguishedName,
  SubjectAlternativeName,
  SubjectPublicKeyInfo,
  TBSCertificate,
  Validity,
  Version,
} from '@peculiar/asn1-x509'
import { computeSpkiPin } from '../../src/agent/ca-pin.js'

const ECDSA_WITH_SHA256 = '1.2.840.10045.4.3.2'
const DAY_MS = 86_400_000

/** An in-memory CA for agent tests, minting the server certificate and agent SVIDs. */
export interface TestCa {
  certPem: string
  pin: string
  name: Name
  privateKey: KeyObject
}

/** A certificate and its PKCS#8 private key, both PEM. */
export interface KeyedCertificate {
  certPem: string
  keyPem: string
}

interface CertificateFields {
  issuer: Name
  subject: Name
  spki: Buffer
  notBefore: Date
  notAfter: Date
  extensions: Extension[]
}

export function createTestCa(commonName = 'Writ Test CA'): TestCa {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  const name = nameOf(commonName)
  const now = Date.now()
  const certPem = signCertificate(privateKey, {
    issuer: name,
    subject: name,
    spki: publicKey.export({ type: 'spki', format: 'der' }),
    notBefore: new Date(now - DAY_MS),
    notAfter: new Date(now + DAY_MS),
    extensions: [
      extension(id_ce_basicConstraints, true, new BasicConstraints({ cA: true })),
      extension(
        id_ce_keyUsage,
        true,
        new KeyUsage(KeyUsageFlags.keyCertSign | KeyUsageFlags.cRLSign),
      ),
    ],
  })
  return { certPem, pin: computeSpkiPin(certPem), name, privateKey }
}

/** Issues a TLS server certificate for the given DNS names and IP addresses. */
export function issueServerCertificate(
  ca: TestCa,
  names: { dns?: string[]; ip?: string[] },
): KeyedCertificate {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  const altNames = [
    ...(names.dns ?? []).map((dNSName) => new GeneralName({ dNSName })),
    ...(names.ip ?? []).map((iPAddress) => new GeneralName({ iPAddress })),
  ]
  const now = Date.now()
  const certPem = signCertificate(ca.privateKey, {
    issuer: ca.name,
    subject: nameOf('writ-test-server'),
    spki: publicKey.export({ type: 'spki', format: 'der' }),
    notBefore: new Date(now - DAY_MS),
    notAfter: new Date(now + DAY_MS),
    extensions: leafExtensions([id_kp_serverAuth], new SubjectAlternativeName(altNames)),
  })
  return { certPem, keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() }
}

/** Issues an X.509-SVID for the public key of a PEM CSR, after checking the CSR's signature. */
export function issueSvid(
  ca: TestCa,
  csrPem: string,
  subject: { name: string; spiffeId: string; notBefore: Date; notAfter: Date },
): string {
  const der = Buffer.from(csrPem.replace(/-----[A-Z ]+-----|\s/g, ''), 'base64')
  const csr = AsnConvert.parse(der, CertificationRequest)
  const spki = Buffer.from(AsnConvert.serialize(csr.certificationRequestInfo.subjectPKInfo))
  const info = Buffer.from(csr.certificationRequestInfoRaw as ArrayBuffer)
  const key = { key: spki, format: 'der', type: 'spki' } as const
  if (!verify('sha256', info, key, Buffer.from(csr.signature))) {
    throw new Error('CSR signature is invalid')
  }
  const san = new SubjectAlternativeName([
    new GeneralName({ uniformResourceIdentifier: subject.spiffeId }),
  ])
  return signCertificate(ca.privateKey, {
    issuer: ca.name,
    subject: nameOf(subject.name),
    spki,
    notBefore: subject.notBefore,
    notAfter: subject.notAfter,
    extensions: leafExtensions([id_kp_serverAuth, id_kp_clientAuth], san),
  })
}

/** Reads the serial of a PEM certificate as lowercase hex without leading zeros. */
export function serialOf(certPem: string): string {
  return new X509Certificate(certPem).serialNumber.toLowerCase().replace(/^0+(?=.)/, '')
}

function leafExtensions(usages: string[], san: SubjectAlternativeName): Extension[] {
  return [
    extension(id_ce_basicConstraints, true, new BasicConstraints({ cA: false })),
    extension(id_ce_keyUsage, true, new KeyUsage(KeyUsageFlags.digitalSignature)),
    extension(id_ce_extKeyUsage, false, new ExtendedKeyUsage(usages)),
    extension(id_ce_subjectAltName, false, san),
  ]
}

function signCertificate(signingKey: KeyObject, fields: CertificateFields): string {
  const serial = randomBytes(16)
  // Positive, and never a leading zero byte, which DER would require to be dropped.
  serial[0] = ((serial[0] as number) & 0x7f) | 0x40
  const tbs = new TBSCertificate({
    version: Version.v3,
    serialNumber: new Uint8Array(serial).buffer,
    signature: new AlgorithmIdentifier({ algorithm: ECDSA_WITH_SHA256 }),
    issuer: fields.issuer,
    validity: new Validity({ notBefore: fields.notBefore, notAfter: fields.notAfter }),
    subject: fields.subject,
    subjectPublicKeyInfo: AsnConvert.parse(fields.spki, SubjectPublicKeyInfo),
    extensions: new Extensions(fields.extensions),
  })
  const signature = sign('sha256', Buffer.from(AsnConvert.serialize(tbs)), signingKey)
  const certificate = new Certificate({
    tbsCertificate: tbs,
    signatureAlgorithm: new AlgorithmIdentifier({ algorithm: ECDSA_WITH_SHA256 }),
    signatureValue: new Uint8Array(signature).buffer,
  })
  const base64 = Buffer.from(AsnConvert.serialize(certificate)).toString('base64')
  return `-----BEGIN CERTIFICATE-----\n${base64.match(/.{1,64}/g)?.join('\n')}\n-----END CERTIFICATE-----\n`
}

function extension(extnID: string, critical: boolean, value: object): Extension {
  return new Extension({
    extnID,
    critical,
    extnValue: new OctetString(AsnConvert.serialize(value)),
  })
}

function nameOf(commonName: string): Name {
  const value = new AttributeValue({ utf8String: commonName })
  return new Name([
    new RelativeDistinguishedName([new AttributeTypeAndValue({ type: '2.5.4.3', value })]),
  ])
}
