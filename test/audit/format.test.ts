import assert from 'node:assert/strict'
import { test } from 'node:test'
import { GENESIS_HASH } from '../../src/audit/chain.js'
import { formatEventJson, formatEventLine } from '../../src/audit/format.js'
import type { AuditEvent } from '../../src/audit/types.js'

const base: AuditEvent = {
  id: 'ev_0123',
  seq: 7,
  time: '2025-01-31T12:00:00.000Z',
  type: 'mcp.request',
  outcome: 'denied',
  reason: 'no_role_grants_tool',
  rule: 'role/reader',
  caller: { spiffeId: 'spiffe://writ.local/bot/ci', kind: 'bot', roles: ['reader'], serial: '0a' },
  server: 'fs',
  method: 'tools/call',
  tool: 'write_file',
  prevHash: GENESIS_HASH,
  hash: `sha256:${'1'.repeat(64)}`,
}

test('event line names server and tool', () => {
  assert.equal(
    formatEventLine(base),
    '2025-01-31T12:00:00.000Z mcp.request denied spiffe://writ.local/bot/ci fs/write_file ' +
      'reason=no_role_grants_tool rule=role/reader id=ev_0123',
  )
})

test('event line falls back to method and dashes', () => {
  const { tool: _tool, reason: _reason, rule: _rule, ...noTool } = base
  assert.equal(
    formatEventLine({ ...noTool, method: 'tools/list' }),
    '2025-01-31T12:00:00.000Z mcp.request denied spiffe://writ.local/bot/ci fs/tools/list ' +
      'reason=- rule=- id=ev_0123',
  )
  const { caller: _caller, server: _server, method: _method, ...bare } = noTool
  assert.equal(
    formatEventLine({ ...bare, type: 'auth.refused' }),
    '2025-01-31T12:00:00.000Z auth.refused denied - - reason=- rule=- id=ev_0123',
  )
})

test('event line escapes control characters', () => {
  const line = formatEventLine({ ...base, tool: 'evil\u001b[2J\nname' })
  assert.ok(!line.includes('\u001b'))
  assert.ok(!line.includes('\n'))
  assert.ok(line.includes('fs/evil\\u001b[2J\\u000aname'))
})

test('event JSON is one parsable line', () => {
  const text = formatEventJson({ ...base, reason: 'line one\nline two' })
  assert.ok(!text.includes('\n'))
  assert.deepEqual(JSON.parse(text), { ...base, reason: 'line one\nline two' })
})
