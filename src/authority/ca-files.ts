import { generateKeyPairSync, type KeyObject, randomBytes, X509Certificate } from 'node:crypto'
import { existsSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { KeyUsageFlags } from '@peculiar/asn1-x509'
import type { Clock } from '../clock.js'
import { WritError } from '../errors.js'
import { readP256PrivateKey } from '../identity/keys.js'
import { commonNameOnly } from '../identity/name.js'
import { derToPem } from '../identity/pem.js'
import type { SpiffeId } from '../identity/spiffe-id.js'
import { signCertificate } from './certificate-builder.js'
import {
  authorityKeyIdentifierExtension,
  basicConstraintsExtension,
  keyIdentifier,
  keyUsageExtension,
  subjectAltNameExtension,
  subjectKeyIdentifierExtension,
} from './extensions.js'

/** How long a new CA certificate is valid when `validityDays` is not set: ten years. */
export const DEFAULT_CA_VALIDITY_DAYS = 3650

/**
 * How far before the issuing moment `notBefore` is set: 60 seconds, so that a peer whose clock
 * runs slightly behind the authority's still accepts a certificate issued a moment ago.
 */
export const CLOCK_SKEW_MS = 60_000

const DAY_MS = 86_400_000

/** A CA certificate of one generation, with its key when the key file still exists. */
export interface CaMaterial {
  generation: number
  certPem: string
  key?: KeyObject
}

/**
 * Returns the file names of a CA generation: `ca.pem` and `ca_key.pem` for generation 1 (the CA
 * made with the data directory), `ca-<n>.pem` and `ca-<n>_key.pem` for later ones.
 */
export function caFileNames(generation: number): { cert: string; key: string } {
  if (generation === 1) return { cert: 'ca.pem', key: 'ca_key.pem' }
  return { cert: `ca-${generation}.pem`, key: `ca-${generation}_key.pem` }
}

/**
 * Reads the certificate and, with `needKey`, the key of a CA generation. Returns undefined when
 * neither file exists. Throws `ca.incomplete` naming the missing file, or `ca.key_mismatch`.
 */
export function readCaFiles(
  dataDir: string,
  generation: number,
  needKey: boolean,
): CaMaterial | undefined {
  const names = caFileNames(generation)
  const certPath = join(dataDir, names.cert)
  const keyPath = join(dataDir, names.key)
  const hasCert = existsSync(certPath)
  const hasKey = existsSync(keyPath)
  if (!hasCert && !hasKey) return undefined
  if (!hasCert || (needKey && !hasKey)) {
    const missing = hasCert ? names.key : names.cert
    throw new WritError(
      'ca.incomplete',
      `CA files in ${dataDir} are incomplete: ${missing} is missing; restore it from a backup or use a new data directory`,
      { dataDir, missing },
    )
  }
  const certPem = readFileSync(certPath, 'utf8')
  if (!needKey) return { generation, certPem }
  const key = readP256PrivateKey(readFileSync(keyPath, 'utf8'))
  const certificate = new X509Certificate(certPem)
  if (!certificate.checkPrivateKey(key)) {
    throw new WritError('ca.key_mismatch', `${keyPath} does not hold the key of ${certPath}`, {
      dataDir,
    })
  }
  return { generation, certPem, key }
}

/**
 * Creates a self-signed ECDSA P-256 CA of the given generation and writes its files (mode 0600).
 * Later generations get the generation number in the subject CN, so that two CAs trusted at
 * the same time never share an issuer name.
 */
export function createCaFiles(
  dataDir: string,
  trustDomainId: SpiffeId,
  clock: Clock,
  generation: number,
  validityDays = DEFAULT_CA_VALIDITY_DAYS,
): CaMaterial {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' })
  const spkiDer = publicKey.export({ type: 'spki', format: 'der' })
  const keyId = keyIdentifier(spkiDer)
  const now = clock()

  const suffix = generation === 1 ? '' : ` #${generation}`
  const name = commonNameOnly(`Writ CA ${trustDomainId.trustDomain}${suffix}`)
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

  const names = caFileNames(generation)
  // The key is written first, so a present certificate always has its key beside it.
  writePrivateFile(join(dataDir, names.key), privateKey.export({ type: 'pkcs8', format: 'pem' }))
  writePrivateFile(join(dataDir, names.cert), certPem)
  return { generation, certPem, key: privateKey }
}

/** Deletes the key file of a retired CA generation; its certificate stays for the record. */
export function removeCaKey(dataDir: string, generation: number): void {
  rmSync(join(dataDir, caFileNames(generation).key), { force: true })
}

/** Throws `ca.trust_domain_mismatch` unless the CA certificate names `trustDomainId`. */
export function checkCaTrustDomain(certPem: string, trustDomainId: SpiffeId): void {
  const names = new X509Certificate(certPem).subjectAltName ?? ''
  if (!names.split(', ').includes(`URI:${trustDomainId}`)) {
    throw new WritError(
      'ca.trust_domain_mismatch',
      `the CA in this data directory is not for trust domain "${trustDomainId.trustDomain}" (its names: ${names || 'none'})`,
      { trustDomain: trustDomainId.trustDomain, names },
    )
  }
}

/**
 * Returns 16 random bytes with the top bit clear (so the INTEGER is positive) and the next bit
 * set (so the encoding needs no leading zero byte and the hex form has exactly 32 digits).
 */
export function newSerial(): Uint8Array {
  const serial = randomBytes(16)
  serial[0] = ((serial[0] as number) & 0x7f) | 0x40
  return serial
}

/** Writes a file with mode 0600 through a temporary name, so readers never see half a file. */
export function writePrivateFile(path: string, contents: string | Buffer): void {
  const temporary = `${path}.${process.pid}.tmp`
  writeFileSync(temporary, contents, { mode: 0o600 })
  renameSync(temporary, path)
}
