import { createHash, randomBytes } from 'node:crypto'
import { encodeBase32 } from './authority/totp.js'
import type { Host } from './host.js'
import type { UserSpec } from './policy/people-specs.js'
import { API_VERSION, type Resource } from './policy/resource.js'

/** How long an enrollment code from `writ users add` stays usable: 24 hours. */
export const ENROLLMENT_CODE_TTL_SECONDS = 24 * 3600

/** 20 random bytes (160 bits), printed as 32 base32 characters in groups of four. */
const ENROLLMENT_CODE_BYTES = 20

/** The output of `writ users add`. The code exists only here, because the store keeps its hash. */
export interface UserEnrollment {
  user: string
  roles: string[]
  created: boolean
  code: string
  expires: string
}

/**
 * Stores the User manifest (replacing its roles when `roles` is given) and a new single-use
 * enrollment code, which replaces the user's earlier unused codes. A new user starts with no
 * credentials, even if a deleted user of the same name had some.
 */
export async function addUser(
  host: Host,
  name: string,
  roles: string[] | undefined,
): Promise<UserEnrollment> {
  const existing = await host.store.getResource('User', name)
  const spec: UserSpec = { ...((existing?.spec as UserSpec | undefined) ?? { roles: [] }) }
  if (roles !== undefined) spec.roles = roles
  if (spec.roles.length === 0) {
    throw new TypeError(`user "${name}" has no roles; pass the roles of a new user`)
  }
  const user: Resource = {
    apiVersion: API_VERSION,
    kind: 'User',
    metadata: existing?.metadata ?? { name },
    spec: spec as unknown as Record<string, unknown>,
  }
  if (!existing) await host.store.deleteUserCredentials(name)
  await host.store.putResource(user)

  const code = formatCode(encodeBase32(randomBytes(ENROLLMENT_CODE_BYTES)))
  const expiresAt = host.clock() + ENROLLMENT_CODE_TTL_SECONDS * 1000
  await host.store.putEnrollmentCode({
    codeHash: createHash('sha256').update(code.replaceAll('-', '')).digest('hex'),
    user: name,
    expiresAt,
  })
  await host.audit.record({
    type: 'resource.apply',
    outcome: 'success',
    details: { kind: 'User', name, roles: spec.roles, enrollmentCode: 'issued', actor: 'cli' },
  })
  return {
    user: name,
    roles: spec.roles,
    created: !existing,
    code,
    expires: new Date(expiresAt).toISOString(),
  }
}

function formatCode(code: string): string {
  return code.match(/.{1,4}/g)?.join('-') ?? code
}
