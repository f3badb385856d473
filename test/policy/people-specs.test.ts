import assert from 'node:assert/strict'
import { test } from 'node:test'
import { isWritError } from '../../src/errors.js'
import { parseManifests } from '../../src/policy/manifest.js'

function manifest(kind: string, spec: string): string {
  return `apiVersion: writ.dev/v1alpha1\nkind: ${kind}\nmetadata: { name: example }\nspec:\n${spec}`
}

function rejects(text: string, path: string, pattern: RegExp) {
  assert.throws(
    () => parseManifests(text, 'people.yaml'),
    (error: unknown) => {
      assert.ok(isWritError(error, 'manifest.invalid'), String(error))
      assert.equal(error.fields.path, path)
      assert.match(error.message, pattern)
      return true
    },
  )
}

const CONNECTOR = `  issuer: https://idp.example.test
  clientId: writ
  clientSecret: '\${env:OIDC_SECRET}'
  roleMappings:
    - { claim: groups, value: admins, roles: [admin] }
`

test('User manifest with roles and traits is valid', () => {
  const [user] = parseManifests(
    manifest('User', '  roles: [reader]\n  traits: { team: [payments] }\n'),
    'people.yaml',
  )
  assert.equal(user?.kind, 'User')
  assert.deepEqual(user?.spec, { roles: ['reader'], traits: { team: ['payments'] } })
})

test('User manifest needs roles', () => {
  rejects(manifest('User', '  traits: {}\n'), 'spec.roles', /missing required field/)
  rejects(manifest('User', '  roles: []\n'), 'spec.roles', /non-empty list/)
})

test('User manifest rejects a bad trait name', () => {
  rejects(
    manifest('User', "  roles: [reader]\n  traits: { 'bad name': [x] }\n"),
    'spec.traits["bad name"]',
    /invalid trait name "bad name"/,
  )
})

test('User manifest rejects a credential field', () => {
  rejects(
    manifest('User', '  roles: [reader]\n  password: hunter2\n'),
    'spec.password',
    /unknown field "password"/,
  )
})

test('OidcConnector manifest is valid', () => {
  const [connector] = parseManifests(manifest('OidcConnector', CONNECTOR), 'people.yaml')
  assert.equal(connector?.kind, 'OidcConnector')
})

test('OidcConnector rejects a literal client secret', () => {
  rejects(
    manifest('OidcConnector', CONNECTOR.replace(/'\$\{env:OIDC_SECRET\}'/, 'plain-secret')),
    'spec.clientSecret',
    /must be one reference such as \$\{env:OIDC_CLIENT_SECRET\}/,
  )
})

test('OidcConnector rejects an http issuer off loopback', () => {
  rejects(
    manifest('OidcConnector', CONNECTOR.replace('https://idp', 'http://idp')),
    'spec.issuer',
    /invalid issuer URL "http:\/\/idp\.example\.test": use https/,
  )
})

test('OidcConnector accepts an http issuer on loopback', () => {
  const text = manifest(
    'OidcConnector',
    CONNECTOR.replace('https://idp.example.test', 'http://127.0.0.1:9000'),
  )
  assert.equal(parseManifests(text, 'people.yaml').length, 1)
})

test('OidcConnector needs openid among the scopes', () => {
  rejects(
    manifest('OidcConnector', `${CONNECTOR}  scopes: [profile]\n`),
    'spec.scopes',
    /must include openid/,
  )
})

test('OidcConnector rejects a bad redirect port', () => {
  rejects(
    manifest('OidcConnector', `${CONNECTOR}  redirectPort: 70000\n`),
    'spec.redirectPort',
    /invalid port 70000/,
  )
})

test('OidcConnector role mappings need roles', () => {
  rejects(
    manifest('OidcConnector', CONNECTOR.replace('roles: [admin]', 'roles: []')),
    'spec.roleMappings[0].roles',
    /non-empty list of role names/,
  )
})
