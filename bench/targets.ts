/**
 * The systems the benchmark compares. Each target starts its processes, opens one MCP session
 * per concurrent caller, and names the processes whose CPU time is read for each round.
 */
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { type ClientTls, HttpMcpSession } from './http-session.js'
import {
  descendantPids,
  forkAndWait,
  type ProcessRegistry,
  spawnTracked,
  waitForListeningPort,
} from './processes.js'
import { StdioMcpSession } from './stdio-session.js'
import { HTTP_SERVER_NAME, STDIO_SERVER_NAME, type WritReady } from './writ-names.js'

/** One MCP session of any transport. */
export interface McpSession {
  call(method: string, params: unknown): Promise<unknown>
  close(): Promise<void>
}

/** A started system under test with its open sessions. */
export interface Target {
  id: TargetId
  /** A one-line description for the table. */
  title: string
  /** The path a call takes, for the method section. */
  path: string
  /** The role of `measuredPids`: the gateway, or the server itself when there is no gateway. */
  measuredRole: string
  measuredPids: number[]
  /** The upstream MCP server processes behind the measured process, when there are any. */
  upstreamPids: number[]
  sessions: McpSession[]
}

/** Target ids, in the order rounds visit them. */
export const TARGET_IDS = [
  'sdk-direct',
  'writ-stdio',
  'writ-http',
  'mcp-proxy',
  'stdio-direct',
] as const
export type TargetId = (typeof TARGET_IDS)[number]

/** Paths of the compiled scripts the targets start. */
export interface Scripts {
  upstreamServer: string
  writChild: string
}

const START_TIMEOUT_MS = 30_000

/** Starts the Streamable HTTP echo server in its own process and returns its URL and pid. */
export async function startHttpUpstream(
  scripts: Scripts,
  registry: ProcessRegistry,
): Promise<{ url: string; pid: number }> {
  const { child, message } = await forkAndWait<{ type: string; url: string }>(
    scripts.upstreamServer,
    ['http'],
    'listening',
    START_TIMEOUT_MS,
    registry,
  )
  return { url: message.url, pid: child.pid as number }
}

/** Target: the MCP SDK's Streamable HTTP server, called directly over plain HTTP. */
export async function startSdkDirect(
  scripts: Scripts,
  registry: ProcessRegistry,
  concurrency: number,
): Promise<Target> {
  const upstream = await startHttpUpstream(scripts, registry)
  const sessions = await openAll(concurrency, () => HttpMcpSession.open(upstream.url))
  return {
    id: 'sdk-direct',
    title: 'MCP SDK Streamable HTTP server, direct',
    path: 'client → HTTP → SDK server (`McpServer` + `StreamableHTTPServerTransport`)',
    measuredRole: 'SDK server',
    measuredPids: [upstream.pid],
    upstreamPids: [],
    sessions,
  }
}

/** A running Writ child process with its client identity. */
export interface WritProcess {
  pid: number
  address: string
  tls: ClientTls
}

/** Starts Writ in a child process in front of the stdio echo server and `httpUpstreamUrl`. */
export async function startWrit(
  scripts: Scripts,
  registry: ProcessRegistry,
  dataDir: string,
  httpUpstreamUrl: string,
): Promise<WritProcess> {
  const { child, message } = await forkAndWait<WritReady>(
    scripts.writChild,
    [dataDir, scripts.upstreamServer, httpUpstreamUrl],
    'ready',
    START_TIMEOUT_MS,
    registry,
  )
  const tls: ClientTls = {
    cert: readFileSync(join(message.identityDir, 'svid.pem'), 'utf8'),
    key: readFileSync(join(message.identityDir, 'svid_key.pem'), 'utf8'),
    ca: readFileSync(join(message.identityDir, 'bundle.pem'), 'utf8'),
  }
  return { pid: child.pid as number, address: message.address, tls }
}

/** Target: Writ fronting the stdio echo server, one upstream process per session. */
export async function startWritStdio(writ: WritProcess, concurrency: number): Promise<Target> {
  const url = `https://${writ.address}/mcp/${STDIO_SERVER_NAME}`
  const sessions = await openAll(concurrency, () => HttpMcpSession.open(url, writ.tls))
  return {
    id: 'writ-stdio',
    title: 'Writ → stdio upstream',
    path: 'client → HTTPS with client certificate → Writ (policy, audit) → stdio → SDK server',
    measuredRole: 'Writ',
    measuredPids: [writ.pid],
    upstreamPids: descendantPids(writ.pid),
    sessions,
  }
}

/** Target: Writ fronting a second instance of the Streamable HTTP echo server. */
export async function startWritHttp(
  writ: WritProcess,
  upstreamPid: number,
  concurrency: number,
): Promise<Target> {
  const url = `https://${writ.address}/mcp/${HTTP_SERVER_NAME}`
  const sessions = await openAll(concurrency, () => HttpMcpSession.open(url, writ.tls))
  return {
    id: 'writ-http',
    title: 'Writ → Streamable HTTP upstream',
    path: 'client → HTTPS with client certificate → Writ (policy, audit) → HTTP → SDK server',
    measuredRole: 'Writ',
    measuredPids: [writ.pid],
    upstreamPids: [upstreamPid],
    sessions,
  }
}

/** The flags the benchmark passes to `mcp-proxy`, shown in the report. */
export const MCP_PROXY_FLAGS = [
  '--host',
  '127.0.0.1',
  '--port',
  '0',
  '--server',
  'stream',
  '--no-eventStore',
]

/** Returns the path of the `mcp-proxy` bin script and the installed version. */
export function locateMcpProxy(): { bin: string; version: string } {
  const require = createRequire(import.meta.url)
  const main = require.resolve('mcp-proxy')
  const root = main.slice(0, main.lastIndexOf('/dist/'))
  const manifest = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as {
    version: string
    bin: Record<string, string>
  }
  const bin = manifest.bin['mcp-proxy']
  if (bin === undefined) throw new Error(`${root}/package.json has no "mcp-proxy" bin`)
  return { bin: join(root, bin), version: manifest.version }
}

/** Target: `mcp-proxy` fronting the stdio echo server, which it starts once for all sessions. */
export async function startMcpProxy(
  scripts: Scripts,
  registry: ProcessRegistry,
  concurrency: number,
): Promise<Target> {
  const { bin } = locateMcpProxy()
  const child = spawnTracked(
    process.execPath,
    [bin, ...MCP_PROXY_FLAGS, '--', process.execPath, scripts.upstreamServer, 'stdio'],
    registry,
  )
  const port = await waitForListeningPort(child, 'mcp-proxy', START_TIMEOUT_MS)
  const url = `http://127.0.0.1:${port}/mcp`
  const sessions = await openAll(concurrency, () => HttpMcpSession.open(url))
  const pid = child.pid as number
  return {
    id: 'mcp-proxy',
    title: 'mcp-proxy → stdio upstream',
    path: 'client → HTTP → mcp-proxy → stdio → SDK server (one upstream process shared by all sessions)',
    measuredRole: 'mcp-proxy',
    measuredPids: [pid],
    upstreamPids: descendantPids(pid),
    sessions,
  }
}

/** Target: the stdio echo server called directly, one process per session, as a baseline. */
export async function startStdioDirect(
  scripts: Scripts,
  registry: ProcessRegistry,
  concurrency: number,
): Promise<Target> {
  const sessions = await openAll(concurrency, () =>
    StdioMcpSession.open(process.execPath, [scripts.upstreamServer, 'stdio'], registry),
  )
  return {
    id: 'stdio-direct',
    title: 'stdio server, direct (baseline)',
    path: 'client → stdio pipes → SDK server, one process per session',
    measuredRole: '-',
    measuredPids: [],
    upstreamPids: sessions.map((session) => session.pid),
    sessions,
  }
}

async function openAll<T>(count: number, open: () => Promise<T>): Promise<T[]> {
  const sessions: T[] = []
  for (let i = 0; i < count; i++) sessions.push(await open())
  return sessions
}
