import assert from 'node:assert/strict'
import { join } from 'node:path'
import { after, describe, it } from 'node:test'
import { auditSearch, removeTemporaryDirectories, runWrit, temporaryDirectory } from './harness.js'

after(removeTemporaryDirectories)

describe('writ demo --exit', () => {
  const dataDir = join(temporaryDirectory('demo'), 'data')
  let output = { code: null as number | null, stdout: '', stderr: '' }

  it('exits 0 after the scripted run', async () => {
    output = await runWrit(['demo', '--exit', '--data-dir', dataDir], { timeoutMs: 60_000 })
    assert.equal(output.code, 0, `writ demo --exit failed:\n${output.stdout}\n${output.stderr}`)
  })

  it('prints the allowed read', () => {
    assert.match(output.stdout, /read_text_file \S+README\.md: allowed/)
    assert.match(output.stdout, /"# Demo workspace"/)
  })

  it('prints the denied write', () => {
    assert.match(output.stdout, /write_file \S+README\.md: refused by the gateway/)
    assert.match(output.stdout, /reason forbidden, audit id \S+/)
    assert.match(output.stdout, /the file is unchanged/)
  })

  it('prints the audit trail and verify', () => {
    assert.match(output.stdout, /audit trail \(writ audit search\):/)
    assert.match(output.stdout, /write_file/)
    assert.match(output.stdout, /writ audit verify: chain intact, \d+ events/)
  })

  it('leaves a verifiable audit log', async () => {
    const verify = await runWrit(['audit', 'verify', '--data-dir', dataDir])
    assert.equal(verify.code, 0, verify.stdout + verify.stderr)
    const denied = await auditSearch(dataDir, ['--outcome', 'denied', '--tool', 'write_file'])
    assert.ok(denied.length >= 1, 'no denied write_file event in the demo data directory')
    const rule = denied[0]?.rule ?? ''
    assert.match(rule, /workspace-reader/, `denied event names no role in its rule: "${rule}"`)
  })
})
