import type { AuditCaller } from '../audit/types.js'
import { WritError } from '../errors.js'
import type { VerifiedCsr } from '../identity/csr.js'
import { SpiffeId } from '../identity/spiffe-id.js'
import type { WritClaims } from '../identity/types.js'
import { parseDuration } from '../lib/duration.js'
import type { Store } from '../store/store.js'
import type { CertificateAuthority, IssuedCertificate } from './ca.js'

/** The lifetime of a person's certificate before the roles' `maxTtl` caps it: 8 hours. */
export const DEFAULT_USER_TTL_SECONDS = 8 * 3600

/** The contents of a person's next certificate. */
export interface UserGrant {
  name: string
  roles: string[]
  traits: Record<string, string[]>
  ttlSeconds: number
}

/** A person's certificate as the login routes return it. */
export interface UserCertificate {
  certificate: string
  bundle: string
  spiffeId: string
  notAfter: Date
  serial: string
  claims: WritClaims
}

/**
 * Computes the certificate lifetime for a set of roles: 8 hours capped by the smallest `maxTtl`.
 * Throws `<area>.role_not_found` naming the role when one does not exist, because a role created
 * later could have a shorter `maxTtl` than the certificate.
 */
export async function userCertificateTtl(
  store: Store,
  area: string,
  user: string,
  roles: readonly string[],
): Promise<number> {
  let ttlSeconds = DEFAULT_USER_TTL_SECONDS
  for (const roleName of roles) {
    const role = await store.getResource('Role', roleName)
    if (!role) {
      throw new WritError(
        `${area}.role_not_found`,
        `role "${roleName}" of user "${user}" does not exist; ask an administrator to create it or remove it from the user`,
        { user, role: roleName },
      )
    }
    const maxTtl = role.spec.maxTtl
    if (typeof maxTtl === 'string') {
      ttlSeconds = Math.min(ttlSeconds, parseDuration(maxTtl, `maxTtl of role "${roleName}"`))
    }
  }
  return ttlSeconds
}

/**
 * Signs a person's certificate, `spiffe://<trust domain>/user/<name>` with principal kind `user`,
 * and records it in the store.
 */
export async function issueUserCertificate(
  ca: CertificateAuthority,
  store: Store,
  grant: UserGrant,
  csr: VerifiedCsr,
): Promise<UserCertificate> {
  const spiffeId = SpiffeId.fromParts(ca.trustDomain, ['user', grant.name])
  const claims: WritClaims = {
    version: 1,
    kind: 'user',
    roles: grant.roles,
    traits: grant.traits,
    depth: 0,
    generation: 1,
    accessRequests: [],
  }
  const issued: IssuedCertificate = await ca.issue({
    csr,
    spiffeId,
    commonName: grant.name,
    ttlSeconds: grant.ttlSeconds,
    claims,
  })
  await store.recordCertificate({
    serial: issued.serial,
    spiffeId: spiffeId.toString(),
    kind: 'user',
    notBefore: issued.notBefore.getTime(),
    notAfter: issued.notAfter.getTime(),
  })
  return {
    certificate: issued.certPem,
    bundle: ca.bundlePem,
    spiffeId: spiffeId.toString(),
    notAfter: issued.notAfter,
    serial: issued.serial,
    claims,
  }
}

/** Returns the audit caller of a newly issued person's certificate. */
export function userCaller(certificate: UserCertificate): AuditCaller {
  return {
    spiffeId: certificate.spiffeId,
    kind: 'user',
    roles: certificate.claims.roles,
    serial: certificate.serial,
  }
}
