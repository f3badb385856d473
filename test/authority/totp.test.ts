import assert from 'node:assert/strict'
import { test } from 'node:test'
import {
  decodeBase32,
  encodeBase32,
  hotp,
  matchTotpStep,
  otpauthUri,
  type TotpAlgorithm,
  totp,
  totpStep,
  WRIT_TOTP,
} from '../../src/authority/totp.js'

// RFC 6238 Appendix B: the seed of each algorithm is the ASCII string "1234567890" repeated to
// the hash's output size, and every code has 8 digits.
const SEEDS: Record<TotpAlgorithm, Buffer> = {
  sha1: Buffer.from('12345678901234567890', 'ascii'),
  sha256: Buffer.from('12345678901234567890123456789012', 'ascii'),
  sha512: Buffer.from('1234567890123456789012345678901234567890123456789012345678901234', 'ascii'),
}

const RFC6238_VECTORS: Array<{ seconds: number; codes: Record<TotpAlgorithm, string> }> = [
  { seconds: 59, codes: { sha1: '94287082', sha256: '46119246', sha512: '90693936' } },
  {
    seconds: 1111111109,
    codes: { sha1: '07081804', sha256: '68084774', sha512: '25091201' },
  },
  {
    seconds: 1111111111,
    codes: { sha1: '14050471', sha256: '67062674', sha512: '99943326' },
  },
  {
    seconds: 1234567890,
    codes: { sha1: '89005924', sha256: '91819424', sha512: '93441116' },
  },
  {
    seconds: 2000000000,
    codes: { sha1: '69279037', sha256: '90698825', sha512: '38618901' },
  },
  {
    seconds: 20000000000,
    codes: { sha1: '65353130', sha256: '77737706', sha512: '47863826' },
  },
]

test('totp matches the RFC 6238 test vectors', () => {
  for (const vector of RFC6238_VECTORS) {
    for (const algorithm of ['sha1', 'sha256', 'sha512'] as const) {
      const code = totp(SEEDS[algorithm], vector.seconds * 1000, {
        algorithm,
        digits: 8,
        periodSeconds: 30,
      })
      assert.equal(code, vector.codes[algorithm], `${algorithm} at T=${vector.seconds}`)
    }
  }
})

test('hotp matches the RFC 4226 test values', () => {
  // RFC 4226 Appendix D, 6-digit HOTP values for counters 0 to 9.
  const expected = [
    '755224',
    '287082',
    '359152',
    '969429',
    '338314',
    '254676',
    '287922',
    '162583',
    '399871',
    '520489',
  ]
  expected.forEach((code, counter) => {
    assert.equal(hotp(SEEDS.sha1, counter, WRIT_TOTP), code, `counter ${counter}`)
  })
})

test('hotp rejects a negative counter', () => {
  assert.throws(() => hotp(SEEDS.sha1, -1, WRIT_TOTP), TypeError)
})

test('matchTotpStep accepts one step of drift each way', () => {
  const now = 1_700_000_000_000
  const step = totpStep(now)
  for (const drift of [-1, 0, 1]) {
    const code = hotp(SEEDS.sha1, step + drift, WRIT_TOTP)
    assert.equal(matchTotpStep(SEEDS.sha1, code, now), step + drift, `drift ${drift}`)
  }
})

test('matchTotpStep rejects codes two steps away', () => {
  const now = 1_700_000_000_000
  const step = totpStep(now)
  for (const drift of [-2, 2]) {
    const code = hotp(SEEDS.sha1, step + drift, WRIT_TOTP)
    const window = [-1, 0, 1].map((offset) => hotp(SEEDS.sha1, step + offset, WRIT_TOTP))
    if (window.includes(code)) continue
    assert.equal(matchTotpStep(SEEDS.sha1, code, now), undefined, `drift ${drift}`)
  }
})

test('matchTotpStep rejects malformed codes', () => {
  const now = 1_700_000_000_000
  assert.equal(matchTotpStep(SEEDS.sha1, '', now), undefined)
  assert.equal(matchTotpStep(SEEDS.sha1, '12345', now), undefined)
  assert.equal(matchTotpStep(SEEDS.sha1, 'abcdef', now), undefined)
})

test('base32 round-trips and matches RFC 4648', () => {
  // RFC 4648 section 10 test vectors, without padding.
  const vectors: Array<[string, string]> = [
    ['', ''],
    ['f', 'MY'],
    ['fo', 'MZXQ'],
    ['foo', 'MZXW6'],
    ['foob', 'MZXW6YQ'],
    ['fooba', 'MZXW6YTB'],
    ['foobar', 'MZXW6YTBOI'],
  ]
  for (const [plain, encoded] of vectors) {
    assert.equal(encodeBase32(Buffer.from(plain)), encoded)
    assert.equal(decodeBase32(encoded).toString(), plain)
    assert.equal(decodeBase32(`${encoded.toLowerCase()}==`).toString(), plain)
  }
})

test('decodeBase32 names an invalid character', () => {
  assert.throws(() => decodeBase32('MZ1W'), { name: 'TypeError', message: /"1"/ })
})

test('otpauthUri carries the secret and parameters', () => {
  const uri = new URL(otpauthUri(SEEDS.sha1, { issuer: 'Writ writ.local', account: 'alice' }))
  assert.equal(uri.protocol, 'otpauth:')
  assert.equal(uri.host, 'totp')
  assert.equal(decodeURIComponent(uri.pathname), '/Writ writ.local:alice')
  assert.equal(uri.searchParams.get('secret'), 'GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ')
  assert.equal(uri.searchParams.get('issuer'), 'Writ writ.local')
  assert.equal(uri.searchParams.get('algorithm'), 'SHA1')
  assert.equal(uri.searchParams.get('digits'), '6')
  assert.equal(uri.searchParams.get('period'), '30')
})
