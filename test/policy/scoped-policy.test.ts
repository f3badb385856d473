import assert from 'node:assert/strict'
import { test } from 'node:test'
import { isWritError } from '../../src/errors.js'
import type { WritClaims } from '../../src/identity/types.js'
import { compileArgRule } from '../../src/policy/arg-rules.js'
import { parseManifests } from '../../src/policy/manifest.js'
import { compilePolicy } from '../../src/policy/policy.js'

const MANIFESTS = `
apiVersion: writ.dev/v1alpha1
kind: McpServer
metadata: { name: files, labels: { env: dev } }
spec: { stdio: { command: files-server } }
---
apiVersion: writ.dev/v1alpha1
kind: McpServer
metadata: { name: tracker, labels: { env: prod } }
spec: { stdio: { command: tracker-server } }
---
apiVersion: writ.dev/v1alpha1
kind: Role
metadata: { name: writer }
spec:
  allow:
    mcpServers: { env: dev }
    tools: ['write_file', 'read_file', 'fetch_url', 'send_mail', 'whoami']
    args:
      - tools: ['write_file', 'read_*']
        rule: "isWithin(args.path, '/workspace')"
      - tools: ['fetch_url']
        rule: "hostIn(args.url, ['example.com'])"
      - tools: ['send_mail']
        rule: "emailDomainIn(args.to, ['example.com']) && size(args.body) < 100"
    resources: ['file:///workspace/*', '^secret://public/.*$']
    prompts: ['summarize', 'review_*']
  deny:
    resources: ['file:///workspace/private/*']
    prompts: ['review_secrets']
---
apiVersion: writ.dev/v1alpha1
kind: Role
metadata: { name: broad }
spec:
  allow:
    mcpServers: { '*': '*' }
    tools: ['*']
---
apiVersion: writ.dev/v1alpha1
kind: Role
metadata: { name: team }
spec:
  allow:
    mcpServers: { env: dev }
    tools: ['whoami']
    args:
      - tools: ['whoami']
        rule: "args.team in principal.traits.team && principal.spiffeId.startsWith('spiffe://writ.test/')"
---
apiVersion: writ.dev/v1alpha1
kind: Role
metadata: { name: tools-only }
spec:
  allow:
    mcpServers: { '*': '*' }
    tools: ['*']
`

const policy = compilePolicy(
  parseManifests(MANIFESTS, 'scoped.yaml').filter((r) => r.kind === 'Role'),
  parseManifests(MANIFESTS, 'scoped.yaml').filter((r) => r.kind === 'McpServer'),
)

function claims(roles: string[], extra: Partial<WritClaims> = {}): WritClaims {
  return {
    version: 1,
    kind: 'bot',
    roles,
    traits: {},
    depth: 0,
    generation: 1,
    accessRequests: [],
    ...extra,
  }
}

function caller(roles: string[], extra: Partial<WritClaims> = {}) {
  return { spiffeId: 'spiffe://writ.test/bot/ci', claims: claims(roles, extra) }
}

test('argument rule allows a path inside the directory', () => {
  const decision = policy.decideArguments(caller(['writer']), 'files', 'write_file', {
    path: '/workspace/a.txt',
  })
  assert.equal(decision.effect, 'allow')
})

test('argument rule denies a traversal with its rule name', () => {
  const decision = policy.decideArguments(caller(['writer']), 'files', 'write_file', {
    path: '/workspace/../etc/passwd',
  })
  assert.equal(decision.effect, 'deny')
  assert.equal(decision.denial, 'forbidden')
  assert.equal(decision.rule, 'role/writer/allow/args[0]')
  assert.match(decision.reason, /isWithin\(args\.path, '\/workspace'\)/)
})

test('argument rule denies a missing argument', () => {
  const decision = policy.decideArguments(caller(['writer']), 'files', 'read_file', {})
  assert.equal(decision.effect, 'deny')
  assert.equal(decision.rule, 'role/writer/allow/args[0]')
  assert.match(decision.reason, /evaluation failed/)
})

test('argument rule denies arguments that are not an object', () => {
  for (const args of [['/workspace/a'], '/workspace/a', null, 7]) {
    const decision = policy.decideArguments(caller(['writer']), 'files', 'write_file', args)
    assert.equal(decision.effect, 'deny', JSON.stringify(args))
    assert.equal(decision.rule, 'role/writer/allow/args[0]', JSON.stringify(args))
  }
})

test('argument rules check hosts and mail domains', () => {
  const allowed = policy.decideArguments(caller(['writer']), 'files', 'fetch_url', {
    url: 'https://api.example.com/x',
  })
  assert.equal(allowed.effect, 'allow')
  const tricked = policy.decideArguments(caller(['writer']), 'files', 'fetch_url', {
    url: 'https://example.com@evil.net/',
  })
  assert.equal(tricked.rule, 'role/writer/allow/args[1]')
  const mail = policy.decideArguments(caller(['writer']), 'files', 'send_mail', {
    to: 'dev@example.com',
    body: 'hi',
  })
  assert.equal(mail.effect, 'allow')
  const outside = policy.decideArguments(caller(['writer']), 'files', 'send_mail', {
    to: 'dev@evil.net',
    body: 'hi',
  })
  assert.equal(outside.rule, 'role/writer/allow/args[2]')
})

test('broader role does not lift an argument rule', () => {
  const decision = policy.decideArguments(caller(['broad', 'writer']), 'files', 'write_file', {
    path: '/etc/passwd',
  })
  assert.equal(decision.effect, 'deny')
  assert.equal(decision.rule, 'role/writer/allow/args[0]')
})

test('argument rule applies only on servers its role selects', () => {
  const decision = policy.decideArguments(caller(['broad', 'writer']), 'tracker', 'write_file', {
    path: '/etc/passwd',
  })
  assert.equal(decision.effect, 'allow')
})

test('argument decision keeps the tool decision', () => {
  const decision = policy.decideArguments(caller(['writer']), 'files', 'delete_file', {})
  assert.equal(decision.effect, 'deny')
  assert.equal(decision.rule, 'default-deny')
})

test('rules read identity from the certificate only', () => {
  const team = caller(['team'], { traits: { team: ['red'] } })
  assert.equal(policy.decideArguments(team, 'files', 'whoami', { team: 'red' }).effect, 'allow')
  assert.equal(policy.decideArguments(team, 'files', 'whoami', { team: 'blue' }).effect, 'deny')
  // Arguments that claim a role or identity change nothing: only the certificate counts.
  const claiming = {
    path: '/etc/passwd',
    role: 'admin',
    roles: ['broad'],
    principal: { roles: ['broad'] },
    _meta: { roles: ['broad'], spiffeId: 'spiffe://writ.test/user/admin' },
  }
  const decision = policy.decideArguments(caller(['writer']), 'files', 'write_file', claiming)
  assert.equal(decision.effect, 'deny')
  assert.equal(decision.rule, 'role/writer/allow/args[0]')
  assert.equal(policy.decideTool(claims(['writer']), 'files', 'delete_file').effect, 'deny')
})

const RESOURCES: Array<[string[], string, string, 'allow' | 'deny', string]> = [
  [['writer'], 'files', 'file:///workspace/notes.txt', 'allow', 'role/writer/allow/resources[0]'],
  [['writer'], 'files', 'secret://public/motd', 'allow', 'role/writer/allow/resources[1]'],
  [['writer'], 'files', 'file:///workspace/private/key', 'deny', 'role/writer/deny/resources[0]'],
  [['writer'], 'files', 'file:///etc/passwd', 'deny', 'default-deny'],
  [['writer'], 'files', 'file:///workspace/../etc/passwd', 'deny', 'unsafe-uri'],
  [['writer'], 'files', 'file:///workspace/%2e%2e/etc/passwd', 'deny', 'unsafe-uri'],
  [['writer'], 'tracker', 'file:///workspace/notes.txt', 'deny', 'default-deny'],
  [['tools-only'], 'files', 'file:///workspace/notes.txt', 'deny', 'default-deny'],
  [
    ['broad', 'writer'],
    'files',
    'file:///workspace/private/key',
    'deny',
    'role/writer/deny/resources[0]',
  ],
]

for (const [roles, server, uri, effect, rule] of RESOURCES) {
  test(`decideResource ${effect}s ${uri} on ${server} for [${roles}]`, () => {
    const decision = policy.decideResource(claims(roles), server, uri)
    assert.equal(decision.effect, effect)
    assert.equal(decision.rule, rule)
  })
}

const PROMPTS: Array<[string[], string, 'allow' | 'deny', string]> = [
  [['writer'], 'summarize', 'allow', 'role/writer/allow/prompts[0]'],
  [['writer'], 'review_code', 'allow', 'role/writer/allow/prompts[1]'],
  [['writer'], 'review_secrets', 'deny', 'role/writer/deny/prompts[0]'],
  [['writer'], 'steal_credentials', 'deny', 'default-deny'],
  [['tools-only'], 'summarize', 'deny', 'default-deny'],
  [['writer'], '', 'deny', 'default-deny'],
]

for (const [roles, name, effect, rule] of PROMPTS) {
  test(`decidePrompt ${effect}s ${name || '(empty)'} for [${roles}]`, () => {
    const decision = policy.decidePrompt(claims(roles), 'files', name)
    assert.equal(decision.effect, effect)
    assert.equal(decision.rule, rule)
  })
}

test('task limited to tools gets no resources', () => {
  const task = claims(['writer'], { task: { id: 't1', reason: 'fix', tools: ['read_file'] } })
  const decision = policy.decideResource(task, 'files', 'file:///workspace/notes.txt')
  assert.equal(decision.effect, 'deny')
  assert.equal(decision.rule, 'task/tools')
})

/** Parses a role with one `allow.args` entry and returns the manifest.invalid error. */
function invalidRoleError(args: string): Error {
  const text = `apiVersion: writ.dev/v1alpha1
kind: Role
metadata: { name: bad }
spec:
  allow:
    mcpServers: { '*': '*' }
    tools: ['*']
    args:
${args}
`
  try {
    parseManifests(text, 'bad.yaml')
  } catch (error) {
    assert.ok(isWritError(error, 'manifest.invalid'), String(error))
    return error as Error
  }
  assert.fail('the manifest was accepted')
}

const INVALID_RULES: Array<[string, string, RegExp]> = [
  [
    "      - { tools: ['*'], rule: 'isWithin(args.path, ' }",
    'spec.allow.args[0].rule',
    /invalid argument rule "isWithin\(args\.path, "/,
  ],
  [
    "      - { tools: ['*'], rule: 'request.path == \"/x\"' }",
    'spec.allow.args[0].rule',
    /Unknown variable: request/,
  ],
  ["      - { tools: ['*'], rule: 'readFile(args.path)' }", 'spec.allow.args[0].rule', /readFile/],
  [
    "      - { tools: ['*'], rule: 'isWithin(args.path, 1)' }",
    'spec.allow.args[0].rule',
    /isWithin/,
  ],
  [
    "      - { tools: ['*'], rule: \"'yes'\" }",
    'spec.allow.args[0].rule',
    /returns string, expected a bool/,
  ],
  ["      - { tools: ['*'], rule: ' ' }", 'spec.allow.args[0].rule', /the rule is empty/],
  ["      - { tools: ['^bad('], rule: 'true' }", 'spec.allow.args[0].tools[0]', /\^bad\(/],
  [
    "      - { tools: [], rule: 'true' }",
    'spec.allow.args[0].tools',
    /at least one tool name pattern/,
  ],
  ["      - { tools: ['*'] }", 'spec.allow.args[0].rule', /missing required field/],
  [
    "      - { tools: ['*'], rule: 'true', when: x }",
    'spec.allow.args[0].when',
    /unknown field "when"/,
  ],
  ['      - rule', 'spec.allow.args[0]', /expected a mapping/],
]

for (const [args, field, message] of INVALID_RULES) {
  test(`reject argument rule at ${field}: ${args.trim().slice(2, 60)}`, () => {
    const error = invalidRoleError(args)
    assert.match(error.message, /^bad\.yaml, document 1 \(Role "bad"\)/)
    assert.ok(error.message.includes(`${field}: `), error.message)
    assert.match(error.message, message)
  })
}

test('reject argument rules in a deny block', () => {
  const text = `apiVersion: writ.dev/v1alpha1
kind: Role
metadata: { name: bad }
spec:
  deny:
    args: [{ tools: ['*'], rule: 'true' }]
`
  assert.throws(
    () => parseManifests(text, 'bad.yaml'),
    (error: Error) =>
      isWritError(error, 'manifest.invalid') &&
      /spec\.deny\.args: unknown field "args"/.test(error.message),
  )
})

test('reject resources without a server selector', () => {
  const text = `apiVersion: writ.dev/v1alpha1
kind: Role
metadata: { name: bad }
spec:
  allow:
    resources: ['file:///*']
`
  assert.throws(
    () => parseManifests(text, 'bad.yaml'),
    (error: Error) =>
      isWritError(error, 'manifest.invalid') &&
      /spec\.allow\.mcpServers: missing required field: allow\.resources needs/.test(error.message),
  )
})

test('reject invalid resource and prompt patterns', () => {
  for (const field of ['resources', 'prompts']) {
    const text = `apiVersion: writ.dev/v1alpha1
kind: Role
metadata: { name: bad }
spec:
  allow:
    mcpServers: { '*': '*' }
    ${field}: ['ok', '^broken']
`
    assert.throws(
      () => parseManifests(text, 'bad.yaml'),
      (error: Error) =>
        isWritError(error, 'manifest.invalid') &&
        error.message.includes(`spec.allow.${field}[1]: invalid name pattern "^broken"`),
      field,
    )
  }
})

test('compileArgRule rejects an unknown variable with its code', () => {
  assert.throws(
    () => compileArgRule('env.HOME == "/root"'),
    (error: Error) =>
      isWritError(error, 'policy.invalid_arg_rule') &&
      error.message.includes('"env.HOME == \\"/root\\""'),
  )
})

test('compileArgRule rejects an overlong rule', () => {
  assert.throws(
    () => compileArgRule(`true${' && true'.repeat(1000)}`),
    (error: Error) =>
      isWritError(error, 'policy.invalid_arg_rule') && /at most 4096/.test(error.message),
  )
})

test('stored role with invalid rule fails to compile', () => {
  const stored = {
    apiVersion: 'writ.dev/v1alpha1' as const,
    kind: 'Role' as const,
    metadata: { name: 'stale' },
    spec: {
      allow: {
        mcpServers: { '*': '*' },
        tools: ['*'],
        args: [{ tools: ['*'], rule: 'secrets.token != ""' }],
      },
    },
  }
  assert.throws(
    () => compilePolicy([stored], []),
    (error: Error) =>
      isWritError(error, 'policy.invalid_role') &&
      error.message.startsWith('role "stale": spec.allow.args[0].rule: invalid argument rule'),
  )
})
