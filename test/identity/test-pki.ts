import { createPrivateKey, generateKeyPairSync, type KeyObject } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { AsnConvert } from '@peculiar/asn1-schema'
import {
  Certificate,
  type Extension,
  id_kp_clientAuth,
  id_kp_serverAuth,
  KeyUsageFlags,
} from '@peculiar/asn1-x509'
import { type CertificateAuthority, loadOrCreateCa } from '../../src/authority/ca.js'
import { signCertificate } from '../../src/authority/certificate-builder.js'
import {
  authorityKeyIdentifierExtension,
  basicConstraintsExtension,
  claimsExtension,
  extendedKeyUsageExtension,
  keyIdentifier,
  keyUsageExtension,
  subjectAltNameExtension,
  subjectKeyIdentifierExtension,
} from '../../src/authority/extensions.js'
import { commonNameOnly } from '../../src/identity/name.js'
import { derToPem, pemToDer } from '../../src/identity/pem.js'
import type { WritClaims } from '../../src/identity/types.js'

/** A fixed instant for tests that freeze the clock: 2030-01-02T03:04:05Z. */
export const FIXED_NOW = Date.parse('2030-01-02T03:04:05Z')

/** A CA in a temporary data directory, with its private key for minting test certificates. */
export interface TestCa {
  ca: CertificateAuthority
  dir: string
  key: KeyObject
  remove(): void
}

/** Creates a CA in a new temporary directory with the given clock. */
export async function createTestCa(
  trustDomain = 'writ.test',
  clock: () => number = () => FIXED_NOW,
  validityDays?: number,
): Promise<TestCa> {
  const dir = mkdtempSync(join(tmpdir(), 'writ-ca-test-'))
  const ca = await loadOrCreateCa(dir, {
    trustDomain,
    clock,
    ...(validityDays === undefined ? {} : { validityDays }),
  })
  const key = createPrivateKey(readFileSync(join(dir, 'ca_key.pem'), 'utf8'))
  return { ca, dir, key, remove: () => rmSync(dir, { recursive: true, force: true }) }
}

/** Claims of a first-generation bot certificate. */
export function botClaims(overrides: Partial<WritClaims> = {}): WritClaims {
  return {
    version: 1,
    kind: 'bot',
    roles: ['reader'],
    traits: {},
    depth: 0,
    botInstance: '6f1d2c3b-0a9e-4d8c-b7a6-5f4e3d2c1b0a',
    generation: 1,
    accessRequests: [],
    ...overrides,
  }
}

/** What a minted leaf contains; each field defaults to the Writ profile. */
export interface LeafSpec {
  uris?: string[]
  commonName?: string
  cA?: boolean
  keyUsage?: number
  keyUsageCritical?: boolean
  extendedKeyUsage?: string[]
  /** `null` leaves the claims extension out. */
  claims?: WritClaims | null
  claimsCritical?: boolean
  notBefore?: Date
  notAfter?: Date
}

/**
 * Signs a leaf with the test CA's key, following the Writ profile except where `spec` sets a
 * field, so each test can break one rule.
 */
export function mintLeaf(testCa: TestCa, spec: LeafSpec = {}): string {
  const caDer = pemToDer(testCa.ca.certPem, ['CERTIFICATE'], 'test.ca')
  const caCertificate = AsnConvert.parse(caDer, Certificate)
  const caSpki = AsnConvert.serialize(caCertificate.tbsCertificate.subjectPublicKeyInfo)
  const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' })
  const spkiDer = publicKey.export({ type: 'spki', format: 'der' })
  const keyUsage = keyUsageExtension(spec.keyUsage ?? KeyUsageFlags.digitalSignature)
  if (spec.keyUsageCritical === false) keyUsage.critical = false
  const extensions: Extension[] = [
    basicConstraintsExtension(spec.cA ?? false),
    keyUsage,
    extendedKeyUsageExtension(spec.extendedKeyUsage ?? [id_kp_serverAuth, id_kp_clientAuth]),
    subjectAltNameExtension({ uris: spec.uris ?? ['spiffe://writ.test/bot/minted'] }),
    subjectKeyIdentifierExtension(keyIdentifier(spkiDer)),
    authorityKeyIdentifierExtension(keyIdentifier(new Uint8Array(caSpki))),
  ]
  if (spec.claims !== null) {
    const claims = claimsExtension(spec.claims ?? botClaims())
    if (spec.claimsCritical) claims.critical = true
    extensions.push(claims)
  }
  const der = signCertificate(
    {
      serial: Uint8Array.from([0x01, 0x23, 0x45]),
      issuer: caCertificate.tbsCertificate.subject,
      subject: commonNameOnly(spec.commonName ?? 'minted'),
      spkiDer,
      notBefore: spec.notBefore ?? new Date(FIXED_NOW - 60_000),
      notAfter: spec.notAfter ?? new Date(FIXED_NOW + 3_600_000),
      extensions,
    },
    testCa.key,
  )
  return derToPem(der, 'CERTIFICATE')
}
