import assert from 'node:assert/strict'
import { test } from 'node:test'
import { isWritError } from '../../src/errors.js'
import type { WritClaims } from '../../src/identity/types.js'
import { parseManifests } from '../../src/policy/manifest.js'
import { compilePolicy, type Policy } from '../../src/policy/policy.js'
import { API_VERSION, type Resource } from '../../src/policy/resource.js'

const MANIFESTS = `
apiVersion: writ.dev/v1alpha1
kind: McpServer
metadata: { name: files, labels: { env: dev } }
spec: { stdio: { command: files-server } }
---
apiVersion: writ.dev/v1alpha1
kind: McpServer
metadata: { name: memory, labels: { env: dev, data: personal } }
spec: { stdio: { command: memory-server } }
---
apiVersion: writ.dev/v1alpha1
kind: McpServer
metadata: { name: tracker, labels: { env: prod } }
spec: { http: { url: 'https://tracker.example.com/mcp' } }
---
apiVersion: writ.dev/v1alpha1
kind: McpServer
metadata: { name: bare }
spec: { stdio: { command: bare-server } }
---
apiVersion: writ.dev/v1alpha1
kind: Role
metadata: { name: workspace-reader }
spec:
  maxTtl: 1h
  allow:
    mcpServers: { env: dev }
    tools: ['list_*', '^search_.*$', 'read_*']
  deny:
    tools: ['write_*', read_secret]
---
apiVersion: writ.dev/v1alpha1
kind: Role
metadata: { name: tracker-writer }
spec:
  maxTtl: 30m
  allow:
    mcpServers: { env: prod }
    tools: ['*']
---
apiVersion: writ.dev/v1alpha1
kind: Role
metadata: { name: no-personal-data }
spec:
  deny:
    mcpServers: { data: '*' }
---
apiVersion: writ.dev/v1alpha1
kind: Role
metadata: { name: everything }
spec:
  maxTtl: 2h
  allow:
    mcpServers: { '*': '*' }
    tools: ['*']
---
apiVersion: writ.dev/v1alpha1
kind: Role
metadata: { name: team-tools }
spec:
  allow:
    mcpServers: { env: dev }
    tools: ['{{traits.team}}_*']
---
apiVersion: writ.dev/v1alpha1
kind: Role
metadata: { name: servers-only }
spec:
  allow:
    mcpServers: { env: dev }
`

const resources = parseManifests(MANIFESTS, 'policy.yaml')
const policy: Policy = compilePolicy(
  resources.filter((resource) => resource.kind === 'Role'),
  resources.filter((resource) => resource.kind === 'McpServer'),
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

interface ToolCase {
  roles: string[]
  server: string
  tool: string
  effect: 'allow' | 'deny'
  rule: string
  reason: string
}

const TOOL_CASES: ToolCase[] = [
  {
    roles: ['workspace-reader'],
    server: 'files',
    tool: 'read_file',
    effect: 'allow',
    rule: 'role/workspace-reader/allow/tools[2]',
    reason: 'role "workspace-reader" allows tool "read_file" on server "files" by pattern "read_*"',
  },
  {
    roles: ['workspace-reader'],
    server: 'files',
    tool: 'search_files',
    effect: 'allow',
    rule: 'role/workspace-reader/allow/tools[1]',
    reason:
      'role "workspace-reader" allows tool "search_files" on server "files" by pattern "^search_.*$"',
  },
  {
    roles: ['workspace-reader'],
    server: 'files',
    tool: 'write_file',
    effect: 'deny',
    rule: 'role/workspace-reader/deny/tools[0]',
    reason: 'role "workspace-reader" denies tool "write_file" by pattern "write_*"',
  },
  {
    roles: ['workspace-reader'],
    server: 'files',
    tool: 'read_secret',
    effect: 'deny',
    rule: 'role/workspace-reader/deny/tools[1]',
    reason: 'role "workspace-reader" denies tool "read_secret" by pattern "read_secret"',
  },
  {
    roles: ['workspace-reader'],
    server: 'files',
    tool: 'move_file',
    effect: 'deny',
    rule: 'default-deny',
    reason: 'no role of the caller allows tool "move_file" on server "files"',
  },
  {
    roles: ['workspace-reader'],
    server: 'tracker',
    tool: 'read_issue',
    effect: 'deny',
    rule: 'default-deny',
    reason: 'no role of the caller allows server "tracker"',
  },
  {
    roles: ['tracker-writer'],
    server: 'tracker',
    tool: 'write_issue',
    effect: 'allow',
    rule: 'role/tracker-writer/allow/tools[0]',
    reason: 'role "tracker-writer" allows tool "write_issue" on server "tracker" by pattern "*"',
  },
  {
    roles: ['tracker-writer', 'workspace-reader'],
    server: 'tracker',
    tool: 'write_issue',
    effect: 'deny',
    rule: 'role/workspace-reader/deny/tools[0]',
    reason: 'role "workspace-reader" denies tool "write_issue" by pattern "write_*"',
  },
  {
    roles: ['everything', 'workspace-reader'],
    server: 'files',
    tool: 'write_file',
    effect: 'deny',
    rule: 'role/workspace-reader/deny/tools[0]',
    reason: 'role "workspace-reader" denies tool "write_file" by pattern "write_*"',
  },
  {
    roles: ['everything'],
    server: 'bare',
    tool: 'anything',
    effect: 'allow',
    rule: 'role/everything/allow/tools[0]',
    reason: 'role "everything" allows tool "anything" on server "bare" by pattern "*"',
  },
  {
    roles: ['everything', 'no-personal-data'],
    server: 'memory',
    tool: 'read_graph',
    effect: 'deny',
    rule: 'role/no-personal-data/deny/mcpServers',
    reason: 'role "no-personal-data" denies server "memory"',
  },
  {
    roles: ['workspace-reader', 'tracker-writer'],
    server: 'files',
    tool: 'delete_file',
    effect: 'deny',
    rule: 'default-deny',
    reason: 'no role of the caller allows tool "delete_file" on server "files"',
  },
  {
    roles: ['servers-only'],
    server: 'files',
    tool: 'read_file',
    effect: 'deny',
    rule: 'default-deny',
    reason: 'no role of the caller allows tool "read_file" on server "files"',
  },
  {
    roles: ['ghost', 'workspace-reader'],
    server: 'files',
    tool: 'read_file',
    effect: 'allow',
    rule: 'role/workspace-reader/allow/tools[2]',
    reason: 'role "workspace-reader" allows tool "read_file" on server "files" by pattern "read_*"',
  },
  {
    roles: ['ghost'],
    server: 'files',
    tool: 'read_file',
    effect: 'deny',
    rule: 'default-deny',
    reason: 'no role of the caller allows server "files" (roles not defined: ghost)',
  },
  {
    roles: [],
    server: 'files',
    tool: 'read_file',
    effect: 'deny',
    rule: 'default-deny',
    reason: 'no role of the caller allows server "files" (the caller holds no roles)',
  },
  {
    roles: ['everything'],
    server: 'nowhere',
    tool: 'read_file',
    effect: 'deny',
    rule: 'unknown-server',
    reason: 'unknown MCP server "nowhere"',
  },
  {
    roles: ['everything'],
    server: 'files',
    tool: '',
    effect: 'deny',
    rule: 'default-deny',
    reason: 'the tool name is empty',
  },
]

for (const example of TOOL_CASES) {
  const name = `decideTool ${example.effect}s ${example.tool || '(empty)'} on ${example.server} for [${example.roles}]`
  test(name, () => {
    const decision = policy.decideTool(claims(example.roles), example.server, example.tool)
    assert.equal(decision.effect, example.effect)
    assert.equal(decision.rule, example.rule)
    assert.equal(decision.reason, example.reason)
    assert.equal(decision.denial, example.effect === 'deny' ? 'forbidden' : undefined)
  })
}

test('decideServer follows labels', () => {
  const reader = claims(['workspace-reader'])
  assert.deepEqual(policy.decideServer(reader, 'files'), {
    effect: 'allow',
    reason: 'role "workspace-reader" allows server "files"',
    rule: 'role/workspace-reader/allow/mcpServers',
  })
  assert.equal(policy.decideServer(reader, 'memory').effect, 'allow')
  assert.equal(policy.decideServer(reader, 'tracker').effect, 'deny')
  assert.equal(policy.decideServer(reader, 'bare').effect, 'deny')
})

test('decideServer deny wins across roles', () => {
  const decision = policy.decideServer(claims(['everything', 'no-personal-data']), 'memory')
  assert.equal(decision.effect, 'deny')
  assert.equal(decision.rule, 'role/no-personal-data/deny/mcpServers')
  const reversed = policy.decideServer(claims(['no-personal-data', 'everything']), 'memory')
  assert.equal(reversed.rule, 'role/no-personal-data/deny/mcpServers')
  assert.equal(
    policy.decideServer(claims(['everything', 'no-personal-data']), 'files').effect,
    'allow',
  )
})

test('decideServer rejects an unknown server', () => {
  const decision = policy.decideServer(claims(['everything']), 'ghost-server')
  assert.equal(decision.effect, 'deny')
  assert.equal(decision.rule, 'unknown-server')
  assert.match(decision.reason, /"ghost-server"/)
})

test('allowedServers lists sorted names', () => {
  assert.deepEqual(policy.allowedServers(claims(['workspace-reader'])), ['files', 'memory'])
  assert.deepEqual(policy.allowedServers(claims(['everything'])), [
    'bare',
    'files',
    'memory',
    'tracker',
  ])
  assert.deepEqual(policy.allowedServers(claims(['everything', 'no-personal-data'])), [
    'bare',
    'files',
    'tracker',
  ])
  assert.deepEqual(policy.allowedServers(claims([])), [])
})

test('maxTtlSeconds takes the smallest', () => {
  assert.equal(policy.maxTtlSeconds(['workspace-reader']), 3600)
  assert.equal(policy.maxTtlSeconds(['workspace-reader', 'tracker-writer', 'everything']), 1800)
  assert.equal(policy.maxTtlSeconds(['everything', 'no-personal-data']), 7200)
  assert.equal(policy.maxTtlSeconds(['no-personal-data', 'ghost']), undefined)
  assert.equal(policy.maxTtlSeconds([]), undefined)
})

test('roleNames lists defined roles', () => {
  assert.deepEqual(policy.roleNames(), [
    'everything',
    'no-personal-data',
    'servers-only',
    'team-tools',
    'tracker-writer',
    'workspace-reader',
  ])
})

test('trait placeholders use caller traits', () => {
  const red = claims(['team-tools'], { traits: { team: ['red', 'ops'] } })
  const allowed = policy.decideTool(red, 'files', 'red_deploy')
  assert.equal(allowed.effect, 'allow')
  assert.equal(allowed.rule, 'role/team-tools/allow/tools[0]')
  assert.equal(policy.decideTool(red, 'files', 'ops_restart').effect, 'allow')
  assert.equal(policy.decideTool(red, 'files', 'blue_deploy').effect, 'deny')
  const none = claims(['team-tools'])
  assert.equal(policy.decideTool(none, 'files', 'red_deploy').effect, 'deny')
})

test('task scope narrows servers and tools', () => {
  const task = { id: 'task-1', reason: 'triage', servers: ['files'], tools: ['read_*'] }
  const scoped = claims(['everything'], { task })
  assert.equal(policy.decideTool(scoped, 'files', 'read_file').effect, 'allow')
  const tool = policy.decideTool(scoped, 'files', 'list_directory')
  assert.equal(tool.effect, 'deny')
  assert.equal(tool.rule, 'task/tools')
  assert.equal(tool.reason, 'task "task-1" does not include tool "list_directory"')
  const server = policy.decideServer(scoped, 'tracker')
  assert.equal(server.effect, 'deny')
  assert.equal(server.rule, 'task/servers')
  assert.deepEqual(policy.allowedServers(scoped), ['files'])
})

test('task scope never widens roles', () => {
  const task = { id: 'task-2', reason: 'x', servers: ['tracker'], tools: ['write_*'] }
  const scoped = claims(['workspace-reader'], { task })
  assert.equal(policy.decideServer(scoped, 'tracker').effect, 'deny')
  assert.equal(policy.decideTool(scoped, 'files', 'write_file').effect, 'deny')
})

test('invalid task scope entry matches nothing', () => {
  const scoped = claims(['everything'], { task: { id: 't', reason: 'x', tools: ['^bad('] } })
  assert.equal(policy.decideTool(scoped, 'files', '^bad(').effect, 'deny')
})

test('reasons shorten long tool names', () => {
  const decision = policy.decideTool(
    claims(['workspace-reader']),
    'files',
    `x${'a'.repeat(10_000)}`,
  )
  assert.equal(decision.effect, 'deny')
  assert.ok(decision.reason.length < 300, `reason is ${decision.reason.length} characters`)
})

test('empty policy denies everything', () => {
  const empty = compilePolicy([], [])
  assert.equal(empty.decideServer(claims(['everything']), 'files').rule, 'unknown-server')
  assert.deepEqual(empty.allowedServers(claims(['everything'])), [])
  assert.deepEqual(empty.roleNames(), [])
})

test('compilePolicy names a role that does not compile', () => {
  const broken: Resource = {
    apiVersion: API_VERSION,
    kind: 'Role',
    metadata: { name: 'broken' },
    spec: { deny: { tools: ['ok', '^bad($'] } },
  }
  assert.throws(
    () => compilePolicy([broken], []),
    (error: unknown) => {
      assert.ok(isWritError(error, 'policy.invalid_role'), String(error))
      assert.match(
        error.message,
        /^role "broken": spec\.deny\.tools\[1\]: invalid regular expression "\^bad\(\$"/,
      )
      return true
    },
  )
})
