import assert from 'node:assert/strict'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { ToolListChangedNotificationSchema } from '@modelcontextprotocol/sdk/types.js'
import { isWritError } from '../../src/errors.js'
import { WRIT_DENIED_CODE } from '../../src/gateway/jsonrpc.js'
import { approveToolPin, ToolPinGuard } from '../../src/guard/tool-pins.js'
import { silentLogger } from '../../src/log.js'
import { FieldError } from '../../src/policy/fields.js'
import { validateSpec } from '../../src/policy/specs.js'
import { openSqliteStore } from '../../src/store/sqlite.js'
import type { Store } from '../../src/store/store.js'
import { FIXTURES, startGateway, type TestGateway, tempFile } from '../gateway/harness.js'

const RUG_PULL = join(FIXTURES, 'rug-pull-server.mjs')
const databaseFile = tempFile('writ.db')
const weatherRecord = tempFile('weather.jsonl')
const strictRecord = tempFile('strict.jsonl')
let gateway: TestGateway
let store: Store
/** A second connection to the same database, standing in for `writ tools approve`. */
let operatorStore: Store
let guard: ToolPinGuard

before(async () => {
  writeFileSync(weatherRecord, '')
  writeFileSync(strictRecord, '')
  store = await openSqliteStore(databaseFile)
  operatorStore = await openSqliteStore(databaseFile)
  gateway = await startGateway({
    servers: {
      weather: {
        stdio: { command: process.execPath, args: [RUG_PULL], env: { RECORD_FILE: weatherRecord } },
        secrets: [],
      },
      strict: {
        stdio: { command: process.execPath, args: [RUG_PULL], env: { RECORD_FILE: strictRecord } },
        secrets: [],
        toolPinning: 'require-approval',
      },
    },
    allowTool: () => true,
    toolPins: (audit) => {
      guard = new ToolPinGuard({ store, audit, clock: Date.now, logger: silentLogger })
      return guard
    },
  })
})

after(async () => {
  await gateway.close()
  await guard.flush()
  await store.close()
  await operatorStore.close()
})

async function connect(server: string): Promise<Client> {
  const client = new Client({ name: 'pin-test', version: '1.0.0' })
  await client.connect(new StreamableHTTPClientTransport(new URL(gateway.url(server))))
  return client
}

async function listNames(client: Client): Promise<string[]> {
  const { tools } = await client.listTools()
  await guard.flush()
  return tools.map((tool) => tool.name)
}

/** Calls a tool that must be refused as quarantined and returns the audit record of the denial. */
async function expectQuarantined(client: Client, tool: string) {
  let requestId: string | undefined
  await assert.rejects(
    client.callTool({ name: tool, arguments: { city: 'Oslo' } }),
    (error: { code?: number; data?: { reason?: string; requestId?: string }; message: string }) => {
      assert.equal(error.code, WRIT_DENIED_CODE)
      assert.equal(error.data?.reason, 'quarantined')
      assert.match(error.message, new RegExp(`tool "${tool}" is quarantined`))
      requestId = error.data?.requestId
      return true
    },
  )
  const record = gateway.audit.find((event) => event.id === requestId)
  assert.ok(record, `no audit record for the denial of ${tool}`)
  return record
}

function callsTo(recordFile: string, tool: string): number {
  return readFileSync(recordFile, 'utf8')
    .split('\n')
    .filter((line) => line.includes('"tools/call"') && line.includes(`"name":"${tool}"`)).length
}

let weather: Client
let firstDigest = ''

test('poisoned tool is held on first sight', async () => {
  weather = await connect('weather')
  assert.deepEqual(await listNames(weather), ['get_weather', 'trigger_update'])
  const denial = await expectQuarantined(weather, 'add_numbers')
  assert.equal(denial.outcome, 'denied')
  assert.equal(denial.reason, 'tool_not_approved')
  assert.equal(denial.rule, 'toolPinning:trust-on-first-use')
  assert.equal(callsTo(weatherRecord, 'add_numbers'), 0)
  const pinned = gateway.audit.find(
    (event) => event.type === 'tool.pinned' && event.tool === 'add_numbers',
  )
  assert.equal(pinned?.outcome, 'denied')
  assert.equal(pinned?.reason, 'description_flagged')
  const findings = (pinned?.details?.findings ?? []) as Array<{ rule: string; field: string }>
  const flagged = findings.map((finding) => `${finding.rule}@${finding.field}`)
  assert.ok(flagged.includes('invisible_unicode@description'), flagged.join(' '))
  assert.ok(flagged.includes('suspicious_parameter@inputSchema.properties.sidenote'))
})

test('rug pull quarantines changed tool', async () => {
  const sunny = await weather.callTool({ name: 'get_weather', arguments: { city: 'Oslo' } })
  assert.deepEqual(sunny.content, [{ type: 'text', text: 'sunny in Oslo' }])
  const trusted = gateway.audit.find(
    (event) => event.type === 'tool.pinned' && event.tool === 'get_weather',
  )
  assert.equal(trusted?.reason, 'trust_on_first_use')
  firstDigest = String(trusted?.details?.digest)

  const listChanged = new Promise<void>((resolve) => {
    weather.setNotificationHandler(ToolListChangedNotificationSchema, async () => resolve())
  })
  await weather.callTool({ name: 'trigger_update', arguments: {} })
  await listChanged
  // The gateway listed the tools itself before it delivered list_changed, so the call is
  // decided on the new definition although this client has not listed again.
  const denial = await expectQuarantined(weather, 'get_weather')
  assert.equal(denial.reason, 'tool_definition_changed')
  assert.equal(callsTo(weatherRecord, 'get_weather'), 1)
  assert.match(
    readFileSync(weatherRecord, 'utf8'),
    /"id":"writ-relist-[0-9a-f]{32}","method":"tools\/list"/,
  )
  assert.deepEqual(await listNames(weather), ['trigger_update'])
  const changed = gateway.audit.find(
    (event) => event.type === 'tool.changed' && event.tool === 'get_weather',
  )
  assert.equal(changed?.outcome, 'denied')
  assert.equal(changed?.reason, 'definition_changed')
  assert.equal(changed?.details?.previousDigest, firstDigest)
  assert.equal(changed?.details?.approvedDigest, firstDigest)
  assert.match(String(changed?.details?.digest), /^sha256:[0-9a-f]{64}$/)
  assert.notEqual(changed?.details?.digest, firstDigest)
  const rules = ((changed?.details?.findings ?? []) as Array<{ rule: string }>).map((f) => f.rule)
  assert.ok(rules.includes('instruction'))
  assert.ok(rules.includes('sensitive_path'))
})

test('operator approval restores quarantined tool', async () => {
  const operatorAudit: Array<{ type: string; details?: Record<string, unknown> }> = []
  const approved = await approveToolPin({
    store: operatorStore,
    audit: async (event) => {
      operatorAudit.push(event)
      return { id: 'evt_operator' }
    },
    server: 'weather',
    tool: 'get_weather',
    approver: 'cli:test',
    now: Date.now(),
  })
  assert.equal(approved.changed, true)
  assert.equal(approved.pin.state, 'approved')
  assert.equal(operatorAudit[0]?.type, 'tool.approved')
  assert.equal(operatorAudit[0]?.details?.previousDigest, firstDigest)

  await guard.refresh()
  assert.deepEqual(await listNames(weather), ['get_weather', 'trigger_update'])
  const result = await weather.callTool({ name: 'get_weather', arguments: { city: 'Bergen' } })
  assert.deepEqual(result.content, [{ type: 'text', text: 'sunny in Bergen' }])
  assert.equal(callsTo(weatherRecord, 'get_weather'), 2)
  await weather.close()
})

test('approving an unknown tool fails', async () => {
  await assert.rejects(
    approveToolPin({
      store: operatorStore,
      audit: async () => ({ id: 'evt_none' }),
      server: 'weather',
      tool: 'no_such_tool',
      approver: 'cli:test',
      now: Date.now(),
    }),
    (error: unknown) => {
      assert.ok(isWritError(error, 'tools.pin_not_found'))
      assert.match(error.message, /"no_such_tool"/)
      return true
    },
  )
})

test('require-approval holds every new tool', async () => {
  const client = await connect('strict')
  assert.deepEqual(await listNames(client), [])
  const denial = await expectQuarantined(client, 'trigger_update')
  assert.equal(denial.rule, 'toolPinning:require-approval')
  const unseen = await expectQuarantined(client, 'never_listed')
  assert.equal(unseen.reason, 'tool_not_approved')
  assert.equal(callsTo(strictRecord, 'trigger_update'), 0)
  assert.equal(callsTo(strictRecord, 'never_listed'), 0)

  await approveToolPin({
    store: operatorStore,
    audit: async () => ({ id: 'evt_operator' }),
    server: 'strict',
    tool: 'trigger_update',
    approver: 'cli:test',
    now: Date.now(),
  })
  await guard.refresh()
  assert.deepEqual(await listNames(client), ['trigger_update'])
  await client.callTool({ name: 'trigger_update', arguments: {} })
  assert.equal(callsTo(strictRecord, 'trigger_update'), 1)
  await client.close()
})

test('toolPinning rejects an unknown mode', () => {
  const spec = { toolPinning: 'sometimes', stdio: { command: 'node' } }
  assert.throws(
    () => validateSpec('McpServer', spec),
    (error: unknown) => {
      assert.ok(error instanceof FieldError)
      assert.match(error.message, /"sometimes"/)
      assert.match(error.message, /trust-on-first-use or require-approval/)
      return true
    },
  )
})
