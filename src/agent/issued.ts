import { createPrivateKey, createPublicKey, X509Certificate } from 'node:crypto'
import type { Clock } from '../clock.js'
import { WritError } from '../errors.js'
import { computeSpkiPin } from './ca-pin.js'
import type { IdentityFiles } from './files.js'
import { invalidResponse } from './https-json.js'
import { type AgentKeys, exportPublicKeySpki } from './keys.js'
import type { ServerAddress } from './server-address.js'

const CERTIFICATE_BLOCK = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g

/** An X.509-SVID the server issued for the agent's key, checked and ready to write to disk. */
export interface IssuedIdentity {
  /** The certificate PEM as the server sent it, leaf first. */
  certPem: string
  keyPem: string
  /** The trust bundle: PEM CA certificates. */
  bundlePem: string
  spiffeId: string
  /** Serial number as lowercase hex without leading zeros. */
  serial: string
  notBefore: Date
  notAfter: Date
}

/** What a successful response must satisfy beyond matching the agent's key. */
export interface IssuedExpectations {
  clock: Clock
  /** On join: the bundle must contain the CA with this pin, the one the agent verified. */
  caPin?: string
  /** On renewal: the certificate must keep this SPIFFE ID. */
  spiffeId?: string
}

/**
 * Checks a 200 body from `/v1/join` or `/v1/renew` and returns the identity. Fails closed with
 * `agent.response_invalid` naming the reason when a field is missing, the certificate is for
 * another key, is not signed by a bundle CA, names another SPIFFE ID or has already expired.
 */
export async function readIssuedIdentity(
  address: ServerAddress,
  body: unknown,
  keys: AgentKeys,
  expect: IssuedExpectations,
): Promise<IssuedIdentity> {
  const fields = readFields(address, body)
  const leaf = parseFirstCertificate(address, fields.certificate, 'certificate')
  const bundle = parseBundle(address, fields.bundle)
  const fail = (reason: string) => invalidResponse(address, reason)

  const ownSpki = exportPublicKeySpki(keys)
  const leafSpki = leaf.publicKey.export({ type: 'spki', format: 'der' })
  if (!ownSpki.equals(leafSpki)) throw fail("the certificate is not for the agent's key")

  if (!bundle.some((ca) => leaf.checkIssued(ca) && leaf.verify(ca.publicKey))) {
    throw fail('the certificate is not signed by a CA in the returned bundle')
  }
  if (expect.caPin && !bundle.some((ca) => computeSpkiPin(ca.raw) === expect.caPin)) {
    throw fail(`the bundle does not contain the pinned CA ${expect.caPin}`)
  }

  const spiffeId = readUriSan(leaf)
  if (spiffeId !== fields.spiffeId) {
    throw fail(`the certificate names ${spiffeId ?? 'no URI'}, the response ${fields.spiffeId}`)
  }
  if (expect.spiffeId && spiffeId !== expect.spiffeId) {
    throw fail(`the renewed certificate names ${spiffeId}, the current one ${expect.spiffeId}`)
  }

  const notBefore = new Date(leaf.validFrom)
  const notAfter = new Date(leaf.validTo)
  if (notAfter.getTime() <= expect.clock()) {
    throw fail(`the certificate expired at ${notAfter.toISOString()}`)
  }
  return {
    certPem: fields.certificate,
    keyPem: keys.privateKeyPem,
    bundlePem: fields.bundle,
    spiffeId,
    serial: formatSerial(leaf.serialNumber),
    notBefore,
    notAfter,
  }
}

/** Parses the first PEM certificate of a text; throws `agent.response_invalid` naming `what`. */
export function parseFirstCertificate(
  address: ServerAddress,
  pem: string,
  what: string,
): X509Certificate {
  const block = pem.match(CERTIFICATE_BLOCK)?.[0]
  try {
    if (block) return new X509Certificate(block)
  } catch {
    // Reported below with the same message as a missing block.
  }
  throw invalidResponse(address, `the ${what} is not a PEM certificate`)
}

/** Returns the URI SAN of a certificate, or undefined when it has none or more than one. */
export function readUriSan(certificate: X509Certificate): string | undefined {
  const uris = (certificate.subjectAltName ?? '')
    .split(', ')
    .filter((name) => name.startsWith('URI:'))
    .map((name) => name.slice('URI:'.length))
  return uris.length === 1 ? uris[0] : undefined
}

function parseBundle(address: ServerAddress, pem: string): X509Certificate[] {
  const blocks = pem.match(CERTIFICATE_BLOCK) ?? []
  if (blocks.length === 0) throw invalidResponse(address, 'the bundle contains no PEM certificate')
  return blocks.map((block) => parseFirstCertificate(address, block, 'bundle'))
}

interface IssuedFields {
  certificate: string
  bundle: string
  spiffeId: string
}

function readFields(address: ServerAddress, body: unknown): IssuedFields {
  const record = (body ?? {}) as Record<string, unknown>
  for (const name of ['certificate', 'bundle', 'spiffeId'] as const) {
    if (typeof record[name] !== 'string' || record[name] === '') {
      throw invalidResponse(address, `the field "${name}" is missing or not a string`)
    }
  }
  return record as unknown as IssuedFields
}

function formatSerial(hex: string): string {
  return hex.toLowerCase().replace(/^0+(?=.)/, '')
}

/**
 * Describes an identity read from disk, checking that the key belongs to the certificate.
 * Throws `agent.identity_invalid` naming the directory otherwise.
 */
export function describeStoredIdentity(dir: string, files: IdentityFiles): IssuedIdentity {
  const fail = (reason: string) =>
    new WritError('agent.identity_invalid', `the identity in ${dir} is unusable: ${reason}`, {
      dir,
      reason,
    })
  const block = files.certPem.match(CERTIFICATE_BLOCK)?.[0]
  let leaf: X509Certificate
  let keySpki: Buffer
  try {
    leaf = new X509Certificate(block ?? '')
  } catch {
    throw fail('svid.pem contains no PEM certificate')
  }
  try {
    keySpki = createPublicKey(createPrivateKey(files.keyPem)).export({
      type: 'spki',
      format: 'der',
    })
  } catch {
    throw fail('svid_key.pem contains no PEM private key')
  }
  if (!keySpki.equals(leaf.publicKey.export({ type: 'spki', format: 'der' }))) {
    throw fail('svid_key.pem is not the key of svid.pem')
  }
  const spiffeId = readUriSan(leaf)
  if (!spiffeId) throw fail('svid.pem has no single URI SAN')
  return {
    ...files,
    spiffeId,
    serial: formatSerial(leaf.serialNumber),
    notBefore: new Date(leaf.validFrom),
    notAfter: new Date(leaf.validTo),
  }
}
