import assert from 'node:assert/strict'
import { test } from 'node:test'
import { ScrubTally, scrubText, scrubValue } from '../../src/guard/scrub.js'
import { findSecrets, shannonEntropy } from '../../src/guard/secret-detectors.js'
import { fakeSecrets } from './fake-secrets.js'

const secrets = fakeSecrets()

// Each detector with a value it must find, written in the context where it usually appears.
const FOUND: Array<[string, string, string]> = [
  ['aws-access-key', `id ${secrets.awsAccessKey} end`, secrets.awsAccessKey],
  ['aws-access-key', 'id ASIAY34FZKBOKMUTVV7A end', 'ASIAY34FZKBOKMUTVV7A'],
  ['aws-secret-key', `aws_secret_access_key=${secrets.awsSecretKey}`, secrets.awsSecretKey],
  ['aws-secret-key', `"AWS_SECRET_KEY": "${secrets.awsSecretKey}"`, secrets.awsSecretKey],
  ['github-token', `token ${secrets.githubToken}`, secrets.githubToken],
  ['github-token', `x ${['github', 'pat', 'A'.repeat(22), 'b'.repeat(59)].join('_')}`, ''],
  ['jwt', `jwt ${secrets.jwt}`, secrets.jwt],
  ['jwt', `Authorization: Bearer ${secrets.jwt}`, secrets.jwt],
  ['slack-token', `slack ${secrets.slackToken}`, secrets.slackToken],
  ['google-api-key', `key=${secrets.googleApiKey}`, secrets.googleApiKey],
  ['stripe-key', `stripe ${secrets.stripeKey}`, secrets.stripeKey],
  ['bearer-token', `Authorization: Bearer ${secrets.bearer}`, secrets.bearer],
  ['generic-api-key', `https://x.example/?api_key=${secrets.apiKey}&a=1`, secrets.apiKey],
  ['generic-api-key', `client_secret: "${secrets.apiKey}"`, secrets.apiKey],
  ['url-password', 'postgres://app:s3cr3t-Pa55@db.internal:5432/x', 's3cr3t-Pa55'],
  ['private-key', `before\n${secrets.privateKey}after`, secrets.privateKey.trimEnd()],
]

for (const [detector, text, value] of FOUND) {
  test(`scrub finds ${detector} in ${JSON.stringify(text.slice(0, 24))}`, () => {
    const tally = new ScrubTally()
    const output = scrubText(text, tally)
    assert.match(output, new RegExp(`\\[REDACTED:${detector}\\]`))
    if (value !== '') assert.ok(!output.includes(value), `value left in ${JSON.stringify(output)}`)
    assert.equal(tally.redactions.get(detector), 1)
  })
}

// Strings that look close to a secret but are not one.
const NOT_FOUND: Array<[string, string]> = [
  ['short AKIA id', 'AKIAIOSFODNN7EXAM'],
  ['lowercase akia id', 'akiaiosfodnn7example'],
  [
    'eyJ string whose header has no alg',
    `${Buffer.from('{"typ":"JWT"}').toString('base64url')}.eyJzdWIiOiJ4In0.sig`,
  ],
  ['eyJ string that is not JSON', 'eyJhbGciOiJIUz.eyJzdWIiOiJ4In0.sig'],
  ['Bearer with low entropy', 'Authorization: Bearer aaaaaaaaaaaaaaaaaaaaaaaaaaaa'],
  ['api_key with a word value', 'api_key=placeholder-placeholder'],
  ['prose about keys', 'Rotate the API key and the access token every 90 days, please.'],
  ['UUID', 'request 123e4567-e89b-12d3-a456-426614174000 done'],
  [
    'public key',
    '-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----',
  ],
]

for (const [name, text] of NOT_FOUND) {
  test(`scrub leaves ${name} alone`, () => {
    const tally = new ScrubTally()
    assert.equal(scrubText(text, tally), text)
    assert.equal(tally.changed, false)
  })
}

test('scrub removes terminal escape sequences', () => {
  const tally = new ScrubTally()
  const text =
    '\x1b[31mred\x1b[0m \x1b]52;c;ZXZpbA==\x07clip \x1b]8;;http://evil.example\x1b\\link\x1b]8;;\x1b\\ \x9b2Jdone\x07\x1bc'
  assert.equal(scrubText(text, tally), 'red clip link done')
  assert.ok(tally.terminal > 0)
  assert.equal(tally.invisible, 0)
})

test('scrub removes an unterminated OSC to the end', () => {
  const tally = new ScrubTally()
  assert.equal(scrubText('ok\x1b]0;title without end', tally), 'ok')
})

test('scrub keeps tab, newline and carriage return', () => {
  const tally = new ScrubTally()
  assert.equal(scrubText('a\tb\nc\r\n', tally), 'a\tb\nc\r\n')
  assert.equal(tally.changed, false)
})

test('scrub removes bidi, zero-width and tag characters', () => {
  const tally = new ScrubTally()
  const tags = [...'run rm'].map((char) => String.fromCodePoint(0xe0000 + char.charCodeAt(0)))
  const text = `a\u202eb\u202c\u2066c\u2069\u200bd\u200c\u2060\u2064\ufeff${tags.join('')}e\u061c`
  assert.equal(scrubText(text, tally), 'abcde')
  assert.equal(tally.terminal, 0)
  assert.ok(tally.invisible >= 12)
})

test('scrub keeps the joiner inside an emoji sequence', () => {
  const tally = new ScrubTally()
  const family = '👨\u200d👩\u200d👧'
  assert.equal(scrubText(`${family} ok 😀🎉`, tally), `${family} ok 😀🎉`)
  assert.equal(scrubText('a\u200db', tally), 'ab')
})

test('scrub finds a secret split by a zero-width space', () => {
  const tally = new ScrubTally()
  const split = `${secrets.githubToken.slice(0, 10)}\u200b${secrets.githubToken.slice(10)}`
  assert.equal(scrubText(`t ${split}`, tally), 't [REDACTED:github-token]')
})

test('scrub value returns the same object when clean', () => {
  const value = { content: [{ type: 'text', text: 'hello world, nothing to see here' }] }
  const tally = new ScrubTally()
  assert.equal(scrubValue(value, tally), value)
})

test('scrub value copies only what changed', () => {
  const clean = { type: 'text', text: 'fine' }
  const value = { content: [clean, { type: 'text', text: `key ${secrets.awsAccessKey}` }] }
  const tally = new ScrubTally()
  const scrubbed = scrubValue(value, tally)
  assert.notEqual(scrubbed, value)
  assert.equal(scrubbed.content[0], clean)
  assert.equal(scrubbed.content[1]!.text, 'key [REDACTED:aws-access-key]')
  assert.equal(value.content[1]!.text, `key ${secrets.awsAccessKey}`)
})

test('scrub value cleans object keys', () => {
  const tally = new ScrubTally()
  const scrubbed = scrubValue({ 'na\u200bme': 1 }, tally)
  assert.deepEqual(scrubbed, { name: 1 })
})

test('scrub tally details name detectors only', () => {
  const tally = new ScrubTally()
  scrubText(`\x1b[1m${secrets.awsAccessKey} ${secrets.awsAccessKey} ${secrets.stripeKey}`, tally)
  assert.deepEqual(tally.details(), {
    redactions: [
      { detector: 'aws-access-key', count: 2 },
      { detector: 'stripe-key', count: 1 },
    ],
    removedTerminalChars: 4,
  })
})

test('findSecrets reports positions in order', () => {
  const text = `a ${secrets.awsAccessKey} b ${secrets.githubToken}`
  const found = findSecrets(text)
  assert.deepEqual(
    found.map((match) => [match.detector, text.slice(match.start, match.end)]),
    [
      ['aws-access-key', secrets.awsAccessKey],
      ['github-token', secrets.githubToken],
    ],
  )
})

test('shannonEntropy separates tokens from words', () => {
  assert.ok(shannonEntropy(secrets.bearer) > 3.5)
  assert.ok(shannonEntropy('placeholder-placeholder') < 3.5)
})
