import { createHash } from 'node:crypto'
import { isIP } from 'node:net'
import { AsnConvert, OctetString } from '@peculiar/asn1-schema'
import {
  AuthorityKeyIdentifier,
  BasicConstraints,
  ExtendedKeyUsage,
  Extension,
  GeneralName,
  id_ce_authorityKeyIdentifier,
  id_ce_basicConstraints,
  id_ce_extKeyUsage,
  id_ce_keyUsage,
  id_ce_subjectAltName,
  id_ce_subjectKeyIdentifier,
  KeyIdentifier,
  KeyUsage,
  SubjectAlternativeName,
  SubjectKeyIdentifier,
} from '@peculiar/asn1-x509'
import { encodeClaims, WRIT_CLAIMS_OID } from '../identity/claims.js'
import { readDerChildren, readDerElement } from '../identity/der.js'
import type { WritClaims } from '../identity/types.js'

/** The names a subjectAltName extension lists. */
export interface AltNames {
  uris?: string[]
  dnsNames?: string[]
  ipAddresses?: string[]
}

export function subjectAltNameExtension(names: AltNames): Extension {
  const general = [
    ...(names.uris ?? []).map((uri) => new GeneralName({ uniformResourceIdentifier: uri })),
    ...(names.dnsNames ?? []).map((dns) => new GeneralName({ dNSName: dns })),
    ...(names.ipAddresses ?? []).map((ip) => new GeneralName({ iPAddress: ip })),
  ]
  return extension(id_ce_subjectAltName, false, new SubjectAlternativeName(general))
}

/** Sorts host names into DNS names and IP addresses, dropping duplicates. */
export function splitHosts(hosts: readonly string[]): {
  dnsNames: string[]
  ipAddresses: string[]
} {
  const dnsNames = new Set<string>()
  const ipAddresses = new Set<string>()
  for (const host of hosts) {
    const bare = host.replace(/^\[(.*)\]$/, '$1')
    if (isIP(bare)) ipAddresses.add(bare)
    else dnsNames.add(bare.toLowerCase())
  }
  return { dnsNames: [...dnsNames], ipAddresses: [...ipAddresses] }
}

/** A critical keyUsage extension with the given flag bits (see `KeyUsageFlags`). */
export function keyUsageExtension(flags: number): Extension {
  return extension(id_ce_keyUsage, true, new KeyUsage(flags))
}

export function extendedKeyUsageExtension(purposes: string[]): Extension {
  return extension(id_ce_extKeyUsage, false, new ExtendedKeyUsage(purposes))
}

/** A critical basicConstraints extension; `cA: false` marks a leaf. */
export function basicConstraintsExtension(cA: boolean): Extension {
  return extension(id_ce_basicConstraints, true, new BasicConstraints({ cA }))
}

export function subjectKeyIdentifierExtension(keyId: Uint8Array): Extension {
  return extension(id_ce_subjectKeyIdentifier, false, new SubjectKeyIdentifier(keyId))
}

export function authorityKeyIdentifierExtension(keyId: Uint8Array): Extension {
  const value = new AuthorityKeyIdentifier({ keyIdentifier: new KeyIdentifier(keyId) })
  return extension(id_ce_authorityKeyIdentifier, false, value)
}

/** The Writ claims extension; non-critical so that software unaware of Writ still accepts it. */
export function claimsExtension(claims: WritClaims): Extension {
  return new Extension({
    extnID: WRIT_CLAIMS_OID,
    critical: false,
    extnValue: new OctetString(encodeClaims(claims)),
  })
}

/**
 * Computes a key identifier as the SHA-1 digest of the subjectPublicKey bits (method 1 of
 * RFC 5280 section 4.2.1.2). SHA-1 only names the key here; nothing relies on its strength.
 */
export function keyIdentifier(spkiDer: Uint8Array): Buffer {
  const outer = readDerElement(spkiDer, 0)
  const parts = outer && readDerChildren(spkiDer, outer)
  const bits = parts?.[1]
  if (bits?.tag !== 0x03) throw new TypeError('SubjectPublicKeyInfo is malformed')
  // The first content byte of a BIT STRING counts unused bits; the key starts after it.
  return createHash('sha1')
    .update(spkiDer.subarray(bits.contentStart + 1, bits.end))
    .digest()
}

function extension(extnID: string, critical: boolean, value: unknown): Extension {
  return new Extension({
    extnID,
    critical,
    extnValue: new OctetString(AsnConvert.serialize(value)),
  })
}
