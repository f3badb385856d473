import assert from 'node:assert/strict'
import { test } from 'node:test'
import { parseServerAddress } from '../../src/agent/server-address.js'
import { isWritError } from '../../src/errors.js'

test('parseServerAddress splits host and port', () => {
  assert.deepEqual(parseServerAddress('127.0.0.1:7443'), {
    host: '127.0.0.1',
    port: 7443,
    text: '127.0.0.1:7443',
  })
  assert.deepEqual(parseServerAddress('writ.example:443'), {
    host: 'writ.example',
    port: 443,
    text: 'writ.example:443',
  })
  assert.deepEqual(parseServerAddress('[::1]:7443'), {
    host: '::1',
    port: 7443,
    text: '[::1]:7443',
  })
})

test('parseServerAddress rejects bad addresses', () => {
  for (const text of ['127.0.0.1', ':7443', 'host:0', 'host:70000', '::1:7443', '[host]:7443']) {
    assert.throws(
      () => parseServerAddress(text),
      (error: unknown) =>
        isWritError(error, 'agent.server_invalid') && error.message.includes(text),
      text,
    )
  }
})
