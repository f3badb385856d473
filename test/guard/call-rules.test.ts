import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { isWritError } from '../../src/errors.js'
import { createCallGuard } from '../../src/guard/approvals.js'
import { compileCallRules, parseFlowLabel } from '../../src/guard/call-rules.js'
import type { PeerIdentity, WritClaims } from '../../src/identity/types.js'
import { silentLogger } from '../../src/log.js'
import { parseManifests } from '../../src/policy/manifest.js'
import { openSqliteStore } from '../../src/store/sqlite.js'

const HEADER = 'apiVersion: writ.dev/v1alpha1'

function roleYaml(name: string, spec: string): string {
  return `${HEADER}\nkind: Role\nmetadata:\n  name: ${name}\nspec:\n${spec}`
}

function serverYaml(name: string, labels: string): string {
  return `${HEADER}\nkind: McpServer\nmetadata:\n  name: ${name}\n  labels: ${labels}\nspec:\n  stdio: { command: node }\n`
}

function claims(roles: string[]): WritClaims {
  return {
    version: 1,
    kind: 'bot',
    roles,
    traits: {},
    depth: 0,
    generation: 1,
    accessRequests: [],
  }
}

/** Asserts that parsing fails with `manifest.invalid` and a message matching `pattern`. */
function assertInvalid(text: string, pattern: RegExp): void {
  assert.throws(
    () => parseManifests(text, 'test.yaml'),
    (error: unknown) => {
      assert.ok(isWritError(error, 'manifest.invalid'), String(error))
      assert.match(error.message, pattern)
      return true
    },
  )
}

const OPS = roleYaml(
  'ops',
  `  allow:
    mcpServers: { env: prod }
    tools: ['*']
    approval: { tools: ['deploy_*', write_file], ttl: 10m }
`,
)
const SERVERS = `${serverYaml('deployer', '{ env: prod }')}---\n${serverYaml('dev', '{ env: dev }')}`

test('approval rule matches on selected servers', () => {
  const resources = parseManifests(`${OPS}---\n${SERVERS}`, 'test.yaml')
  const roles = resources.filter((r) => r.kind === 'Role')
  const servers = resources.filter((r) => r.kind === 'McpServer')
  const rules = compileCallRules(roles, servers)
  assert.deepEqual(rules.approvalFor(claims(['ops']), 'deployer', 'deploy_app'), {
    rule: 'role/ops/allow/approval/tools[0]',
    ttlSeconds: 600,
  })
  assert.equal(rules.approvalFor(claims(['ops']), 'deployer', 'write_file')?.rule.at(-2), '1')
  assert.equal(rules.approvalFor(claims(['ops']), 'deployer', 'read_file'), undefined)
  assert.equal(rules.approvalFor(claims(['ops']), 'dev', 'deploy_app'), undefined)
  assert.equal(rules.approvalFor(claims(['other']), 'deployer', 'deploy_app'), undefined)
})

test('strictest tainted sink setting wins', () => {
  const text = [
    roleYaml('lenient', '  flow: { onTaintedSink: approve }\n'),
    roleYaml('strict', '  flow: { onTaintedSink: deny }\n'),
    roleYaml('plain', '  description: nothing about flow\n'),
  ].join('---\n')
  const rules = compileCallRules(parseManifests(text, 'test.yaml'), [])
  assert.deepEqual(rules.onTaintedSink(claims(['lenient', 'strict'])), {
    mode: 'deny',
    rule: 'role/strict/flow/onTaintedSink',
  })
  assert.equal(rules.onTaintedSink(claims(['lenient'])).mode, 'approve')
  assert.deepEqual(rules.onTaintedSink(claims(['plain'])), {
    mode: 'approve',
    rule: 'flow/default',
  })
})

test('flow label lists several kinds', () => {
  assert.deepEqual([...parseFlowLabel('untrusted.external')], ['untrusted', 'external'])
  const servers = parseManifests(serverYaml('web', "{ 'writ.dev/flow': untrusted }"), 'test.yaml')
  const rules = compileCallRules([], servers)
  assert.deepEqual([...rules.flowOf('web')], ['untrusted'])
  assert.deepEqual([...rules.flowOf('unknown')], [])
})

test('invalid flow label is rejected', () => {
  assertInvalid(
    serverYaml('web', "{ 'writ.dev/flow': untrustd }"),
    /writ\.dev\/flow.*"untrustd".*untrusted, private, external/,
  )
  assert.throws(
    () => parseFlowLabel('external.sink'),
    (error: unknown) =>
      isWritError(error, 'policy.invalid_flow') && /"external.sink"/.test(error.message),
  )
})

test('invalid onTaintedSink is rejected', () => {
  assertInvalid(roleYaml('r', '  flow: { onTaintedSink: maybe }\n'), /onTaintedSink.*"maybe"/)
  assertInvalid(roleYaml('r', '  flow: { onTainted: deny }\n'), /onTainted/)
})

test('invalid approval rules are rejected', () => {
  const allow = (approval: string) =>
    roleYaml('r', `  allow:\n    mcpServers: { env: prod }\n    approval: ${approval}\n`)
  assertInvalid(allow('{ ttl: 5m }'), /approval\.tools.*missing required field/)
  assertInvalid(allow("{ tools: ['deploy_*'], ttl: soon }"), /approval\.ttl.*"soon"/)
  assertInvalid(allow("{ tools: ['deploy_*'], ttl: 2d }"), /approval\.ttl.*"2d".*24h/)
  assertInvalid(allow("{ tools: ['^(unclosed$'] }"), /approval\.tools/)
  assertInvalid(allow("{ tools: ['x'], who: me }"), /who/)
  assertInvalid(
    roleYaml('r', "  allow:\n    approval: { tools: ['deploy_*'] }\n"),
    /allow\.approval needs allow\.mcpServers/,
  )
})

test('taint lasts for certificate lifetime', async () => {
  const text = [
    roleYaml('reader', '  flow: { onTaintedSink: deny }\n'),
    serverYaml('db', "{ 'writ.dev/flow': private }"),
    serverYaml('web', "{ 'writ.dev/flow': untrusted.external }"),
    serverYaml('plain', '{ env: prod }'),
  ].join('---\n')
  const resources = parseManifests(text, 'test.yaml')
  const rules = compileCallRules(
    resources.filter((r) => r.kind === 'Role'),
    resources.filter((r) => r.kind === 'McpServer'),
  )
  const directory = mkdtempSync(join(tmpdir(), 'writ-taint-'))
  const store = await openSqliteStore(join(directory, 'writ.db'), { logger: silentLogger })
  let now = Date.parse('2026-01-01T00:00:00Z')
  const guard = createCallGuard({
    store,
    rules: () => rules,
    clock: () => now,
    logger: silentLogger,
  })
  const caller: PeerIdentity = {
    spiffeId: 'spiffe://writ.test/bot/alice',
    name: 'alice',
    serial: '1a2b',
    notBefore: new Date(now - 1000),
    notAfter: new Date(now + 60_000),
    claims: { ...claims(['reader']), botInstance: 'b7e1' },
  }
  const call = {
    identity: caller,
    server: 'web',
    tool: 'post',
    argsDigest: 'sha256:00',
    redactedArgs: {},
    abandoned: () => false,
  }
  try {
    guard.observeResult(caller, 'plain')
    assert.deepEqual(guard.taintOf(caller), [])
    assert.deepEqual(await guard.check(call), { effect: 'proceed' })

    guard.observeResult(caller, 'db')
    assert.deepEqual(guard.taintOf(caller), ['private'])
    const refused = await guard.check(call)
    assert.equal(refused.effect, 'deny')
    assert.equal(refused.effect === 'deny' && refused.rule, 'flow/private-to-external')
    assert.equal(refused.effect === 'deny' && refused.denial, 'forbidden')

    // A renewed certificate of the same bot instance carries the taint on.
    const renewed = { ...caller, serial: '3c4d', notAfter: new Date(now + 120_000) }
    assert.deepEqual(guard.taintOf(renewed), ['private'])

    // The taint ends when the certificate that received the content expires.
    now += 60_000
    assert.deepEqual(guard.taintOf(caller), [])
    assert.deepEqual(await guard.check(call), { effect: 'proceed' })
  } finally {
    await store.close()
    rmSync(directory, { recursive: true, force: true })
  }
})
