import { createPrivateKey } from 'node:crypto'
import { WritError } from '../errors.js'
import { pemBlocks } from '../identity/pem.js'
import { SpiffeId } from '../identity/spiffe-id.js'
import type { IssuedIdentity } from './issued.js'

// Message shapes of the published Workload API proto as @grpc/proto-loader encodes them with
// `keepCase: true`: field names stay snake_case and `bytes` fields are Buffers.

export interface X509SvidMessage {
  spiffe_id: string
  x509_svid: Buffer
  x509_svid_key: Buffer
  bundle: Buffer
  hint: string
}

export interface X509SvidResponse {
  svids: X509SvidMessage[]
  crl: Buffer[]
  federated_bundles: Record<string, Buffer>
}

export interface X509BundlesResponse {
  crl: Buffer[]
  bundles: Record<string, Buffer>
}

export interface JwtBundlesResponse {
  bundles: Record<string, Buffer>
}

/**
 * A `google.protobuf.Value` with exactly one of its kinds set. protobufjs defines the well-known
 * types itself with camelCase field names, so these keep camelCase even with `keepCase: true`.
 */
export type StructValue =
  | { nullValue: 'NULL_VALUE' }
  | { numberValue: number }
  | { stringValue: string }
  | { boolValue: boolean }
  | { structValue: StructMessage }
  | { listValue: { values: StructValue[] } }

/** A `google.protobuf.Struct`: a JSON object as protobuf. */
export interface StructMessage {
  fields: Record<string, StructValue>
}

/** The Workload API forms of one identity: what each X.509 RPC sends. */
export interface X509Messages {
  spiffeId: string
  /** `spiffe://<trust domain>`, the key of the bundle maps. */
  trustDomainId: string
  svid: X509SvidResponse
  bundles: X509BundlesResponse
}

/**
 * Converts an identity from PEM to the DER fields of the Workload API: the certificate chain
 * with the leaf first, the PKCS#8 private key and the CA certificates, each concatenated.
 * Throws `workload_api.identity_invalid` when a PEM text contains no certificate.
 */
export function toX509Messages(identity: IssuedIdentity): X509Messages {
  const chain = concatenateCertificates(identity.certPem, 'certificate')
  const bundle = concatenateCertificates(identity.bundlePem, 'bundle')
  let key: Buffer
  try {
    key = createPrivateKey(identity.keyPem).export({ type: 'pkcs8', format: 'der' })
  } catch (error) {
    throw new WritError(
      'workload_api.identity_invalid',
      `the private key of ${identity.spiffeId} does not parse`,
      { spiffeId: identity.spiffeId },
      { cause: error },
    )
  }
  const trustDomainId = trustDomainIdOf(identity.spiffeId)
  return {
    spiffeId: identity.spiffeId,
    trustDomainId,
    svid: {
      svids: [
        {
          spiffe_id: identity.spiffeId,
          x509_svid: chain,
          x509_svid_key: key,
          bundle,
          hint: '',
        },
      ],
      crl: [],
      federated_bundles: {},
    },
    bundles: { crl: [], bundles: { [trustDomainId]: bundle } },
  }
}

/** Returns `spiffe://<trust domain>` for a SPIFFE ID. */
export function trustDomainIdOf(spiffeId: string): string {
  return `spiffe://${SpiffeId.parse(spiffeId).trustDomain}`
}

/**
 * Converts a JSON value, such as the claims of a JWT, to `google.protobuf.Struct` fields.
 * Numbers become doubles, as in every Struct; `undefined` members are dropped.
 *
 * @example
 *   toStruct({ sub: 'spiffe://writ.local/bot/a', exp: 1700000000 })
 *   // { fields: { sub: { stringValue: '…' }, exp: { numberValue: 1700000000 } } }
 */
export function toStruct(object: Record<string, unknown>): StructMessage {
  const fields: Record<string, StructValue> = {}
  for (const [name, value] of Object.entries(object)) {
    if (value !== undefined) fields[name] = toStructValue(value)
  }
  return { fields }
}

function toStructValue(value: unknown): StructValue {
  if (value === null) return { nullValue: 'NULL_VALUE' }
  if (typeof value === 'number') return { numberValue: value }
  if (typeof value === 'string') return { stringValue: value }
  if (typeof value === 'boolean') return { boolValue: value }
  if (Array.isArray(value)) return { listValue: { values: value.map(toStructValue) } }
  if (typeof value === 'object') return { structValue: toStruct(value as Record<string, unknown>) }
  // JSON.parse never yields other types; a bigint or function cannot come from a JWT payload.
  return { stringValue: String(value) }
}

function concatenateCertificates(pem: string, what: string): Buffer {
  const blocks = pemBlocks(pem, ['CERTIFICATE'])
  if (blocks.length === 0) {
    throw new WritError(
      'workload_api.identity_invalid',
      `the ${what} of the current identity holds no PEM certificate`,
      { what },
    )
  }
  return Buffer.concat(blocks)
}
