import assert from 'node:assert/strict'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, test } from 'node:test'
import { isWritError } from '../../src/errors.js'
import { readServiceAccountToken } from '../../src/kube/token-file.js'

const dir = mkdtempSync(join(tmpdir(), 'writ-token-file-'))
after(() => rmSync(dir, { recursive: true, force: true }))

const JWT = 'eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl'

test('readServiceAccountToken trims the file', async () => {
  const path = join(dir, 'token')
  writeFileSync(path, `${JWT}\n`)
  assert.equal(await readServiceAccountToken(path), JWT)
})

test('readServiceAccountToken reads the file again', async () => {
  const path = join(dir, 'rotating')
  writeFileSync(path, JWT)
  assert.equal(await readServiceAccountToken(path), JWT)
  const rotated = `${JWT}x`
  writeFileSync(path, rotated)
  assert.equal(await readServiceAccountToken(path), rotated)
})

test('readServiceAccountToken names a missing file', async () => {
  const path = join(dir, 'missing')
  await assert.rejects(readServiceAccountToken(path), (error: unknown) => {
    assert.ok(isWritError(error, 'agent.kubernetes_token_unreadable'), String(error))
    assert.match(error.message, new RegExp(`${path} \\(ENOENT\\)`))
    assert.match(error.message, /--token-path/)
    return true
  })
})

test('readServiceAccountToken rejects a non-JWT', async () => {
  const path = join(dir, 'not-a-jwt')
  writeFileSync(path, 'secret-looking-content\n')
  await assert.rejects(readServiceAccountToken(path), (error: unknown) => {
    assert.ok(isWritError(error, 'agent.kubernetes_token_invalid'), String(error))
    assert.match(error.message, new RegExp(`${path} does not contain a JWT`))
    assert.ok(!error.message.includes('secret-looking-content'))
    return true
  })
})
