// Helpers for the end-to-end tests: they run the built `writ` CLI as child processes on temporary
// data directories and talk to it only over its real interfaces (stdout, files, HTTPS).
import { type ChildProcess, spawn } from 'node:child_process'
import { X509Certificate } from 'node:crypto'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { request } from 'node:https'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js'

/** The compiled CLI entry point, found from this file's place in dist/test/e2e. */
export const CLI = resolve(import.meta.dirname, '../../src/cli/main.js')

/** The repository root: the nearest folder above this file with the MCP packages installed. */
export const ROOT = findRoot(import.meta.dirname)
export const FIXTURES = join(ROOT, 'test/fixtures/mcp')
export const RECORDING_SERVER = join(FIXTURES, 'recording-server.mjs')
export const EXIT_AT_START = join(FIXTURES, 'exit-at-start.mjs')

const require = createRequire(import.meta.url)
export const FILESYSTEM_SERVER = require.resolve(
  '@modelcontextprotocol/server-filesystem/dist/index.js',
)

/** The trust domain a data directory gets when `writ start` creates it without a flag. */
export const TRUST_DOMAIN = 'writ.local'

/** How long one CLI command may run before the helper kills it and fails the test. */
const COMMAND_TIMEOUT_MS = 30_000

function findRoot(start: string): string {
  let directory = start
  while (!existsSync(join(directory, 'node_modules/@modelcontextprotocol'))) {
    const parent = dirname(directory)
    if (parent === directory) throw new Error(`repository root not found above ${start}`)
    directory = parent
  }
  return directory
}

const temporaryDirectories: string[] = []

/** Creates a temporary directory that `removeTemporaryDirectories` deletes. */
export function temporaryDirectory(prefix: string): string {
  const directory = mkdtempSync(join(tmpdir(), `writ-e2e-${prefix}-`))
  temporaryDirectories.push(directory)
  return directory
}

/** Deletes the directories made by `temporaryDirectory`, unless WRIT_E2E_KEEP is set. */
export function removeTemporaryDirectories(): void {
  if (process.env.WRIT_E2E_KEEP) return
  for (const directory of temporaryDirectories.splice(0)) {
    rmSync(directory, { recursive: true, force: true })
  }
}

export interface CommandResult {
  code: number | null
  stdout: string
  stderr: string
}

/** Runs `writ ARGS...` to completion and returns its exit code and output. */
export function runWrit(
  args: string[],
  options: { env?: Record<string, string>; input?: string; timeoutMs?: number } = {},
): Promise<CommandResult> {
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      env: { ...process.env, ...options.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (text: string) => {
      stdout += text
    })
    child.stderr.setEncoding('utf8').on('data', (text: string) => {
      stderr += text
    })
    const limit = options.timeoutMs ?? COMMAND_TIMEOUT_MS
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      fail(new Error(`writ ${args.join(' ')} did not exit within ${limit} ms\nstderr: ${stderr}`))
    }, limit)
    child.on('error', fail)
    child.on('close', (code) => {
      clearTimeout(timer)
      done({ code, stdout, stderr })
    })
    child.stdin.end(options.input ?? '')
  })
}

/** A `writ start` process and what it printed at start-up. */
export interface WritServer {
  /** `HOST:PORT` from the `writ listening on https://HOST:PORT` line. */
  address: string
  /** `sha256:<hex>` CA pin from the start-up output. */
  caPin: string
  dataDir: string
  process: ChildProcess
  /** Everything written to standard error so far: the JSON log lines. */
  stderr(): string
  /** The standard error lines that parse as JSON objects. */
  logEntries(): Array<Record<string, unknown>>
  /** Sends SIGTERM to the process id and waits for the exit, killing it after 10 s. */
  stop(): Promise<void>
}

/**
 * Starts `writ start --listen 127.0.0.1:0` on `dataDir` with extra arguments and waits for the
 * line that names the bound address.
 */
export async function startWrit(
  dataDir: string,
  args: string[] = [],
  env: Record<string, string> = {},
): Promise<WritServer> {
  const child = spawn(
    process.execPath,
    [CLI, 'start', '--data-dir', dataDir, '--listen', '127.0.0.1:0', ...args],
    { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] },
  )
  let stdout = ''
  let stderr = ''
  child.stderr.setEncoding('utf8').on('data', (text: string) => {
    stderr += text
  })
  const exited = new Promise<void>((done) => child.once('exit', () => done()))

  const started = await new Promise<{ address: string; caPin: string }>((done, fail) => {
    const timer = setTimeout(() => {
      fail(
        new Error(
          `writ start printed no address within 20 s\nstdout: ${stdout}\nstderr: ${stderr}`,
        ),
      )
    }, 20_000)
    child.stdout.setEncoding('utf8').on('data', (text: string) => {
      stdout += text
      const address = /writ listening on https:\/\/(\S+)/.exec(stdout)?.[1]
      const caPin = /CA pin (sha256:[0-9a-f]{64})/.exec(stdout)?.[1]
      if (address !== undefined && caPin !== undefined) {
        clearTimeout(timer)
        done({ address, caPin })
      }
    })
    child.once('exit', (code) => {
      clearTimeout(timer)
      fail(new Error(`writ start exited with code ${code}\nstdout: ${stdout}\nstderr: ${stderr}`))
    })
  })

  return {
    ...started,
    dataDir,
    process: child,
    stderr: () => stderr,
    logEntries: () => parseJsonLines(stderr),
    stop: () => stopProcess(child, exited),
  }
}

/** Sends SIGTERM to a child by its process id and waits for it, with SIGKILL after 10 s. */
export async function stopProcess(child: ChildProcess, exited?: Promise<void>): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return
  const done = exited ?? new Promise<void>((resolve) => child.once('exit', () => resolve()))
  process.kill(child.pid, 'SIGTERM')
  const timer = setTimeout(() => {
    if (child.pid !== undefined && child.exitCode === null) process.kill(child.pid, 'SIGKILL')
  }, 10_000)
  await done
  clearTimeout(timer)
}

/** Parses every line of `text` that is a JSON object, skipping the rest. */
export function parseJsonLines(text: string): Array<Record<string, unknown>> {
  const entries: Array<Record<string, unknown>> = []
  for (const line of text.split('\n')) {
    if (!line.startsWith('{')) continue
    try {
      entries.push(JSON.parse(line) as Record<string, unknown>)
    } catch {
      // A line cut off by a process that is still writing. The next call parses it whole.
    }
  }
  return entries
}

/**
 * Returns the manifests most tests use: servers `notes`, `files` and `broken` labelled `env: e2e`,
 * `hidden` labelled `env: other`, and role `e2e-reader`, which selects `env: e2e`.
 */
export function gatewayManifests(options: { workspace: string; recordFile: string }): string {
  const node = JSON.stringify(process.execPath)
  return `apiVersion: writ.dev/v1alpha1
kind: McpServer
metadata: { name: notes, labels: { env: e2e } }
spec:
  description: recording fixture
  stdio:
    command: ${node}
    args: [${JSON.stringify(RECORDING_SERVER)}]
    env:
      RECORD_FILE: ${JSON.stringify(options.recordFile)}
      FIXTURE_SECRET: '\${env:E2E_FIXTURE_SECRET}'
---
apiVersion: writ.dev/v1alpha1
kind: McpServer
metadata: { name: files, labels: { env: e2e } }
spec:
  stdio:
    command: ${node}
    args: [${JSON.stringify(FILESYSTEM_SERVER)}, ${JSON.stringify(options.workspace)}]
---
apiVersion: writ.dev/v1alpha1
kind: McpServer
metadata: { name: broken, labels: { env: e2e } }
spec:
  stdio:
    command: ${node}
    args: [${JSON.stringify(EXIT_AT_START)}]
---
apiVersion: writ.dev/v1alpha1
kind: McpServer
metadata: { name: hidden, labels: { env: other } }
spec:
  stdio:
    command: ${node}
    args: [${JSON.stringify(RECORDING_SERVER)}]
---
apiVersion: writ.dev/v1alpha1
kind: Role
metadata: { name: e2e-reader }
spec:
  maxTtl: 1h
  allow:
    mcpServers: { env: e2e }
    tools: ['read_*', 'list_*', 'emoji', 'leak_secret']
  deny:
    tools: ['write_*']
`
}

/** The secret the `notes` server receives through `\${env:E2E_FIXTURE_SECRET}`. */
export const FIXTURE_SECRET = 'sk-e2e-7c1d9a4f3b2e'

/** What `writ bots add --json` prints. */
export interface Enrollment {
  bot: string
  roles: string[]
  token: string
  expires: string
  server: string
  caPin: string
}

/** Runs `writ bots add NAME --roles ROLES --json [extra]` and parses its output. */
export async function addBot(
  dataDir: string,
  name: string,
  roles: string,
  extra: string[] = [],
): Promise<Enrollment> {
  const result = await runWrit([
    'bots',
    'add',
    name,
    '--roles',
    roles,
    '--json',
    '--data-dir',
    dataDir,
    ...extra,
  ])
  if (result.code !== 0) {
    throw new Error(`writ bots add ${name} exited with ${result.code}: ${result.stderr}`)
  }
  return JSON.parse(result.stdout) as Enrollment
}

/** Runs `writ agent --oneshot` with a join token and fails with its output when it does not exit 0. */
export async function joinOnce(
  server: WritServer,
  enrollment: Enrollment,
  dest: string,
): Promise<void> {
  const result = await runWrit([
    'agent',
    '--server',
    server.address,
    '--token',
    enrollment.token,
    '--ca-pin',
    server.caPin,
    '--dest',
    dest,
    '--oneshot',
  ])
  if (result.code !== 0) {
    throw new Error(`writ agent --oneshot exited with ${result.code}: ${result.stderr}`)
  }
}

/** A running Writ with the standard manifests and one bot that joined. */
export interface GatewaySetup {
  server: WritServer
  dataDir: string
  workspace: string
  recordFile: string
  identity: string
  spiffeId: string
}

/**
 * Writes the standard manifests, starts Writ with them as `--config`, enrolls bot `e2e-agent`
 * with role `e2e-reader` and joins it with `writ agent --oneshot`.
 */
export async function startGatewaySetup(
  name: string,
  startArgs: string[] = [],
): Promise<GatewaySetup> {
  const root = temporaryDirectory(name)
  const dataDir = join(root, 'data')
  const workspace = join(root, 'workspace')
  const recordFile = join(root, 'received.jsonl')
  const identity = join(root, 'identity')
  const config = join(root, 'config.yaml')
  createWorkspace(workspace)
  writeFileSync(config, gatewayManifests({ workspace, recordFile }))
  const server = await startWrit(dataDir, ['--config', config, ...startArgs], {
    E2E_FIXTURE_SECRET: FIXTURE_SECRET,
  })
  try {
    const enrollment = await addBot(dataDir, 'e2e-agent', 'e2e-reader')
    await joinOnce(server, enrollment, identity)
  } catch (error) {
    await server.stop()
    throw error
  }
  const spiffeId = `spiffe://${TRUST_DOMAIN}/bot/e2e-agent`
  return { server, dataDir, workspace, recordFile, identity, spiffeId }
}

function createWorkspace(workspace: string): void {
  mkdirSync(workspace, { recursive: true })
  writeFileSync(join(workspace, 'hello.txt'), 'hello from the e2e workspace\n')
}

/** Connects the MCP SDK client to `server` through `writ mcp connect`, as a desktop client would. */
export async function connectThroughBridge(
  address: string,
  identity: string,
  server: string,
  extraArgs: string[] = [],
): Promise<{ client: Client; transport: StdioClientTransport; stderr: () => string }> {
  const transport = new StdioClientTransport({
    command: process.execPath,
    args: [
      CLI,
      'mcp',
      'connect',
      server,
      '--server',
      address,
      '--identity',
      identity,
      ...extraArgs,
    ],
    stderr: 'pipe',
  })
  let stderr = ''
  transport.stderr?.on('data', (chunk: Buffer) => {
    stderr += chunk.toString('utf8')
  })
  const client = new Client({ name: 'writ-e2e', version: '1.0.0' })
  await client.connect(transport)
  return { client, transport, stderr: () => stderr }
}

/** The client certificate, key and CA bundle that `writ agent` wrote into an identity directory. */
export interface ClientTls {
  cert?: string
  key?: string
  ca: string
}

export function readIdentity(identity: string): Required<ClientTls> {
  return {
    cert: readFileSync(join(identity, 'svid.pem'), 'utf8'),
    key: readFileSync(join(identity, 'svid_key.pem'), 'utf8'),
    ca: readFileSync(join(identity, 'bundle.pem'), 'utf8'),
  }
}

/** Returns the serial number of the certificate in `identity/svid.pem` as lowercase hex. */
export function certificateSerial(identity: string): string {
  const pem = readFileSync(join(identity, 'svid.pem'), 'utf8')
  return normalizeSerial(new X509Certificate(pem).serialNumber)
}

/** Lowercase hex without leading zeros, so serials from different encoders compare equal. */
export function normalizeSerial(serial: string): string {
  return serial.toLowerCase().replace(/^0+(?=.)/, '')
}

export interface HttpsReply {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: Buffer
  /** The local port of the connection, which the server records as part of the peer address. */
  localPort: number | undefined
}

/**
 * Sends one HTTPS request on a fresh connection (no keep-alive, so each request presents the
 * certificate it is given) and returns the raw reply.
 */
export function httpsRequest(
  address: string,
  path: string,
  options: {
    tls: ClientTls
    method?: string
    body?: string | Buffer
    headers?: Record<string, string>
  },
): Promise<HttpsReply> {
  const url = new URL(path, `https://${address}`)
  return new Promise((done, fail) => {
    let localPort: number | undefined
    const outgoing = request(
      url,
      {
        method: options.method ?? 'POST',
        agent: false,
        ca: options.tls.ca,
        ...(options.tls.cert ? { cert: options.tls.cert, key: options.tls.key } : {}),
        headers: {
          'content-type': 'application/json',
          accept: 'application/json, text/event-stream',
          ...options.headers,
        },
      },
      (response) => {
        const chunks: Buffer[] = []
        response.on('data', (chunk: Buffer) => chunks.push(chunk))
        response.on('end', () =>
          done({
            status: response.statusCode ?? 0,
            headers: response.headers,
            body: Buffer.concat(chunks),
            localPort,
          }),
        )
        response.on('error', fail)
      },
    )
    outgoing.on('socket', (socket) => {
      socket.on('connect', () => {
        localPort = socket.localPort
      })
      socket.on('secureConnect', () => {
        localPort = socket.localPort
      })
    })
    outgoing.on('error', fail)
    outgoing.end(options.body)
  })
}

/** Parses every JSON-RPC message in a reply: a JSON body, or each `data:` line of an event stream. */
export function replyMessages(reply: HttpsReply): Array<Record<string, unknown>> {
  const text = reply.body.toString('utf8')
  const contentType = String(reply.headers['content-type'] ?? '')
  const values = contentType.startsWith('text/event-stream')
    ? text
        .split('\n')
        .filter((line) => line.startsWith('data:'))
        .map((line) => JSON.parse(line.slice(5)) as unknown)
    : [JSON.parse(text) as unknown]
  return values.flat() as Array<Record<string, unknown>>
}

/** Parses the one JSON-RPC message of a reply, failing when there is not exactly one. */
export function replyJson(reply: HttpsReply): Record<string, unknown> {
  const messages = replyMessages(reply)
  if (messages.length !== 1) {
    throw new Error(`expected one message, got ${messages.length}: ${reply.body.toString('utf8')}`)
  }
  return messages[0] as Record<string, unknown>
}

export function initializeBody(version: string, id: number | string = 1): string {
  return JSON.stringify({
    jsonrpc: '2.0',
    id,
    method: 'initialize',
    params: {
      protocolVersion: version,
      capabilities: {},
      clientInfo: { name: 'writ-e2e-raw', version: '1.0.0' },
    },
  })
}

/** A stored audit event as `writ audit search --json` prints it. */
export interface AuditRecord {
  id: string
  seq: number
  time: string
  type: string
  outcome: string
  reason?: string
  rule?: string
  peer?: string
  server?: string
  tool?: string
  argsDigest?: string
  caller?: { spiffeId: string; serial: string; roles: string[]; kind: string }
  details?: Record<string, unknown>
  hash: string
  prevHash: string
}

/** Runs `writ audit search --json` with filters and parses one event per line. */
export async function auditSearch(dataDir: string, filters: string[] = []): Promise<AuditRecord[]> {
  const result = await runWrit(['audit', 'search', '--data-dir', dataDir, '--json', ...filters])
  if (result.code !== 0) {
    throw new Error(
      `writ audit search ${filters.join(' ')} exited with ${result.code}: ${result.stderr}`,
    )
  }
  return result.stdout
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => JSON.parse(line) as AuditRecord)
}

/** Calls `check` until it returns a value other than undefined, failing after `timeoutMs`. */
export async function waitFor<T>(
  description: string,
  check: () => T | undefined | Promise<T | undefined>,
  timeoutMs = 15_000,
  intervalMs = 100,
): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await check()
    if (value !== undefined) return value
    if (Date.now() > deadline)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${description}`)
    await new Promise((resolve) => setTimeout(resolve, intervalMs))
  }
}
