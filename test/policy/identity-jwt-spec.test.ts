import assert from 'node:assert/strict'
import { test } from 'node:test'
import { isWritError } from '../../src/errors.js'
import { parseManifests } from '../../src/policy/manifest.js'
import { resolveServerSpec } from '../../src/policy/secrets.js'
import type { McpServerSpec } from '../../src/policy/specs.js'

function server(http: string): string {
  return `apiVersion: writ.dev/v1alpha1
kind: McpServer
metadata: { name: tracker }
spec:
  http:
    url: https://tracker.example.com/mcp
${http}
`
}

function parseSpec(http: string): McpServerSpec {
  const [resource] = parseManifests(server(http), 'tracker.yaml')
  return resource?.spec as unknown as McpServerSpec
}

function rejects(http: string, message: string): void {
  assert.throws(
    () => parseManifests(server(http), 'tracker.yaml'),
    (error: unknown) => {
      assert.ok(isWritError(error, 'manifest.invalid'), String(error))
      assert.equal(error.message, message)
      return true
    },
  )
}

test('identityJwt true resolves to defaults', () => {
  const resolved = resolveServerSpec(parseSpec('    identityJwt: true'), {})
  assert.deepEqual(resolved.spec.http?.identityJwt, { header: 'Authorization', ttlSeconds: 300 })
})

test('identityJwt with header and ttl', () => {
  const spec = parseSpec('    identityJwt: { header: X-Writ-Identity, ttl: 2m }')
  const resolved = resolveServerSpec(spec, {})
  assert.deepEqual(resolved.spec.http?.identityJwt, { header: 'X-Writ-Identity', ttlSeconds: 120 })
})

test('identityJwt false is off', () => {
  const resolved = resolveServerSpec(parseSpec('    identityJwt: false'), {})
  assert.equal(resolved.spec.http?.identityJwt, undefined)
})

test('identityJwt TTL over five minutes', () => {
  rejects(
    '    identityJwt: { ttl: 10m }',
    'tracker.yaml, document 1 (McpServer "tracker"), line 7: spec.http.identityJwt.ttl: identity JWT lifetime 10m exceeds the 5m maximum; use 5m or less',
  )
})

test('identityJwt header clash', () => {
  rejects(
    "    headers: { authorization: 'Bearer static' }\n    identityJwt: true",
    'tracker.yaml, document 1 (McpServer "tracker"), line 8: spec.http.identityJwt: the identity JWT goes in header Authorization, which http.headers also sets as "authorization"; remove one or set identityJwt.header to another name',
  )
})

test('identityJwt invalid header name', () => {
  rejects(
    "    identityJwt: { header: 'X Writ' }",
    'tracker.yaml, document 1 (McpServer "tracker"), line 7: spec.http.identityJwt.header: invalid HTTP header name "X Writ"',
  )
})

test('identityJwt unknown field', () => {
  assert.throws(
    () => parseManifests(server('    identityJwt: { audience: other }'), 'tracker.yaml'),
    (error: unknown) => {
      assert.ok(isWritError(error, 'manifest.invalid'))
      assert.match(error.message, /spec\.http\.identityJwt/)
      assert.match(error.message, /audience/)
      return true
    },
  )
})
