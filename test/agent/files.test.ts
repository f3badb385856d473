import assert from 'node:assert/strict'
import { mkdtemp, readdir, rm, stat, unlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, test } from 'node:test'
import { readIdentity, writeIdentity } from '../../src/agent/files.js'
import { isWritError } from '../../src/errors.js'

const root = await mkdtemp(join(tmpdir(), 'writ-agent-files-'))
after(() => rm(root, { recursive: true, force: true }))

const first = { certPem: 'cert one\n', keyPem: 'key one\n', bundlePem: 'bundle one\n' }
const second = { certPem: 'cert two\n', keyPem: 'key two\n', bundlePem: 'bundle two\n' }

test('writeIdentity creates a private directory', async () => {
  const dir = join(root, 'fresh', 'nested')
  await writeIdentity(dir, first)
  assert.equal((await stat(dir)).mode & 0o777, 0o700)
  assert.equal((await stat(join(dir, 'svid_key.pem'))).mode & 0o777, 0o600)
  assert.equal((await stat(join(dir, 'svid.pem'))).mode & 0o777, 0o644)
  assert.equal((await stat(join(dir, 'bundle.pem'))).mode & 0o777, 0o644)
  assert.deepEqual(await readIdentity(dir), first)
})

test('writeIdentity replaces files and leaves no temporaries', async () => {
  const dir = join(root, 'replace')
  await writeIdentity(dir, first)
  await writeIdentity(dir, second)
  assert.deepEqual(await readIdentity(dir), second)
  assert.deepEqual((await readdir(dir)).sort(), ['bundle.pem', 'svid.pem', 'svid_key.pem'])
})

test('writeIdentity keeps the key private over a wider file', async () => {
  const dir = join(root, 'wide')
  await writeIdentity(dir, first)
  await writeFile(join(dir, 'svid_key.pem'), 'old', { mode: 0o644 })
  await writeIdentity(dir, second)
  assert.equal((await stat(join(dir, 'svid_key.pem'))).mode & 0o777, 0o600)
})

test('readIdentity returns undefined for an empty directory', async () => {
  assert.equal(await readIdentity(join(root, 'missing')), undefined)
})

test('readIdentity names missing files', async () => {
  const dir = join(root, 'partial')
  await writeIdentity(dir, first)
  await unlink(join(dir, 'bundle.pem'))
  await assert.rejects(readIdentity(dir), (error: unknown) => {
    assert.ok(isWritError(error, 'agent.identity_incomplete'))
    assert.equal(
      error.message,
      `identity directory ${dir} is missing bundle.pem; join again with a new token from writ bots add`,
    )
    return true
  })
})
