import assert from 'node:assert/strict'
import { generateKeyPairSync, type KeyObject, sign } from 'node:crypto'
import { test } from 'node:test'
import { AsnConvert } from '@peculiar/asn1-schema'
import { AlgorithmIdentifier, SubjectPublicKeyInfo } from '@peculiar/asn1-x509'
import { createCsrPem, generateAgentKeys } from '../../src/agent/keys.js'
import { isWritError } from '../../src/errors.js'
import { ECDSA_WITH_SHA256, verifyCsr } from '../../src/identity/csr.js'
import { CsrAsn, CsrInfoAsn } from '../../src/identity/csr-asn.js'
import { createCsr, generateKeyPair } from '../../src/identity/keys.js'
import { commonNameOnly } from '../../src/identity/name.js'
import { derToPem, pemToDer } from '../../src/identity/pem.js'

/** Builds a CSR for any key pair, signed with `signatureOid` over SHA-256 or SHA-384. */
function buildCsr(
  privateKey: KeyObject,
  publicKey: KeyObject,
  signatureOid: string,
  hash = 'sha256',
): string {
  const info = new CsrInfoAsn()
  info.subject = commonNameOnly('other-key')
  info.subjectPKInfo = AsnConvert.parse(
    publicKey.export({ type: 'spki', format: 'der' }),
    SubjectPublicKeyInfo,
  )
  const infoDer = Buffer.from(AsnConvert.serialize(info))
  const request = new CsrAsn()
  request.info = info
  request.signatureAlgorithm = new AlgorithmIdentifier({ algorithm: signatureOid })
  request.signature = new Uint8Array(sign(hash, infoDer, privateKey)).buffer
  return derToPem(AsnConvert.serialize(request), 'CERTIFICATE REQUEST')
}

function assertCsrInvalid(pem: string, message: string) {
  assert.throws(
    () => verifyCsr(pem),
    (error: unknown) => {
      assert.ok(isWritError(error, 'csr.invalid'), `expected csr.invalid, got ${String(error)}`)
      assert.equal(error.message, message)
      return true
    },
  )
}

test('verifyCsr accepts the agent CSR', async () => {
  const keys = await generateAgentKeys()
  const csr = verifyCsr(createCsrPem(keys, { commonName: 'writ-agent' }))
  assert.equal(csr.commonName, 'writ-agent')
  assert.deepEqual(csr.uriSans, [])
  assert.deepEqual(Buffer.from(csr.spkiDer), keys.publicKey.export({ type: 'spki', format: 'der' }))
})

test('verifyCsr reads the requested URI SAN', async () => {
  const keys = await generateKeyPair()
  const pem = await createCsr(keys, {
    commonName: 'ci-agent',
    spiffeId: 'spiffe://writ.test/bot/ci-agent',
  })
  const csr = verifyCsr(pem)
  assert.equal(csr.commonName, 'ci-agent')
  assert.deepEqual(csr.uriSans, ['spiffe://writ.test/bot/ci-agent'])
})

test('verifyCsr rejects a P-384 key', () => {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'secp384r1' })
  const pem = buildCsr(privateKey, publicKey, '1.2.840.10045.4.3.3', 'sha384')
  assertCsrInvalid(pem, 'the CSR key must be ECDSA P-256, found ec secp384r1')
})

test('verifyCsr rejects an RSA key', () => {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 })
  const pem = buildCsr(privateKey, publicKey, '1.2.840.113549.1.1.11')
  assertCsrInvalid(pem, 'the CSR key must be ECDSA P-256, found rsa')
})

test('verifyCsr rejects a bad signature', async () => {
  const keys = await generateAgentKeys()
  const other = await generateAgentKeys()
  const pem = buildCsr(other.privateKey, keys.publicKey, ECDSA_WITH_SHA256)
  assertCsrInvalid(pem, 'the CSR signature does not match its public key')
})

test('verifyCsr rejects a CSR altered after signing', async () => {
  const keys = await generateAgentKeys()
  const der = pemToDer(createCsrPem(keys, { commonName: 'abc' }), ['CERTIFICATE REQUEST'], 'x')
  const offset = der.indexOf(Buffer.from('abc'))
  der[offset] = 'x'.charCodeAt(0)
  assertCsrInvalid(
    derToPem(der, 'CERTIFICATE REQUEST'),
    'the CSR signature does not match its public key',
  )
})

test('verifyCsr rejects another signature algorithm', async () => {
  const keys = await generateAgentKeys()
  const pem = buildCsr(keys.privateKey, keys.publicKey, '1.2.840.10045.4.3.3', 'sha384')
  assertCsrInvalid(pem, 'the CSR signature algorithm 1.2.840.10045.4.3.3 is not ecdsa-with-SHA256')
})

test('verifyCsr rejects text that is not a CSR', () => {
  assertCsrInvalid('hello', 'expected one PEM block labelled CERTIFICATE REQUEST, found 0')
  assertCsrInvalid(
    '-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n',
    'the CSR is not a valid PKCS#10 structure',
  )
})
