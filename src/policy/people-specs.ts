/**
 * The `spec` of the `User` and `OidcConnector` kinds: shapes and validators. `validateSpec` in
 * `specs.ts` dispatches to them.
 */
import {
  expectKnownFields,
  expectMapping,
  expectName,
  expectPresent,
  expectString,
  expectStringList,
  FieldError,
  type FieldPath,
  optionalString,
} from './fields.js'
import { parseReferences } from './secrets.js'

/** A person who logs in with a password and a TOTP code. Credentials are stored apart. */
export interface UserSpec {
  roles: string[]
  /** Values that `{{traits.NAME}}` placeholders in roles expand to, such as `team: [payments]`. */
  traits?: Record<string, string[]>
  description?: string
}

/** One rule of `roleMappings`: holders of `claim` equal to (or listing) `value` get `roles`. */
export interface RoleMapping {
  claim: string
  value: string
  roles: string[]
}

/** An OpenID Connect provider that people log in with through `writ login --sso NAME`. */
export interface OidcConnectorSpec {
  /** The issuer URL, compared exactly with the discovery document and the ID token's `iss`. */
  issuer: string
  clientId: string
  /** A `${env:NAME}` or `${file:PATH}` reference, resolved inside the Writ server only. */
  clientSecret: string
  /** Requested scopes; `openid` is required. Default `openid profile email`. */
  scopes?: string[]
  /** The claim that names the user. Default `preferred_username`. */
  usernameClaim?: string
  roleMappings: RoleMapping[]
  /** The fixed port of the loopback callback, for providers that register one exact redirect URI. */
  redirectPort?: number
  description?: string
}

/** The scopes requested when an OidcConnector sets none. */
export const DEFAULT_OIDC_SCOPES = ['openid', 'profile', 'email']

/** The claim that names the user when an OidcConnector sets no `usernameClaim`. */
export const DEFAULT_USERNAME_CLAIM = 'preferred_username'

const TRAIT_NAME = /^[A-Za-z_][A-Za-z0-9_-]{0,62}$/
const LOOPBACK_HOSTS = new Set(['127.0.0.1', '[::1]', 'localhost'])

export function validateUser(spec: Record<string, unknown>, path: FieldPath): void {
  expectKnownFields(spec, path, ['roles', 'traits', 'description'])
  expectRoleList(expectPresent(spec, 'roles', path, 'a list of role names'), [...path, 'roles'])
  if (spec.traits !== undefined) {
    const traitsPath = [...path, 'traits']
    for (const [name, values] of Object.entries(expectMapping(spec.traits, traitsPath))) {
      if (!TRAIT_NAME.test(name)) {
        throw new FieldError(
          [...traitsPath, name],
          `invalid trait name ${JSON.stringify(name)}: use letters, digits, '_' and '-', starting with a letter or '_'`,
        )
      }
      expectStringList(values, [...traitsPath, name])
    }
  }
  optionalString(spec, 'description', path)
}

export function validateOidcConnector(spec: Record<string, unknown>, path: FieldPath): void {
  expectKnownFields(spec, path, [
    'issuer',
    'clientId',
    'clientSecret',
    'scopes',
    'usernameClaim',
    'roleMappings',
    'redirectPort',
    'description',
  ])
  const issuerPath = [...path, 'issuer']
  checkIssuer(expectString(expectPresent(spec, 'issuer', path, 'the issuer URL'), issuerPath), [
    ...issuerPath,
  ])
  expectString(expectPresent(spec, 'clientId', path, 'the client ID'), [...path, 'clientId'])
  checkSecretReference(
    // biome-ignore lint/suspicious/noTemplateCurlyInString: the text shows the reference syntax
    expectPresent(spec, 'clientSecret', path, 'a reference such as ${env:OIDC_CLIENT_SECRET}'),
    [...path, 'clientSecret'],
  )
  if (spec.scopes !== undefined) {
    const scopes = expectStringList(spec.scopes, [...path, 'scopes'])
    if (!scopes.includes('openid')) {
      throw new FieldError([...path, 'scopes'], 'the scopes must include openid')
    }
  }
  optionalString(spec, 'usernameClaim', path)
  validateRoleMappings(
    expectPresent(spec, 'roleMappings', path, 'a list of { claim, value, roles }'),
    [...path, 'roleMappings'],
  )
  if (spec.redirectPort !== undefined) {
    const port = spec.redirectPort
    if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) {
      throw new FieldError(
        [...path, 'redirectPort'],
        `invalid port ${JSON.stringify(port)}: use a whole number from 1 to 65535`,
      )
    }
  }
  optionalString(spec, 'description', path)
}

function validateRoleMappings(value: unknown, path: FieldPath): void {
  if (!Array.isArray(value) || value.length === 0) {
    throw new FieldError(path, 'expected a non-empty list of { claim, value, roles }')
  }
  value.forEach((item, index) => {
    const itemPath = [...path, index]
    const mapping = expectMapping(item, itemPath)
    expectKnownFields(mapping, itemPath, ['claim', 'value', 'roles'])
    expectString(expectPresent(mapping, 'claim', itemPath, 'a claim name such as groups'), [
      ...itemPath,
      'claim',
    ])
    expectString(expectPresent(mapping, 'value', itemPath, 'the claim value to match'), [
      ...itemPath,
      'value',
    ])
    expectRoleList(expectPresent(mapping, 'roles', itemPath, 'a list of role names'), [
      ...itemPath,
      'roles',
    ])
  })
}

function expectRoleList(value: unknown, path: FieldPath): string[] {
  if (!Array.isArray(value) || value.length === 0) {
    throw new FieldError(path, 'expected a non-empty list of role names')
  }
  return value.map((role, index) => expectName(role, [...path, index]))
}

/**
 * Requires an https issuer, except on a loopback host where http is accepted for providers run
 * on the same machine, such as in tests.
 */
function checkIssuer(issuer: string, path: FieldPath): void {
  let url: URL
  try {
    url = new URL(issuer)
  } catch {
    throw new FieldError(path, `invalid issuer URL ${JSON.stringify(issuer)}`)
  }
  const loopback = LOOPBACK_HOSTS.has(url.hostname)
  if (url.protocol !== 'https:' && !(url.protocol === 'http:' && loopback)) {
    throw new FieldError(
      path,
      `invalid issuer URL ${JSON.stringify(issuer)}: use https (http only on 127.0.0.1, [::1] or localhost)`,
    )
  }
  if (url.search !== '' || url.hash !== '') {
    throw new FieldError(
      path,
      `the issuer URL ${JSON.stringify(issuer)} must not have a query or fragment`,
    )
  }
}

/** Requires exactly one `${env:...}` or `${file:...}` reference, so no secret is stored. */
function checkSecretReference(value: unknown, path: FieldPath): void {
  const text = expectString(value, path)
  let parts: ReturnType<typeof parseReferences>
  try {
    parts = parseReferences(text)
  } catch (error) {
    throw new FieldError(path, (error as Error).message, { cause: error })
  }
  if (parts.length !== 1 || !('reference' in (parts[0] as object))) {
    throw new FieldError(
      path,
      // biome-ignore lint/suspicious/noTemplateCurlyInString: the text shows the reference syntax
      'the client secret must be one reference such as ${env:OIDC_CLIENT_SECRET} or ${file:/run/secrets/oidc}, so the secret is not stored in the manifest',
    )
  }
}
