// biome-ignore-all lint/suspicious/noTemplateCurlyInString: these strings are secret references, not templates
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { isWritError } from '../../src/errors.js'
import { normalizeJoinToken, parseManifests, readManifestFile } from '../../src/policy/manifest.js'

const HEADER = 'apiVersion: writ.dev/v1alpha1'
const HASH = 'a'.repeat(64)

const ROLE = `${HEADER}
kind: Role
metadata:
  name: reader
spec:
  maxTtl: 1h
  allow:
    mcpServers: { env: dev }
    tools: ['read_*', '^search_.*$']
  deny:
    tools: [write_file]
`

const SERVERS = `${HEADER}
kind: McpServer
metadata:
  name: files
  labels: { env: dev, app.example.com/tier: backend }
spec:
  description: the workspace
  startupTimeout: 20s
  stdio:
    command: npx
    args: ['-y', '@modelcontextprotocol/server-filesystem', '\${file:/run/secrets/path}', '']
    env: { LOG_LEVEL: info, API_KEY: '\${env:FILES_KEY}', EMPTY: '' }
    cwd: /srv
---
${HEADER}
kind: McpServer
metadata: { name: tracker, labels: { env: prod } }
spec:
  http:
    url: https://tracker.example.com/mcp
    headers: { Authorization: 'Bearer \${env:TRACKER_TOKEN}' }
`

/** Parses `text` and checks the manifest.invalid error names file, document and field. */
function assertInvalid(
  text: string,
  expected: { source?: string; document: number; field?: string; includes: string[] },
): void {
  const source = expected.source ?? 'roles.yaml'
  assert.throws(
    () => parseManifests(text, source),
    (error: unknown) => {
      assert.ok(isWritError(error, 'manifest.invalid'), String(error))
      assert.ok(error.message.startsWith(`${source}, document ${expected.document}`), error.message)
      if (expected.field !== undefined) {
        assert.ok(error.message.includes(`: ${expected.field}: `), error.message)
        assert.equal(error.fields.path, expected.field)
      }
      for (const part of expected.includes) {
        assert.ok(error.message.includes(part), `${JSON.stringify(part)} not in: ${error.message}`)
      }
      assert.equal(error.fields.source, source)
      assert.equal(error.fields.document, expected.document)
      return true
    },
  )
}

function role(spec: string, name = 'reader'): string {
  return `${HEADER}\nkind: Role\nmetadata: { name: ${name} }\nspec:\n${spec}\n`
}

function server(spec: string): string {
  return `${HEADER}\nkind: McpServer\nmetadata: { name: files }\nspec:\n${spec}\n`
}

function joinToken(spec: string): string {
  return `${HEADER}\nkind: JoinToken\nmetadata: { name: ci-token }\nspec:\n${spec}\n`
}

test('parses a role', () => {
  const [resource, ...rest] = parseManifests(ROLE, 'roles.yaml')
  assert.equal(rest.length, 0)
  assert.deepEqual(resource, {
    apiVersion: 'writ.dev/v1alpha1',
    kind: 'Role',
    metadata: { name: 'reader' },
    spec: {
      maxTtl: '1h',
      allow: { mcpServers: { env: 'dev' }, tools: ['read_*', '^search_.*$'] },
      deny: { tools: ['write_file'] },
    },
  })
})

test('parses several documents in order', () => {
  const resources = parseManifests(`${SERVERS}---\n${ROLE}`, 'all.yaml')
  assert.deepEqual(
    resources.map((resource) => `${resource.kind}/${resource.metadata.name}`),
    ['McpServer/files', 'McpServer/tracker', 'Role/reader'],
  )
  assert.deepEqual(resources[0]?.metadata.labels, { env: 'dev', 'app.example.com/tier': 'backend' })
  assert.deepEqual(resources[1]?.spec, {
    http: {
      url: 'https://tracker.example.com/mcp',
      headers: { Authorization: 'Bearer ${env:TRACKER_TOKEN}' },
    },
  })
})

test('parses a bot and join tokens', () => {
  const text = `${HEADER}
kind: Bot
metadata: { name: ci-agent }
spec: { roles: [reader, writer], ttl: 30m, description: CI }
---
${joinToken(`  bot: ci-agent\n  method: token\n  ttl: 1h\n  token: correct-horse-battery`)}---
${joinToken(`  bot: ci-agent\n  method: token\n  expires: '2030-01-01T00:00:00Z'\n  tokenHash: ${HASH}`).replace('ci-token', 'ci-token-2')}`
  const [bot, first, second] = parseManifests(text, 'bots.yaml')
  assert.deepEqual(bot?.spec, { roles: ['reader', 'writer'], ttl: '30m', description: 'CI' })
  assert.equal(first?.spec.token, 'correct-horse-battery')
  assert.equal(second?.spec.tokenHash, HASH)
})

test('parses JSON, one object or a list', () => {
  const object = {
    apiVersion: 'writ.dev/v1alpha1',
    kind: 'Role',
    metadata: { name: 'reader' },
    spec: {},
  }
  assert.deepEqual(parseManifests(JSON.stringify(object), 'role.json'), [object])
  const list = [object, { ...object, metadata: { name: 'writer' } }]
  const parsed = parseManifests(JSON.stringify(list, null, 2), 'roles.json')
  assert.deepEqual(
    parsed.map((resource) => resource.metadata.name),
    ['reader', 'writer'],
  )
})

test('skips empty documents', () => {
  const resources = parseManifests(`---\n# comment only\n---\n${ROLE}---\n`, 'roles.yaml')
  assert.equal(resources.length, 1)
})

test('rejects an empty file', () => {
  for (const text of ['', '# nothing here\n', '---\n---\n', '[]']) {
    assert.throws(
      () => parseManifests(text, 'empty.yaml'),
      (error: unknown) => {
        assert.ok(isWritError(error, 'manifest.invalid'), String(error))
        assert.match(error.message, /^empty\.yaml: no manifests found/)
        return true
      },
    )
  }
})

test('rejects YAML syntax errors with line', () => {
  const text = `${ROLE}---\n${HEADER}\nkind: Role\nmetadata: { name: x\n`
  assert.throws(
    () => parseManifests(text, 'roles.yaml'),
    (error: unknown) => {
      assert.ok(isWritError(error, 'manifest.invalid'), String(error))
      assert.match(error.message, /^roles\.yaml, document 2, line \d+ column \d+: invalid YAML: /)
      assert.equal(error.fields.document, 2)
      assert.equal(typeof error.fields.line, 'number')
      return true
    },
  )
})

test('rejects duplicate YAML keys with line', () => {
  assert.throws(
    () => parseManifests(`${HEADER}\nkind: Role\nkind: Bot\n`, 'roles.yaml'),
    (error: unknown) => {
      assert.ok(isWritError(error, 'manifest.invalid'), String(error))
      assert.match(
        error.message,
        /^roles\.yaml, document 1, line 3 column 1: invalid YAML: .*unique/,
      )
      return true
    },
  )
})

test('rejects alias bombs', () => {
  const bomb = [
    'a: &a [x, x, x, x, x, x, x, x, x]',
    'b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]',
    'c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]',
    'd: [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c, *c, *c, *c, *c, *c, *c, *c, *c]',
  ].join('\n')
  assertInvalid(bomb, { document: 1, includes: ['invalid YAML', 'alias'] })
})

test('rejects a document that is not a mapping', () => {
  assertInvalid(`${ROLE}---\njust a string\n`, {
    document: 2,
    includes: ['expected a mapping, got the string "just a string"'],
  })
})

test('rejects a missing or wrong apiVersion', () => {
  assertInvalid('kind: Role\nmetadata: { name: reader }\nspec: {}\n', {
    document: 1,
    field: 'apiVersion',
    includes: ['(Role "reader")', 'missing required field', '"writ.dev/v1alpha1"'],
  })
  assertInvalid(ROLE.replace('writ.dev/v1alpha1', 'writ.dev/v1'), {
    document: 1,
    field: 'apiVersion',
    includes: ['unsupported apiVersion "writ.dev/v1"', 'expected "writ.dev/v1alpha1"', 'line 1'],
  })
})

test('rejects an unknown kind and lists valid ones', () => {
  assertInvalid(ROLE.replace('kind: Role', 'kind: Rolez'), {
    document: 1,
    field: 'kind',
    includes: ['unknown kind "Rolez"', 'Role, Bot, JoinToken, McpServer', 'line 2'],
  })
})

test('rejects unknown top-level fields by name', () => {
  assertInvalid(`${ROLE}status: {}\n`, {
    document: 1,
    field: 'status',
    includes: ['(Role "reader")', 'unknown field "status"', 'apiVersion, kind, metadata, spec'],
  })
})

test('rejects invalid metadata names', () => {
  const cases: [string, string][] = [
    ['Reader', '"Reader"'],
    ['-reader', '"-reader"'],
    ['reader-', '"reader-"'],
    ['read_er', '"read_er"'],
    ['a'.repeat(64), `"${'a'.repeat(64)}"`],
    ['Ä', '"Ä"'],
  ]
  for (const [name, shown] of cases) {
    assertInvalid(ROLE.replace('name: reader', `name: ${name}`), {
      document: 1,
      field: 'metadata.name',
      includes: [`invalid name ${shown}`, 'lowercase letters', 'line 4'],
    })
  }
  assertInvalid(ROLE.replace('name: reader', 'name: 5'), {
    document: 1,
    field: 'metadata.name',
    includes: ['expected a string, got the number 5'],
  })
  assertInvalid(ROLE.replace('  name: reader', '  labels: {}'), {
    document: 1,
    field: 'metadata.name',
    includes: ['missing required field'],
  })
})

test('accepts a 63-character name', () => {
  const name = 'a'.repeat(63)
  assert.equal(
    parseManifests(ROLE.replace('name: reader', `name: ${name}`), 'r.yaml')[0]?.metadata.name,
    name,
  )
})

test('rejects unknown metadata fields', () => {
  assertInvalid(ROLE.replace('  name: reader', '  name: reader\n  namespace: default'), {
    document: 1,
    field: 'metadata.namespace',
    includes: ['unknown field "namespace"', 'name, labels'],
  })
})

test('rejects labels that are not strings', () => {
  assertInvalid(SERVERS.replace('env: dev,', 'env: true,'), {
    source: 'servers.yaml',
    document: 1,
    field: 'metadata.labels.env',
    includes: ['(McpServer "files")', 'expected a string, got the boolean true', 'quote it'],
  })
  assertInvalid(SERVERS.replace('env: prod', 'env: 3'), {
    source: 'servers.yaml',
    document: 2,
    field: 'metadata.labels.env',
    includes: ['(McpServer "tracker")', 'got the number 3'],
  })
})

test('rejects invalid label keys and values', () => {
  assertInvalid(SERVERS.replace('env: dev,', "'bad key': dev,"), {
    source: 'servers.yaml',
    document: 1,
    field: 'metadata.labels["bad key"]',
    includes: ['invalid label key "bad key"'],
  })
  assertInvalid(SERVERS.replace('env: dev,', "env: '*',"), {
    source: 'servers.yaml',
    document: 1,
    field: 'metadata.labels.env',
    includes: ['invalid label value "*"'],
  })
})

test('rejects a missing spec', () => {
  assertInvalid(`${HEADER}\nkind: Bot\nmetadata: { name: ci }\n`, {
    document: 1,
    field: 'spec',
    includes: ['(Bot "ci")', 'missing required field', 'Bot'],
  })
})

test('rejects unknown spec fields by name', () => {
  assertInvalid(role('  maxTTL: 1h'), {
    document: 1,
    field: 'spec.maxTTL',
    includes: ['unknown field "maxTTL"', 'description, maxTtl, allow, deny'],
  })
  assertInvalid(role('  deny:\n    resource: ["*"]'), {
    document: 1,
    field: 'spec.deny.resource',
    includes: ['unknown field "resource"', 'mcpServers, tools, resources, prompts)'],
  })
})

test('rejects an invalid tool regex with field index', () => {
  const text = `${ROLE}---\n${role("  allow:\n    mcpServers: { '*': '*' }\n    tools: [read_file, '^foo($']", 'writer')}`
  assertInvalid(text, {
    document: 2,
    field: 'spec.allow.tools[1]',
    includes: [
      'roles.yaml, document 2 (Role "writer")',
      'invalid regular expression "^foo($"',
      'missing closing )',
      'line 19',
    ],
  })
})

test('rejects half-anchored and empty tool patterns', () => {
  assertInvalid(role('  deny:\n    tools: [write_*, ^delete_]'), {
    document: 1,
    field: 'spec.deny.tools[1]',
    includes: ['"^delete_"', 'must start with ^ and end with $'],
  })
  assertInvalid(role("  deny:\n    tools: ['']"), {
    document: 1,
    field: 'spec.deny.tools[0]',
    includes: ['expected a non-empty string'],
  })
  assertInvalid(role('  deny:\n    tools: write_*'), {
    document: 1,
    field: 'spec.deny.tools',
    includes: ['expected a list of strings'],
  })
})

test('rejects invalid role durations', () => {
  assertInvalid(role('  maxTtl: 1x'), {
    document: 1,
    field: 'spec.maxTtl',
    includes: ['invalid duration "1x"', 'such as 10m'],
  })
  assertInvalid(role('  maxTtl: 60'), {
    document: 1,
    field: 'spec.maxTtl',
    includes: ['expected a string, got the number 60'],
  })
})

test('rejects invalid server selectors', () => {
  assertInvalid(role("  allow:\n    mcpServers: { '*': dev }"), {
    document: 1,
    field: 'spec.allow.mcpServers',
    includes: ['"*": "dev"', 'needs the value *'],
  })
  assertInvalid(role('  allow:\n    mcpServers: {}'), {
    document: 1,
    field: 'spec.allow.mcpServers',
    includes: ['empty label selector'],
  })
  assertInvalid(role('  deny:\n    mcpServers: { env: [dev] }'), {
    document: 1,
    field: 'spec.deny.mcpServers.env',
    includes: ['expected a string, got a list'],
  })
})

test('rejects allowed tools without servers', () => {
  assertInvalid(role('  allow:\n    tools: [read_file]'), {
    document: 1,
    field: 'spec.allow.mcpServers',
    includes: ['allow.tools needs allow.mcpServers'],
  })
})

test('rejects duplicate kind and name in one file', () => {
  assertInvalid(`${ROLE}---\n${SERVERS}---\n${ROLE}`, {
    document: 4,
    field: 'metadata.name',
    includes: [
      '(Role "reader")',
      'duplicate Role "reader", already defined in roles.yaml, document 1',
    ],
  })
})

test('allows the same name for different kinds', () => {
  const bot = `${HEADER}\nkind: Bot\nmetadata: { name: reader }\nspec: { roles: [reader] }\n`
  assert.equal(parseManifests(`${ROLE}---\n${bot}`, 'r.yaml').length, 2)
})

test('numbers items of a list document', () => {
  const list = [
    { apiVersion: 'writ.dev/v1alpha1', kind: 'Role', metadata: { name: 'a' }, spec: {} },
    { apiVersion: 'writ.dev/v1alpha1', kind: 'Role', metadata: { name: 'b' }, spec: { x: 1 } },
  ]
  assertInvalid(JSON.stringify(list, null, 2), {
    source: 'roles.json',
    document: 1,
    field: 'spec.x',
    includes: ['roles.json, document 1, item 2 (Role "b")', 'unknown field "x"', 'line 17'],
  })
})

test('rejects invalid bots', () => {
  const bot = (spec: string) => `${HEADER}\nkind: Bot\nmetadata: { name: ci }\nspec: ${spec}\n`
  assertInvalid(bot('{}'), {
    document: 1,
    field: 'spec.roles',
    includes: ['missing required field'],
  })
  assertInvalid(bot('{ roles: [] }'), {
    document: 1,
    field: 'spec.roles',
    includes: ['expected a non-empty list of role names'],
  })
  assertInvalid(bot('{ roles: [Reader] }'), {
    document: 1,
    field: 'spec.roles[0]',
    includes: ['invalid name "Reader"'],
  })
  assertInvalid(bot('{ roles: [reader], ttl: forever }'), {
    document: 1,
    field: 'spec.ttl',
    includes: ['invalid duration "forever"'],
  })
  assertInvalid(bot('{ roles: [reader], owner: me }'), {
    document: 1,
    field: 'spec.owner',
    includes: ['unknown field "owner"', 'roles, ttl, description'],
  })
})

test('rejects invalid join tokens', () => {
  const base = '  bot: ci-agent\n  method: token\n'
  const expires = "  expires: '2030-01-01T00:00:00Z'\n"
  const hash = `  tokenHash: ${HASH}\n`
  const cases: [string, string, string[]][] = [
    [`  method: token\n${expires}${hash}`, 'spec.bot', ['missing required field']],
    [`  bot: ci-agent\n${expires}${hash}`, 'spec.method', ['missing required field']],
    [
      `  bot: ci-agent\n  method: cloud\n${expires}${hash}`,
      'spec.method',
      ['unknown join method "cloud" (supported: token, kubernetes)'],
    ],
    [`${base}${hash}`, 'spec', ['missing expires or ttl']],
    [`${base}${expires}  ttl: 1h\n${hash}`, 'spec', ['set exactly one of expires and ttl']],
    [
      `${base}  expires: tomorrow\n${hash}`,
      'spec.expires',
      ['invalid time "tomorrow"', 'ISO 8601'],
    ],
    [`${base}  expires: '2030-13-01T00:00:00Z'\n${hash}`, 'spec.expires', ['invalid time']],
    [`${base}  ttl: 0s\n${hash}`, 'spec.ttl', ['invalid duration "0s"']],
    [`${base}${expires}`, 'spec', ['missing token or tokenHash']],
    [
      `${base}${expires}${hash}  token: correct-horse-battery\n`,
      'spec',
      ['set exactly one of token and tokenHash'],
    ],
    [`${base}${expires}  token: short\n`, 'spec.token', ['5 characters long', 'at least 16']],
    [
      `${base}${expires}  tokenHash: ${'A'.repeat(64)}\n`,
      'spec.tokenHash',
      ['invalid token hash', '64 lowercase hex'],
    ],
    [`${base}${expires}  tokenHash: abc\n`, 'spec.tokenHash', ['invalid token hash "abc"']],
    [
      `${base}${expires}${hash}  usedAt: '2030-01-01T00:00:00Z'\n`,
      'spec.usedAt',
      ['unknown field "usedAt"'],
    ],
  ]
  for (const [spec, field, includes] of cases) {
    assertInvalid(joinToken(spec.trimEnd()), {
      source: 'tokens.yaml',
      document: 1,
      field,
      includes,
    })
  }
})

test('timestamps from YAML 1.1 must be quoted', () => {
  const text = `%YAML 1.1\n---\n${joinToken(`  bot: ci-agent\n  method: token\n  expires: 2030-01-01\n  tokenHash: ${HASH}`)}`
  assertInvalid(text, {
    source: 'tokens.yaml',
    document: 1,
    field: 'spec.expires',
    includes: ['got a timestamp', 'quote it'],
  })
})

test('rejects invalid MCP servers', () => {
  const cases: [string, string, string[]][] = [
    ['  description: x', 'spec', ['missing stdio or http']],
    [
      '  stdio: { command: a }\n  http: { url: "https://h/" }',
      'spec',
      ['set exactly one of stdio and http'],
    ],
    [
      '  sse: { url: "https://h/" }',
      'spec.sse',
      ['unknown field "sse"', 'description, startupTimeout, timeout, limits', 'stdio, http'],
    ],
    ['  stdio: { args: [x] }', 'spec.stdio.command', ['missing required field']],
    ['  stdio: { command: "" }', 'spec.stdio.command', ['expected a non-empty string']],
    [
      '  stdio: { command: "${env:CMD}" }',
      'spec.stdio.command',
      ['resolved only in args, env, url and headers'],
    ],
    ['  stdio: { command: a, cwd: "${file:/x}" }', 'spec.stdio.cwd', ['resolved only in']],
    ['  stdio: { command: a, args: [1] }', 'spec.stdio.args[0]', ['got the number 1']],
    [
      '  stdio: { command: a, args: ["${foo:x}"] }',
      'spec.stdio.args[0]',
      ['invalid reference "${foo:x}"', 'unknown scheme "foo"'],
    ],
    [
      '  stdio: { command: a, env: { X: "${env:1A}" } }',
      'spec.stdio.env.X',
      ['invalid reference "${env:1A}"'],
    ],
    [
      '  stdio: { command: a, env: { X: "${env:A" } }',
      'spec.stdio.env.X',
      ['unterminated reference'],
    ],
    ['  stdio: { command: a, env: { X: 1 } }', 'spec.stdio.env.X', ['got the number 1']],
    [
      '  stdio: { command: a, env: { "A=B": x } }',
      'spec.stdio.env',
      ['invalid environment variable name "A=B"'],
    ],
    [
      '  stdio: { command: a, user: root }',
      'spec.stdio.user',
      ['unknown field "user"', 'command, args, env, cwd'],
    ],
    ['  http: { url: "ftp://h/x" }', 'spec.http.url', ['invalid URL "ftp://h/x"', 'http or https']],
    ['  http: { url: "not a url" }', 'spec.http.url', ['invalid URL "not a url"']],
    ['  http: { url: "file://${env:P}" }', 'spec.http.url', ['invalid URL']],
    [
      '  http: { url: "https://h/", headers: { "Bad Header": x } }',
      'spec.http.headers',
      ['invalid HTTP header name "Bad Header"'],
    ],
    [
      '  http: { url: "https://h/", headers: { X: "${nope}" } }',
      'spec.http.headers.X',
      ['invalid reference "${nope}"', 'no scheme'],
    ],
    [
      '  http: { url: "https://h/", headers: { X: "a\\r\\nb" } }',
      'spec.http.headers.X',
      ['line break'],
    ],
    [
      '  http: { url: "https://h/" }\n  startupTimeout: soon',
      'spec.startupTimeout',
      ['invalid duration "soon"'],
    ],
  ]
  for (const [spec, field, includes] of cases) {
    assertInvalid(server(spec), { source: 'servers.yaml', document: 1, field, includes })
  }
})

test('accepts references and escapes in server specs', () => {
  const text = server(
    '  http:\n    url: "${env:TRACKER_URL}"\n    headers: { X-Literal: "$${not-a-reference}" }',
  )
  assert.equal(parseManifests(text, 's.yaml').length, 1)
  const withPath = server('  http: { url: "https://h.example/${env:TENANT}/mcp" }')
  assert.equal(parseManifests(withPath, 's.yaml').length, 1)
})

test('normalizeJoinToken hashes the token and sets expires', () => {
  const [resource] = parseManifests(
    joinToken('  bot: ci-agent\n  method: token\n  ttl: 1h30m\n  token: correct-horse-battery'),
    'tokens.yaml',
  )
  assert.ok(resource)
  const now = Date.parse('2030-01-01T00:00:00Z')
  const normalized = normalizeJoinToken(resource, now)
  assert.deepEqual(normalized.spec, {
    bot: 'ci-agent',
    method: 'token',
    expires: '2030-01-01T01:30:00.000Z',
    tokenHash: createHash('sha256').update('correct-horse-battery').digest('hex'),
  })
  assert.equal(JSON.stringify(normalized).includes('correct-horse-battery'), false)
  assert.equal(resource.spec.token, 'correct-horse-battery', 'the input is not modified')
})

test('normalizeJoinToken keeps expires and tokenHash', () => {
  const spec = {
    bot: 'ci-agent',
    method: 'token',
    expires: '2030-01-01T00:00:00Z',
    tokenHash: HASH,
  }
  const resource = {
    apiVersion: 'writ.dev/v1alpha1' as const,
    kind: 'JoinToken' as const,
    metadata: { name: 't' },
    spec,
  }
  assert.deepEqual(normalizeJoinToken(resource, 0).spec, spec)
})

test('normalizeJoinToken leaves other kinds alone', () => {
  const [resource] = parseManifests(ROLE, 'roles.yaml')
  assert.ok(resource)
  assert.equal(normalizeJoinToken(resource), resource)
})

test('readManifestFile reads a file', () => {
  const dir = mkdtempSync(join(tmpdir(), 'writ-manifest-'))
  try {
    const path = join(dir, 'roles.yaml')
    writeFileSync(path, ROLE)
    assert.deepEqual(readManifestFile(path), { text: ROLE, source: path })
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})

test('readManifestFile names a missing path', () => {
  const dir = mkdtempSync(join(tmpdir(), 'writ-manifest-'))
  try {
    const path = join(dir, 'missing.yaml')
    assert.throws(
      () => readManifestFile(path),
      (error: unknown) => {
        assert.ok(isWritError(error, 'manifest.read_failed'), String(error))
        assert.ok(error.message.includes(`"${path}"`), error.message)
        assert.match(error.message, /ENOENT/)
        assert.equal(error.fields.path, path)
        return true
      },
    )
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})
