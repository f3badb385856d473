import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js'
import { runAgent } from './agent/agent.js'
import { formatEventLine } from './audit/format.js'
import { verifyAuditChain } from './audit/verify.js'
import { enrollBot } from './bots.js'
import { createLogger, type Logger } from './log.js'
import { applyManifests } from './manifests.js'
import { type RunningWrit, startWrit } from './server.js'

const require = createRequire(import.meta.url)

/** The path of the `writ` entry point, used to launch `writ mcp connect` as a real client would. */
export const CLI_PATH = resolve(dirname(fileURLToPath(import.meta.url)), 'cli', 'main.js')

export interface DemoOptions {
  dataDir?: string
  listen?: string
  /** Print what the demo did, then stop everything and return instead of waiting. */
  exit: boolean
  out?: (text: string) => void
}

/** The role the demo bot holds: read and list everywhere, never write. */
const ROLE_NAME = 'workspace-reader'
const BOT_NAME = 'demo-agent'

/** Returns the entry script of an MCP server package installed with Writ. */
function serverScript(pkg: string): string {
  return require.resolve(`${pkg}/dist/index.js`)
}

function manifests(workspace: string, memoryFile: string): string {
  const node = JSON.stringify(process.execPath)
  return `apiVersion: writ.dev/v1alpha1
kind: McpServer
metadata: { name: files, labels: { demo: 'true' } }
spec:
  description: the demo workspace through @modelcontextprotocol/server-filesystem
  stdio:
    command: ${node}
    args: [${JSON.stringify(serverScript('@modelcontextprotocol/server-filesystem'))}, ${JSON.stringify(workspace)}]
---
apiVersion: writ.dev/v1alpha1
kind: McpServer
metadata: { name: memory, labels: { demo: 'true' } }
spec:
  description: a knowledge graph through @modelcontextprotocol/server-memory
  stdio:
    command: ${node}
    args: [${JSON.stringify(serverScript('@modelcontextprotocol/server-memory'))}]
    env: { MEMORY_FILE_PATH: ${JSON.stringify(memoryFile)} }
---
apiVersion: writ.dev/v1alpha1
kind: McpServer
metadata: { name: everything, labels: { demo: 'true' } }
spec:
  description: the MCP reference test server @modelcontextprotocol/server-everything
  stdio:
    command: ${node}
    args: [${JSON.stringify(serverScript('@modelcontextprotocol/server-everything'))}, stdio]
---
apiVersion: writ.dev/v1alpha1
kind: Role
metadata: { name: ${ROLE_NAME} }
spec:
  maxTtl: 1h
  allow:
    mcpServers: { demo: 'true' }
    tools: ['read_*', 'list_*', 'search_*', 'get_*', 'directory_tree', 'open_nodes', 'echo']
  deny:
    tools: ['write_*', 'edit_*', 'create_*', 'move_*', 'delete_*', '^add_.*$']
`
}

function seedWorkspace(workspace: string): void {
  mkdirSync(join(workspace, 'notes'), { recursive: true })
  writeFileSync(
    join(workspace, 'README.md'),
    '# Demo workspace\n\nThis folder is served by the MCP filesystem server behind Writ.\n',
  )
  writeFileSync(
    join(workspace, 'notes', 'todo.txt'),
    'rotate the staging keys\nreview the agent roles\n',
  )
  writeFileSync(
    join(workspace, 'notes', 'plan.md'),
    '# Plan\n\n1. ship the gateway\n2. add approvals\n',
  )
}

/** The outcome of the scripted agent, checked by `writ demo --exit` and the end-to-end tests. */
export interface DemoResult {
  ok: boolean
  address: string
  dataDir: string
  identityDir: string
  problems: string[]
}

/**
 * Runs the demo: starts Writ in front of three real MCP servers, enrolls a read-only bot, joins,
 * and drives the MCP SDK client through `writ mcp connect`. With `exit: false` it then keeps
 * serving until SIGINT or SIGTERM.
 */
export async function runDemo(options: DemoOptions): Promise<DemoResult> {
  const out = options.out ?? ((text: string) => process.stdout.write(text))
  const dataDir = resolve(options.dataDir ?? mkdtempSync(join(tmpdir(), 'writ-demo-')))
  mkdirSync(dataDir, { recursive: true, mode: 0o700 })
  const workspace = join(dataDir, 'workspace')
  const identityDir = join(dataDir, `${BOT_NAME}-identity`)
  seedWorkspace(workspace)
  const logFile = join(dataDir, 'writ.log')
  const logger = createLogger({ sink: fileSink(logFile) })

  out(`Writ demo: data in ${dataDir}, server log in ${logFile}\n\n`)
  const running = await startWrit({ dataDir, listen: options.listen ?? '127.0.0.1:0', logger })
  const problems: string[] = []
  let agentStop: AbortController | undefined
  try {
    await applyManifests(
      running.host,
      manifests(workspace, join(dataDir, 'memory.jsonl')),
      'demo',
      'demo',
    )
    out(`1. Writ listens on https://${running.address} (CA pin ${running.host.ca.pin})\n`)
    out('   fronting MCP servers: files, memory, everything (real npm packages, over stdio)\n')

    const enrollment = await enrollBot(running.host, BOT_NAME, [ROLE_NAME], '1h')
    out(`2. bot "${BOT_NAME}" holds role "${ROLE_NAME}"; single-use join token issued\n`)
    await runAgent({
      server: running.address,
      token: enrollment.token,
      caPin: running.host.ca.pin,
      dest: identityDir,
      oneshot: true,
      logger,
    })
    out(`3. writ agent joined and wrote a 1-hour certificate to ${identityDir}\n`)

    await driveClient(running, identityDir, workspace, out, problems)
    await printAudit(running, out, problems)
    if (options.exit)
      return { ok: problems.length === 0, address: running.address, dataDir, identityDir, problems }

    agentStop = new AbortController()
    runAgent({
      server: running.address,
      dest: identityDir,
      oneshot: false,
      logger,
      signal: agentStop.signal,
    }).catch((error: unknown) => logger.error({ error }, 'demo agent stopped'))
    printNextSteps(running.address, identityDir, dataDir, out)
    const { waitForSignal } = await import('./cli/start.js')
    await waitForSignal()
    return { ok: problems.length === 0, address: running.address, dataDir, identityDir, problems }
  } finally {
    agentStop?.abort()
    await running.close()
  }
}

async function driveClient(
  running: RunningWrit,
  identityDir: string,
  workspace: string,
  out: (text: string) => void,
  problems: string[],
): Promise<void> {
  const client = new Client({ name: 'writ-demo-agent', version: '1.0.0' })
  const transport = new StdioClientTransport({
    command: process.execPath,
    args: [
      CLI_PATH,
      'mcp',
      'connect',
      'files',
      '--server',
      running.address,
      '--identity',
      identityDir,
    ],
    stderr: 'pipe',
  })
  await client.connect(transport)
  try {
    const { tools } = await client.listTools()
    const names = tools.map((tool) => tool.name).sort()
    out(
      `4. the MCP SDK client connected through "writ mcp connect files" and sees ${names.length} tools:\n`,
    )
    out(`   ${names.join(', ')}\n`)
    if (names.includes('write_file'))
      problems.push('write_file was listed although the role denies it')

    const readme = join(workspace, 'README.md')
    const read = await client.callTool({ name: 'read_text_file', arguments: { path: readme } })
    const text = firstText(read)
    out(`5. read_text_file ${readme}: allowed\n   "${text.split('\n')[0]}"\n`)
    if (!text.includes('Demo workspace')) problems.push('read_text_file did not return the file')

    const before = readFileSync(readme, 'utf8')
    try {
      await client.callTool({
        name: 'write_file',
        arguments: { path: readme, content: 'overwritten\n' },
      })
      problems.push('write_file was allowed although the role denies it')
      out('6. write_file: ALLOWED (unexpected)\n')
    } catch (error) {
      const data = (error as { data?: { reason?: string; requestId?: string } }).data
      out(`6. write_file ${readme}: refused by the gateway\n   ${(error as Error).message}\n`)
      out(`   reason ${data?.reason}, audit id ${data?.requestId}\n`)
      if (data?.reason !== 'forbidden')
        problems.push(`write_file refusal carried reason ${data?.reason}`)
    }
    const unchanged = readFileSync(readme, 'utf8') === before
    out(`   the file is ${unchanged ? 'unchanged' : 'CHANGED'}\n`)
    if (!unchanged) problems.push('README.md changed after a denied write')
  } finally {
    await client.close()
  }
}

async function printAudit(
  running: RunningWrit,
  out: (text: string) => void,
  problems: string[],
): Promise<void> {
  await running.host.audit.flush()
  const events = await running.host.store.queryAudit({})
  out('\n7. audit trail (writ audit search):\n')
  for (const event of events) out(`   ${formatEventLine(event)}\n`)
  const result = await verifyAuditChain(running.host.store)
  out(
    result.ok
      ? `\n8. writ audit verify: chain intact, ${result.count} events\n`
      : `\n8. writ audit verify: BROKEN at event ${result.seq}: ${result.reason}\n`,
  )
  if (!result.ok) problems.push(`audit chain broken: ${result.reason}`)
  if (!events.some((event) => event.tool === 'write_file' && event.outcome === 'denied')) {
    problems.push('no denied write_file event in the audit log')
  }
}

function printNextSteps(
  address: string,
  identityDir: string,
  dataDir: string,
  out: (text: string) => void,
): void {
  const connect = `${process.execPath} ${CLI_PATH} mcp connect files --server ${address} --identity ${identityDir}`
  out(
    '\nWrit keeps running, and the agent renews the certificate in the background. Try:\n' +
      `  Claude Desktop config:  node ${CLI_PATH} mcp config --client claude --server ${address} --identity ${identityDir}\n` +
      `  MCP Inspector:          npx @modelcontextprotocol/inspector ${connect}\n` +
      `  list tools:             node ${CLI_PATH} mcp ls --server ${address} --identity ${identityDir}\n` +
      `  audit trail:            node ${CLI_PATH} audit search --data-dir ${dataDir}\n` +
      'Press Ctrl-C to stop.\n',
  )
}

function firstText(result: unknown): string {
  const content = (result as { content?: Array<{ type: string; text?: string }> }).content ?? []
  return content.find((item) => item.type === 'text')?.text ?? ''
}

function fileSink(path: string): (line: string) => void {
  return (line) => {
    try {
      writeFileSync(path, `${line}\n`, { flag: 'a' })
    } catch {
      // A failed log write must not stop the demo, because the console output reports every step.
    }
  }
}

export type { Logger }
