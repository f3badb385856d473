import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import {
  CreateMessageRequestSchema,
  ElicitRequestSchema,
  ListRootsRequestSchema,
  McpError,
} from '@modelcontextprotocol/sdk/types.js'
import type { UpstreamConfig } from '../../src/gateway/deps.js'
import { WRIT_DENIED_CODE } from '../../src/gateway/jsonrpc.js'
import { FIXTURES, startGateway, type TestGateway, tempFile } from '../gateway/harness.js'
import { fakeSecrets } from './fake-secrets.js'

const secrets = fakeSecrets()
const HOSTILE = join(FIXTURES, 'hostile-server.mjs')
const records: Record<string, string> = {}
let gateway: TestGateway

function hostile(name: string, extra: Partial<UpstreamConfig>): Omit<UpstreamConfig, 'name'> {
  records[name] = tempFile(`${name}.log`)
  return {
    stdio: {
      command: process.execPath,
      args: [HOSTILE],
      env: { RECORD_FILE: records[name]!, HOSTILE_SECRETS: JSON.stringify(secrets) },
    },
    secrets: [],
    ...extra,
  }
}

before(async () => {
  gateway = await startGateway({
    servers: {
      // No `allow`: sampling, elicitation and roots are denied.
      hostile: hostile('hostile', {}),
      trusting: hostile('trusting', { allow: { sampling: true, elicitation: true, roots: true } }),
      tracker: hostile('tracker', { external: true }),
      // The AWS key id is also a configured secret of this server, as `${env:...}` would make it.
      configured: { ...hostile('configured', {}), secrets: [secrets.awsAccessKey] },
    },
    allowTool: () => true,
  })
})

after(async () => {
  await gateway.close()
})

/** What the scripted client's handlers received from the gateway. */
interface Seen {
  sampling: unknown[]
  elicitation: unknown[]
  roots: unknown[]
}

async function connect(server: string): Promise<{ client: Client; seen: Seen }> {
  const seen: Seen = { sampling: [], elicitation: [], roots: [] }
  const client = new Client(
    { name: 'guard-test', version: '1.0.0' },
    { capabilities: { sampling: {}, elicitation: {}, roots: {} } },
  )
  client.setRequestHandler(CreateMessageRequestSchema, async (request) => {
    seen.sampling.push(request.params)
    return { role: 'assistant', content: { type: 'text', text: 'sampled' }, model: 'test' }
  })
  client.setRequestHandler(ElicitRequestSchema, async (request) => {
    seen.elicitation.push(request.params)
    return { action: 'accept', content: { name: 'Ada' } }
  })
  client.setRequestHandler(ListRootsRequestSchema, async () => {
    seen.roots.push(true)
    return { roots: [{ uri: 'file:///home/ada/private' }] }
  })
  await client.connect(new StreamableHTTPClientTransport(new URL(gateway.url(server))))
  return { client, seen }
}

async function callText(client: Client, name: string, args: Record<string, unknown> = {}) {
  const result = await client.callTool({ name, arguments: args })
  return (result.content as Array<{ text: string }>)[0]!.text
}

/** Returns the upstream's log lines in one direction (`in` received, `out` sent), parsed. */
function upstreamLog(server: string, direction: 'in' | 'out'): Array<Record<string, unknown>> {
  return readFileSync(records[server]!, 'utf8')
    .split('\n')
    .filter((line) => line.startsWith(`${direction} `))
    .map((line) => JSON.parse(line.slice(direction.length + 1)) as Record<string, unknown>)
}

function auditText(): string {
  return JSON.stringify(gateway.audit)
}

function assertNoSecretValues(text: string): void {
  for (const [name, value] of Object.entries(secrets)) {
    const sample = name === 'privateKey' ? value.split('\n')[1]! : value
    assert.ok(!text.includes(sample), `${name} appears in ${text.slice(0, 200)}`)
  }
}

function findAudit(match: (record: TestGateway['audit'][number]) => boolean) {
  const record = gateway.audit.find(match)
  assert.ok(record, 'no matching audit record')
  return record
}

test('hostile result: secrets become detector names', async () => {
  const { client } = await connect('hostile')
  const text = await callText(client, 'leak')
  await client.close()

  for (const detector of [
    'aws-access-key',
    'aws-secret-key',
    'github-token',
    'jwt',
    'slack-token',
    'google-api-key',
    'stripe-key',
    'bearer-token',
    'generic-api-key',
    'private-key',
  ]) {
    assert.ok(text.includes(`[REDACTED:${detector}]`), `no [REDACTED:${detector}] in ${text}`)
  }
  assertNoSecretValues(text)

  // The upstream really sent the values, so the gateway removed them.
  const sent = JSON.stringify(upstreamLog('hostile', 'out'))
  assert.ok(sent.includes(secrets.awsAccessKey))
  assert.ok(sent.includes(secrets.githubToken))

  const record = findAudit((event) => event.tool === 'leak' && event.rule === 'guard/scrub')
  assert.equal(record.reason, 'upstream_content_scrubbed')
  assert.deepEqual(
    (record.details!.redactions as Array<{ detector: string }>).map((entry) => entry.detector),
    [
      'aws-access-key',
      'aws-secret-key',
      'github-token',
      'jwt',
      'slack-token',
      'google-api-key',
      'stripe-key',
      'bearer-token',
      'generic-api-key',
      'private-key',
    ],
  )
  assertNoSecretValues(auditText())
})

test('configured secret keeps the plain marker', async () => {
  const { client } = await connect('configured')
  const text = await callText(client, 'leak')
  await client.close()

  assert.match(text, /^aws \[REDACTED\]$/m)
  assert.ok(!text.includes('[REDACTED:aws-access-key]'))
  assert.ok(text.includes('[REDACTED:github-token]'))
})

test('hostile result: terminal escapes removed', async () => {
  const { client } = await connect('hostile')
  const text = await callText(client, 'ansi')
  await client.close()

  assert.equal(text, 'red clip link done')
  const sent = JSON.stringify(upstreamLog('hostile', 'out'))
  assert.ok(sent.includes('\\u001b]52;c;'), 'the upstream sent an OSC 52 clipboard write')
  const record = findAudit((event) => event.tool === 'ansi' && event.rule === 'guard/scrub')
  assert.ok((record.details!.removedTerminalChars as number) > 0)
  assert.equal(record.details!.redactions, undefined)
})

test('hostile result: bidi and tag characters removed', async () => {
  const { client } = await connect('hostile')
  const text = await callText(client, 'hidden')
  await client.close()

  assert.equal(text, 'safeevil text end')
  const record = findAudit((event) => event.tool === 'hidden' && event.rule === 'guard/scrub')
  assert.ok((record.details!.removedInvisibleChars as number) >= 20)
})

test('hostile error: message scrubbed for client and audit', async () => {
  const { client } = await connect('hostile')
  const error = await client.callTool({ name: 'fail_leak', arguments: {} }).then(
    () => assert.fail('the call succeeded'),
    (caught: unknown) => caught,
  )
  await client.close()

  assert.ok(error instanceof McpError)
  assert.match(error.message, /upstream failed with key \[REDACTED:aws-access-key\]/)
  assert.ok(!error.message.includes('\x1b'))
  const failure = findAudit((event) => event.tool === 'fail_leak' && event.outcome === 'error')
  assert.match(String(failure.details!.error), /\[REDACTED:aws-access-key\]/)
  assertNoSecretValues(auditText())
})

for (const [tool, method, capability] of [
  ['sample', 'sampling/createMessage', 'sampling'],
  ['ask_name', 'elicitation/create', 'elicitation'],
  ['list_roots', 'roots/list', 'roots'],
] as const) {
  test(`server request ${method} denied without allow`, async () => {
    const { client, seen } = await connect('hostile')
    const text = await callText(client, tool)
    await client.close()

    assert.equal(seen.sampling.length + seen.elicitation.length + seen.roots.length, 0)
    // The upstream received the gateway's denial instead of a client answer.
    const answer = JSON.parse(text.slice(text.indexOf('{'))) as {
      error: { code: number; data: { reason: string; requestId: string } }
    }
    assert.equal(answer.error.code, WRIT_DENIED_CODE)
    assert.equal(answer.error.data.reason, 'forbidden')
    const received = upstreamLog('hostile', 'in').filter(
      (line) => line.error !== undefined && line.method === undefined,
    )
    assert.ok(received.some((line) => JSON.stringify(line).includes(answer.error.data.requestId)))

    const record = findAudit((event) => event.id === answer.error.data.requestId)
    assert.equal(record.outcome, 'denied')
    assert.equal(record.method, method)
    assert.equal(record.rule, `guard/server-request/${capability}`)
    assert.equal(record.reason, `${capability}_not_allowed`)
  })
}

for (const tool of ['ask_password', 'ask_hidden_password', 'ask_card']) {
  test(`elicitation ${tool} denied where elicitation is allowed`, async () => {
    const { client, seen } = await connect('trusting')
    const text = await callText(client, tool)
    await client.close()

    assert.equal(seen.elicitation.length, 0)
    const answer = JSON.parse(text.slice(text.indexOf('{'))) as {
      error: { code: number; data: { requestId: string } }
    }
    assert.equal(answer.error.code, WRIT_DENIED_CODE)
    const record = findAudit((event) => event.id === answer.error.data.requestId)
    assert.equal(record.outcome, 'denied')
    assert.equal(record.method, 'elicitation/create')
    assert.equal(record.rule, 'guard/elicitation/credential')
  })
}

test('elicitation for a name allowed and audited', async () => {
  const { client, seen } = await connect('trusting')
  const text = await callText(client, 'ask_name')
  await client.close()

  assert.equal(seen.elicitation.length, 1)
  assert.match(text, /"name":"Ada"/)
  const record = findAudit(
    (event) => event.method === 'elicitation/create' && event.reason === 'server_request_allowed',
  )
  assert.equal(record.rule, 'guard/server-request/elicitation')
  assert.equal(record.server, 'trusting')
})

test('allowed sampling reaches only the calling session', async () => {
  const [first, second] = await Promise.all([connect('trusting'), connect('trusting')])
  const text = await callText(first.client, 'sample')
  // A round trip on the second session after the sample, so anything misrouted has arrived.
  await second.client.ping()
  await Promise.all([first.client.close(), second.client.close()])

  assert.match(text, /"text":"sampled"/)
  assert.equal(first.seen.sampling.length, 1)
  assert.equal(second.seen.sampling.length, 0)
  const record = findAudit(
    (event) =>
      event.method === 'sampling/createMessage' && event.reason === 'server_request_allowed',
  )
  assert.equal(record.rule, 'guard/server-request/sampling')
})

test('secret egress to external server refused', async () => {
  const { client } = await connect('tracker')
  const marker = 'egress-marker-1'
  const error = await client
    .callTool({ name: 'echo', arguments: { note: `${marker} ${secrets.githubToken}` } })
    .then(
      () => assert.fail('the call succeeded'),
      (caught: unknown) => caught,
    )
  await client.close()

  assert.ok(error instanceof McpError)
  assert.equal(error.code, WRIT_DENIED_CODE)
  const data = error.data as { reason: string; requestId: string }
  assert.equal(data.reason, 'forbidden')
  assert.match(error.message, /secret \(github-token\)/)
  assert.match(error.message, /server "tracker" is external/)
  assertNoSecretValues(error.message)

  const received = readFileSync(records.tracker!, 'utf8')
  assert.ok(!received.includes(marker), 'the call reached the external upstream')
  assert.ok(!received.includes(secrets.githubToken))

  const record = findAudit((event) => event.id === data.requestId)
  assert.equal(record.outcome, 'denied')
  assert.equal(record.tool, 'echo')
  assert.equal(record.reason, 'secret_egress')
  assert.equal(record.rule, 'guard/secret-egress/github-token')
  assert.deepEqual(record.args, { note: `${marker} [REDACTED:github-token]` })
  assertNoSecretValues(auditText())
})

test('secret egress split by zero-width space refused', async () => {
  const { client } = await connect('tracker')
  const split = `${secrets.awsAccessKey.slice(0, 8)}\u200b${secrets.awsAccessKey.slice(8)}`
  const error = await client.callTool({ name: 'echo', arguments: { key: split } }).then(
    () => assert.fail('the call succeeded'),
    (caught: unknown) => caught,
  )
  await client.close()

  assert.ok(error instanceof McpError)
  const data = error.data as { requestId: string }
  assert.ok(!readFileSync(records.tracker!, 'utf8').includes('tools/call'))
  assert.equal(
    findAudit((event) => event.id === data.requestId).rule,
    'guard/secret-egress/aws-access-key',
  )
})

test('clean call to external server forwarded', async () => {
  const { client } = await connect('tracker')
  const text = await callText(client, 'echo', { note: 'egress-clean-2' })
  await client.close()

  assert.equal(text, 'echo {"note":"egress-clean-2"}')
  assert.ok(readFileSync(records.tracker!, 'utf8').includes('egress-clean-2'))
})

test('secret to internal server forwarded, audit redacted', async () => {
  const { client } = await connect('hostile')
  const marker = 'internal-marker-3'
  const text = await callText(client, 'echo', { note: `${marker} ${secrets.stripeKey}` })
  await client.close()

  // The upstream got the value; the echo back to the client is scrubbed like any result.
  const calls = upstreamLog('hostile', 'in').filter((line) => JSON.stringify(line).includes(marker))
  assert.equal(calls.length, 1)
  assert.ok(JSON.stringify(calls[0]).includes(secrets.stripeKey))
  assert.equal(text, `echo {"note":"${marker} [REDACTED:stripe-key]"}`)
  const record = findAudit(
    (event) =>
      event.tool === 'echo' &&
      event.outcome === 'success' &&
      event.args !== undefined &&
      JSON.stringify(event.args).includes(marker),
  )
  assert.deepEqual(record.args, { note: `${marker} [REDACTED:stripe-key]` })
  assertNoSecretValues(auditText())
})
