import assert from 'node:assert/strict'
import { createPrivateKey, X509Certificate } from 'node:crypto'
import { test } from 'node:test'
import type { IssuedIdentity } from '../../src/agent/issued.js'
import { createCsrPem, generateAgentKeys } from '../../src/agent/keys.js'
import { toStruct, toX509Messages } from '../../src/agent/workload-api-messages.js'
import { isWritError } from '../../src/errors.js'
import { createTestCa, issueSvid } from './test-ca.js'

const SPIFFE_ID = 'spiffe://writ.local/bot/ci-agent'

async function identityFrom(bundleCas: number): Promise<IssuedIdentity> {
  const ca = createTestCa()
  const others = Array.from({ length: bundleCas - 1 }, (_, index) => createTestCa(`Other ${index}`))
  const keys = await generateAgentKeys()
  const now = Date.now()
  const certPem = issueSvid(ca, createCsrPem(keys, { commonName: 'ci-agent' }), {
    name: 'ci-agent',
    spiffeId: SPIFFE_ID,
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + 3_600_000),
  })
  return {
    certPem,
    keyPem: keys.privateKeyPem,
    bundlePem: [ca, ...others].map((each) => each.certPem).join(''),
    spiffeId: SPIFFE_ID,
    serial: '1',
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + 3_600_000),
  }
}

test('X.509 messages carry DER forms', async () => {
  const identity = await identityFrom(1)
  const messages = toX509Messages(identity)
  const svid = messages.svid.svids[0]
  assert.ok(svid)
  assert.equal(svid.spiffe_id, SPIFFE_ID)
  assert.deepEqual(svid.x509_svid, new X509Certificate(identity.certPem).raw)
  const key = createPrivateKey({ key: svid.x509_svid_key, format: 'der', type: 'pkcs8' })
  assert.ok(new X509Certificate(svid.x509_svid).checkPrivateKey(key))
  assert.deepEqual(svid.bundle, new X509Certificate(identity.bundlePem).raw)
  assert.equal(messages.trustDomainId, 'spiffe://writ.local')
  assert.deepEqual(messages.bundles.bundles, { 'spiffe://writ.local': svid.bundle })
  assert.deepEqual(messages.svid.federated_bundles, {})
})

test('bundle of two CAs is concatenated DER', async () => {
  const identity = await identityFrom(2)
  const bundle = toX509Messages(identity).bundles.bundles['spiffe://writ.local']
  const blocks = identity.bundlePem.match(
    /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g,
  )
  assert.equal(blocks?.length, 2)
  const expected = Buffer.concat((blocks ?? []).map((block) => new X509Certificate(block).raw))
  assert.deepEqual(bundle, expected)
})

test('identity without certificate is rejected', async () => {
  const identity = { ...(await identityFrom(1)), bundlePem: 'no certificate here' }
  assert.throws(
    () => toX509Messages(identity),
    (error: unknown) => {
      assert.ok(isWritError(error, 'workload_api.identity_invalid'))
      assert.match(error.message, /bundle/)
      return true
    },
  )
})

test('toStruct converts nested JSON', () => {
  const struct = toStruct({
    sub: SPIFFE_ID,
    exp: 1_700_000_000,
    admin: false,
    aud: ['a', 'b'],
    nested: { level: 2, none: null },
    skipped: undefined,
  })
  assert.deepEqual(struct, {
    fields: {
      sub: { stringValue: SPIFFE_ID },
      exp: { numberValue: 1_700_000_000 },
      admin: { boolValue: false },
      aud: { listValue: { values: [{ stringValue: 'a' }, { stringValue: 'b' }] } },
      nested: {
        structValue: {
          fields: { level: { numberValue: 2 }, none: { nullValue: 'NULL_VALUE' } },
        },
      },
    },
  })
})
