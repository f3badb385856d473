import assert from 'node:assert/strict'
import { test } from 'node:test'
import { isWritError } from '../../src/errors.js'
import {
  checkRequest,
  checkReview,
  principalOf,
  type RoleIndex,
  requestableRoles,
  reviewableRoles,
} from '../../src/policy/access-rules.js'
import { parseManifests } from '../../src/policy/manifest.js'
import type { RoleSpec } from '../../src/policy/specs.js'

const ROLES: RoleIndex = new Map<string, RoleSpec>([
  ['dev', { requests: { roles: ['deployer', 'db-reader'], maxDuration: '2h' } }],
  ['oncall', { requests: { roles: ['deployer'], maxDuration: '4h' } }],
  ['intern', { requests: { roles: ['db-reader'] } }],
  ['lead', { review: { roles: ['deployer'] } }],
  ['dba', { review: { roles: ['db-reader'] } }],
  ['deployer', { maxTtl: '1h' }],
  ['db-reader', {}],
  ['root', {}],
])

function roleManifest(spec: string): string {
  return `apiVersion: writ.dev/v1alpha1
kind: Role
metadata: { name: dev }
spec:
${spec}`
}

function assertInvalidManifest(spec: string, path: string, message: RegExp): void {
  assert.throws(
    () => parseManifests(roleManifest(spec), 'roles.yaml'),
    (error: unknown) => {
      assert.ok(isWritError(error, 'manifest.invalid'), `unexpected error ${String(error)}`)
      assert.equal(error.fields.path, path)
      assert.match(error.message, message)
      return true
    },
  )
}

test('requestable roles take longest maxDuration', () => {
  const limits = requestableRoles(ROLES, ['dev', 'oncall'])
  assert.equal(limits.get('deployer'), 4 * 3600)
  assert.equal(limits.get('db-reader'), 2 * 3600)
  assert.equal(limits.has('root'), false)
})

test('requestable roles default to one hour', () => {
  assert.equal(requestableRoles(ROLES, ['intern']).get('db-reader'), 3600)
})

test('unknown held roles grant nothing', () => {
  assert.equal(requestableRoles(ROLES, ['ghost']).size, 0)
  assert.equal(reviewableRoles(ROLES, ['ghost']).size, 0)
})

test('request allowed with default ttl', () => {
  assert.deepEqual(checkRequest(ROLES, ['dev'], ['deployer']), { ok: true, ttlSeconds: 3600 })
})

test('default ttl shrinks to the maximum', () => {
  const roles = new Map(ROLES)
  roles.set('dev', { requests: { roles: ['deployer'], maxDuration: '15m' } })
  assert.deepEqual(checkRequest(roles, ['dev'], ['deployer']), { ok: true, ttlSeconds: 900 })
})

test('request ttl up to the maximum', () => {
  assert.deepEqual(checkRequest(ROLES, ['dev'], ['deployer'], 7200), {
    ok: true,
    ttlSeconds: 7200,
  })
})

test('request ttl over the maximum rejected', () => {
  const check = checkRequest(ROLES, ['dev'], ['deployer'], 3 * 3600)
  assert.equal(check.ok, false)
  assert.ok(!check.ok)
  assert.equal(check.code, 'access.ttl_too_long')
  assert.match(check.message, /requested TTL 3h exceeds the 2h maximum for role deployer/)
})

test('several roles use the smallest maximum', () => {
  const check = checkRequest(ROLES, ['oncall', 'intern'], ['deployer', 'db-reader'], 2 * 3600)
  assert.ok(!check.ok)
  assert.equal(check.code, 'access.ttl_too_long')
  assert.match(check.message, /the 1h maximum/)
})

test('role nobody may request rejected', () => {
  const check = checkRequest(ROLES, ['dev'], ['root'])
  assert.ok(!check.ok)
  assert.equal(check.code, 'access.not_requestable')
  assert.match(check.message, /no role of the caller \(dev\) allows requesting role "root"/)
  assert.match(check.message, /they allow db-reader, deployer/)
})

test('role without requests rejected', () => {
  const check = checkRequest(ROLES, ['lead'], ['deployer'])
  assert.ok(!check.ok)
  assert.equal(check.code, 'access.not_requestable')
  assert.match(check.message, /\(lead\) allows requesting role "deployer"; they allow none/)
})

test('unknown requested role rejected', () => {
  const check = checkRequest(ROLES, ['dev'], ['deployr'])
  assert.ok(!check.ok)
  assert.equal(check.code, 'access.role_not_found')
  assert.match(check.message, /role "deployr" does not exist/)
})

test('already held role rejected', () => {
  const check = checkRequest(ROLES, ['dev', 'deployer'], ['deployer'])
  assert.ok(!check.ok)
  assert.equal(check.code, 'access.invalid')
  assert.match(check.message, /already holds role "deployer"/)
})

test('review allowed for listed roles', () => {
  assert.deepEqual(checkReview(ROLES, ['lead'], ['deployer']), { ok: true })
  assert.deepEqual(checkReview(ROLES, ['lead', 'dba'], ['deployer', 'db-reader']), { ok: true })
})

test('review needs every requested role', () => {
  const check = checkReview(ROLES, ['lead'], ['deployer', 'db-reader'])
  assert.ok(!check.ok)
  assert.equal(check.code, 'access.review_forbidden')
  assert.match(check.message, /no role of the reviewer \(lead\) allows reviewing role "db-reader"/)
  assert.deepEqual(check.fields.roles, ['db-reader'])
})

test('requesting does not grant reviewing', () => {
  const check = checkReview(ROLES, ['dev'], ['deployer'])
  assert.ok(!check.ok)
  assert.equal(check.code, 'access.review_forbidden')
})

test('principal of a task is its parent', () => {
  assert.equal(principalOf('spiffe://writ.local/bot/ci/task/7f3a'), 'spiffe://writ.local/bot/ci')
  assert.equal(
    principalOf('spiffe://writ.local/user/alice/task/a1/task/b2'),
    'spiffe://writ.local/user/alice',
  )
})

test('principal of a bot is itself', () => {
  assert.equal(principalOf('spiffe://writ.local/bot/ci'), 'spiffe://writ.local/bot/ci')
  assert.equal(principalOf('spiffe://writ.local/bot/task'), 'spiffe://writ.local/bot/task')
})

test('role manifest accepts requests and review', () => {
  const [role] = parseManifests(
    roleManifest(
      '  requests: { roles: [deployer], maxDuration: 2h }\n  review: { roles: [deployer] }\n',
    ),
    'roles.yaml',
  )
  assert.deepEqual(role?.spec, {
    requests: { roles: ['deployer'], maxDuration: '2h' },
    review: { roles: ['deployer'] },
  })
})

test('requests without roles rejected', () => {
  assertInvalidManifest(
    '  requests: { maxDuration: 2h }\n',
    'spec.requests.roles',
    /missing required field, expected a list of role names/,
  )
})

test('requests with empty roles rejected', () => {
  assertInvalidManifest(
    '  requests: { roles: [] }\n',
    'spec.requests.roles',
    /expected a non-empty list of role names/,
  )
})

test('invalid maxDuration rejected', () => {
  assertInvalidManifest(
    '  requests: { roles: [deployer], maxDuration: soon }\n',
    'spec.requests.maxDuration',
    /invalid duration "soon"/,
  )
})

test('unknown requests field rejected', () => {
  assertInvalidManifest(
    '  requests: { roles: [deployer], approvers: [lead] }\n',
    'spec.requests.approvers',
    /unknown field "approvers" \(allowed fields: roles, maxDuration\)/,
  )
})

test('invalid reviewed role name rejected', () => {
  assertInvalidManifest(
    '  review: { roles: [Deployer] }\n',
    'spec.review.roles[0]',
    /invalid name "Deployer"/,
  )
})
