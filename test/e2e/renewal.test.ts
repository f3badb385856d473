import assert from 'node:assert/strict'
import { type ChildProcess, spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import type { Client } from '@modelcontextprotocol/sdk/client/index.js'
import {
  addBot,
  auditSearch,
  CLI,
  certificateSerial,
  connectThroughBridge,
  type GatewaySetup,
  normalizeSerial,
  removeTemporaryDirectories,
  startGatewaySetup,
  stopProcess,
  temporaryDirectory,
  waitFor,
} from './harness.js'

// The agent renews when a third of the lifetime, counted from receipt, is left, so a 9 s TTL
// renews about 6 s after issuance, and again every 6 s while the test runs.
const TTL = '9s'

let setup: GatewaySetup
let agent: ChildProcess | undefined
let agentStdout = ''
let agentStderr = ''
let bridge: { client: Client; stderr: () => string } | undefined
const identity = join(temporaryDirectory('renewal-identity'), 'id')

before(async () => {
  setup = await startGatewaySetup('renewal')
  const enrollment = await addBot(setup.dataDir, 'renewing-agent', 'e2e-reader', ['--ttl', TTL])
  agent = spawn(
    process.execPath,
    [
      CLI,
      'agent',
      '--server',
      setup.server.address,
      '--token',
      enrollment.token,
      '--ca-pin',
      setup.server.caPin,
      '--dest',
      identity,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  )
  agent.stdout?.setEncoding('utf8').on('data', (text: string) => {
    agentStdout += text
  })
  agent.stderr?.setEncoding('utf8').on('data', (text: string) => {
    agentStderr += text
  })
})

after(async () => {
  await bridge?.client.close()
  if (agent) await stopProcess(agent)
  await setup?.server.stop()
  removeTemporaryDirectories()
})

describe('certificate renewal with a live bridge', () => {
  let firstSerial = ''

  it('agent joins and writes files', async () => {
    await waitFor(
      'the agent to write svid.pem',
      () => (existsSync(join(identity, 'svid.pem')) ? true : undefined),
      15_000,
    )
    // The agent prints its line just after it renames the files into place, so wait for it too.
    const joined = /joined spiffe:\/\/writ\.local\/bot\/renewing-agent serial/
    const printed = await waitFor(
      'the agent to print the join',
      () => (joined.test(agentStdout) ? true : undefined),
      10_000,
    )
    assert.equal(printed, true, agentStderr)
    firstSerial = certificateSerial(identity)
  })

  it('call works before renewal', async () => {
    bridge = await connectThroughBridge(setup.server.address, identity, 'notes', [
      '--log-level',
      'info',
    ])
    const result = await bridge.client.callTool({ name: 'read_note', arguments: { before: true } })
    assert.deepEqual(result.content, [
      { type: 'text', text: 'called read_note with {"before":true}' },
    ])
  })

  it('agent renews the certificate', async () => {
    const renewed = await waitFor(
      'svid.pem to get a new serial',
      () => {
        const serial = certificateSerial(identity)
        return serial !== firstSerial ? serial : undefined
      },
      30_000,
      200,
    )
    assert.notEqual(renewed, firstSerial)
    // The agent prints its line just after it renames the files into place, so wait for it too.
    const printed = await waitFor(
      'the agent to print the renewal',
      () =>
        /renewed spiffe:\/\/writ\.local\/bot\/renewing-agent serial/.test(agentStdout)
          ? true
          : undefined,
      10_000,
      100,
    )
    assert.equal(printed, true, agentStderr)
  })

  it('bridge reloads and keeps working', async () => {
    assert.ok(bridge, 'the bridge did not start')
    await waitFor(
      'the bridge to log the certificate reload',
      () => (bridge?.stderr().includes('client certificate reloaded') ? true : undefined),
      10_000,
    )
    const serialBefore = certificateSerial(identity)
    const result = await bridge.client.callTool({ name: 'read_note', arguments: { after: true } })
    const serialAfter = certificateSerial(identity)
    assert.deepEqual(result.content, [
      { type: 'text', text: 'called read_note with {"after":true}' },
    ])

    const events = await auditSearch(setup.dataDir, [
      '--tool',
      'read_note',
      '--principal',
      'spiffe://writ.local/bot/renewing-agent',
    ])
    const last = events.at(-1)
    assert.ok(last, 'no audit event for the call after renewal')
    const used = normalizeSerial(last.caller?.serial ?? '')
    assert.notEqual(used, firstSerial, 'the bridge still presents the first certificate')
    assert.ok(
      used === serialBefore || used === serialAfter,
      `the call used serial ${used}, svid.pem had ${serialBefore} then ${serialAfter}`,
    )
  })

  it('renewal is audited', async () => {
    const renewals = await auditSearch(setup.dataDir, [
      '--principal',
      'spiffe://writ.local/bot/renewing-agent',
    ])
    assert.ok(
      renewals.some((event) => event.type === 'certificate.renew' && event.outcome === 'success'),
      `no certificate.renew event among ${renewals.map((event) => event.type).join(', ')}`,
    )
  })

  it('agent stops on SIGTERM', async () => {
    assert.ok(agent)
    await stopProcess(agent)
    assert.equal(agent.exitCode, 0, agentStderr)
  })
})
