import assert from 'node:assert/strict'
import { test } from 'node:test'
import { isWritError } from '../../src/errors.js'
import { compileSelector } from '../../src/policy/selector.js'

test('selector needs every label to match', () => {
  const selector = compileSelector({ env: 'dev', team: 'red' })
  assert.equal(selector.matches({ env: 'dev', team: 'red' }), true)
  assert.equal(selector.matches({ env: 'dev', team: 'red', extra: 'x' }), true)
  assert.equal(selector.matches({ env: 'dev' }), false)
  assert.equal(selector.matches({ env: 'prod', team: 'red' }), false)
  assert.equal(selector.matches({}), false)
  assert.equal(selector.matches(undefined), false)
})

test('wildcard selector selects every server', () => {
  const selector = compileSelector({ '*': '*' })
  assert.equal(selector.matches({ env: 'prod' }), true)
  assert.equal(selector.matches({}), true)
  assert.equal(selector.matches(undefined), true)
})

test('wildcard value needs the key present', () => {
  const selector = compileSelector({ env: '*' })
  assert.equal(selector.matches({ env: 'dev' }), true)
  assert.equal(selector.matches({ env: '' }), true)
  assert.equal(selector.matches({ team: 'dev' }), false)
})

test('wildcard entry combines with other labels', () => {
  const selector = compileSelector({ '*': '*', env: 'dev' })
  assert.equal(selector.matches({ env: 'dev' }), true)
  assert.equal(selector.matches({ env: 'prod' }), false)
})

test('empty selector matches nothing', () => {
  const selector = compileSelector({})
  assert.equal(selector.matches({ env: 'dev' }), false)
  assert.equal(selector.matches(undefined), false)
})

test('selector ignores inherited properties', () => {
  assert.equal(compileSelector({ toString: '*' }).matches({}), false)
})

test('wildcard key with a value is rejected', () => {
  assert.throws(
    () => compileSelector({ '*': 'dev' }),
    (error: unknown) => {
      assert.ok(isWritError(error, 'policy.invalid_selector'), String(error))
      assert.match(error.message, /"\*": "dev"/)
      assert.match(error.message, /needs the value \*/)
      return true
    },
  )
})

test('non-string selector value is rejected', () => {
  assert.throws(
    () => compileSelector({ env: 5 as unknown as string }),
    (error: unknown) => {
      assert.ok(isWritError(error, 'policy.invalid_selector'), String(error))
      assert.match(error.message, /"env"/)
      return true
    },
  )
})
