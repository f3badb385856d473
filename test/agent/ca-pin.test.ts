import assert from 'node:assert/strict'
import { createHash, createPublicKey, X509Certificate } from 'node:crypto'
import { test } from 'node:test'
import { computeSpkiPin, parseCaPin } from '../../src/agent/ca-pin.js'
import { isWritError } from '../../src/errors.js'
import { createTestCa } from './test-ca.js'

const HEX = 'ab'.repeat(32)

test('parseCaPin accepts any letter case', () => {
  assert.equal(parseCaPin(`SHA256:${HEX.toUpperCase()}`), `sha256:${HEX}`)
  assert.equal(parseCaPin(` sha256:${HEX} `), `sha256:${HEX}`)
})

test('parseCaPin rejects malformed pins', () => {
  for (const pin of [
    '',
    HEX,
    `sha1:${HEX}`,
    `sha256:${HEX.slice(2)}`,
    `sha256:${'zz'.repeat(32)}`,
  ]) {
    assert.throws(
      () => parseCaPin(pin),
      (error: unknown) => {
        assert.ok(isWritError(error, 'agent.ca_pin_invalid'))
        assert.equal(
          error.message,
          `invalid CA pin "${pin}": expected sha256: followed by 64 hex digits (the SHA-256 of the CA public key)`,
        )
        return true
      },
    )
  }
})

test('computeSpkiPin hashes the public key info', () => {
  const ca = createTestCa()
  const spki = createPublicKey(ca.privateKey).export({ type: 'spki', format: 'der' })
  const expected = `sha256:${createHash('sha256').update(spki).digest('hex')}`
  assert.equal(computeSpkiPin(ca.certPem), expected)
  assert.equal(computeSpkiPin(new X509Certificate(ca.certPem).raw), expected)
})
