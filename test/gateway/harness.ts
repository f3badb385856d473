import { existsSync, mkdtempSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import type { AuditEventInput } from '../../src/audit/types.js'
import type { Clock } from '../../src/clock.js'
import {
  DEFAULT_MAX_BODY_BYTES,
  type GatewayDeps,
  type UpstreamConfig,
} from '../../src/gateway/deps.js'
import { createMcpHandler, type McpHandler } from '../../src/gateway/mcp-handler.js'
import type { LimitsSettings } from '../../src/guard/limits.js'
import type { ToolPinGuard } from '../../src/guard/tool-pins.js'
import type { PeerIdentity } from '../../src/identity/types.js'
import { silentLogger } from '../../src/log.js'

/** The repository root, found from the compiled test whether it runs from dist/ or .build/. */
export const ROOT = findRoot(import.meta.dirname)

function findRoot(start: string): string {
  let directory = start
  while (!existsSync(join(directory, 'node_modules/@modelcontextprotocol'))) {
    const parent = dirname(directory)
    if (parent === directory) throw new Error(`repository root not found above ${start}`)
    directory = parent
  }
  return directory
}
export const EVERYTHING = join(
  ROOT,
  'node_modules/@modelcontextprotocol/server-everything/dist/index.js',
)
export const FIXTURES = join(ROOT, 'test/fixtures/mcp')

/** Builds a verified identity as the mTLS listener would hand it over. */
export function identity(name = 'alice', serial = '1a2b'): PeerIdentity {
  return {
    spiffeId: `spiffe://writ.test/bot/${name}`,
    name,
    serial,
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + 3_600_000),
    claims: {
      version: 1,
      kind: 'bot',
      roles: ['reader'],
      traits: {},
      depth: 0,
      generation: 1,
      accessRequests: [],
    },
  }
}

export interface TestGateway {
  url(server: string): string
  audit: Array<AuditEventInput & { id: string }>
  handler: McpHandler
  close(): Promise<void>
}

/**
 * Starts the gateway on 127.0.0.1:0. The header `x-test-serial` picks the certificate serial of the
 * injected identity, so tests can present a different certificate, and `x-test-name` picks the
 * bot name, so tests can present a different SPIFFE ID.
 */
export async function startGateway(options: {
  servers: Record<string, Omit<UpstreamConfig, 'name'>>
  allowTool: (tool: string) => boolean
  maxBodyBytes?: number
  maxSessionsPerPrincipal?: number
  /** The gateway clock; tests that refill rate-limit buckets pass one they can advance. */
  clock?: Clock
  guard?: LimitsSettings
  roleRateLimits?: GatewayDeps['roleRateLimits']
  /** Builds the tool pin guard, given the audit function that fills `TestGateway.audit`. */
  toolPins?: (audit: GatewayDeps['audit']) => ToolPinGuard
}): Promise<TestGateway> {
  const audit: TestGateway['audit'] = []
  const deps: GatewayDeps = {
    getServer: (name) => {
      const config = options.servers[name]
      return config ? { name, ...config } : undefined
    },
    decideServer: () => ({ effect: 'allow', reason: 'role_grants_server', rule: 'reader' }),
    decideTool: (_identity, _server, tool) =>
      options.allowTool(tool)
        ? { effect: 'allow', reason: 'role_grants_tool', rule: 'reader:allow' }
        : { effect: 'deny', reason: 'no_role_grants_tool', rule: 'reader:deny' },
    audit: async (event) => {
      const record = { ...event, id: `evt_${audit.length + 1}` }
      audit.push(record)
      return { id: record.id }
    },
    logger: silentLogger,
    clock: options.clock ?? Date.now,
    limits: {
      maxBodyBytes: options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES,
      ...(options.guard === undefined ? {} : { guard: options.guard }),
      ...(options.maxSessionsPerPrincipal === undefined
        ? {}
        : { maxSessionsPerPrincipal: options.maxSessionsPerPrincipal }),
    },
  }
  if (options.toolPins !== undefined) deps.toolPins = options.toolPins(deps.audit)
  if (options.roleRateLimits !== undefined) deps.roleRateLimits = options.roleRateLimits
  const handler = createMcpHandler(deps)
  const server: Server = createServer((req, res) => {
    const match = /^\/mcp\/([^/?]+)/.exec(req.url ?? '')
    if (!match) {
      res.writeHead(404).end()
      return
    }
    const serial = String(req.headers['x-test-serial'] ?? '1a2b')
    const name = String(req.headers['x-test-name'] ?? 'alice')
    void handler.handle(req, res, identity(name, serial), match[1]!, '127.0.0.1:1')
  })
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done))
  const { port } = server.address() as AddressInfo
  return {
    url: (name) => `http://127.0.0.1:${port}/mcp/${name}`,
    audit,
    handler,
    close: async () => {
      await handler.closeAll()
      server.closeAllConnections()
      await new Promise<void>((done) => server.close(() => done()))
    },
  }
}

export function tempFile(name: string): string {
  return join(mkdtempSync(join(tmpdir(), 'writ-gateway-')), name)
}

/** Sends a raw POST and returns status, headers and parsed body. */
export async function post(
  url: string,
  body: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; headers: Headers; body: unknown }> {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json', ...headers },
    body,
  })
  const text = await response.text()
  return {
    status: response.status,
    headers: response.headers,
    body: text === '' ? undefined : JSON.parse(text),
  }
}

export function initializeBody(version: string, id: number | string = 1): string {
  return JSON.stringify({
    jsonrpc: '2.0',
    id,
    method: 'initialize',
    params: {
      protocolVersion: version,
      capabilities: {},
      clientInfo: { name: 'raw', version: '1' },
    },
  })
}
