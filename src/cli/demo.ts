import { runDemo } from '../demo.js'
import type { Command } from './command.js'

export const demoCommand: Command = {
  name: 'demo',
  summary: 'run Writ in front of real MCP servers and drive a read-only agent through it',
  details:
    'Starts Writ with @modelcontextprotocol/server-filesystem (on a seeded workspace),\n' +
    'server-memory and server-everything, enrolls a bot with a read-only role, joins with\n' +
    'writ agent, and drives the MCP SDK client through writ mcp connect: it lists tools, reads a\n' +
    'file, is refused a write, then prints the audit trail and the chain check. Without --exit it\n' +
    'keeps running and prints how to point Claude Desktop or the MCP Inspector at it.',
  options: {
    'data-dir': {
      type: 'string',
      value: 'DIR',
      description: 'data directory for the demo (default: a new temporary directory)',
    },
    listen: {
      type: 'string',
      value: 'HOST:PORT',
      description: 'address to listen on (default 127.0.0.1:0, a free port)',
    },
    exit: {
      type: 'boolean',
      description: 'stop after the scripted run; exit 0 only if it went as expected',
    },
  },
  async run(input) {
    const result = await runDemo({
      dataDir: input.values['data-dir'] as string | undefined,
      listen: input.values.listen as string | undefined,
      exit: input.values.exit === true,
    })
    if (!result.ok) {
      process.stderr.write(
        `writ demo: the scripted run went wrong:\n  ${result.problems.join('\n  ')}\n`,
      )
      return 1
    }
    return 0
  },
}
