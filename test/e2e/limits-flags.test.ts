import assert from 'node:assert/strict'
import { after, describe, it } from 'node:test'
import { removeTemporaryDirectories, runWrit, temporaryDirectory } from './harness.js'

after(() => removeTemporaryDirectories())

describe('start limits flags', () => {
  const cases: Array<[string, string, RegExp]> = [
    ['--rate-limit', 'lots', /invalid --rate-limit "lots": use a whole number of calls per minute/],
    ['--rate-limit', '0', /invalid --rate-limit "0"/],
    [
      '--max-response-bytes',
      '12',
      /invalid --max-response-bytes "12": use a whole number of bytes/,
    ],
  ]
  for (const [flag, value, message] of cases) {
    it(`start rejects ${flag} ${value}`, async () => {
      const dataDir = temporaryDirectory('limits-flags')
      const result = await runWrit(['start', '--data-dir', dataDir, flag, value])
      assert.equal(result.code, 2)
      assert.match(result.stderr, message)
    })
  }
})
