import { createPrivateKey, generateKeyPairSync, type KeyObject, X509Certificate } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync } from 'node:fs'
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
import { commonNameOnly } from '../identity/name.js'
import { derToPem, pemToDer } from '../identity/pem.js'
import { caPin } from '../identity/pin.js'
import { SpiffeId } from '../identity/spiffe-id.js'
import type { WritClaims } from '../identity/types.js'
import {
  type CaMaterial,
  CLOCK_SKEW_MS,
  caFileNames,
  checkCaTrustDomain,
  createCaFiles,
  newSerial,
  readCaFiles,
  writePrivateFile,
} from './ca-files.js'
import { CA_STATE_META_KEY, type CaState, parseCaState } from './ca-state.js'
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

export { CLOCK_SKEW_MS, DEFAULT_CA_VALIDITY_DAYS } from './ca-files.js'

/** How long the gateway's own server certificate is valid: 90 days. */
export const SERVER_CERT_VALIDITY_DAYS = 90

/** A server certificate with less than this left is reissued at start-up: 7 days. */
export const SERVER_CERT_RENEW_BEFORE_MS = 7 * 86_400_000

const DAY_MS = 86_400_000
const SERVER_CERT_FILE = 'server.pem'
const SERVER_KEY_FILE = 'server_key.pem'
const ALWAYS_SERVED_HOSTS = ['localhost', '127.0.0.1', '::1']

/** The part of the store the CA reads its rotation state from. */
export interface CaStateStore {
  getMeta(key: string): Promise<string | undefined>
}

/** Options for `loadOrCreateCa`. */
export interface CaOptions {
  trustDomain: string
  clock?: Clock
  /** The lifetime of a newly created CA certificate, in days. */
  validityDays?: number
  /**
   * The store whose meta table contains the rotation state. Without it the data directory's
   * first CA is the only one, and `refresh` never changes anything.
   */
  stateStore?: CaStateStore
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

/** One CA certificate in the trust bundle. */
export interface TrustedCa {
  generation: number
  certPem: string
  /** `sha256:<hex>` of the CA certificate's SubjectPublicKeyInfo. */
  pin: string
  notAfter: Date
  /** Whether this CA signs new certificates. */
  signing: boolean
}

/**
 * The certificate authority of one data directory. The properties describe the state at the
 * last `refresh` (or issuance), because a `writ ca rotate` in another process can change it.
 */
export interface CertificateAuthority {
  readonly trustDomain: string
  /** `spiffe://<trust domain>`, the CA's own ID, with no path. */
  readonly spiffeId: SpiffeId
  /** The certificate of the CA that signs new certificates. */
  readonly certPem: string
  /** Every CA certificate that peers should trust, as concatenated PEM blocks, oldest first. */
  readonly bundlePem: string
  /** `sha256:<hex>` of the signing CA certificate's SubjectPublicKeyInfo. */
  readonly pin: string
  /** The signing CA certificate's expiry. */
  readonly notAfter: Date
  /** Every CA in the trust bundle, oldest first. */
  readonly trusted: readonly TrustedCa[]
  /** The rotation state: bundle sequence, signing generation and phase. */
  readonly state: Readonly<CaState>
  /**
   * Signs a leaf X.509-SVID with the Writ profile, with the CA that signs at this moment;
   * throws `csr.invalid` for a bad CSR.
   */
  issue(request: IssueRequest): Promise<IssuedCertificate>
  /**
   * Returns the gateway's server certificate, reissuing it when missing, stale, incomplete or
   * signed by a CA other than the signing one.
   */
  serverCertificate(hosts: string[]): Promise<ServerCertificate>
  /** Re-reads the rotation state; resolves true when the trusted or signing CA changed. */
  refresh(): Promise<boolean>
}

/** The CA files and state as loaded at one moment; replaced whole when the state changes. */
interface CaView {
  raw: string | undefined
  state: CaState
  trusted: TrustedCa[]
  bundlePem: string
  signer: LeafSigner
  signingCa: TrustedCa
  signingX509: X509Certificate
}

interface LeafSigner {
  key: KeyObject
  issuer: Name
  caKeyId: Buffer
  caNotAfter: Date
}

/**
 * Loads the CA from the data directory, creating the directory (mode 0700) and a new self-signed
 * ECDSA P-256 CA (`ca.pem`, key file `ca_key.pem` with mode 0600) on first use. With a
 * `stateStore` it follows the rotation state, so several CAs may be trusted at once.
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
  const stateStore = options.stateStore
  mkdirSync(dataDir, { recursive: true, mode: 0o700 })
  const load = (raw: string | undefined) =>
    loadView(dataDir, raw, trustDomainId, clock, options.validityDays)
  let view = load(await stateStore?.getMeta(CA_STATE_META_KEY))

  async function refresh(): Promise<boolean> {
    if (!stateStore) return false
    const raw = await stateStore.getMeta(CA_STATE_META_KEY)
    if (raw === view.raw) return false
    view = load(raw)
    return true
  }

  return {
    trustDomain: trustDomainId.trustDomain,
    spiffeId: trustDomainId,
    get certPem() {
      return view.signingCa.certPem
    },
    get bundlePem() {
      return view.bundlePem
    },
    get pin() {
      return view.signingCa.pin
    },
    get notAfter() {
      return view.signingCa.notAfter
    },
    get trusted() {
      return view.trusted
    },
    get state() {
      return view.state
    },
    async issue(request) {
      // Reading the state first means a certificate is never signed by a CA that a rotation in
      // another process has already replaced, and its bundle is the current one.
      await refresh()
      return issueLeaf(view.signer, trustDomainId, clock(), request)
    },
    async serverCertificate(hosts) {
      await refresh()
      return ensureServerCertificate(dataDir, view, trustDomainId, clock(), hosts)
    },
    refresh,
  }
}

function loadView(
  dataDir: string,
  raw: string | undefined,
  trustDomainId: SpiffeId,
  clock: Clock,
  validityDays: number | undefined,
): CaView {
  const state = parseCaState(raw)
  const materials = state.trusted.map((generation) => {
    const signing = generation === state.signing
    const material = readCaFiles(dataDir, generation, signing)
    if (material) return material
    // Only a data directory that never rotated creates its first CA here.
    if (raw === undefined) return createCaFiles(dataDir, trustDomainId, clock, 1, validityDays)
    const missing = caFileNames(generation).cert
    throw new WritError(
      'ca.incomplete',
      `CA files in ${dataDir} are incomplete: ${missing} is missing; restore it from a backup or use a new data directory`,
      { dataDir, missing },
    )
  })
  const trusted = materials.map((material) => {
    checkCaTrustDomain(material.certPem, trustDomainId)
    return describeCa(material, material.generation === state.signing)
  })
  const signingMaterial = materials.find((material) => material.generation === state.signing)
  const signingCa = trusted.find((ca) => ca.signing) as TrustedCa
  const signingX509 = new X509Certificate(signingCa.certPem)
  return {
    raw,
    state,
    trusted,
    bundlePem: trusted.map((ca) => ca.certPem).join(''),
    signer: leafSigner(signingMaterial as CaMaterial),
    signingCa,
    signingX509,
  }
}

function describeCa(material: CaMaterial, signing: boolean): TrustedCa {
  const notAfter = new Date(new X509Certificate(material.certPem).validTo)
  return {
    generation: material.generation,
    certPem: material.certPem,
    pin: caPin(material.certPem),
    notAfter,
    signing,
  }
}

function leafSigner(material: CaMaterial): LeafSigner {
  const caDer = pemToDer(material.certPem, ['CERTIFICATE'], 'ca.invalid_certificate')
  const caTbs = AsnConvert.parse(caDer, Certificate).tbsCertificate
  const caX509 = new X509Certificate(caDer)
  return {
    key: material.key as KeyObject,
    issuer: caTbs.subject,
    caKeyId: keyIdentifier(caX509.publicKey.export({ type: 'spki', format: 'der' })),
    caNotAfter: caTbs.validity.notAfter.getTime(),
  }
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

function ensureServerCertificate(
  dataDir: string,
  view: CaView,
  trustDomainId: SpiffeId,
  now: number,
  hosts: string[],
): ServerCertificate {
  const wanted = [...new Set([...hosts, ...ALWAYS_SERVED_HOSTS])].filter(
    (host) => host !== '' && host !== '0.0.0.0' && host !== '::',
  )
  const existing = readServerFiles(dataDir)
  if (existing && serverCertificateFits(existing, view.signingX509, now, wanted)) return existing
  return writeServerCertificate(dataDir, view.signer, trustDomainId, now, wanted)
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

function earliest(first: Date, ...others: (Date | undefined)[]): Date {
  let result = first
  for (const other of others) {
    if (other && other.getTime() < result.getTime()) result = other
  }
  return result
}

/** Drops the milliseconds, because X.509 times carry whole seconds. */
function truncateToSecond(date: Date): Date {
  return new Date(Math.floor(date.getTime() / 1000) * 1000)
}
