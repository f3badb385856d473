// `writ start` holds a tool call that a role marks for approval until `writ approvals approve`,
// run as another process on the same data directory, lets it through.
import assert from 'node:assert/strict'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { after, test } from 'node:test'
import {
  auditSearch,
  type GatewaySetup,
  httpsRequest,
  initializeBody,
  readIdentity,
  removeTemporaryDirectories,
  replyJson,
  runWrit,
  startGatewaySetup,
  waitFor,
} from './harness.js'

after(removeTemporaryDirectories)

/** The role of the e2e bot, changed so that `read_note` on the e2e servers needs approval. */
const APPROVAL_ROLE = `apiVersion: writ.dev/v1alpha1
kind: Role
metadata: { name: e2e-reader }
spec:
  maxTtl: 1h
  allow:
    mcpServers: { env: e2e }
    tools: ['read_*', 'list_*']
    approval: { tools: [read_note], ttl: 5m }
`

function toolCalls(recordFile: string): Array<{ params: { arguments: unknown } }> {
  if (!existsSync(recordFile)) return []
  return readFileSync(recordFile, 'utf8')
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => JSON.parse(line))
    .filter((message) => message.method === 'tools/call')
}

async function openSession(setup: GatewaySetup): Promise<Record<string, string>> {
  const tls = readIdentity(setup.identity)
  const init = await httpsRequest(setup.server.address, '/mcp/notes', {
    tls,
    body: initializeBody('2025-06-18'),
  })
  assert.equal(init.status, 200, init.body.toString())
  return {
    'mcp-session-id': String(init.headers['mcp-session-id']),
    'mcp-protocol-version': '2025-06-18',
  }
}

test('writ approvals approve releases held call', async () => {
  const setup = await startGatewaySetup('approvals')
  try {
    const rolePath = join(setup.dataDir, '..', 'approval-role.yaml')
    writeFileSync(rolePath, APPROVAL_ROLE)
    const applied = await runWrit(['apply', '-f', rolePath, '--data-dir', setup.dataDir])
    assert.equal(applied.code, 0, applied.stderr)

    const headers = await openSession(setup)
    const args = { name: 'plan.txt' }
    const body = JSON.stringify({
      jsonrpc: '2.0',
      id: 7,
      method: 'tools/call',
      params: { name: 'read_note', arguments: args },
    })
    const tls = readIdentity(setup.identity)
    // The policy poll may not have seen the new role yet, so the call is retried until held.
    const held = await waitFor('a pending approval', async () => {
      const seen = toolCalls(setup.recordFile).length
      const reply = httpsRequest(setup.server.address, '/mcp/notes', { tls, body, headers })
      const listed = await waitFor('the call to be held or answered', async () => {
        const ls = await runWrit(['approvals', 'ls', '--json', '--data-dir', setup.dataDir])
        const pending = JSON.parse(ls.stdout) as Array<{ id: string; tool: string }>
        if (pending.length > 0) return pending
        return toolCalls(setup.recordFile).length > seen ? [] : undefined
      })
      if (listed.length === 0) {
        await reply
        return undefined
      }
      return { id: (listed[0] as { id: string }).id, reply }
    })
    const before = toolCalls(setup.recordFile).length
    const approve = ['approvals', 'approve', held.id, '--reason', 'reviewed the plan']
    const approved = await runWrit([...approve, '--data-dir', setup.dataDir])
    assert.equal(approved.code, 0, approved.stderr)
    assert.match(approved.stdout, new RegExp(`${held.id} approved: read_note on notes`))

    const response = replyJson(await held.reply)
    assert.equal(response.error, undefined, JSON.stringify(response))
    const calls = toolCalls(setup.recordFile)
    assert.equal(calls.length, before + 1)
    assert.deepEqual(calls.at(-1)?.params.arguments, args)

    const events = await auditSearch(setup.dataDir, ['--tool', 'read_note'])
    // An earlier attempt may have passed before the server loaded the new role, so the record
    // of the released call is the one that names an approval.
    const released = events.filter(
      (event) => event.type === 'mcp.request' && event.details?.approval !== undefined,
    )
    assert.equal(released.length, 1)
    const call = released[0]
    assert.equal(call?.outcome, 'success')
    const approval = call?.details?.approval as Record<string, unknown> | undefined
    assert.equal(call?.rule, 'role/e2e-reader/allow/approval/tools[0]')
    assert.equal(approval?.id, held.id)
    assert.match(String(approval?.approvedBy), /^cli/)
    assert.equal(approval?.reason, 'reviewed the plan')
    const decision = events.find((event) => event.type === 'approval.approve')
    assert.equal(decision?.reason, 'reviewed the plan')
  } finally {
    await setup.server.stop()
  }
})
