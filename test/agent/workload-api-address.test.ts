import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, test } from 'node:test'
import {
  MAX_SOCKET_PATH_BYTES,
  parseWorkloadApiAddress,
  prepareSocketPath,
} from '../../src/agent/workload-api-address.js'
import { isWritError } from '../../src/errors.js'

const root = await mkdtemp(join(tmpdir(), 'writ-wl-addr-'))
after(() => rm(root, { recursive: true, force: true }))

test('unix URIs parse to their path', () => {
  assert.equal(parseWorkloadApiAddress('unix:///run/writ/agent.sock'), '/run/writ/agent.sock')
  assert.equal(parseWorkloadApiAddress('unix:/run/writ/agent.sock'), '/run/writ/agent.sock')
  assert.equal(parseWorkloadApiAddress('unix:///tmp/with%20space.sock'), '/tmp/with space.sock')
})

test('invalid addresses name the value and reason', () => {
  const cases: Array<[string, RegExp]> = [
    ['/run/writ/agent.sock', /not a URI/],
    ['tcp://127.0.0.1:8081', /scheme "tcp:" is not supported/],
    ['unix://host/agent.sock', /must not name a host/],
    ['unix:///run/agent.sock?x=1', /query or fragment/],
    ['unix:///run/agent.sock#x', /query or fragment/],
    ['unix:///', /must name a socket file/],
    ['unix:///run/writ/', /must name a socket file/],
    [`unix:///${'a'.repeat(MAX_SOCKET_PATH_BYTES)}`, /longer than 107 bytes/],
  ]
  for (const [address, reason] of cases) {
    assert.throws(
      () => parseWorkloadApiAddress(address),
      (error: unknown) => {
        assert.ok(isWritError(error, 'agent.workload_api_address_invalid'), address)
        assert.ok(error.message.includes(`"${address}"`), error.message)
        assert.match(error.message, reason)
        return true
      },
    )
  }
})

test('missing parent directory is created private', async () => {
  const path = join(root, 'new', 'agent.sock')
  await prepareSocketPath(path)
  assert.equal((await stat(join(root, 'new'))).mode & 0o777, 0o700)
  assert.equal(existsSync(path), false)
})

test('stale socket is removed', async () => {
  const path = join(root, 'stale.sock')
  // A process killed with SIGKILL leaves its socket file behind, as a crashed agent would.
  const child = spawn(
    process.execPath,
    [
      '-e',
      `require('node:net').createServer().listen(${JSON.stringify(path)}, () => console.log('up'))`,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  )
  await new Promise<void>((resolve) => child.stdout.once('data', () => resolve()))
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  process.kill(child.pid as number, 'SIGKILL')
  await exited
  assert.ok((await stat(path)).isSocket(), 'the killed process left no socket')

  await prepareSocketPath(path)
  assert.equal(existsSync(path), false)
})

test('socket in use is reported', async () => {
  const path = join(root, 'busy.sock')
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(path, resolve))
  try {
    await assert.rejects(prepareSocketPath(path), (error: unknown) => {
      assert.ok(isWritError(error, 'agent.workload_api_socket_in_use'))
      assert.ok(error.message.includes(path))
      return true
    })
    assert.ok(existsSync(path))
  } finally {
    await new Promise<void>((resolve) => server.close(() => resolve()))
  }
})

test('regular file is left alone', async () => {
  const path = join(root, 'plain')
  await writeFile(path, 'data\n')
  await assert.rejects(prepareSocketPath(path), (error: unknown) => {
    assert.ok(isWritError(error, 'agent.workload_api_socket_invalid'))
    assert.ok(error.message.includes(path))
    return true
  })
  assert.ok(existsSync(path))
})
