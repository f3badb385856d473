/**
 * A small MCP server built with the MCP SDK's `McpServer`, with one `echo` tool, used as the
 * upstream in the benchmark.
 *
 *   node dist/bench/upstream-server.js stdio   serves one session on standard input and output
 *   node dist/bench/upstream-server.js http    serves stateful Streamable HTTP sessions on
 *                                              127.0.0.1 at `/mcp`, on a port the OS picks
 *
 * In `http` mode the address is sent to the parent over IPC as `{ type: 'listening', url }` when
 * the parent forked the process, and printed to standard output as a JSON line otherwise.
 */
import { randomUUID } from 'node:crypto'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js'
import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js'
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js'
import { isInitializeRequest } from '@modelcontextprotocol/sdk/types.js'
import { z } from 'zod'

/** The MCP path the HTTP mode serves. */
const MCP_PATH = '/mcp'

/** Creates an MCP server whose only tool, `echo`, returns its `text` argument as text content. */
function createEchoServer(): McpServer {
  const server = new McpServer({ name: 'writ-bench-echo', version: '1.0.0' })
  server.registerTool(
    'echo',
    { description: 'Returns its text argument', inputSchema: { text: z.string() } },
    async ({ text }) => ({ content: [{ type: 'text', text }] }),
  )
  return server
}

async function serveStdio(): Promise<void> {
  const server = createEchoServer()
  await server.connect(new StdioServerTransport())
}

/**
 * Serves Streamable HTTP with one `McpServer` and transport per session, the stateful layout the
 * SDK documents. The SDK transport responds to POSTs with SSE streams (its default).
 */
async function serveHttp(): Promise<void> {
  const transports = new Map<string, StreamableHTTPServerTransport>()

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '').split('?')[0]
    if (path !== MCP_PATH) {
      req.resume()
      res.writeHead(404).end()
      return
    }
    const sessionId = req.headers['mcp-session-id']
    const body = req.method === 'POST' ? await readJson(req) : undefined
    if (req.method === 'POST' && body === undefined) {
      sendError(res, 400, 'request body is not valid JSON')
      return
    }
    if (typeof sessionId === 'string') {
      const transport = transports.get(sessionId)
      if (transport === undefined) {
        req.resume()
        sendError(res, 404, 'session not found')
        return
      }
      await transport.handleRequest(req, res, body)
      return
    }
    if (req.method !== 'POST' || !isInitializeRequest(body)) {
      sendError(res, 400, 'missing Mcp-Session-Id header')
      return
    }
    const transport = new StreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      onsessioninitialized: (id) => {
        transports.set(id, transport)
      },
    })
    transport.onclose = () => {
      if (transport.sessionId !== undefined) transports.delete(transport.sessionId)
    }
    await createEchoServer().connect(transport)
    await transport.handleRequest(req, res, body)
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((error: unknown) => {
      process.stderr.write(`upstream-server: request failed: ${String(error)}\n`)
      if (!res.headersSent) sendError(res, 500, 'internal error')
      else res.end()
    })
  })
  server.keepAliveTimeout = 60_000
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  const url = `http://127.0.0.1:${port}${MCP_PATH}`
  if (process.send) process.send({ type: 'listening', url })
  else process.stdout.write(`${JSON.stringify({ type: 'listening', url })}\n`)
  process.on('SIGTERM', () => {
    server.close()
    for (const transport of transports.values()) void transport.close()
    process.exit(0)
  })
}

async function readJson(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = []
  for await (const chunk of req) chunks.push(chunk as Buffer)
  const text = Buffer.concat(chunks).toString('utf8')
  try {
    return JSON.parse(text)
  } catch {
    return undefined
  }
}

function sendError(res: ServerResponse, status: number, message: string): void {
  const body = JSON.stringify({ jsonrpc: '2.0', id: null, error: { code: -32600, message } })
  res.writeHead(status, { 'content-type': 'application/json' }).end(body)
}

const mode = process.argv[2]
if (mode === 'stdio') await serveStdio()
else if (mode === 'http') await serveHttp()
else {
  process.stderr.write(`usage: upstream-server.js stdio|http (got ${JSON.stringify(mode)})\n`)
  process.exit(2)
}
