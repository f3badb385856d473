import assert from 'node:assert/strict'
import { test } from 'node:test'
import { MAX_JSON_DEPTH, parseJson } from '../../src/gateway/jsonrpc.js'
import { createRedactor, REDACTED } from '../../src/gateway/redact.js'

test('redacts plain secret in text', () => {
  const redactor = createRedactor(['hunter2-secret'])
  assert.equal(redactor.text('token=hunter2-secret;'), `token=${REDACTED};`)
})

test('redacts secret with newline in embedded JSON', () => {
  const secret = 'line1-secret\nline2-secret'
  const redactor = createRedactor([secret])
  // A tool that returns an environment dump as text carries the secret JSON-escaped.
  const result = { content: [{ type: 'text', text: JSON.stringify({ KEY_FILE: secret }) }] }
  const json = redactor.json(result)
  assert.ok(!json.includes('line1-secret'), json)
  assert.ok(json.includes(REDACTED))
})

test('redacts secret with quote and backslash', () => {
  const secret = 'q"uo\\te-SECRET'
  const redactor = createRedactor([secret])
  const direct = redactor.json({ text: secret })
  assert.ok(!direct.includes('uo'), direct)
  const embedded = redactor.json({ text: JSON.stringify({ token: secret }) })
  assert.ok(!embedded.includes('uo'), embedded)
  assert.equal(redactor.text(`raw ${JSON.stringify(secret)}`), `raw "${REDACTED}"`)
})

test('value returns input when clean', () => {
  const redactor = createRedactor(['s3cr3t-value'])
  const input = { a: 1, b: ['x'] }
  assert.equal(redactor.value(input), input)
})

test('parseJson rejects deep nesting', () => {
  const deep = `${'['.repeat(MAX_JSON_DEPTH + 1)}${']'.repeat(MAX_JSON_DEPTH + 1)}`
  const result = parseJson(deep)
  assert.equal(result.ok, false)
  assert.equal(result.ok ? undefined : result.reason, 'depth')
})

test('parseJson ignores brackets in strings', () => {
  const text = JSON.stringify({ text: '['.repeat(1000) })
  const result = parseJson(text)
  assert.equal(result.ok, true)
})

test('parseJson accepts the depth limit', () => {
  const edge = `${'['.repeat(MAX_JSON_DEPTH)}${']'.repeat(MAX_JSON_DEPTH)}`
  assert.equal(parseJson(edge).ok, true)
  assert.equal(parseJson('{"a":').ok, false)
})
