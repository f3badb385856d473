import assert from 'node:assert/strict'
import { test } from 'node:test'
import { isWritError } from '../../src/errors.js'
import { decodeClaims, encodeClaims, WRIT_CLAIMS_OID } from '../../src/identity/claims.js'
import { encodeDerElement, readDerChildren, readDerElement } from '../../src/identity/der.js'
import type { WritClaims } from '../../src/identity/types.js'

const FULL: WritClaims = {
  version: 1,
  kind: 'bot',
  roles: ['repo-reader', 'tracker'],
  traits: { team: ['infra', 'sre'], region: ['eu'] },
  task: { id: 't-42', reason: 'triage issue 7', servers: ['files'], tools: ['read_file'] },
  parentSerial: '4a1b2c',
  depth: 1,
  botInstance: '0b4f0b9e-39a5-4d7e-9d0c-2b1b53c8f001',
  generation: 3,
  accessRequests: ['ar-1', 'ar-2'],
}

const MINIMAL: WritClaims = {
  version: 1,
  kind: 'user',
  roles: [],
  traits: {},
  depth: 0,
  generation: 0,
  accessRequests: [],
}

/** Splits encoded claims into the DER of each top-level field. */
function fieldsOf(der: ArrayBuffer): Buffer[] {
  const bytes = new Uint8Array(der)
  const outer = readDerElement(bytes, 0)
  assert.ok(outer)
  const children = readDerChildren(bytes, outer)
  assert.ok(children)
  return children.map((child) => Buffer.from(bytes.subarray(child.start, child.end)))
}

function rebuild(fields: Buffer[]): Buffer {
  return encodeDerElement(0x30, ...fields)
}

function assertInvalid(der: Uint8Array, code: string, message: string) {
  assert.throws(
    () => decodeClaims(der),
    (error: unknown) => {
      assert.ok(isWritError(error), `expected a WritError, got ${String(error)}`)
      assert.equal(error.code, code)
      assert.equal(error.message, message)
      return true
    },
  )
}

test('claims OID sits under the UUID arc', () => {
  assert.match(WRIT_CLAIMS_OID, /^2\.25\.\d+$/)
  assert.equal(
    BigInt(WRIT_CLAIMS_OID.slice('2.25.'.length)),
    BigInt('0x2c9f628ae8ee44e0ae77ba11d3458f62'),
  )
})

test('claims round trip with every field', () => {
  const decoded = decodeClaims(encodeClaims(FULL))
  assert.deepEqual(decoded, FULL)
})

test('claims round trip with only required fields', () => {
  const decoded = decodeClaims(encodeClaims(MINIMAL))
  assert.deepEqual(decoded, MINIMAL)
  assert.equal('task' in decoded, false)
  assert.equal('botInstance' in decoded, false)
})

test('claims encoding is deterministic', () => {
  const reordered = { ...FULL, traits: { region: ['eu'], team: ['infra', 'sre'] } }
  assert.deepEqual(Buffer.from(encodeClaims(reordered)), Buffer.from(encodeClaims(FULL)))
})

test('claims decoder rejects version 2', () => {
  const fields = fieldsOf(encodeClaims(MINIMAL))
  fields[0] = Buffer.from([0x02, 0x01, 0x02])
  assertInvalid(
    rebuild(fields),
    'identity.claims_version',
    'unsupported Writ claims version 0x02; this build reads version 1',
  )
})

test('claims encoder rejects an unknown version', () => {
  const claims = { ...MINIMAL, version: 2 } as unknown as WritClaims
  assert.throws(() => encodeClaims(claims), {
    name: 'TypeError',
    message: 'cannot encode Writ claims: version 2 is not 1',
  })
})

test('claims decoder rejects a field of the wrong type', () => {
  const fields = fieldsOf(encodeClaims(MINIMAL))
  fields[1] = Buffer.from([0x02, 0x01, 0x05])
  assertInvalid(
    rebuild(fields),
    'identity.invalid_claims',
    'claims field kind has the wrong type: expected tag 0x0c, found 0x02',
  )
})

test('claims decoder rejects an unknown kind', () => {
  const fields = fieldsOf(encodeClaims(MINIMAL))
  fields[1] = encodeDerElement(0x0c, Buffer.from('robot'))
  assertInvalid(
    rebuild(fields),
    'identity.invalid_claims',
    'claims field kind has unknown value "robot"',
  )
})

test('claims decoder rejects a trailing element', () => {
  const fields = fieldsOf(encodeClaims(MINIMAL))
  fields.push(Buffer.from([0x02, 0x01, 0x00]))
  assertInvalid(
    rebuild(fields),
    'identity.invalid_claims',
    'claims contain an element after accessRequests that version 1 does not define',
  )
})

test('claims decoder rejects a missing field', () => {
  const fields = fieldsOf(encodeClaims(MINIMAL)).slice(0, -1)
  assertInvalid(
    rebuild(fields),
    'identity.invalid_claims',
    'claims field accessRequests is missing',
  )
})

test('claims decoder rejects bytes that are not a SEQUENCE', () => {
  assertInvalid(
    Buffer.from([0x04, 0x00]),
    'identity.invalid_claims',
    'claims are not one DER SEQUENCE',
  )
})
