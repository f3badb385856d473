import assert from 'node:assert/strict'
import { test } from 'node:test'
import { isWritError } from '../../src/errors.js'
import { MAX_SPIFFE_ID_BYTES, SpiffeId } from '../../src/identity/spiffe-id.js'

const ALLOWED_TRUST_DOMAIN = 'only lowercase letters, digits, ".", "-" and "_" are allowed'
const ALLOWED_SEGMENT = 'only letters, digits, ".", "-" and "_" are allowed'

test('SpiffeId accepts valid IDs', () => {
  const valid: [text: string, trustDomain: string, path: string][] = [
    ['spiffe://writ.local', 'writ.local', ''],
    ['spiffe://writ.local/bot/ci-agent', 'writ.local', '/bot/ci-agent'],
    ['spiffe://a-b_c.d9/user/Alice.Smith', 'a-b_c.d9', '/user/Alice.Smith'],
    ['spiffe://writ.local/bot/ci/task/t-1', 'writ.local', '/bot/ci/task/t-1'],
    ['spiffe://writ.local/...x/..y', 'writ.local', '/...x/..y'],
  ]
  for (const [text, trustDomain, path] of valid) {
    const id = SpiffeId.parse(text)
    assert.equal(id.toString(), text)
    assert.equal(id.trustDomain, trustDomain)
    assert.equal(id.path, path)
  }
})

test('SpiffeId accepts an ID of exactly the maximum length', () => {
  const prefix = 'spiffe://writ.local/'
  const text = prefix + 'a'.repeat(MAX_SPIFFE_ID_BYTES - prefix.length)
  assert.equal(SpiffeId.parse(text).toString(), text)
})

test('SpiffeId rejects each broken rule with its reason', () => {
  const tooLong = `spiffe://writ.local/${'a'.repeat(MAX_SPIFFE_ID_BYTES)}`
  const cases: [text: string, reason: string][] = [
    ['', 'the ID is empty'],
    ['https://writ.local/bot/a', 'the scheme must be "spiffe" in lowercase, followed by "://"'],
    ['SPIFFE://writ.local/bot/a', 'the scheme must be "spiffe" in lowercase, followed by "://"'],
    ['spiffe:/writ.local/bot/a', 'the scheme must be "spiffe" in lowercase, followed by "://"'],
    ['spiffe:///bot/a', 'the trust domain is missing'],
    ['spiffe://Writ.local/bot/a', `the trust domain contains "W"; ${ALLOWED_TRUST_DOMAIN}`],
    ['spiffe://writ!local/bot/a', `the trust domain contains "!"; ${ALLOWED_TRUST_DOMAIN}`],
    ['spiffe://writ.local/bot//a', 'empty path segments are not allowed'],
    ['spiffe://writ.local/bot/./a', 'the path segment "." is not allowed'],
    ['spiffe://writ.local/bot/../a', 'the path segment ".." is not allowed'],
    ['spiffe://writ.local/bot/', 'a trailing slash is not allowed'],
    ['spiffe://writ.local/', 'a trailing slash is not allowed'],
    ['spiffe://writ.local/bot/a%20b', `the path segment "a%20b" contains "%"; ${ALLOWED_SEGMENT}`],
    ['spiffe://writ.local/bot/a b', `the path segment "a b" contains " "; ${ALLOWED_SEGMENT}`],
    ['spiffe://writ.local/bot/é', `the path segment "é" contains "é"; ${ALLOWED_SEGMENT}`],
    [tooLong, `the ID is longer than ${MAX_SPIFFE_ID_BYTES} bytes`],
    ['spiffe://writ.local:8443/bot/a', 'a port is not allowed in the trust domain'],
    ['spiffe://user@writ.local/bot/a', 'user info is not allowed in the trust domain'],
    ['spiffe://writ.local/bot/a?x=1', 'a query is not allowed'],
    ['spiffe://writ.local/bot/a#part', 'a fragment is not allowed'],
  ]
  for (const [text, reason] of cases) {
    const result = SpiffeId.tryParse(text)
    assert.equal(result.ok, false, `expected "${text}" to be rejected`)
    if (!result.ok) assert.equal(result.reason, reason, `reason for "${text}"`)
  }
})

test('SpiffeId.parse names the value and the rule', () => {
  assert.throws(
    () => SpiffeId.parse('spiffe://writ.local/bot/'),
    (error: unknown) => {
      assert.ok(isWritError(error, 'identity.invalid_spiffe_id'))
      assert.equal(
        error.message,
        'invalid SPIFFE ID "spiffe://writ.local/bot/": a trailing slash is not allowed',
      )
      assert.equal(error.fields.value, 'spiffe://writ.local/bot/')
      return true
    },
  )
})

test('SpiffeId child and membership', () => {
  const id = SpiffeId.parse('spiffe://writ.local/bot/ci')
  assert.equal(id.child('task', 't-1').toString(), 'spiffe://writ.local/bot/ci/task/t-1')
  assert.deepEqual(id.segments, ['bot', 'ci'])
  assert.equal(id.memberOf('writ.local'), true)
  assert.equal(id.memberOf('other.local'), false)
  assert.throws(() => id.child('..'), { code: 'identity.invalid_spiffe_id' })
})
