// biome-ignore-all lint/suspicious/noTemplateCurlyInString: these strings are secret references, not templates
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { isWritError } from '../../src/errors.js'
import { parseReferences, type ReadTextFile, resolveServerSpec } from '../../src/policy/secrets.js'
import type { McpServerSpec } from '../../src/policy/specs.js'

const FILES: Record<string, string> = {
  '/run/secrets/api-key': 'file-secret-value\n',
  '/run/secrets/crlf': 'windows-secret\r\n',
  '/run/secrets/two-lines': 'line one\nline two\n\n',
}

const readFake: ReadTextFile = (path) => {
  const content = FILES[path]
  if (content === undefined) {
    throw Object.assign(new Error(`ENOENT: no such file or directory, open '${path}'`), {
      code: 'ENOENT',
    })
  }
  return content
}

const ENV = { TRACKER_TOKEN: 'env-secret-token', LOG_LEVEL: 'debug', EMPTY: '' }

function assertUnresolved(
  spec: McpServerSpec,
  reference: string,
  field: string,
  detail: string,
): void {
  assert.throws(
    () => resolveServerSpec(spec, ENV, readFake, 'tracker'),
    (error: unknown) => {
      assert.ok(isWritError(error, 'secrets.unresolved'), String(error))
      assert.ok(error.message.includes('MCP server "tracker"'), error.message)
      assert.ok(error.message.includes(reference), error.message)
      assert.ok(error.message.includes(field), error.message)
      assert.ok(error.message.includes(detail), error.message)
      assert.equal(error.fields.reference, reference)
      assert.equal(error.fields.server, 'tracker')
      return true
    },
  )
}

test('resolves stdio args and env', () => {
  const spec: McpServerSpec = {
    description: 'files',
    startupTimeout: '20s',
    stdio: {
      command: 'server',
      args: ['--key', '${file:/run/secrets/api-key}', '--plain', '$${HOME}'],
      env: { TOKEN: 'Bearer ${env:TRACKER_TOKEN}', LEVEL: 'info' },
      cwd: '/srv',
    },
  }
  const resolved = resolveServerSpec(spec, ENV, readFake)
  assert.deepEqual(resolved.spec, {
    stdio: {
      command: 'server',
      args: ['--key', 'file-secret-value', '--plain', '${HOME}'],
      env: { TOKEN: 'Bearer env-secret-token', LEVEL: 'info' },
      cwd: '/srv',
    },
    startupTimeoutMs: 20_000,
  })
  assert.deepEqual(resolved.secrets.sort(), ['env-secret-token', 'file-secret-value'])
})

test('resolves http url and headers', () => {
  const spec: McpServerSpec = {
    http: {
      url: 'https://tracker.example.com/mcp?key=${file:/run/secrets/crlf}',
      headers: { Authorization: 'Bearer ${env:TRACKER_TOKEN}', 'X-Level': '${env:LOG_LEVEL}' },
    },
  }
  const resolved = resolveServerSpec(spec, ENV, readFake, 'tracker')
  assert.deepEqual(resolved.spec, {
    http: {
      url: 'https://tracker.example.com/mcp?key=windows-secret',
      headers: { Authorization: 'Bearer env-secret-token', 'X-Level': 'debug' },
    },
  })
  assert.deepEqual(resolved.secrets.sort(), ['debug', 'env-secret-token', 'windows-secret'])
})

test('keeps inner line breaks of a file', () => {
  const spec: McpServerSpec = { stdio: { command: 'x', args: ['${file:/run/secrets/two-lines}'] } }
  const resolved = resolveServerSpec(spec, ENV, readFake)
  assert.deepEqual(resolved.spec.stdio?.args, ['line one\nline two\n'])
  assert.deepEqual(resolved.secrets, ['line one\nline two\n'])
})

test('lists each secret once and skips empty values', () => {
  const spec: McpServerSpec = {
    stdio: { command: 'x', args: ['${env:TRACKER_TOKEN}', '${env:TRACKER_TOKEN}', '${env:EMPTY}'] },
  }
  const resolved = resolveServerSpec(spec, ENV, readFake)
  assert.deepEqual(resolved.spec.stdio?.args, ['env-secret-token', 'env-secret-token', ''])
  assert.deepEqual(resolved.secrets, ['env-secret-token'])
})

test('leaves specs without references alone', () => {
  const spec: McpServerSpec = { stdio: { command: 'npx', args: ['-y', 'pkg'], env: { A: 'b' } } }
  assert.deepEqual(resolveServerSpec(spec, {}, readFake), {
    spec: { stdio: { command: 'npx', args: ['-y', 'pkg'], env: { A: 'b' } } },
    secrets: [],
  })
})

test('missing variable names the reference', () => {
  assertUnresolved(
    {
      http: {
        url: 'https://h.example/',
        headers: { Authorization: 'Bearer ${env:MISSING_TOKEN}' },
      },
    },
    '${env:MISSING_TOKEN}',
    'http.headers.Authorization',
    'environment variable MISSING_TOKEN is not set',
  )
  assertUnresolved(
    { stdio: { command: 'x', env: { KEY: '${env:NOPE}' } } },
    '${env:NOPE}',
    'stdio.env.KEY',
    'is not set',
  )
})

test('missing file names the path', () => {
  assertUnresolved(
    { stdio: { command: 'x', args: ['a', '${file:/run/secrets/absent}'] } },
    '${file:/run/secrets/absent}',
    'stdio.args[1]',
    'file /run/secrets/absent cannot be read (ENOENT)',
  )
})

test('errors never contain resolved values', () => {
  const spec: McpServerSpec = {
    http: { url: 'https://h.example/', headers: { A: '${env:TRACKER_TOKEN}', B: '${env:ABSENT}' } },
  }
  assert.throws(
    () => resolveServerSpec(spec, ENV, readFake, 'tracker'),
    (error: unknown) => {
      assert.ok(isWritError(error, 'secrets.unresolved'), String(error))
      assert.equal(error.message.includes('env-secret-token'), false)
      assert.equal(JSON.stringify(error.fields).includes('env-secret-token'), false)
      return true
    },
  )
})

test('resolved url must be http', () => {
  const spec: McpServerSpec = { http: { url: '${env:TRACKER_TOKEN}' } }
  assert.throws(
    () => resolveServerSpec(spec, ENV, readFake, 'tracker'),
    (error: unknown) => {
      assert.ok(isWritError(error, 'secrets.invalid_url'), String(error))
      assert.match(error.message, /MCP server "tracker": http\.url is not an http or https URL/)
      assert.equal(error.message.includes('env-secret-token'), false)
      return true
    },
  )
})

test('unknown scheme is an error', () => {
  const spec: McpServerSpec = { stdio: { command: 'x', args: ['${vault:kv/token}'] } }
  assert.throws(
    () => resolveServerSpec(spec, ENV, readFake, 'files'),
    (error: unknown) => {
      assert.ok(isWritError(error, 'secrets.invalid_reference'), String(error))
      assert.match(
        error.message,
        /invalid reference "\$\{vault:kv\/token\}": unknown scheme "vault"/,
      )
      assert.equal(error.fields.reference, '${vault:kv/token}')
      return true
    },
  )
})

test('parseReferences splits text and references', () => {
  assert.deepEqual(parseReferences('Bearer ${env:TOKEN}!'), [
    { text: 'Bearer ' },
    { scheme: 'env', target: 'TOKEN', reference: '${env:TOKEN}' },
    { text: '!' },
  ])
  assert.deepEqual(parseReferences('${file:/a b/c}'), [
    { scheme: 'file', target: '/a b/c', reference: '${file:/a b/c}' },
  ])
  assert.deepEqual(parseReferences('$${env:X} costs $5 {x}'), [{ text: '${env:X} costs $5 {x}' }])
  assert.deepEqual(parseReferences(''), [])
})

test('parseReferences rejects malformed references', () => {
  const cases: [string, string][] = [
    ['${env:TOKEN', 'unterminated reference'],
    ['${TOKEN}', 'no scheme'],
    ['${foo:x}', 'unknown scheme "foo"'],
    ['${env:}', 'environment variable name'],
    ['${env:A-B}', 'environment variable name'],
    ['${file:}', 'the file path is empty'],
  ]
  for (const [value, detail] of cases) {
    assert.throws(
      () => parseReferences(value),
      (error: unknown) => {
        assert.ok(isWritError(error, 'secrets.invalid_reference'), String(error))
        assert.ok(error.message.includes(detail), error.message)
        return true
      },
    )
  }
})
