import assert from 'node:assert/strict'
import { X509Certificate } from 'node:crypto'
import { readFileSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import {
  addBot,
  type Enrollment,
  FILESYSTEM_SERVER,
  RECORDING_SERVER,
  removeTemporaryDirectories,
  runWrit,
  startWrit,
  TRUST_DOMAIN,
  temporaryDirectory,
  type WritServer,
} from './harness.js'

const root = temporaryDirectory('setup')
const dataDir = join(root, 'data')
const workspace = join(root, 'workspace')
let server: WritServer

before(async () => {
  server = await startWrit(dataDir)
})

after(async () => {
  await server?.stop()
  removeTemporaryDirectories()
})

/** Writes `text` to a new manifest file in the test directory and returns its path. */
function manifestFile(name: string, text: string): string {
  const path = join(root, name)
  writeFileSync(path, text)
  return path
}

function writ(...args: string[]) {
  return runWrit([...args, '--data-dir', dataDir])
}

const node = JSON.stringify(process.execPath)

const CONFIG = `apiVersion: writ.dev/v1alpha1
kind: McpServer
metadata: { name: notes, labels: { env: e2e } }
spec:
  stdio:
    command: ${node}
    args: [${JSON.stringify(RECORDING_SERVER)}]
---
apiVersion: writ.dev/v1alpha1
kind: McpServer
metadata: { name: files, labels: { env: e2e } }
spec:
  stdio:
    command: ${node}
    args: [${JSON.stringify(FILESYSTEM_SERVER)}, ${JSON.stringify(workspace)}]
---
apiVersion: writ.dev/v1alpha1
kind: Role
metadata: { name: e2e-reader }
spec:
  maxTtl: 1h
  allow:
    mcpServers: { env: e2e }
    tools: ['read_*', 'list_*']
  deny:
    tools: ['write_*']
`

describe('writ apply, get and delete', () => {
  it('apply stores every document', async () => {
    const result = await writ('apply', '-f', manifestFile('config.yaml', CONFIG))
    assert.equal(result.code, 0, result.stderr)
    assert.match(result.stdout, /^mcpserver\/notes configured$/m)
    assert.match(result.stdout, /^mcpserver\/files configured$/m)
    assert.match(result.stdout, /^role\/e2e-reader configured$/m)
  })

  it('apply reads standard input', async () => {
    const text = CONFIG.split('---\n')[2] as string
    const result = await runWrit(['apply', '-f', '-', '--data-dir', dataDir], { input: text })
    assert.equal(result.code, 0, result.stderr)
    assert.match(result.stdout, /^role\/e2e-reader configured$/m)
  })

  it('get Role lists the role', async () => {
    const result = await writ('get', 'Role')
    assert.equal(result.code, 0, result.stderr)
    assert.match(result.stdout, /^NAME\s+LABELS\s+SUMMARY$/m)
    assert.match(result.stdout, /^e2e-reader\s+-\s+maxTtl=1h$/m)
  })

  it('get McpServer NAME --json', async () => {
    const result = await writ('get', 'McpServer', 'notes', '--json')
    assert.equal(result.code, 0, result.stderr)
    const resource = JSON.parse(result.stdout)
    assert.equal(resource.apiVersion, 'writ.dev/v1alpha1')
    assert.equal(resource.kind, 'McpServer')
    assert.equal(resource.metadata.name, 'notes')
    assert.deepEqual(resource.metadata.labels, { env: 'e2e' })
    assert.equal(resource.spec.stdio.command, process.execPath)
    assert.deepEqual(resource.spec.stdio.args, [RECORDING_SERVER])
  })

  it('get plural kind lists as JSON', async () => {
    const result = await writ('get', 'mcpservers', '--json')
    assert.equal(result.code, 0, result.stderr)
    const names = (JSON.parse(result.stdout) as Array<{ metadata: { name: string } }>)
      .map((resource) => resource.metadata.name)
      .sort()
    assert.deepEqual(names, ['files', 'notes'])
  })

  it('get unknown name fails', async () => {
    const result = await writ('get', 'McpServer', 'missing')
    assert.equal(result.code, 1)
    assert.match(result.stderr, /McpServer "missing" not found/)
  })

  it('get unknown kind fails', async () => {
    const result = await writ('get', 'widget')
    assert.equal(result.code, 2)
    assert.match(result.stderr, /unknown kind "widget"/)
  })

  it('delete removes a resource', async () => {
    const scratch = CONFIG.split('---\n')[0]!.replace('name: notes', 'name: scratch')
    const applied = await writ('apply', '-f', manifestFile('scratch.yaml', scratch))
    assert.equal(applied.code, 0, applied.stderr)

    const deleted = await writ('delete', 'McpServer', 'scratch')
    assert.equal(deleted.code, 0, deleted.stderr)
    assert.match(deleted.stdout, /^mcpserver\/scratch deleted$/m)

    const lookup = await writ('get', 'McpServer', 'scratch')
    assert.equal(lookup.code, 1)
    const again = await writ('delete', 'McpServer', 'scratch')
    assert.equal(again.code, 1)
    assert.match(again.stderr, /McpServer "scratch" not found/)
  })

  it('apply rejects bad YAML naming the file', async () => {
    const file = manifestFile('broken.yaml', 'kind: Role\nmetadata: { name: [unclosed\n')
    const result = await writ('apply', '-f', file)
    assert.equal(result.code, 1, result.stdout)
    assert.ok(result.stderr.includes(file), `message does not name ${file}: ${result.stderr}`)
  })

  it('apply rejects unknown kind naming document', async () => {
    const valid = CONFIG.split('---\n')[0]!.replace('name: notes', 'name: never-stored')
    const text = `${valid}---\napiVersion: writ.dev/v1alpha1\nkind: Widget\nmetadata: { name: w }\nspec: {}\n`
    const file = manifestFile('unknown-kind.yaml', text)
    const result = await writ('apply', '-f', file)
    assert.equal(result.code, 1, result.stdout)
    assert.ok(result.stderr.includes(file), `message does not name ${file}: ${result.stderr}`)
    assert.match(
      result.stderr,
      /document 2/,
      `message does not name the document: ${result.stderr}`,
    )
    assert.match(result.stderr, /kind/)
    assert.match(result.stderr, /Widget/)

    const lookup = await writ('get', 'McpServer', 'never-stored')
    assert.equal(lookup.code, 1, 'a file with a bad document must change nothing')
  })

  it('apply rejects a bad field naming it', async () => {
    const text = `apiVersion: writ.dev/v1alpha1\nkind: Role\nmetadata: { name: bad-ttl }\nspec:\n  maxTtl: soon\n  allow: { tools: ['read_*'] }\n`
    const file = manifestFile('bad-field.yaml', text)
    const result = await writ('apply', '-f', file)
    assert.equal(result.code, 1, result.stdout)
    assert.ok(result.stderr.includes(file), `message does not name ${file}: ${result.stderr}`)
    assert.match(
      result.stderr,
      /document 1/,
      `message does not name the document: ${result.stderr}`,
    )
    assert.match(result.stderr, /maxTtl/)
    assert.match(result.stderr, /soon/)
  })

  it('apply of a missing file fails', async () => {
    const file = join(root, 'no-such-file.yaml')
    const result = await writ('apply', '-f', file)
    assert.equal(result.code, 1)
    assert.ok(result.stderr.includes(file), `message does not name ${file}: ${result.stderr}`)
  })
})

describe('writ bots add and writ agent', () => {
  let enrollment: Enrollment
  const identity = join(root, 'identity')

  it('bots add prints token, server and pin', async () => {
    enrollment = await addBot(dataDir, 'setup-agent', 'e2e-reader')
    assert.equal(enrollment.bot, 'setup-agent')
    assert.deepEqual(enrollment.roles, ['e2e-reader'])
    assert.match(enrollment.token, /^[A-Za-z0-9_-]{20,}$/)
    assert.equal(enrollment.server, server.address)
    assert.equal(enrollment.caPin, server.caPin)
    const expires = Date.parse(enrollment.expires) - Date.now()
    assert.ok(expires > 55 * 60_000, `token expires in ${expires} ms`)
    assert.ok(expires <= 60 * 60_000, `token expires in ${expires} ms`)
  })

  it('bots add text output', async () => {
    const result = await writ('bots', 'add', 'text-agent', '--roles', 'e2e-reader')
    assert.equal(result.code, 0, result.stderr)
    assert.match(result.stdout, /bot "text-agent" created with roles e2e-reader/)
    assert.match(result.stdout, /join token: \S+ \(single use, expires /)
    assert.ok(result.stdout.includes(`CA pin:     ${server.caPin}`))
  })

  it('bots add rejects an unknown role', async () => {
    const result = await writ('bots', 'add', 'lost-agent', '--roles', 'no-such-role')
    assert.equal(result.code, 2)
    assert.match(result.stderr, /role "no-such-role" not found/)
  })

  it('start rejects a bad --audit-sync', async () => {
    const result = await runWrit([
      'start',
      '--data-dir',
      temporaryDirectory('audit-sync'),
      '--audit-sync',
      'sometimes',
    ])
    assert.equal(result.code, 2)
    assert.match(result.stderr, /invalid --audit-sync "sometimes": use normal or full/)
  })

  it('bots add rejects a TTL out of range', async () => {
    for (const ttl of ['30d', '1s']) {
      const result = await writ('bots', 'add', 'long-agent', '--roles', 'e2e-reader', '--ttl', ttl)
      assert.equal(result.code, 2, ttl)
      assert.match(
        result.stderr,
        new RegExp(`invalid --ttl "${ttl}": use a duration from 5s to 24h`),
      )
    }
  })

  it('get on a missing data dir fails', async () => {
    const missing = join(temporaryDirectory('missing'), 'nothing-here')
    const result = await runWrit(['get', 'Role', '--data-dir', missing])
    assert.equal(result.code, 1)
    assert.match(result.stderr, /no Writ data directory at .*nothing-here/)
    assert.match(result.stderr, /\[host\.not_found\]/)
  })

  it('bots add rejects a bad TTL', async () => {
    const result = await writ(
      'bots',
      'add',
      'lost-agent',
      '--roles',
      'e2e-reader',
      '--ttl',
      'forever',
    )
    assert.equal(result.code, 1)
    assert.match(result.stderr, /invalid --ttl "forever"/)
    assert.match(result.stderr, /\[duration\.invalid\]/)
  })

  it('wrong CA pin fails before the token is spent', async () => {
    const wrongPin = `sha256:${'ab'.repeat(32)}`
    const result = await agent(enrollment.token, wrongPin, join(root, 'wrong-pin'))
    assert.notEqual(result.code, 0)
    assert.match(result.stderr, /CA pin mismatch/)
    assert.ok(
      result.stderr.includes(wrongPin),
      `message does not name the expected pin: ${result.stderr}`,
    )
  })

  it('agent --oneshot writes the identity', async () => {
    const result = await agent(enrollment.token, server.caPin, identity)
    assert.equal(result.code, 0, result.stderr)
    assert.match(result.stdout, /joined spiffe:\/\/writ\.local\/bot\/setup-agent serial [0-9a-f]+/)

    const key = statSync(join(identity, 'svid_key.pem'))
    assert.equal(key.mode & 0o777, 0o600)
    assert.match(
      readFileSync(join(identity, 'svid_key.pem'), 'utf8'),
      /-----BEGIN PRIVATE KEY-----/,
    )

    const certificate = new X509Certificate(readFileSync(join(identity, 'svid.pem')))
    assert.equal(certificate.subjectAltName, `URI:spiffe://${TRUST_DOMAIN}/bot/setup-agent`)
    const lifetime = Date.parse(certificate.validTo) - Date.now()
    assert.ok(lifetime > 50 * 60_000, `certificate lives ${lifetime} ms`)
    assert.ok(lifetime <= 60 * 60_000, `certificate lives ${lifetime} ms`)

    const bundle = new X509Certificate(readFileSync(join(identity, 'bundle.pem')))
    assert.ok(certificate.checkIssued(bundle), 'svid.pem is not issued by the CA in bundle.pem')
    assert.ok(certificate.verify(bundle.publicKey))
  })

  it('reused token fails saying used', async () => {
    const result = await agent(enrollment.token, server.caPin, join(root, 'reused'))
    assert.notEqual(result.code, 0)
    assert.match(result.stderr, /join token has already been used/)
  })

  it('unknown token fails saying unknown', async () => {
    const result = await agent(
      'bm90LWEtcmVhbC10b2tlbi1hdC1hbGwtMDEyMzQ1Njc',
      server.caPin,
      join(root, 'unknown'),
    )
    assert.notEqual(result.code, 0)
    assert.match(result.stderr, /join token is not known to the Writ server/)
  })

  it('expired token fails saying expired', async () => {
    const token = 'e2e-expired-token-4b8c2d6f'
    const manifest = `apiVersion: writ.dev/v1alpha1
kind: JoinToken
metadata: { name: setup-agent-expired }
spec: { bot: setup-agent, method: token, expires: '2020-01-01T00:00:00Z', token: ${token} }
`
    const applied = await writ('apply', '-f', manifestFile('expired-token.yaml', manifest))
    assert.equal(applied.code, 0, applied.stderr)
    const result = await agent(token, server.caPin, join(root, 'expired'))
    assert.notEqual(result.code, 0)
    assert.match(result.stderr, /join token has expired/)
  })

  it('malformed CA pin fails naming it', async () => {
    const other = await addBot(dataDir, 'pin-agent', 'e2e-reader')
    const result = await agent(other.token, 'md5:1234', join(root, 'bad-pin'))
    assert.notEqual(result.code, 0)
    assert.match(result.stderr, /invalid CA pin "md5:1234"/)
  })
})

function agent(token: string, caPin: string, dest: string) {
  return runWrit([
    'agent',
    '--server',
    server.address,
    '--token',
    token,
    '--ca-pin',
    caPin,
    '--dest',
    dest,
    '--oneshot',
  ])
}
