import assert from 'node:assert/strict'
import { X509Certificate } from 'node:crypto'
import { after, before, test } from 'node:test'
import { id_kp_clientAuth, id_kp_serverAuth, KeyUsageFlags } from '@peculiar/asn1-x509'
import { isWritError } from '../../src/errors.js'
import { WRIT_CLAIMS_OID } from '../../src/identity/claims.js'
import { createCsr, generateKeyPair } from '../../src/identity/keys.js'
import { pemToDer } from '../../src/identity/pem.js'
import { identityFromCertificate, verifySvid } from '../../src/identity/verify.js'
import { botClaims, createTestCa, FIXED_NOW, mintLeaf, type TestCa } from './test-pki.js'

let testCa: TestCa
let otherCa: TestCa
let issuedPem: string

before(async () => {
  testCa = await createTestCa()
  otherCa = await createTestCa()
  const keys = await generateKeyPair()
  const issued = await testCa.ca.issue({
    csrPem: await createCsr(keys, { commonName: 'ignored' }),
    spiffeId: 'spiffe://writ.test/bot/ci-agent',
    commonName: 'ci-agent',
    ttlSeconds: 3600,
    claims: botClaims(),
  })
  issuedPem = issued.certPem
})
after(() => {
  testCa.remove()
  otherCa.remove()
})

function reasonOf(result: ReturnType<typeof verifySvid>): string {
  assert.equal(result.ok, false, 'expected verification to fail')
  return result.ok ? '' : result.reason
}

test('verifySvid accepts an issued certificate', () => {
  const result = verifySvid(issuedPem, testCa.ca.bundlePem, FIXED_NOW, 'writ.test')
  assert.ok(result.ok, result.ok ? '' : result.reason)
  assert.equal(result.identity.spiffeId, 'spiffe://writ.test/bot/ci-agent')
  assert.equal(result.identity.name, 'ci-agent')
  assert.deepEqual(result.identity.claims, botClaims())
  assert.equal(result.identity.notBefore.getTime(), FIXED_NOW - 60_000)
  assert.equal(result.identity.notAfter.getTime(), FIXED_NOW + 3_600_000)
})

test('verifySvid accepts DER chains and certificate bundles', () => {
  const der = pemToDer(issuedPem, ['CERTIFICATE'], 'test')
  const bundle = [new X509Certificate(testCa.ca.certPem)]
  const result = verifySvid([der], bundle, FIXED_NOW)
  assert.ok(result.ok)
})

test('verifySvid rejects an expired certificate', () => {
  const notAfter = FIXED_NOW + 3_600_000
  const result = verifySvid(issuedPem, testCa.ca.bundlePem, notAfter, 'writ.test')
  assert.equal(reasonOf(result), `the certificate expired at ${new Date(notAfter).toISOString()}`)
  assert.equal(result.ok ? undefined : result.spiffeId, 'spiffe://writ.test/bot/ci-agent')
})

test('verifySvid rejects a certificate not yet valid', () => {
  const notBefore = new Date(FIXED_NOW + 3_600_000)
  const pem = mintLeaf(testCa, { notBefore, notAfter: new Date(FIXED_NOW + 7_200_000) })
  assert.equal(
    reasonOf(verifySvid(pem, testCa.ca.bundlePem, FIXED_NOW, 'writ.test')),
    `the certificate is not valid until ${notBefore.toISOString()}`,
  )
})

test('verifySvid rejects a leaf of an expired CA', async () => {
  const shortCa = await createTestCa('writ.test', () => FIXED_NOW, 1)
  try {
    const pem = mintLeaf(shortCa, { notAfter: new Date(FIXED_NOW + 3 * 86_400_000) })
    const caEnd = new Date(new X509Certificate(shortCa.ca.certPem).validTo).toISOString()
    assert.equal(
      reasonOf(verifySvid(pem, shortCa.ca.bundlePem, FIXED_NOW + 2 * 86_400_000)),
      `the issuing CA expired at ${caEnd}`,
    )
  } finally {
    shortCa.remove()
  }
})

test('verifySvid rejects a certificate from another CA', () => {
  // Both CAs are for writ.test, so their names match and only the keys tell them apart.
  const result = verifySvid(issuedPem, otherCa.ca.bundlePem, FIXED_NOW, 'writ.test')
  assert.equal(
    reasonOf(result),
    'the certificate issuer "CN=Writ CA writ.test" is not a CA in the trust bundle',
  )
})

test('verifySvid rejects a CA certificate as leaf', () => {
  const result = verifySvid(testCa.ca.certPem, testCa.ca.bundlePem, FIXED_NOW, 'writ.test')
  assert.equal(reasonOf(result), 'the certificate is a CA certificate, not a leaf')
})

test('verifySvid rejects a leaf with the CA flag', () => {
  const pem = mintLeaf(testCa, { cA: true })
  assert.equal(
    reasonOf(verifySvid(pem, testCa.ca.bundlePem, FIXED_NOW)),
    'the certificate is a CA certificate, not a leaf',
  )
})

test('verifySvid rejects two URI SANs', () => {
  const pem = mintLeaf(testCa, {
    uris: ['spiffe://writ.test/bot/a', 'spiffe://writ.test/bot/b'],
  })
  assert.equal(
    reasonOf(verifySvid(pem, testCa.ca.bundlePem, FIXED_NOW)),
    'the certificate has 2 URI SANs; exactly one SPIFFE ID is required',
  )
})

test('verifySvid rejects a leaf without URI SAN', () => {
  const pem = mintLeaf(testCa, { uris: [] })
  assert.equal(
    reasonOf(verifySvid(pem, testCa.ca.bundlePem, FIXED_NOW)),
    'the certificate has 0 URI SANs; exactly one SPIFFE ID is required',
  )
})

test('verifySvid rejects a URI SAN that is not a SPIFFE ID', () => {
  const pem = mintLeaf(testCa, { uris: ['spiffe://writ.test/bot/'] })
  assert.equal(
    reasonOf(verifySvid(pem, testCa.ca.bundlePem, FIXED_NOW)),
    'the URI SAN "spiffe://writ.test/bot/" is not a SPIFFE ID: a trailing slash is not allowed',
  )
})

test('verifySvid rejects a missing claims extension', () => {
  const pem = mintLeaf(testCa, { claims: null })
  assert.equal(
    reasonOf(verifySvid(pem, testCa.ca.bundlePem, FIXED_NOW)),
    `the Writ claims extension ${WRIT_CLAIMS_OID} is missing`,
  )
})

test('verifySvid rejects a critical claims extension', () => {
  const pem = mintLeaf(testCa, { claimsCritical: true })
  assert.equal(
    reasonOf(verifySvid(pem, testCa.ca.bundlePem, FIXED_NOW)),
    'the Writ claims extension must not be critical',
  )
})

test('verifySvid rejects a non-critical keyUsage', () => {
  const pem = mintLeaf(testCa, { keyUsageCritical: false })
  assert.equal(
    reasonOf(verifySvid(pem, testCa.ca.bundlePem, FIXED_NOW)),
    'the keyUsage extension must be critical',
  )
})

test('verifySvid rejects extra key usages', () => {
  const pem = mintLeaf(testCa, {
    keyUsage: KeyUsageFlags.digitalSignature | KeyUsageFlags.keyEncipherment,
  })
  assert.equal(
    reasonOf(verifySvid(pem, testCa.ca.bundlePem, FIXED_NOW)),
    'the keyUsage must be digitalSignature only, found digitalSignature, keyEncipherment',
  )
})

test('verifySvid rejects a missing clientAuth purpose', () => {
  const pem = mintLeaf(testCa, { extendedKeyUsage: [id_kp_serverAuth] })
  assert.equal(
    reasonOf(verifySvid(pem, testCa.ca.bundlePem, FIXED_NOW)),
    'the extendedKeyUsage does not include clientAuth',
  )
  const serverOnly = mintLeaf(testCa, { extendedKeyUsage: [id_kp_clientAuth] })
  assert.equal(
    reasonOf(verifySvid(serverOnly, testCa.ca.bundlePem, FIXED_NOW)),
    'the extendedKeyUsage does not include serverAuth',
  )
})

test('verifySvid rejects another trust domain', () => {
  const pem = mintLeaf(testCa, { uris: ['spiffe://other.test/bot/a'] })
  assert.equal(
    reasonOf(verifySvid(pem, testCa.ca.bundlePem, FIXED_NOW, 'writ.test')),
    'the SPIFFE ID spiffe://other.test/bot/a is not in trust domain "writ.test"',
  )
})

test('verifySvid rejects a tampered certificate', () => {
  const der = pemToDer(issuedPem, ['CERTIFICATE'], 'test')
  const offset = der.indexOf(Buffer.from('ci-agent'))
  der[offset] = 'x'.charCodeAt(0)
  assert.equal(
    reasonOf(verifySvid([der], testCa.ca.bundlePem, FIXED_NOW)),
    'the certificate signature does not verify with the key of CA "CN=Writ CA writ.test"',
  )
})

test('verifySvid rejects an empty chain', () => {
  assert.equal(
    reasonOf(verifySvid('', testCa.ca.bundlePem, FIXED_NOW)),
    'the chain contains no certificate',
  )
})

test('identityFromCertificate reads the serial in lowercase hex', () => {
  const pem = mintLeaf(testCa)
  const identity = identityFromCertificate(pemToDer(pem, ['CERTIFICATE'], 'test'))
  assert.equal(identity.serial, '12345')
  assert.equal(identity.name, 'minted')
  assert.equal(identity.spiffeId, 'spiffe://writ.test/bot/minted')
})

test('identityFromCertificate rejects a leaf without CN', () => {
  const pem = mintLeaf(testCa, { commonName: '' })
  assert.throws(
    () => identityFromCertificate(pemToDer(pem, ['CERTIFICATE'], 'test')),
    (error: unknown) => {
      assert.ok(isWritError(error, 'certificate.invalid'))
      assert.equal(error.message, 'invalid certificate: the certificate subject has no CN')
      assert.equal(error.fields.reason, 'the certificate subject has no CN')
      assert.equal(error.fields.spiffeId, 'spiffe://writ.test/bot/minted')
      return true
    },
  )
})

test('identityFromCertificate rejects a missing claims extension', () => {
  const pem = mintLeaf(testCa, { claims: null })
  assert.throws(() => identityFromCertificate(pemToDer(pem, ['CERTIFICATE'], 'test')), {
    code: 'certificate.invalid',
    message: `invalid certificate: the Writ claims extension ${WRIT_CLAIMS_OID} is missing`,
  })
})

test('identityFromCertificate rejects bytes that are not a certificate', () => {
  assert.throws(() => identityFromCertificate(Buffer.from('not a certificate')), {
    code: 'certificate.invalid',
    message: 'invalid certificate: the certificate is not valid DER X.509',
  })
})
