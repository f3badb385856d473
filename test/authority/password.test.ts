import assert from 'node:assert/strict'
import { test } from 'node:test'
import {
  checkPasswordRules,
  DEFAULT_SCRYPT,
  hashPassword,
  MAX_PASSWORD_BYTES,
  MIN_PASSWORD_LENGTH,
  verifyPassword,
} from '../../src/authority/password.js'
import { isWritError } from '../../src/errors.js'

/** Cheap parameters so the tests run fast; the format and checks are the same. */
const FAST = { logCost: 10, blockSize: 8, parallelization: 1 }

test('verifyPassword accepts the hashed password', async () => {
  const stored = await hashPassword('correct horse battery staple', FAST)
  assert.equal(await verifyPassword('correct horse battery staple', stored), true)
})

test('verifyPassword rejects another password', async () => {
  const stored = await hashPassword('correct horse battery staple', FAST)
  assert.equal(await verifyPassword('correct horse battery stapler', stored), false)
  assert.equal(await verifyPassword('', stored), false)
})

test('hashPassword records parameters and a fresh salt', async () => {
  const first = await hashPassword('same password here', FAST)
  const second = await hashPassword('same password here', FAST)
  assert.match(first, /^\$scrypt\$ln=10,r=8,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$/)
  assert.notEqual(first, second)
})

test('verifyPassword uses the parameters stored with the hash', async () => {
  const stored = await hashPassword('default parameters', DEFAULT_SCRYPT)
  assert.match(stored, /^\$scrypt\$ln=15,r=8,p=1\$/)
  assert.equal(await verifyPassword('default parameters', stored), true)
})

test('verifyPassword treats Unicode forms alike', async () => {
  // U+00E9 and "e" followed by U+0301 are the same text in NFKC.
  const stored = await hashPassword('caf\u00e9 au lait 1234', FAST)
  assert.equal(await verifyPassword('cafe\u0301 au lait 1234', stored), true)
})

test('verifyPassword rejects a damaged hash', async () => {
  await assert.rejects(verifyPassword('whatever password', '$scrypt$broken'), TypeError)
  await assert.rejects(
    verifyPassword('whatever password', '$scrypt$ln=40,r=8,p=1$AAAA$AAAA'),
    TypeError,
  )
})

test('checkPasswordRules rejects a short password', () => {
  assert.throws(
    () => checkPasswordRules('short'),
    (error: unknown) =>
      isWritError(error, 'password.too_short') &&
      error.message.includes(`at least ${MIN_PASSWORD_LENGTH}`) &&
      error.message.includes('5 characters') &&
      !error.message.includes('short'.repeat(2)),
  )
})

test('checkPasswordRules rejects a long password', () => {
  assert.throws(
    () => checkPasswordRules('x'.repeat(MAX_PASSWORD_BYTES + 1)),
    (error: unknown) =>
      isWritError(error, 'password.too_long') && error.message.includes(`${MAX_PASSWORD_BYTES}`),
  )
})

test('checkPasswordRules accepts twelve characters', () => {
  assert.doesNotThrow(() => checkPasswordRules('a'.repeat(MIN_PASSWORD_LENGTH)))
})
