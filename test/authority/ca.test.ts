import assert from 'node:assert/strict'
import { createHash, generateKeyPairSync, X509Certificate } from 'node:crypto'
import { mkdtempSync, rmSync, statSync, unlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, test } from 'node:test'
import { computeSpkiPin } from '../../src/agent/ca-pin.js'
import { CLOCK_SKEW_MS, loadOrCreateCa } from '../../src/authority/ca.js'
import { isWritError } from '../../src/errors.js'
import { decodeClaims } from '../../src/identity/claims.js'
import { createCsr, generateKeyPair } from '../../src/identity/keys.js'
import { botClaims, FIXED_NOW } from '../identity/test-pki.js'
import { x509 } from './peculiar-x509.js'

const directories: string[] = []
after(() => {
  for (const dir of directories) rmSync(dir, { recursive: true, force: true })
})

function newDataDir(): string {
  const dir = join(mkdtempSync(join(tmpdir(), 'writ-ca-')), 'data')
  directories.push(dir)
  return dir
}

async function newCsr(): Promise<string> {
  return createCsr(await generateKeyPair(), { commonName: 'ignored' })
}

const fixedClock = () => FIXED_NOW

function mode(path: string): number {
  return statSync(path).mode & 0o777
}

test('CA creation writes private files', async () => {
  const dir = newDataDir()
  await loadOrCreateCa(dir, { trustDomain: 'writ.test', clock: fixedClock })
  assert.equal(mode(dir), 0o700)
  assert.equal(mode(join(dir, 'ca_key.pem')), 0o600)
  assert.equal(mode(join(dir, 'ca.pem')), 0o600)
})

test('CA reload keeps certificate and pin', async () => {
  const dir = newDataDir()
  const created = await loadOrCreateCa(dir, { trustDomain: 'writ.test', clock: fixedClock })
  const reloaded = await loadOrCreateCa(dir, { trustDomain: 'writ.test', clock: fixedClock })
  assert.equal(reloaded.pin, created.pin)
  assert.equal(reloaded.certPem, created.certPem)
  assert.equal(reloaded.notAfter.getTime(), created.notAfter.getTime())
})

test('CA pin is the SHA-256 of the SubjectPublicKeyInfo', async () => {
  const ca = await loadOrCreateCa(newDataDir(), { trustDomain: 'writ.test', clock: fixedClock })
  const spki = new X509Certificate(ca.certPem).publicKey.export({ type: 'spki', format: 'der' })
  assert.equal(ca.pin, `sha256:${createHash('sha256').update(spki).digest('hex')}`)
  assert.equal(ca.pin, computeSpkiPin(ca.certPem))
})

test('CA certificate is a self-signed P-256 CA', async () => {
  const ca = await loadOrCreateCa(newDataDir(), { trustDomain: 'writ.test', clock: fixedClock })
  const certificate = new X509Certificate(ca.certPem)
  assert.equal(certificate.ca, true)
  assert.ok(certificate.checkIssued(certificate))
  assert.ok(certificate.verify(certificate.publicKey))
  assert.equal(certificate.publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1')
  assert.equal(certificate.subjectAltName, 'URI:spiffe://writ.test')
  assert.equal(ca.spiffeId.toString(), 'spiffe://writ.test')
  assert.equal(ca.bundlePem, ca.certPem)
})

test('CA reload rejects another trust domain', async () => {
  const dir = newDataDir()
  await loadOrCreateCa(dir, { trustDomain: 'writ.test', clock: fixedClock })
  await assert.rejects(loadOrCreateCa(dir, { trustDomain: 'other.test' }), (error: unknown) => {
    assert.ok(isWritError(error, 'ca.trust_domain_mismatch'))
    assert.equal(
      error.message,
      'the CA in this data directory is not for trust domain "other.test" (its names: URI:spiffe://writ.test)',
    )
    return true
  })
})

test('CA reload rejects a missing key file', async () => {
  const dir = newDataDir()
  await loadOrCreateCa(dir, { trustDomain: 'writ.test', clock: fixedClock })
  unlinkSync(join(dir, 'ca_key.pem'))
  await assert.rejects(loadOrCreateCa(dir, { trustDomain: 'writ.test' }), (error: unknown) => {
    assert.ok(isWritError(error, 'ca.incomplete'))
    assert.equal(
      error.message,
      `CA files in ${dir} are incomplete: ca_key.pem is missing; restore it from a backup or use a new data directory`,
    )
    return true
  })
})

test('CA reload rejects a key of another certificate', async () => {
  const dir = newDataDir()
  await loadOrCreateCa(dir, { trustDomain: 'writ.test', clock: fixedClock })
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' })
  writeFileSync(join(dir, 'ca_key.pem'), privateKey.export({ type: 'pkcs8', format: 'pem' }))
  await assert.rejects(loadOrCreateCa(dir, { trustDomain: 'writ.test' }), {
    code: 'ca.key_mismatch',
    message: `${join(dir, 'ca_key.pem')} does not hold the key of ${join(dir, 'ca.pem')}`,
  })
})

test('issued certificate follows the profile (node:crypto)', async () => {
  const ca = await loadOrCreateCa(newDataDir(), { trustDomain: 'writ.test', clock: fixedClock })
  const keys = await generateKeyPair()
  const issued = await ca.issue({
    csrPem: await createCsr(keys, { commonName: 'requested-name' }),
    spiffeId: 'spiffe://writ.test/bot/ci-agent',
    commonName: 'ci-agent',
    ttlSeconds: 1800,
    claims: botClaims(),
  })
  const leaf = new X509Certificate(issued.certPem)
  const caCertificate = new X509Certificate(ca.certPem)
  assert.ok(leaf.checkIssued(caCertificate))
  assert.ok(leaf.verify(caCertificate.publicKey))
  assert.equal(leaf.ca, false)
  assert.equal(leaf.subject, 'CN=ci-agent')
  assert.equal(leaf.subjectAltName, 'URI:spiffe://writ.test/bot/ci-agent')
  // node:crypto lists the extended key usage OIDs under `keyUsage`.
  assert.deepEqual([...(leaf.keyUsage ?? [])].sort(), ['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2'])
  assert.equal(Date.parse(leaf.validFrom), FIXED_NOW - CLOCK_SKEW_MS)
  assert.equal(Date.parse(leaf.validTo), FIXED_NOW + 1_800_000)
  assert.equal(issued.notBefore.getTime(), FIXED_NOW - CLOCK_SKEW_MS)
  assert.equal(issued.notAfter.getTime(), FIXED_NOW + 1_800_000)
  assert.equal(leaf.serialNumber.toLowerCase(), issued.serial)
  const leafSpki = leaf.publicKey.export({ type: 'spki', format: 'der' })
  const keySpki = Buffer.from(await globalThis.crypto.subtle.exportKey('spki', keys.publicKey))
  assert.deepEqual(leafSpki, keySpki)
})

test('issued certificate follows the profile (@peculiar/x509)', async () => {
  const ca = await loadOrCreateCa(newDataDir(), { trustDomain: 'writ.test', clock: fixedClock })
  const claims = botClaims({ roles: ['a', 'b'], traits: { team: ['x'] } })
  const issued = await ca.issue({
    csrPem: await newCsr(),
    spiffeId: 'spiffe://writ.test/bot/ci-agent',
    commonName: 'ci-agent',
    ttlSeconds: 600,
    claims,
  })
  const leaf = new x509.X509Certificate(issued.certPem)
  const caCertificate = new x509.X509Certificate(ca.certPem)

  const basic = leaf.getExtension(x509.BasicConstraintsExtension)
  assert.ok(basic)
  assert.equal(basic.ca, false)
  assert.equal(basic.critical, true)

  const usage = leaf.getExtension(x509.KeyUsagesExtension)
  assert.ok(usage)
  assert.equal(usage.critical, true)
  assert.equal(usage.usages, x509.KeyUsageFlags.digitalSignature)

  const extended = leaf.getExtension(x509.ExtendedKeyUsageExtension)
  assert.ok(extended)
  assert.deepEqual(
    [...extended.usages].sort(),
    [x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth].sort(),
  )

  const names = leaf.getExtension(x509.SubjectAlternativeNameExtension)
  assert.ok(names)
  assert.deepEqual(names.names.toJSON(), [
    { type: 'url', value: 'spiffe://writ.test/bot/ci-agent' },
  ])

  const subjectKeyId = leaf.getExtension(x509.SubjectKeyIdentifierExtension)
  const caKeyId = caCertificate.getExtension(x509.SubjectKeyIdentifierExtension)
  const authorityKeyId = leaf.getExtension(x509.AuthorityKeyIdentifierExtension)
  assert.ok(subjectKeyId)
  assert.ok(caKeyId)
  assert.ok(authorityKeyId)
  assert.equal(authorityKeyId.keyId, caKeyId.keyId)
  const expectedKeyId = await x509.SubjectKeyIdentifierExtension.create(leaf.publicKey)
  assert.equal(subjectKeyId.keyId, expectedKeyId.keyId)

  // The claims extension is the one extension with no standard type.
  const standard = new Set([
    '2.5.29.19',
    '2.5.29.15',
    '2.5.29.37',
    '2.5.29.17',
    '2.5.29.14',
    '2.5.29.35',
  ])
  const others = leaf.extensions.filter((extension) => !standard.has(extension.type))
  assert.equal(others.length, 1)
  const claimsExtension = others[0] as InstanceType<typeof x509.Extension>
  assert.equal(claimsExtension.critical, false)
  assert.deepEqual(decodeClaims(claimsExtension.value), claims)
  assert.equal(leaf.extensions.length, 7)

  assert.equal(leaf.subject, 'CN=ci-agent')
  assert.ok(await leaf.verify({ publicKey: caCertificate.publicKey, signatureOnly: true }))
})

test('issued notAfter stops at notAfterLimit', async () => {
  const ca = await loadOrCreateCa(newDataDir(), { trustDomain: 'writ.test', clock: fixedClock })
  const limit = new Date(FIXED_NOW + 300_000)
  const issued = await ca.issue({
    csrPem: await newCsr(),
    spiffeId: 'spiffe://writ.test/bot/ci-agent/task/t-1',
    commonName: 'ci-agent',
    ttlSeconds: 3600,
    claims: botClaims(),
    notAfterLimit: limit,
  })
  assert.equal(issued.notAfter.getTime(), limit.getTime())
  assert.equal(Date.parse(new X509Certificate(issued.certPem).validTo), limit.getTime())
})

test('issued notAfter stops at the CA notAfter', async () => {
  const ca = await loadOrCreateCa(newDataDir(), {
    trustDomain: 'writ.test',
    clock: fixedClock,
    validityDays: 1,
  })
  const issued = await ca.issue({
    csrPem: await newCsr(),
    spiffeId: 'spiffe://writ.test/bot/ci-agent',
    commonName: 'ci-agent',
    ttlSeconds: 2 * 86_400,
    claims: botClaims(),
  })
  assert.equal(issued.notAfter.getTime(), ca.notAfter.getTime())
  assert.equal(ca.notAfter.getTime(), FIXED_NOW + 86_400_000)
})

test('issue rejects a notAfterLimit in the past', async () => {
  const ca = await loadOrCreateCa(newDataDir(), { trustDomain: 'writ.test', clock: fixedClock })
  const limit = new Date(FIXED_NOW - 1000)
  await assert.rejects(
    ca.issue({
      csrPem: await newCsr(),
      spiffeId: 'spiffe://writ.test/bot/ci-agent/task/t-1',
      commonName: 'ci-agent',
      ttlSeconds: 600,
      claims: botClaims(),
      notAfterLimit: limit,
    }),
    {
      code: 'ca.validity_exhausted',
      message: `cannot issue a certificate for spiffe://writ.test/bot/ci-agent/task/t-1: its latest allowed expiry ${limit.toISOString()} has passed`,
    },
  )
})

test('issue rejects an ID of another trust domain', async () => {
  const ca = await loadOrCreateCa(newDataDir(), { trustDomain: 'writ.test', clock: fixedClock })
  await assert.rejects(
    ca.issue({
      csrPem: await newCsr(),
      spiffeId: 'spiffe://other.test/bot/x',
      commonName: 'x',
      ttlSeconds: 600,
      claims: botClaims(),
    }),
    {
      name: 'TypeError',
      message: 'cannot issue spiffe://other.test/bot/x from the CA of spiffe://writ.test',
    },
  )
})

test('issued serials are random and positive', async () => {
  const ca = await loadOrCreateCa(newDataDir(), { trustDomain: 'writ.test', clock: fixedClock })
  const csrPem = await newCsr()
  const serials = new Set<string>()
  for (let index = 0; index < 20; index++) {
    const issued = await ca.issue({
      csrPem,
      spiffeId: 'spiffe://writ.test/bot/ci-agent',
      commonName: 'ci-agent',
      ttlSeconds: 600,
      claims: botClaims(),
    })
    // Top bit clear keeps the INTEGER positive; the next bit set keeps 32 hex digits.
    assert.match(issued.serial, /^[4-7][0-9a-f]{31}$/)
    serials.add(issued.serial)
  }
  assert.equal(serials.size, 20)
})

test('server certificate names the loopback hosts', async () => {
  const dir = newDataDir()
  const ca = await loadOrCreateCa(dir, { trustDomain: 'writ.test', clock: Date.now })
  const server = await ca.serverCertificate(['writ.example.internal', '0.0.0.0'])
  const certificate = new X509Certificate(server.certPem)
  assert.equal(certificate.checkHost('localhost'), 'localhost')
  assert.equal(certificate.checkHost('writ.example.internal'), 'writ.example.internal')
  assert.equal(certificate.checkIP('127.0.0.1'), '127.0.0.1')
  assert.equal(certificate.checkIP('::1'), '::1')
  assert.equal(certificate.checkIP('0.0.0.0'), undefined)
  assert.ok(certificate.verify(new X509Certificate(ca.certPem).publicKey))
  assert.equal(mode(join(dir, 'server_key.pem')), 0o600)

  const again = await ca.serverCertificate(['writ.example.internal'])
  assert.equal(again.certPem, server.certPem)
  const widened = await ca.serverCertificate(['another.example.internal'])
  assert.notEqual(widened.certPem, server.certPem)
  assert.equal(
    new X509Certificate(widened.certPem).checkHost('another.example.internal'),
    'another.example.internal',
  )
})

test('server certificate is reissued near its expiry', async () => {
  const dir = newDataDir()
  let now = FIXED_NOW
  const ca = await loadOrCreateCa(dir, { trustDomain: 'writ.test', clock: () => now })
  const first = await ca.serverCertificate([])
  now = first.notAfter.getTime() - 6 * 86_400_000
  const second = await ca.serverCertificate([])
  assert.notEqual(second.certPem, first.certPem)
  assert.ok(second.notAfter.getTime() > first.notAfter.getTime())
})
