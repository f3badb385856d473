import assert from 'node:assert/strict'
import { readFileSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { WRIT_DENIED_CODE } from '../../src/gateway/jsonrpc.js'
import { pemToDer } from '../../src/identity/pem.js'
import type { PeerIdentity } from '../../src/identity/types.js'
import { identityFromCertificate } from '../../src/identity/verify.js'
import {
  type AuditRecord,
  addBot,
  auditSearch,
  type CommandResult,
  connectThroughBridge,
  FIXTURE_SECRET,
  gatewayManifests,
  joinOnce,
  removeTemporaryDirectories,
  runWrit,
  startWrit,
  TRUST_DOMAIN,
  temporaryDirectory,
  type WritServer,
  waitFor,
} from './harness.js'

// The requester holds `dev`, which may request `deployer`. The reviewer holds `lead`, which may
// review `deployer`. Only `deployer` allows the write_* tools of the recording server `notes`.
const ROLES = `
---
apiVersion: writ.dev/v1alpha1
kind: Role
metadata: { name: dev }
spec:
  allow: { mcpServers: { env: e2e }, tools: ['read_*'] }
  requests: { roles: [deployer], maxDuration: 2h }
---
apiVersion: writ.dev/v1alpha1
kind: Role
metadata: { name: lead }
spec:
  allow: { mcpServers: { env: e2e }, tools: ['read_*'] }
  review: { roles: [deployer] }
---
apiVersion: writ.dev/v1alpha1
kind: Role
metadata: { name: deployer }
spec:
  maxTtl: 1h
  allow: { mcpServers: { env: e2e }, tools: ['write_*'] }
---
apiVersion: writ.dev/v1alpha1
kind: Role
metadata: { name: root }
spec:
  allow: { mcpServers: { '*': '*' }, tools: ['*'] }
`

const DEV_ID = `spiffe://${TRUST_DOMAIN}/bot/dev-bot`
const LEAD_ID = `spiffe://${TRUST_DOMAIN}/bot/lead-bot`
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

interface RequestView {
  id: string
  requester: string
  roles: string[]
  status: string
  reviewer?: string
  reviewReason?: string
  expires?: string
  reviewable: boolean
}

let server: WritServer
let dataDir: string
let recordFile: string
let devIdentity: string
let leadIdentity: string
let approvedId = ''
let deniedId = ''

before(async () => {
  const root = temporaryDirectory('requests')
  dataDir = join(root, 'data')
  recordFile = join(root, 'received.jsonl')
  devIdentity = join(root, 'dev-identity')
  leadIdentity = join(root, 'lead-identity')
  const config = join(root, 'config.yaml')
  writeFileSync(config, gatewayManifests({ workspace: root, recordFile }) + ROLES)
  server = await startWrit(dataDir, ['--config', config], { E2E_FIXTURE_SECRET: FIXTURE_SECRET })
  await joinOnce(server, await addBot(dataDir, 'dev-bot', 'dev'), devIdentity)
  await joinOnce(server, await addBot(dataDir, 'lead-bot', 'lead'), leadIdentity)
})

after(async () => {
  await server?.stop()
  removeTemporaryDirectories()
})

/** Runs `writ request ARGS` as the principal whose identity directory is `identity`. */
function request(identity: string, args: string[]): Promise<CommandResult> {
  return runWrit(['request', ...args, '--server', server.address, '--identity', identity])
}

async function requestJson<T>(identity: string, args: string[]): Promise<T> {
  const result = await request(identity, [...args, '--json'])
  assert.equal(result.code, 0, `writ request ${args.join(' ')} failed: ${result.stderr}`)
  return JSON.parse(result.stdout) as T
}

async function createRequest(roles: string, reason: string, extra: string[] = []) {
  return request(devIdentity, ['create', '--roles', roles, '--reason', reason, ...extra])
}

function assertRejected(result: CommandResult, code: string, message: RegExp): void {
  assert.equal(result.code, 1, `expected exit 1, got ${result.code}: ${result.stderr}`)
  assert.match(result.stderr, message)
  assert.ok(result.stderr.includes(`[${code}]`), `stderr lacks [${code}]: ${result.stderr}`)
}

async function notesTools(identity: string): Promise<string[]> {
  const result = await runWrit([
    'mcp',
    'ls',
    '--json',
    '--server',
    server.address,
    '--identity',
    identity,
  ])
  assert.equal(result.code, 0, `writ mcp ls failed: ${result.stderr}`)
  const listing = JSON.parse(result.stdout) as Array<{ name: string; tools: string[] }>
  return listing.find((entry) => entry.name === 'notes')?.tools ?? []
}

async function callWriteNote(identity: string): Promise<unknown> {
  const bridge = await connectThroughBridge(server.address, identity, 'notes')
  try {
    return await bridge.client.callTool({ name: 'write_note', arguments: { text: 'release' } })
  } finally {
    await bridge.client.close()
  }
}

function certificateIdentity(identity: string): PeerIdentity {
  const pem = readFileSync(join(identity, 'svid.pem'), 'utf8')
  return identityFromCertificate(pemToDer(pem, ['CERTIFICATE'], 'svid.pem'))
}

describe('just-in-time access with writ request', () => {
  it('write tools forbidden before the grant', async () => {
    assert.deepEqual(await notesTools(devIdentity), ['read_note'])
    await assert.rejects(callWriteNote(devIdentity), (error: { code?: number; data?: unknown }) => {
      assert.equal(error.code, WRIT_DENIED_CODE)
      assert.deepEqual((error.data as { reason?: string }).reason, 'forbidden')
      return true
    })
  })

  it('create prints the request id', async () => {
    const result = await createRequest('deployer', 'deploy release 1.2')
    assert.equal(result.code, 0, result.stderr)
    approvedId = result.stdout.trim()
    assert.match(approvedId, UUID)
    assert.match(result.stderr, /pending review/)
  })

  it('ls shows the pending request', async () => {
    const own = await requestJson<RequestView[]>(devIdentity, ['ls'])
    const mine = own.find((item) => item.id === approvedId)
    assert.equal(mine?.status, 'pending')
    assert.equal(mine?.requester, DEV_ID)
    assert.deepEqual(mine?.roles, ['deployer'])
    assert.equal(mine?.reviewable, false)

    const queue = await requestJson<RequestView[]>(leadIdentity, ['ls'])
    assert.equal(queue.find((item) => item.id === approvedId)?.reviewable, true)

    const text = await request(leadIdentity, ['ls'])
    assert.equal(text.code, 0, text.stderr)
    assert.match(text.stdout, new RegExp(`${approvedId}  pending  ${DEV_ID}`))
    assert.match(text.stdout, /reason: deploy release 1\.2/)
    assert.match(text.stdout, /you may approve or deny this request/)
  })

  it('requester cannot approve own request', async () => {
    const result = await request(devIdentity, ['approve', approvedId, '--reason', 'trust me'])
    assertRejected(result, 'access.self_review', /because it is its own request/)
    assert.match(result.stderr, new RegExp(`${DEV_ID} cannot approve access request ${approvedId}`))
  })

  it('assume before approval rejected', async () => {
    const result = await request(devIdentity, ['assume', approvedId])
    assertRejected(result, 'access.not_approved', /is still pending review/)
  })

  it('reviewer approves', async () => {
    const result = await request(leadIdentity, ['approve', approvedId, '--reason', 'release ok'])
    assert.equal(result.code, 0, result.stderr)
    assert.match(result.stdout, new RegExp(`approved access request ${approvedId} of ${DEV_ID}`))
    assert.match(result.stdout, /the grant ends at \d{4}-/)
  })

  it('approving twice rejected', async () => {
    const result = await request(leadIdentity, ['approve', approvedId, '--reason', 'again'])
    assertRejected(result, 'access.already_decided', /was already approved by .*lead-bot/)
  })

  it('deny path leaves nothing to assume', async () => {
    const created = await createRequest('deployer', 'hotfix without a ticket')
    assert.equal(created.code, 0, created.stderr)
    deniedId = created.stdout.trim()
    const denied = await request(leadIdentity, ['deny', deniedId, '--reason', 'open a ticket'])
    assert.equal(denied.code, 0, denied.stderr)
    assert.match(denied.stdout, new RegExp(`denied access request ${deniedId}`))

    const own = await requestJson<RequestView[]>(devIdentity, ['ls'])
    const view = own.find((item) => item.id === deniedId)
    assert.equal(view?.status, 'denied')
    assert.equal(view?.reviewer, LEAD_ID)
    assert.equal(view?.reviewReason, 'open a ticket')

    const assumed = await request(devIdentity, ['assume', deniedId])
    assertRejected(assumed, 'access.not_approved', /was denied by .*lead-bot: open a ticket/)
  })

  it('unrequestable role rejected', async () => {
    const result = await createRequest('root', 'I need everything')
    assertRejected(result, 'access.not_requestable', /allows requesting role "root"/)
    const lead = await request(leadIdentity, ['create', '--roles', 'deployer', '--reason', 'x'])
    assertRejected(lead, 'access.not_requestable', /\(lead\) allows requesting role "deployer"/)
  })

  it('ttl over the maximum rejected', async () => {
    const result = await createRequest('deployer', 'long deploy', ['--ttl', '3h'])
    assertRejected(result, 'access.ttl_too_long', /requested TTL 3h exceeds the 2h maximum/)
  })

  it('missing reason is a usage error', async () => {
    const result = await request(devIdentity, ['create', '--roles', 'deployer'])
    assert.equal(result.code, 2)
    assert.match(result.stderr, /missing required option --reason/)
  })

  it('assume writes the granted certificate', async () => {
    const before = certificateIdentity(devIdentity)
    const result = await request(devIdentity, ['assume', approvedId])
    assert.equal(result.code, 0, result.stderr)
    assert.match(result.stdout, new RegExp(`assumed access request ${approvedId}`))

    const after = certificateIdentity(devIdentity)
    assert.equal(after.spiffeId, DEV_ID)
    assert.notEqual(after.serial, before.serial)
    assert.deepEqual(after.claims.roles, ['dev', 'deployer'])
    assert.deepEqual(after.claims.accessRequests, [approvedId])
    assert.ok(after.notAfter.getTime() <= before.notAfter.getTime(), 'outlives the parent')
    const [view] = (await requestJson<RequestView[]>(devIdentity, ['ls'])).filter(
      (item) => item.id === approvedId,
    )
    assert.ok(after.notAfter.getTime() <= Date.parse(view?.expires ?? ''), 'outlives the grant')
    assert.equal(statSync(join(devIdentity, 'svid_key.pem')).mode & 0o777, 0o600)
  })

  it('granted role allows write tools', async () => {
    const tools = await notesTools(devIdentity)
    assert.ok(tools.includes('write_note'), `write_note missing from ${tools.join(', ')}`)
    const result = (await callWriteNote(devIdentity)) as { content: unknown }
    assert.deepEqual(result.content, [
      { type: 'text', text: 'called write_note with {"text":"release"}' },
    ])
    assert.ok(readFileSync(recordFile, 'utf8').includes('"write_note"'))
  })

  it('assume to another directory', async () => {
    const dest = join(temporaryDirectory('requests-dest'), 'granted')
    const result = await request(devIdentity, ['assume', approvedId, '--dest', dest])
    assert.equal(result.code, 0, result.stderr)
    assert.deepEqual(certificateIdentity(dest).claims.accessRequests, [approvedId])
  })

  it('audit shows every step with the reviewer', async () => {
    const events = (await auditSearch(dataDir, ['--limit', '1000'])).filter((event) =>
      event.type.startsWith('request.'),
    )
    const find = (type: string, id: string, outcome = 'success'): AuditRecord => {
      const event = events.find(
        (candidate) =>
          candidate.type === type &&
          candidate.outcome === outcome &&
          candidate.details?.requestId === id,
      )
      assert.ok(event, `no ${outcome} ${type} event for ${id}`)
      return event
    }
    assert.equal(find('request.create', approvedId).caller?.spiffeId, DEV_ID)
    const approve = find('request.approve', approvedId)
    assert.equal(approve.caller?.spiffeId, LEAD_ID)
    assert.equal(approve.details?.reviewer, LEAD_ID)
    assert.equal(approve.details?.reason, 'release ok')
    const deny = find('request.deny', deniedId)
    assert.equal(deny.details?.reviewer, LEAD_ID)
    assert.equal(deny.details?.reason, 'open a ticket')
    const assume = find('request.assume', approvedId)
    assert.equal(assume.caller?.spiffeId, DEV_ID)
    assert.equal(assume.details?.reviewer, LEAD_ID)
    const selfReview = find('request.approve', approvedId, 'denied')
    assert.equal(selfReview.reason, 'self_review')
    assert.equal(selfReview.caller?.spiffeId, DEV_ID)
    const denials = events.filter((event) => event.outcome === 'denied').map((e) => e.reason)
    assert.ok(denials.includes('not_requestable'), `denials: ${denials.join(', ')}`)
    assert.ok(denials.includes('already_decided'), `denials: ${denials.join(', ')}`)

    const verify = await runWrit(['audit', 'verify', '--data-dir', dataDir])
    assert.equal(verify.code, 0, verify.stdout)
  })

  it('role lock rejects granted certificate', async () => {
    const lock = await runWrit([
      'lock',
      '--role',
      'deployer',
      '--message',
      'release cancelled',
      '--data-dir',
      dataDir,
    ])
    assert.equal(lock.code, 0, lock.stderr)
    const rejected = await waitFor('the lock to reach the server', async () => {
      const result = await request(devIdentity, ['ls', '--json'])
      return result.code === 0 ? undefined : result
    })
    assert.match(rejected.stderr, /403: .*release cancelled/)
    const create = await createRequest('deployer', 'again')
    assertRejected(create, 'access.locked', /release cancelled/)
  })
})
