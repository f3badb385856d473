import assert from 'node:assert/strict'
import { createPublicKey, X509Certificate } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, test } from 'node:test'
import { type CertificateAuthority, loadOrCreateCa } from '../../src/authority/ca.js'
import { loadOrCreateJwtSvidKey } from '../../src/authority/jwt-svid.js'
import { beginRotation } from '../../src/authority/rotation.js'
import {
  jwksDocument,
  SPIFFE_REFRESH_HINT_SECONDS,
  type SpiffeBundle,
  spiffeBundleDocument,
} from '../../src/authority/well-known.js'
import { openSqliteStore } from '../../src/store/sqlite.js'
import type { Store } from '../../src/store/store.js'
import { AuditStub } from './authority-fixture.js'

const directories: string[] = []
const stores: Store[] = []
after(async () => {
  for (const store of stores) await store.close()
  for (const dir of directories) rmSync(dir, { recursive: true, force: true })
})

async function openDataDir() {
  const dataDir = mkdtempSync(join(tmpdir(), 'writ-well-known-'))
  directories.push(dataDir)
  const store = await openSqliteStore(join(dataDir, 'writ.db'))
  stores.push(store)
  const ca = await loadOrCreateCa(dataDir, { trustDomain: 'writ.test', stateStore: store })
  const jwtKey = await loadOrCreateJwtSvidKey(dataDir)
  const host = {
    dataDir,
    trustDomain: 'writ.test',
    store,
    ca,
    audit: new AuditStub(),
    clock: Date.now,
  }
  return { host, ca, jwtKey }
}

/** Checks that every x509-svid key contains one CA certificate of the bundle and its key. */
function checkX509Keys(bundle: SpiffeBundle, ca: CertificateAuthority): void {
  const x509Keys = bundle.keys.filter((key) => key.use === 'x509-svid')
  assert.equal(x509Keys.length, ca.trusted.length)
  x509Keys.forEach((key, index) => {
    assert.equal(key.x5c?.length, 1)
    const certificate = new X509Certificate(Buffer.from(key.x5c?.[0] as string, 'base64'))
    const trusted = ca.trusted[index]
    assert.ok(trusted, `no trusted CA at index ${index}`)
    assert.equal(certificate.fingerprint256, new X509Certificate(trusted.certPem).fingerprint256)
    assert.equal(certificate.ca, true)
    const fromJwk = createPublicKey({ key: key as never, format: 'jwk' })
    assert.ok(fromJwk.equals(certificate.publicKey), 'the JWK is not the certificate key')
    assert.equal(key.kty, 'EC')
    assert.equal(key.crv, 'P-256')
    assert.equal(key.kid, undefined)
    assert.equal(key.d, undefined)
  })
}

test('SPIFFE bundle holds the CA and JWT key', async () => {
  const { ca, jwtKey } = await openDataDir()
  const bundle = spiffeBundleDocument(ca, jwtKey)
  assert.equal(bundle.spiffe_sequence, 1)
  assert.equal(bundle.spiffe_refresh_hint, SPIFFE_REFRESH_HINT_SECONDS)
  checkX509Keys(bundle, ca)
  const jwtKeys = bundle.keys.filter((key) => key.use === 'jwt-svid')
  assert.equal(jwtKeys.length, 1)
  assert.equal(jwtKeys[0]?.kid, jwtKey.kid)
  assert.equal(jwtKeys[0]?.x, jwtKey.publicJwk.x)
  assert.equal(jwtKeys[0]?.d, undefined)
  assert.equal(jwtKeys[0]?.x5c, undefined)
  assert.deepEqual(Object.keys(jwtKeys[0] ?? {}).sort(), ['crv', 'kid', 'kty', 'use', 'x', 'y'])
})

test('SPIFFE bundle during rotation', async () => {
  const { host, ca, jwtKey } = await openDataDir()
  await beginRotation(host)
  const bundle = spiffeBundleDocument(ca, jwtKey)
  assert.equal(bundle.spiffe_sequence, 2)
  checkX509Keys(bundle, ca)
  assert.equal(bundle.keys.filter((key) => key.use === 'x509-svid').length, 2)
})

test('JWKS lists the JWT key', async () => {
  const { jwtKey } = await openDataDir()
  const jwks = jwksDocument(jwtKey)
  assert.equal(jwks.keys.length, 1)
  const [key] = jwks.keys
  assert.equal(key?.kid, jwtKey.kid)
  assert.equal(key?.alg, 'ES256')
  assert.equal(key?.use, 'sig')
  assert.equal(key?.d, undefined)
})
