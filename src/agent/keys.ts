import { generateKeyPair, type KeyObject, sign } from 'node:crypto'
import { promisify } from 'node:util'
import { Attributes, CertificationRequest, CertificationRequestInfo } from '@peculiar/asn1-csr'
import { AsnConvert, OctetString } from '@peculiar/asn1-schema'
import {
  AlgorithmIdentifier,
  Attribute,
  AttributeTypeAndValue,
  AttributeValue,
  Extension,
  Extensions,
  GeneralName,
  id_ce_subjectAltName,
  Name,
  RelativeDistinguishedName,
  SubjectAlternativeName,
  SubjectPublicKeyInfo,
} from '@peculiar/asn1-x509'

const generateKeyPairAsync = promisify(generateKeyPair)

/** ecdsa-with-SHA256 (RFC 5758); its AlgorithmIdentifier carries no parameters. */
const ECDSA_WITH_SHA256 = '1.2.840.10045.4.3.2'
/** PKCS#9 extensionRequest, the CSR attribute that carries requested extensions. */
const EXTENSION_REQUEST = '1.2.840.113549.1.9.14'
const COMMON_NAME = '2.5.4.3'

/**
 * An ECDSA P-256 key pair made on this machine, with the private key also as PKCS#8 PEM for
 * node:tls and for `svid_key.pem`. The private key never leaves the agent.
 */
export interface AgentKeys {
  privateKey: KeyObject
  publicKey: KeyObject
  privateKeyPem: string
}

/** What the agent asks for in a CSR; the server decides the final subject and SPIFFE ID. */
export interface CsrSubject {
  commonName: string
  spiffeId?: string
}

/**
 * Generates a fresh ECDSA P-256 key pair.
 *
 * @example
 *   const keys = await generateAgentKeys()
 *   const csrPem = createCsrPem(keys, { commonName: 'writ-agent' })
 */
export async function generateAgentKeys(): Promise<AgentKeys> {
  const { privateKey, publicKey } = await generateKeyPairAsync('ec', { namedCurve: 'P-256' })
  const privateKeyPem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString()
  return { privateKey, publicKey, privateKeyPem }
}

/**
 * Creates a PEM PKCS#10 CSR signed by `keys`, with the SPIFFE ID as its one URI SAN when given.
 * Built from the ASN.1 schema directly so it needs no certificate library at run time.
 */
export function createCsrPem(keys: AgentKeys, subject: CsrSubject): string {
  const info = new CertificationRequestInfo({
    version: 0,
    subject: commonNameOnly(subject.commonName),
    subjectPKInfo: AsnConvert.parse(exportPublicKeySpki(keys), SubjectPublicKeyInfo),
    attributes: new Attributes(subject.spiffeId ? [uriSanRequest(subject.spiffeId)] : []),
  })
  const signature = sign('sha256', Buffer.from(AsnConvert.serialize(info)), keys.privateKey)
  const request = new CertificationRequest({
    certificationRequestInfo: info,
    signatureAlgorithm: new AlgorithmIdentifier({ algorithm: ECDSA_WITH_SHA256 }),
    signature: new Uint8Array(signature).buffer,
  })
  return toPem('CERTIFICATE REQUEST', Buffer.from(AsnConvert.serialize(request)))
}

/** Returns the DER SubjectPublicKeyInfo of the key pair's public key. */
export function exportPublicKeySpki(keys: AgentKeys): Buffer {
  return keys.publicKey.export({ type: 'spki', format: 'der' })
}

function commonNameOnly(commonName: string): Name {
  const value = new AttributeValue({ utf8String: commonName })
  return new Name([
    new RelativeDistinguishedName([new AttributeTypeAndValue({ type: COMMON_NAME, value })]),
  ])
}

function uriSanRequest(spiffeId: string): Attribute {
  const san = new SubjectAlternativeName([new GeneralName({ uniformResourceIdentifier: spiffeId })])
  const extension = new Extension({
    extnID: id_ce_subjectAltName,
    critical: false,
    extnValue: new OctetString(AsnConvert.serialize(san)),
  })
  return new Attribute({
    type: EXTENSION_REQUEST,
    values: [AsnConvert.serialize(new Extensions([extension]))],
  })
}

function toPem(label: string, der: Buffer): string {
  const lines = der.toString('base64').match(/.{1,64}/g) ?? []
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`
}
