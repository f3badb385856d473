import {
  createPrivateKey,
  generateKeyPairSync,
  type KeyObject,
  randomBytes,
  X509Certificate,
} from 'node:crypto'
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { AsnConvert } from '@peculiar/asn1-schema'
import {
  Certificate,
  id_kp_clientAuth,
  id_kp_serverAuth,
  KeyUsageFlags,
  type Name,
} from '@peculiar/asn1-x509'
import { type Clock, systemClock } from '../clock.js'
import { WritError } from '../errors.js'
import { type VerifiedCsr, verifyCsr } from '../identity/csr.js'
import { readP256PrivateKey } from '../identity/keys.js'
import { commonNameOnly } from '../identity/name.js'
import { derToPem, pemToDer } from '../identity/pem.js'
import { caPin } from '../identity/pin.js'
import { SpiffeId } from '../identity/spiffe-id.js'
import type { WritClaims } from '../identity/types.js'
import { signCertificate } from './certificate-builder.js'
import {
  authorityKeyIdentifierExtension,
  basicConstraintsExtension,
  claimsExtension,
  extendedKeyUsageExtension,
  keyIdentifier,
  keyUsageExtension,
  splitHosts,
  subjectAltNameExtension,
  subjectKeyIdentifierExtension,
} from './extensions.js'

/** How long a new CA certificate is valid when `validityDays` is not set: ten years. */
export const DEFAULT_CA_VALIDITY_DAYS = 3650

/** How long the gateway's own server certificate is valid: 90 days. */
export const SERVER_CERT_VALIDITY_DAYS = 90

/** A server certificate with less than this left is reissued at start-up: 7 days. */
export const SERVER_CERT_RENEW_BEFORE_MS = 7 * 86_400_000

/**
 * How far before the issuing moment `notBefore` is set: 60 seconds, so that a peer whose clock
 * runs slightly behind the authority's still accepts a certificate issued a moment ago.
 */
export const CLOCK_SKEW_MS = 60_000

const DAY_MS = 86_400_000
const CA_CERT_FILE = 'ca.pem'
const CA_KEY_FILE = 'ca_key.pem'
const SERVER_CERT_FILE = 'server.pem'
const SERVER_KEY_FILE = 'server_key.pem'
const ALWAYS_SERVED_HOSTS = ['localhost', '127.0.0.1', '::1']

/** Options for `loadOrCreateCa`. */
export interface CaOptions {
  trustDomain: string
  clock?: Clock
  /** The lifetime of a newly created CA certificate, in days. */
  validityDays?: number
}

/** A request to sign a leaf certificate. `csrPem` or an already verified `csr` is required. */
export interface IssueRequest {
  csrPem?: string
  csr?: VerifiedCsr
  spiffeId: SpiffeId | string
  /** The principal's name, written as the subject CN. */
  commonName: string
  ttlSeconds: number
  claims: WritClaims
  /** The latest `notAfter` allowed, such as the parent's expiry for a child certificate. */
  notAfterLimit?: Date
}

/** A signed leaf certificate. */
export interface IssuedCertificate {
  certPem: string
  certDer: Buffer
  /** Serial number as lowercase hex without leading zeros. */
  serial: string
  notBefore: Date
  notAfter: Date
}

/** The gateway listener's own certificate and key. */
export interface ServerCertificate {
  certPem: string
  keyPem: string
  notAfter: Date
}

/** The certificate authority of one data directory. */
export interface CertificateAuthority {
  readonly trustDomain: string
  /** `spiffe://<trust domain>`, the CA's own ID, with no path. */
  readonly spiffeId: SpiffeId
  readonly certPem: string
  /** Every CA certificate that peers should trust, as concatenated PEM blocks. */
  readonly bundlePem: string
  /** `sha256:<hex>` of the CA certificate's SubjectPublicKeyInfo. */
  readonly pin: string
  readonly notAfter: Date
  /** Signs a leaf X.509-SVID with the Writ profile; throws `csr.invalid` for a bad CSR. */
  issue(request: IssueRequest): Promise<IssuedCertificate>
  /** Returns the gateway's server certificate, reissuing it when missing, stale or incomplete. */
  serverCertificate(hosts: string[]): Promise<ServerCertificate>
}

interface CaMaterial {
  certPem: string
  key: KeyObject
}

/**
 * Loads the CA from `ca.pem` and `ca_key.pem` in `dataDir`, creating the directory (mode 0700)
 * and a new self-signed ECDSA P-256 CA (key file mode 0600) on first use.
 *
 * @example
 *   const ca = await loadOrCreateCa('./writ-data', { trustDomain: 'writ.local' })
 *   const { certPem } = await ca.issue({ csrPem, spiffeId, commonName, ttlSeconds: 3600, claims })
 */
export async function loadOrCreateCa(
  dataDir: string,
  options: CaOptions,
): Promise<CertificateAuthority> {
  const trustDomainId = SpiffeId.parse(`spiffe://${options.trustDomain}`)
  const clock = options.clock ?? systemClock
  mkdirSync(dataDir, { recursive: true, mode: 0o700 })
  const material =
    readCaFiles(dataDir) ?? createCaFiles(dataDir, trustDomainId, clock, options.validityDays)
  checkCaTrustDomain(material.certPem, trustDomainId)
  return openCa(dataDir, material, trustDomainId, clock)
}

function openCa(
  dataDir: string,
  material: CaMaterial,
  trustDomainId: SpiffeId,
  clock: Clock,
): CertificateAuthority {
  const caDer = pemToDer(material.certPem, ['CERTIFICATE'], 'ca.invalid_certificate')
  const caTbs = AsnConvert.parse(caDer, Certificate).tbsCertificate
  const caX509 = new X509Certificate(caDer)
  const caKeyId = keyIdentifier(caX509.publicKey.export({ type: 'spki', format: 'der' }))
  const caNotAfter = caTbs.validity.notAfter.getTime()
  const signer: LeafSigner = { key: material.key, issuer: caTbs.subject, caKeyId, caNotAfter }

  return {
    trustDomain: trustDomainId.trustDomain,
    spiffeId: trustDomainId,
    certPem: material.certPem,
    bundlePem: material.certPem,
    pin: caPin(material.certPem),
    notAfter: caNotAfter,
    async issue(request) {
      return issueLeaf(signer, trustDomainId, clock(), request)
    },
    async serverCertificate(hosts) {
      return ensureServerCertificate(dataDir, signer, caX509, trustDomainId, clock(), hosts)
    },
  }
}

interface LeafSigner {
  key: KeyObject
  issuer: Name
  caKeyId: Buffer
  caNotAfter: Date
}

function issueLeaf(
  signer: LeafSigner,
  trustDomainId: SpiffeId,
  now: number,
  request: IssueRequest,
): IssuedCertificate {
  if (!Number.isSafeInteger(request.ttlSeconds) || request.ttlSeconds <= 0) {
    throw new TypeError(`ttlSeconds must be a positive integer, got ${request.ttlSeconds}`)
  }
  const spiffeId = SpiffeId.parse(String(request.spiffeId))
  if (!spiffeId.memberOf(trustDomainId.trustDomain) || spiffeId.path === '') {
    throw new TypeError(`cannot issue ${spiffeId} from the CA of ${trustDomainId}`)
  }
  const csr = request.csr ?? verifyCsr(request.csrPem as string)
  const notBefore = new Date(now - CLOCK_SKEW_MS)
  const notAfter = earliest(
    new Date(now + request.ttlSeconds * 1000),
    signer.caNotAfter,
    request.notAfterLimit,
  )
  if (notAfter.getTime() <= now) {
    throw new WritError(
      'ca.validity_exhausted',
      `cannot issue a certificate for ${spiffeId}: its latest allowed expiry ${notAfter.toISOString()} has passed`,
      { spiffeId: spiffeId.toString(), notAfter: notAfter.toISOString() },
    )
  }
  const serial = newSerial()
  const der = signCertificate(
    {
      serial,
      issuer: signer.issuer,
      subject: commonNameOnly(request.commonName),
      spkiDer: csr.spkiDer,
      notBefore,
      notAfter,
      extensions: [
        basicConstraintsExtension(false),
        keyUsageExtension(KeyUsageFlags.digitalSignature),
        extendedKeyUsageExtension([id_kp_serverAuth, id_kp_clientAuth]),
        subjectAltNameExtension({ uris: [spiffeId.toString()] }),
        subjectKeyIdentifierExtension(keyIdentifier(csr.spkiDer)),
        authorityKeyIdentifierExtension(signer.caKeyId),
        claimsExtension(request.claims),
      ],
    },
    signer.key,
  )
  return {
    certPem: derToPem(der, 'CERTIFICATE'),
    certDer: der,
    serial: Buffer.from(serial).toString('hex'),
    notBefore: truncateToSecond(notBefore),
    notAfter: truncateToSecond(notAfter),
  }
}

/**
 * Returns 16 random bytes with the top bit clear (so the INTEGER is positive) and the next bit
 * set (so the encoding needs no leading zero byte and the hex form has exactly 32 digits).
 */
function newSerial(): Uint8Array {
  const serial = randomBytes(16)
  serial[0] = ((serial[0] as number) & 0x7f) | 0x40
  return serial
}

function readCaFiles(dataDir: string): CaMaterial | undefined {
  const certPath = join(dataDir, CA_CERT_FILE)
  const keyPath = join(dataDir, CA_KEY_FILE)
  const hasCert = existsSync(certPath)
  const hasKey = existsSync(keyPath)
  if (!hasCert && !hasKey) return undefined
  if (!hasCert || !hasKey) {
    const missing = hasCert ? CA_KEY_FILE : CA_CERT_FILE
    throw new WritError(
      'ca.incomplete',
      `CA files in ${dataDir} are incomplete: ${missing} is missing; restore it from a backup or use a new data directory`,
      { dataDir, missing },
    )
  }
  const certPem = readFileSync(certPath, 'utf8')
  const key = readP256PrivateKey(readFileSync(keyPath, 'utf8'))
  const certificate = new X509Certificate(certPem)
  if (!certificate.checkPrivateKey(key)) {
    throw new WritError('ca.key_mismatch', `${keyPath} does not hold the key of ${certPath}`, {
      dataDir,
    })
  }
  return { certPem, key }
}

function createCaFiles(
  dataDir: string,
  trustDomainId: SpiffeId,
  clock: Clock,
  validityDays = DEFAULT_CA_VALIDITY_DAYS,
): CaMaterial {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' })
  const spkiDer = publicKey.export({ type: 'spki', format: 'der' })
  const keyId = keyIdentifier(spkiDer)
  const now = clock()
  const name = commonNameOnly(`Writ CA ${trustDomainId.trustDomain}`)
  const der = signCertificate(
    {
      serial: newSerial(),
      issuer: name,
      subject: name,
      spkiDer,
      notBefore: new Date(now - CLOCK_SKEW_MS),
      notAfter: new Date(now + validityDays * DAY_MS),
      extensions: [
        basicConstraintsExtension(true),
        keyUsageExtension(KeyUsageFlags.keyCertSign | KeyUsageFlags.cRLSign),
        subjectAltNameExtension({ uris: [trustDomainId.toString()] }),
        subjectKeyIdentifierExtension(keyId),
        authorityKeyIdentifierExtension(keyId),
      ],
    },
    privateKey,
  )
  const certPem = derToPem(der, 'CERTIFICATE')
  // The key is written first, so a present ca.pem always has its key beside it.
  writePrivateFile(join(dataDir, CA_KEY_FILE), privateKey.export({ type: 'pkcs8', format: 'pem' }))
  writePrivateFile(join(dataDir, CA_CERT_FILE), certPem)
  return { certPem, key: privateKey }
}

function checkCaTrustDomain(certPem: string, trustDomainId: SpiffeId): void {
  const names = new X509Certificate(certPem).subjectAltName ?? ''
  if (!names.split(', ').includes(`URI:${trustDomainId}`)) {
    throw new WritError(
      'ca.trust_domain_mismatch',
      `the CA in this data directory is not for trust domain "${trustDomainId.trustDomain}" (its names: ${names || 'none'})`,
      { trustDomain: trustDomainId.trustDomain, names },
    )
  }
}

function ensureServerCertificate(
  dataDir: string,
  signer: LeafSigner,
  caX509: X509Certificate,
  trustDomainId: SpiffeId,
  now: number,
  hosts: string[],
): ServerCertificate {
  const wanted = [...new Set([...hosts, ...ALWAYS_SERVED_HOSTS])].filter(
    (host) => host !== '' && host !== '0.0.0.0' && host !== '::',
  )
  const existing = readServerFiles(dataDir)
  if (existing && serverCertificateFits(existing, caX509, now, wanted)) return existing
  return writeServerCertificate(dataDir, signer, trustDomainId, now, wanted)
}

function readServerFiles(dataDir: string): ServerCertificate | undefined {
  const certPath = join(dataDir, SERVER_CERT_FILE)
  const keyPath = join(dataDir, SERVER_KEY_FILE)
  if (!existsSync(certPath) || !existsSync(keyPath)) return undefined
  try {
    const certPem = readFileSync(certPath, 'utf8')
    const keyPem = readFileSync(keyPath, 'utf8')
    const certificate = new X509Certificate(certPem)
    if (!certificate.checkPrivateKey(createPrivateKey(keyPem))) return undefined
    return { certPem, keyPem, notAfter: new Date(certificate.validTo) }
  } catch {
    // A damaged file is replaced, never trusted.
    return undefined
  }
}

function serverCertificateFits(
  existing: ServerCertificate,
  caX509: X509Certificate,
  now: number,
  hosts: string[],
): boolean {
  const certificate = new X509Certificate(existing.certPem)
  if (!certificate.checkIssued(caX509) || !certificate.verify(caX509.publicKey)) return false
  if (existing.notAfter.getTime() - now < SERVER_CERT_RENEW_BEFORE_MS) return false
  const { dnsNames, ipAddresses } = splitHosts(hosts)
  const hasDns = dnsNames.every(
    (name) => certificate.checkHost(name, { subject: 'never', wildcards: false }) === name,
  )
  return hasDns && ipAddresses.every((ip) => certificate.checkIP(ip) !== undefined)
}

function writeServerCertificate(
  dataDir: string,
  signer: LeafSigner,
  trustDomainId: SpiffeId,
  now: number,
  hosts: string[],
): ServerCertificate {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' })
  const spkiDer = publicKey.export({ type: 'spki', format: 'der' })
  const notAfter = earliest(new Date(now + SERVER_CERT_VALIDITY_DAYS * DAY_MS), signer.caNotAfter)
  const der = signCertificate(
    {
      serial: newSerial(),
      issuer: signer.issuer,
      subject: commonNameOnly('writ-server'),
      spkiDer,
      notBefore: new Date(now - CLOCK_SKEW_MS),
      notAfter,
      extensions: [
        basicConstraintsExtension(false),
        keyUsageExtension(KeyUsageFlags.digitalSignature),
        extendedKeyUsageExtension([id_kp_serverAuth]),
        subjectAltNameExtension({
          uris: [trustDomainId.child('writ', 'server').toString()],
          ...splitHosts(hosts),
        }),
        subjectKeyIdentifierExtension(keyIdentifier(spkiDer)),
        authorityKeyIdentifierExtension(signer.caKeyId),
      ],
    },
    signer.key,
  )
  const certPem = derToPem(der, 'CERTIFICATE')
  const keyPem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString()
  writePrivateFile(join(dataDir, SERVER_KEY_FILE), keyPem)
  writePrivateFile(join(dataDir, SERVER_CERT_FILE), certPem)
  return { certPem, keyPem, notAfter: truncateToSecond(notAfter) }
}

/** Writes a file with mode 0600 through a temporary name, so readers never see half a file. */
function writePrivateFile(path: string, contents: string | Buffer): void {
  const temporary = `${path}.${process.pid}.tmp`
  writeFileSync(temporary, contents, { mode: 0o600 })
  renameSync(temporary, path)
}

function earliest(first: Date, ...others: (Date | undefined)[]): Date {
  let result = first
  for (const other of others) {
    if (other && other.getTime() < result.getTime()) result = other
  }
  return result
}

/** X.509 times carry whole seconds; the returned dates match what the certificate says. */
function truncateToSecond(date: Date): Date {
  return new Date(Math.floor(date.getTime() / 1000) * 1000)
}
