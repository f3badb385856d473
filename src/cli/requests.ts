import { X509Certificate } from 'node:crypto'
import { DEFAULT_REQUEST_TIMEOUT_MS } from '../agent/client.js'
import { type IdentityFiles, readIdentity, writeIdentity } from '../agent/files.js'
import { postJson } from '../agent/https-json.js'
import { describeStoredIdentity, readIssuedIdentity } from '../agent/issued.js'
import { createCsrPem, generateAgentKeys } from '../agent/keys.js'
import { parseServerAddress } from '../agent/server-address.js'
import type { AccessRequestView } from '../authority/access-requests.js'
import { systemClock } from '../clock.js'
import { WritError } from '../errors.js'
import { parseDuration } from '../lib/duration.js'
import { clientOptions, getJson, readClientTls } from './client-identity.js'
import {
  CLIENT_OPTIONS,
  type Command,
  type CommandInput,
  JSON_OPTION,
  UsageError,
} from './command.js'

const ROLE_NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/
const REQUEST_ID = /^[A-Za-z0-9-]{1,64}$/
const API_PATH = '/v1/access-requests'

const REASON_OPTION = {
  reason: {
    type: 'string' as const,
    value: 'TEXT',
    description: 'why, such as a ticket id (required, recorded in the audit log)',
  },
}

export const requestCreateCommand: Command = {
  name: 'request create',
  summary: 'ask for extra roles for a limited time; prints the request id',
  details:
    'A role of the current identity must list each requested role under spec.requests.roles. A\n' +
    'holder of a role whose spec.review.roles lists them approves or denies the request; then run\n' +
    'writ request assume ID.',
  options: {
    ...CLIENT_OPTIONS,
    roles: { type: 'string', value: 'R1,R2', description: 'comma-separated roles to request' },
    ...REASON_OPTION,
    ttl: {
      type: 'string',
      value: 'DURATION',
      description:
        'how long the grant lasts once approved, such as 30m (default 1h or the role maximum)',
    },
    ...JSON_OPTION,
  },
  async run(input) {
    const roles = parseRoles(input.values.roles)
    const reason = requiredText(input, 'reason')
    const ttl = input.values.ttl
    if (typeof ttl === 'string') parseDuration(ttl, '--ttl')
    const { request } = (await post(input, API_PATH, {
      roles,
      reason,
      ...(typeof ttl === 'string' ? { ttl } : {}),
    })) as { request: AccessRequestView }
    if (input.values.json) {
      process.stdout.write(`${JSON.stringify(request, null, 2)}\n`)
      return 0
    }
    process.stdout.write(`${request.id}\n`)
    process.stderr.write(
      `access request for ${request.roles.join(', ')} (${request.ttl}) is pending review; ` +
        `after approval run: writ request assume ${request.id}\n`,
    )
    return 0
  },
}

export const requestLsCommand: Command = {
  name: 'request ls',
  summary: 'list your access requests and the ones you may review',
  options: { ...CLIENT_OPTIONS, ...JSON_OPTION },
  async run(input) {
    const { server, identityDir } = clientOptions(input)
    const { requests } = (await getJson(server, API_PATH, readClientTls(identityDir))) as {
      requests: AccessRequestView[]
    }
    if (input.values.json) {
      process.stdout.write(`${JSON.stringify(requests, null, 2)}\n`)
      return 0
    }
    if (requests.length === 0) process.stdout.write('no access requests\n')
    for (const request of requests) process.stdout.write(formatRequest(request))
    return 0
  },
}

export const requestApproveCommand: Command = decideCommand('approve')
export const requestDenyCommand: Command = decideCommand('deny')

export const requestAssumeCommand: Command = {
  name: 'request assume',
  summary: 'get a certificate carrying the roles of an approved access request',
  args: 'ID',
  arity: [1, 1],
  details:
    'Generates a new key, sends a CSR with the current identity and writes svid.pem, svid_key.pem\n' +
    'and bundle.pem into --dest. The certificate ends when the grant or the current certificate\n' +
    'ends, whichever is first. A writ agent renewing the same directory replaces it with a\n' +
    'certificate without the extra roles, so give --dest a separate directory in that case.',
  options: {
    ...CLIENT_OPTIONS,
    dest: {
      type: 'string',
      value: 'DIR',
      description: 'directory for the new identity files (default: the --identity directory)',
    },
    ...JSON_OPTION,
  },
  async run(input) {
    const id = requestId(input.positionals[0] as string)
    const { server, identityDir } = clientOptions(input)
    const dest = typeof input.values.dest === 'string' ? input.values.dest : identityDir
    const files = await readIdentityFiles(identityDir)

    const current = describeStoredIdentity(identityDir, files)
    const leaf = new X509Certificate(current.certPem)
    const commonName = /(?:^|\n)CN=([^\n]*)/.exec(leaf.subject)?.[1] ?? 'writ-client'
    const keys = await generateAgentKeys()
    const csr = createCsrPem(keys, { commonName, spiffeId: current.spiffeId })

    const address = parseServerAddress(server)
    const body = await postJson(
      address,
      `${API_PATH}/${id}/assume`,
      { csr },
      { ca: files.bundlePem, cert: files.certPem, key: files.keyPem },
      DEFAULT_REQUEST_TIMEOUT_MS,
    )
    const issued = await readIssuedIdentity(address, body, keys, {
      clock: systemClock,
      spiffeId: current.spiffeId,
    })

    await writeIdentity(dest, {
      certPem: issued.certPem,
      keyPem: issued.keyPem,
      bundlePem: issued.bundlePem,
    })

    const { request } = body as { request: AccessRequestView }
    if (input.values.json) {
      const result = { ...request, serial: issued.serial, notAfter: issued.notAfter, dest }
      process.stdout.write(`${JSON.stringify(result, null, 2)}\n`)
      return 0
    }
    process.stdout.write(
      `assumed access request ${id}: ${issued.spiffeId} now holds ${request.roles.join(', ')} ` +
        `until ${issued.notAfter.toISOString()}, serial ${issued.serial}, files in ${dest}\n`,
    )
    return 0
  },
}

function decideCommand(action: 'approve' | 'deny'): Command {
  return {
    name: `request ${action}`,
    summary: `${action} another principal's access request`,
    args: 'ID',
    arity: [1, 1],
    details:
      'One of your roles must list every requested role under spec.review.roles. Nobody reviews\n' +
      'their own request, and each request is approved or denied once.',
    options: { ...CLIENT_OPTIONS, ...REASON_OPTION, ...JSON_OPTION },
    async run(input) {
      const id = requestId(input.positionals[0] as string)
      const reason = requiredText(input, 'reason')
      const { request } = (await post(input, `${API_PATH}/${id}/${action}`, { reason })) as {
        request: AccessRequestView
      }
      if (input.values.json) {
        process.stdout.write(`${JSON.stringify(request, null, 2)}\n`)
        return 0
      }
      const until = request.expires ? `; the grant ends at ${request.expires}` : ''
      process.stdout.write(
        `${action === 'approve' ? 'approved' : 'denied'} access request ${id} of ` +
          `${request.requester} for ${request.roles.join(', ')}${until}\n`,
      )
      return 0
    },
  }
}

/** Posts a JSON body over mutual TLS with the identity named by --identity. */
async function post(input: CommandInput, path: string, body: unknown): Promise<unknown> {
  const { server, identityDir } = clientOptions(input)
  const files = await readIdentityFiles(identityDir)
  const tls = { ca: files.bundlePem, cert: files.certPem, key: files.keyPem }
  return postJson(parseServerAddress(server), path, body, tls, DEFAULT_REQUEST_TIMEOUT_MS)
}

async function readIdentityFiles(identityDir: string): Promise<IdentityFiles> {
  const files = await readIdentity(identityDir)
  if (!files) {
    throw new WritError(
      'client.identity_missing',
      `no identity in ${identityDir}; run writ agent --dest ${identityDir} first`,
      { path: identityDir },
    )
  }
  return files
}

function formatRequest(request: AccessRequestView): string {
  const lines = [
    `${request.id}  ${request.status}  ${request.requester}`,
    `  roles: ${request.roles.join(', ')} for ${request.ttl}, created ${request.created}`,
    `  reason: ${request.reason}`,
  ]
  if (request.reviewer) {
    lines.push(`  reviewed by ${request.reviewer} at ${request.decided}: ${request.reviewReason}`)
  }
  if (request.expires) lines.push(`  grant ends: ${request.expires}`)
  if (request.reviewable) lines.push('  you may approve or deny this request')
  return `${lines.join('\n')}\n`
}

function parseRoles(value: unknown): string[] {
  if (typeof value !== 'string' || value.trim() === '') {
    throw new UsageError('missing required option --roles R1,R2')
  }
  const roles = value.split(',').map((role) => role.trim())
  const bad = roles.find((role) => !ROLE_NAME.test(role))
  if (bad !== undefined) throw new UsageError(`invalid role name "${bad}" in --roles`)
  return [...new Set(roles)]
}

function requiredText(input: CommandInput, name: string): string {
  const value = input.values[name]
  if (typeof value !== 'string' || value.trim() === '') {
    throw new UsageError(`missing required option --${name}`)
  }
  return value
}

function requestId(value: string): string {
  if (!REQUEST_ID.test(value)) {
    throw new UsageError(
      `invalid request id "${value}": use the id printed by writ request create or writ request ls`,
    )
  }
  return value
}
