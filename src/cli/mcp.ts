import { realpathSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { WritError } from '../errors.js'
import { runStdioBridge } from '../gateway/bridge.js'
import { createMcpHttpClient, type TlsMaterial } from '../gateway/http-client.js'
import type { JsonRpcMessage } from '../gateway/jsonrpc.js'
import { createLogger } from '../log.js'
import type { ServerSummary } from '../policy-cache.js'
import { clientOptions, getJson, IDENTITY_FILES, readClientTls } from './client-identity.js'
import { CLIENT_OPTIONS, type Command, JSON_OPTION, UsageError } from './command.js'
import { logLevelOption } from './start.js'

const SERVER_NAME = /^[a-z0-9-]+$/

export const mcpConnectCommand: Command = {
  name: 'mcp connect',
  summary: 'bridge an MCP client that launches commands (stdio) to a server behind the gateway',
  args: 'SERVER',
  arity: [1, 1],
  details:
    'Reads MCP messages on standard input and writes replies on standard output, forwarding them\n' +
    'over mutual TLS. It reloads the certificate when writ agent renews it. Logs go to standard\n' +
    'error.',
  options: {
    ...CLIENT_OPTIONS,
    'log-level': {
      type: 'string',
      value: 'LEVEL',
      description: 'debug, info, warn or error (default warn)',
    },
  },
  async run(input) {
    const name = serverArgument(input.positionals[0] as string)
    const { server, identityDir } = clientOptions(input)
    const logger = createLogger({
      level: input.values['log-level'] ? logLevelOption(input.values['log-level']) : 'warn',
    })
    readClientTls(identityDir)
    await runStdioBridge({
      url: `https://${server}/mcp/${name}`,
      tls: () => readClientTls(identityDir),
      watchFiles: [join(identityDir, IDENTITY_FILES.cert), join(identityDir, IDENTITY_FILES.key)],
      stdin: process.stdin,
      stdout: process.stdout,
      logger,
    })
    return 0
  },
}

export const mcpLsCommand: Command = {
  name: 'mcp ls',
  summary: "list the MCP servers and tools the caller's certificate allows",
  options: { ...CLIENT_OPTIONS, ...JSON_OPTION },
  async run(input) {
    const { server, identityDir } = clientOptions(input)
    const tls = readClientTls(identityDir)
    const { servers } = (await getJson(server, '/v1/mcp/servers', tls)) as {
      servers: ServerSummary[]
    }
    const listing: Array<ServerSummary & { tools: string[]; error?: string }> = []
    for (const summary of servers) {
      try {
        listing.push({
          ...summary,
          tools: await listTools(`https://${server}/mcp/${summary.name}`, tls),
        })
      } catch (error) {
        listing.push({ ...summary, tools: [], error: (error as Error).message })
      }
    }
    if (input.values.json) {
      process.stdout.write(`${JSON.stringify(listing, null, 2)}\n`)
      return 0
    }
    if (listing.length === 0) process.stdout.write('no MCP servers are allowed for this identity\n')
    for (const entry of listing) {
      process.stdout.write(
        `${entry.name} (${entry.transport})${entry.description ? `: ${entry.description}` : ''}\n`,
      )
      if (entry.error) process.stdout.write(`  error: ${entry.error}\n`)
      else
        process.stdout.write(
          `  tools: ${entry.tools.length ? entry.tools.join(', ') : '(none allowed)'}\n`,
        )
    }
    return 0
  },
}

const CLIENTS = ['claude', 'cursor', 'vscode'] as const

export const mcpConfigCommand: Command = {
  name: 'mcp config',
  summary: 'print an MCP client configuration that reaches servers through writ mcp connect',
  args: '[SERVER...]',
  arity: [0, 64],
  details:
    'Without SERVER it asks the gateway which servers the identity may use. Paste the output into\n' +
    'claude_desktop_config.json (claude), ~/.cursor/mcp.json (cursor) or .vscode/mcp.json (vscode).',
  options: {
    ...CLIENT_OPTIONS,
    client: { type: 'string', value: 'NAME', description: `MCP client: ${CLIENTS.join(', ')}` },
  },
  async run(input) {
    const client = input.values.client
    if (typeof client !== 'string' || !CLIENTS.includes(client as (typeof CLIENTS)[number])) {
      throw new UsageError(
        `invalid or missing --client "${client ?? ''}": use ${CLIENTS.join(', ')}`,
      )
    }
    const { server, identityDir } = clientOptions(input)
    let names = input.positionals.map(serverArgument)
    if (names.length === 0) {
      const tls = readClientTls(identityDir)
      const { servers } = (await getJson(server, '/v1/mcp/servers', tls)) as {
        servers: ServerSummary[]
      }
      names = servers.map((entry) => entry.name)
    }
    const entries = Object.fromEntries(
      names.map((name) => [
        `writ-${name}`,
        {
          ...(client === 'vscode' ? { type: 'stdio' } : {}),
          command: process.execPath,
          args: [
            cliPath(),
            'mcp',
            'connect',
            name,
            '--server',
            server,
            '--identity',
            resolve(identityDir),
          ],
        },
      ]),
    )
    const config = client === 'vscode' ? { servers: entries } : { mcpServers: entries }
    process.stdout.write(`${JSON.stringify(config, null, 2)}\n`)
    return 0
  },
}

function serverArgument(name: string): string {
  if (!SERVER_NAME.test(name)) {
    throw new UsageError(`invalid server name "${name}": use lowercase letters, digits and dashes`)
  }
  return name
}

function cliPath(): string {
  return realpathSync(process.argv[1] as string)
}

/** Opens a short MCP session through the gateway and returns the tool names it lists. */
async function listTools(url: string, tls: TlsMaterial): Promise<string[]> {
  const waiting = new Map<number, (message: JsonRpcMessage) => void>()
  const client = createMcpHttpClient({
    url,
    tls,
    onMessage: (message) => {
      const id = (message as { id?: unknown }).id
      if (typeof id === 'number') waiting.get(id)?.(message)
    },
  })
  let nextId = 1
  const call = async (method: string, params: Record<string, unknown>) => {
    const id = nextId++
    const reply = new Promise<JsonRpcMessage>((done) => waiting.set(id, done))
    await client.send({ jsonrpc: '2.0', id, method, params } as JsonRpcMessage)
    const message = (await reply) as {
      result?: Record<string, unknown>
      error?: { message: string }
    }
    if (message.error)
      throw new WritError('client.mcp_error', `${method} failed: ${message.error.message}`)
    return message.result ?? {}
  }
  try {
    await call('initialize', {
      protocolVersion: '2025-06-18',
      capabilities: {},
      clientInfo: { name: 'writ-mcp-ls', version: '0.1.0' },
    })
    await client.send({ jsonrpc: '2.0', method: 'notifications/initialized' } as JsonRpcMessage)
    const names: string[] = []
    let cursor: string | undefined
    do {
      const page = await call('tools/list', cursor ? { cursor } : {})
      for (const tool of (page.tools as Array<{ name: string }>) ?? []) names.push(tool.name)
      cursor = page.nextCursor as string | undefined
    } while (cursor)
    return names
  } finally {
    await client.close()
  }
}
