import { type Clock, systemClock } from '../clock.js'
import type { IdentityFiles } from './files.js'
import { invalidResponse, postJson } from './https-json.js'
import {
  type IssuedIdentity,
  parseFirstCertificate,
  readIssuedIdentity,
  readUriSan,
} from './issued.js'
import { type AgentKeys, createCsrPem } from './keys.js'
import { parseServerAddress, type ServerAddress } from './server-address.js'

/** How long the task request may take before the server counts as unreachable. */
const TASK_REQUEST_TIMEOUT_MS = 10_000

export interface TaskRequestOptions {
  /** `HOST:PORT` or an address from `parseServerAddress`. */
  server: string | ServerAddress
  /** The identity the task is issued under; its certificate authenticates the request. */
  parent: IdentityFiles
  /** The key pair the task certificate is issued for. */
  keys: AgentKeys
  /** Tool name patterns the task may use. */
  tools: string[]
  /** Server name patterns the task may use; all the parent may use when omitted. */
  servers?: string[]
  /** A duration such as `10m`; the server defaults to ten minutes. */
  ttl?: string
  reason: string
  clock?: Clock
  timeoutMs?: number
}

/** A task certificate with what the server reported about it. */
export interface IssuedTask extends IssuedIdentity {
  taskId: string
  depth: number
  parentSpiffeId: string
  /** The lifetime the certificate got, in seconds. */
  ttlSeconds: number
  /** The bound that set the lifetime: the request, a role's `maxTtl` or the parent's remaining life. */
  lifetimeLimitedBy: 'request' | 'role' | 'parent'
}

/**
 * Requests a task certificate for `keys` over mTLS with the parent's certificate and checks the
 * response: the certificate must be for `keys`, signed by a CA in the returned bundle, and name the
 * parent's SPIFFE ID followed by `/task/<id>`. Throws the server's `task.*` error codes unchanged.
 *
 * @example
 *   const task = await requestTask({ server: '127.0.0.1:7443', parent, keys, tools: ['read_*'],
 *     reason: 'summarise open issues' })
 */
export async function requestTask(options: TaskRequestOptions): Promise<IssuedTask> {
  const address =
    typeof options.server === 'string' ? parseServerAddress(options.server) : options.server
  const { parent } = options
  const leaf = parseFirstCertificate(address, parent.certPem, 'parent certificate')
  const parentSpiffeId = readUriSan(leaf) ?? ''
  const commonName = /(?:^|\n)CN=([^\n]*)/.exec(leaf.subject)?.[1] ?? 'writ-task'

  const body: Record<string, unknown> = {
    csr: createCsrPem(options.keys, { commonName }),
    tools: options.tools,
    reason: options.reason,
  }
  if (options.servers !== undefined) body.servers = options.servers
  if (options.ttl !== undefined) body.ttl = options.ttl
  const response = await postJson(
    address,
    '/v1/task',
    body,
    { ca: parent.bundlePem, cert: parent.certPem, key: parent.keyPem },
    options.timeoutMs ?? TASK_REQUEST_TIMEOUT_MS,
  )
  const identity = await readIssuedIdentity(address, response, options.keys, {
    clock: options.clock ?? systemClock,
  })
  const fields = response as Record<string, unknown>
  const taskId = typeof fields.taskId === 'string' ? fields.taskId : ''
  if (taskId === '' || identity.spiffeId !== `${parentSpiffeId}/task/${taskId}`) {
    throw invalidResponse(
      address,
      `the task certificate names ${identity.spiffeId}, expected ${parentSpiffeId}/task/${taskId || '<id>'}`,
    )
  }
  return {
    ...identity,
    taskId,
    depth: Number(fields.depth),
    parentSpiffeId,
    ttlSeconds: Number(fields.ttlSeconds),
    lifetimeLimitedBy: readLimit(fields.lifetimeLimitedBy),
  }
}

function readLimit(value: unknown): IssuedTask['lifetimeLimitedBy'] {
  return value === 'role' || value === 'parent' ? value : 'request'
}
