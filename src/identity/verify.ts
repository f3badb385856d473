import { X509Certificate } from 'node:crypto'
import { AsnConvert } from '@peculiar/asn1-schema'
import {
  BasicConstraints,
  Certificate,
  ExtendedKeyUsage,
  id_ce_basicConstraints,
  id_ce_extKeyUsage,
  id_ce_keyUsage,
  id_ce_subjectAltName,
  id_kp_clientAuth,
  id_kp_serverAuth,
  KeyUsage,
  KeyUsageFlags,
  SubjectAlternativeName,
} from '@peculiar/asn1-x509'
import { WritError } from '../errors.js'
import { decodeClaims, WRIT_CLAIMS_OID } from './claims.js'
import { encodeOidContents, readDerChildren, readDerElement } from './der.js'
import { readCommonName } from './name.js'
import { pemBlocks } from './pem.js'
import { SpiffeId } from './spiffe-id.js'
import type { PeerIdentity, WritClaims } from './types.js'

/** The outcome of `verifySvid`. A failure carries the SPIFFE ID when the leaf names one. */
export type SvidVerification =
  | { ok: true; identity: PeerIdentity }
  | { ok: false; reason: string; spiffeId?: string }

/** The DER contents of the claims OID, compared byte for byte (see `readExtensions`). */
const CLAIMS_OID_CONTENTS = encodeOidContents(WRIT_CLAIMS_OID)

/** One certificate extension with its OID in dotted form and its DER value. */
interface LeafExtension {
  oid: string
  critical: boolean
  value: ArrayBuffer
}

/** The parts of a leaf certificate that identity checks read, decoded once. */
interface ParsedLeaf {
  extensions: LeafExtension[]
  uris: string[]
  commonName?: string
  serial: string
  notBefore: Date
  notAfter: Date
}

/**
 * Reads the identity of a leaf certificate whose chain the caller has already verified, such as
 * the peer certificate of a TLS connection that Node marked `authorized`. Throws
 * `certificate.invalid` with a `reason` field when the leaf has not exactly one URI SAN, the URI
 * is not a SPIFFE ID, the CN is missing or the Writ claims extension is missing or malformed.
 *
 * @example
 *   const identity = identityFromCertificate(socket.getPeerCertificate().raw)
 */
export function identityFromCertificate(raw: Buffer): PeerIdentity {
  const leaf = parseLeaf(raw)
  if (typeof leaf === 'string') throw invalidCertificate(leaf)
  const spiffeId = readSpiffeId(leaf)
  if (!(spiffeId instanceof SpiffeId)) throw invalidCertificate(spiffeId.reason)
  const claims = readClaims(leaf)
  if (typeof claims === 'string') throw invalidCertificate(claims, spiffeId.toString())
  if (leaf.commonName === undefined || leaf.commonName === '') {
    throw invalidCertificate('the certificate subject has no CN', spiffeId.toString())
  }
  return {
    spiffeId: spiffeId.toString(),
    name: leaf.commonName,
    serial: leaf.serial,
    notBefore: leaf.notBefore,
    notAfter: leaf.notAfter,
    claims,
  }
}

/**
 * Verifies an X.509-SVID chain against a trust bundle at time `now` (ms since the epoch): the
 * leaf must be signed by a bundle CA that is itself valid, be within its validity window and
 * follow the Writ profile. Returns the identity, or the first check that failed as `reason`.
 * Writ issues leaves straight from its CA, so certificates after the leaf are not used as
 * intermediates.
 *
 * @example
 *   const result = verifySvid(svidPem, bundlePem, Date.now(), 'writ.local')
 *   if (!result.ok) console.error(result.reason)
 */
export function verifySvid(
  chain: string | readonly Buffer[],
  bundle: readonly X509Certificate[] | string,
  now: number,
  trustDomain?: string,
): SvidVerification {
  const ders = typeof chain === 'string' ? pemBlocks(chain, ['CERTIFICATE']) : chain
  const leafDer = ders[0]
  if (!leafDer) return { ok: false, reason: 'the chain contains no certificate' }
  const leaf = parseLeaf(leafDer)
  if (typeof leaf === 'string') return { ok: false, reason: leaf }
  const spiffeId = readSpiffeId(leaf)
  const named = spiffeId instanceof SpiffeId ? { spiffeId: spiffeId.toString() } : {}
  const fail = (reason: string): SvidVerification => ({ ok: false, reason, ...named })

  const issuer = findIssuer(leafDer, toCertificates(bundle))
  if (typeof issuer === 'string') return fail(issuer)
  const timeProblem = checkValidity(leaf, now) ?? checkIssuerValidity(issuer, now)
  if (timeProblem) return fail(timeProblem)
  const profileProblem = checkProfile(leaf)
  if (profileProblem) return fail(profileProblem)
  if (!(spiffeId instanceof SpiffeId)) return fail(spiffeId.reason)
  const idProblem = checkSpiffeId(spiffeId, trustDomain)
  if (idProblem) return fail(idProblem)

  try {
    return { ok: true, identity: identityFromCertificate(leafDer) }
  } catch (error) {
    if (error instanceof WritError) return fail(String(error.fields.reason ?? error.message))
    throw error
  }
}

function parseLeaf(raw: Buffer): ParsedLeaf | string {
  let certificate: Certificate
  try {
    certificate = AsnConvert.parse(raw, Certificate)
  } catch {
    return 'the certificate is not valid DER X.509'
  }
  const tbs = certificate.tbsCertificate
  const extensions = readExtensions(raw, certificate)
  if (!extensions) return 'the certificate extensions are malformed'
  const sanExtensions = extensions.filter((extension) => extension.oid === id_ce_subjectAltName)
  if (sanExtensions.length > 1) return 'the certificate has more than one subjectAltName extension'
  let uris: string[] = []
  if (sanExtensions[0]) {
    const names = parseExtension(sanExtensions[0], SubjectAlternativeName)
    if (!names) return 'the subjectAltName extension does not parse'
    uris = names.flatMap((name) =>
      name.uniformResourceIdentifier === undefined ? [] : [name.uniformResourceIdentifier],
    )
  }
  const leaf: ParsedLeaf = {
    extensions,
    uris,
    serial: formatSerial(new Uint8Array(tbs.serialNumber)),
    notBefore: tbs.validity.notBefore.getTime(),
    notAfter: tbs.validity.notAfter.getTime(),
  }
  const commonName = readCommonName(tbs.subject)
  if (commonName !== undefined) leaf.commonName = commonName
  return leaf
}

/**
 * Lists the extensions with their OIDs. The ASN.1 library prints an OID arc above 2^53 in a
 * form of its own, so the OID of each extension is also read from the DER and the claims OID
 * is recognised by its bytes. Returns undefined when the two readings disagree.
 */
function readExtensions(raw: Buffer, certificate: Certificate): LeafExtension[] | undefined {
  const parsed = certificate.tbsCertificate.extensions ?? []
  const oids = readExtensionOids(raw)
  if (!oids || oids.length !== parsed.length) return undefined
  return parsed.map((extension, index) => ({
    oid: CLAIMS_OID_CONTENTS.equals(oids[index] as Buffer) ? WRIT_CLAIMS_OID : extension.extnID,
    critical: extension.critical,
    value: extension.extnValue.buffer,
  }))
}

/** Returns the DER contents of each extension's OID, in order, from the certificate bytes. */
function readExtensionOids(raw: Buffer): Buffer[] | undefined {
  const certificate = readDerElement(raw, 0)
  const tbs = certificate && readDerChildren(raw, certificate)?.[0]
  const tbsFields = tbs && readDerChildren(raw, tbs)
  if (!tbsFields) return undefined
  const tagged = tbsFields.find((field) => field.tag === 0xa3)
  if (!tagged) return []
  const list = readDerChildren(raw, tagged)?.[0]
  const extensions = list && readDerChildren(raw, list)
  if (!extensions) return undefined
  const oids: Buffer[] = []
  for (const extension of extensions) {
    const oid = readDerChildren(raw, extension)?.[0]
    if (oid?.tag !== 0x06) return undefined
    oids.push(raw.subarray(oid.contentStart, oid.end))
  }
  return oids
}

function readSpiffeId(leaf: ParsedLeaf): SpiffeId | { reason: string } {
  if (leaf.uris.length !== 1) {
    return {
      reason: `the certificate has ${leaf.uris.length} URI SANs; exactly one SPIFFE ID is required`,
    }
  }
  const uri = leaf.uris[0] as string
  const parsed = SpiffeId.tryParse(uri)
  if (!parsed.ok) return { reason: `the URI SAN "${uri}" is not a SPIFFE ID: ${parsed.reason}` }
  return parsed.id
}

function readClaims(leaf: ParsedLeaf): WritClaims | string {
  const found = leaf.extensions.filter((extension) => extension.oid === WRIT_CLAIMS_OID)
  if (found.length === 0) return `the Writ claims extension ${WRIT_CLAIMS_OID} is missing`
  if (found.length > 1) return 'the Writ claims extension appears more than once'
  try {
    return decodeClaims((found[0] as LeafExtension).value)
  } catch (error) {
    if (error instanceof WritError) return `the Writ claims extension is invalid: ${error.message}`
    throw error
  }
}

/** Returns the bundle CA that signed the leaf, or why none did. */
function findIssuer(leafDer: Buffer, bundle: X509Certificate[]): X509Certificate | string {
  let leaf: X509Certificate
  try {
    leaf = new X509Certificate(leafDer)
  } catch {
    return 'the certificate is not valid DER X.509'
  }
  const named = bundle.filter((ca) => leaf.checkIssued(ca))
  if (named.length === 0) {
    return `the certificate issuer "${oneLine(leaf.issuer)}" is not a CA in the trust bundle`
  }
  const signer = named.find((ca) => leaf.verify(ca.publicKey))
  if (!signer) {
    return `the certificate signature does not verify with the key of CA "${oneLine(leaf.issuer)}"`
  }
  if (!signer.ca) return `the issuer "${oneLine(signer.subject)}" is not a CA certificate`
  return signer
}

function checkIssuerValidity(issuer: X509Certificate, now: number): string | undefined {
  if (now >= Date.parse(issuer.validTo)) {
    return `the issuing CA expired at ${new Date(issuer.validTo).toISOString()}`
  }
  if (now < Date.parse(issuer.validFrom)) {
    return `the issuing CA is not valid until ${new Date(issuer.validFrom).toISOString()}`
  }
  return undefined
}

function checkValidity(leaf: ParsedLeaf, now: number): string | undefined {
  if (now < leaf.notBefore.getTime()) {
    return `the certificate is not valid until ${leaf.notBefore.toISOString()}`
  }
  if (now >= leaf.notAfter.getTime()) {
    return `the certificate expired at ${leaf.notAfter.toISOString()}`
  }
  return undefined
}

/** Checks the extensions of the X.509-SVID profile, one rule per step. */
function checkProfile(leaf: ParsedLeaf): string | undefined {
  const basic = findExtension(leaf, id_ce_basicConstraints)
  if (basic) {
    const constraints = parseExtension(basic, BasicConstraints)
    if (!constraints) return 'the basicConstraints extension does not parse'
    if (constraints.cA) return 'the certificate is a CA certificate, not a leaf'
  }

  const usage = findExtension(leaf, id_ce_keyUsage)
  if (!usage) return 'the keyUsage extension is missing'
  if (!usage.critical) return 'the keyUsage extension must be critical'
  const flags = parseExtension(usage, KeyUsage)?.toNumber()
  if (flags !== KeyUsageFlags.digitalSignature) {
    return `the keyUsage must be digitalSignature only, found ${describeKeyUsage(flags)}`
  }

  const extended = findExtension(leaf, id_ce_extKeyUsage)
  const purposes = extended ? parseExtension(extended, ExtendedKeyUsage) : undefined
  if (!purposes) return 'the extendedKeyUsage extension is missing or does not parse'
  for (const [purpose, label] of [
    [id_kp_serverAuth, 'serverAuth'],
    [id_kp_clientAuth, 'clientAuth'],
  ] as const) {
    if (!purposes.includes(purpose)) return `the extendedKeyUsage does not include ${label}`
  }

  const claims = findExtension(leaf, WRIT_CLAIMS_OID)
  if (!claims) return `the Writ claims extension ${WRIT_CLAIMS_OID} is missing`
  if (claims.critical) return 'the Writ claims extension must not be critical'
  const decoded = readClaims(leaf)
  return typeof decoded === 'string' ? decoded : undefined
}

function checkSpiffeId(id: SpiffeId, trustDomain: string | undefined): string | undefined {
  if (trustDomain !== undefined && !id.memberOf(trustDomain)) {
    return `the SPIFFE ID ${id} is not in trust domain "${trustDomain}"`
  }
  if (id.path === '') return `the SPIFFE ID ${id} names a trust domain, not a workload`
  return undefined
}

function findExtension(leaf: ParsedLeaf, oid: string): LeafExtension | undefined {
  return leaf.extensions.find((extension) => extension.oid === oid)
}

function parseExtension<T>(extension: LeafExtension, type: new () => T): T | undefined {
  try {
    return AsnConvert.parse(extension.value, type)
  } catch {
    return undefined
  }
}

function describeKeyUsage(flags: number | undefined): string {
  if (flags === undefined) return 'a value that does not parse'
  const names = Object.entries(KeyUsageFlags)
    .filter(([, bit]) => typeof bit === 'number' && (flags & bit) !== 0)
    .map(([name]) => name)
  return names.length === 0 ? 'no usage' : names.join(', ')
}

function toCertificates(bundle: readonly X509Certificate[] | string): X509Certificate[] {
  if (typeof bundle !== 'string') return [...bundle]
  const certificates: X509Certificate[] = []
  for (const der of pemBlocks(bundle, ['CERTIFICATE'])) {
    try {
      certificates.push(new X509Certificate(der))
    } catch {
      // A bundle entry that does not parse cannot be an issuer. The leaf then fails the issuer
      // check with a reason that names its issuer.
    }
  }
  return certificates
}

/** Formats a DER INTEGER's content bytes as lowercase hex without leading zeros. */
function formatSerial(bytes: Uint8Array): string {
  return Buffer.from(bytes)
    .toString('hex')
    .replace(/^0+(?=.)/, '')
}

/** Node prints distinguished names one attribute per line; a reason reads better on one line. */
function oneLine(name: string): string {
  return name.split('\n').join(', ')
}

function invalidCertificate(reason: string, spiffeId?: string): WritError {
  const fields: Record<string, unknown> = { reason }
  if (spiffeId !== undefined) fields.spiffeId = spiffeId
  return new WritError('certificate.invalid', `invalid certificate: ${reason}`, fields)
}
