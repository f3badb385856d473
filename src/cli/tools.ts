import { userInfo } from 'node:os'
import { WritError } from '../errors.js'
import { escapeHidden } from '../guard/tool-lint.js'
import { approveToolPin } from '../guard/tool-pins.js'
import { openHost } from '../host.js'
import type { ToolPinRecord } from '../store/tool-pin-store.js'
import { type Command, DATA_DIR_OPTION, dataDirOption, JSON_OPTION } from './command.js'

export const toolsLsCommand: Command = {
  name: 'ls',
  summary: 'list the pinned tools of an MCP server and their states',
  args: 'SERVER',
  arity: [1, 1],
  details:
    'States: approved (shown and callable), pending (never approved: new under toolPinning:\n' +
    'require-approval, or flagged by the description linter) and quarantined (changed after\n' +
    'approval). Held tools are hidden from clients until writ tools approve.',
  options: { ...DATA_DIR_OPTION, ...JSON_OPTION },
  async run(input) {
    const server = input.positionals[0] as string
    const host = await openHost(dataDirOption(input), { mustExist: true })
    try {
      const pins = await host.store.listToolPins(server)
      if (pins.length === 0 && (await host.store.getResource('McpServer', server)) === undefined) {
        throw new WritError(
          'tools.server_not_found',
          `MCP server "${server}" not found; list the servers with writ get mcpservers`,
          { server },
        )
      }
      if (input.values.json) {
        process.stdout.write(`${JSON.stringify(pins.map(pinForJson), null, 2)}\n`)
      } else {
        process.stdout.write(formatPins(pins))
      }
      return 0
    } finally {
      await host.close()
    }
  },
}

export const toolsApproveCommand: Command = {
  name: 'approve',
  summary: 'approve the current definition of a held tool',
  args: 'SERVER TOOL',
  arity: [2, 2],
  details:
    'Approves the definition the gateway saw last (its digest is in writ tools ls). A running\n' +
    'server shows and forwards the tool again within a second. A later change holds it again.',
  options: {
    ...DATA_DIR_OPTION,
    digest: {
      type: 'string',
      value: 'sha256:HEX',
      description:
        'approve only if the definition still has this digest (from writ tools ls --json)',
    },
  },
  async run(input) {
    const [server, tool] = input.positionals as [string, string]
    const host = await openHost(dataDirOption(input), { mustExist: true })
    try {
      const { pin, changed } = await approveToolPin({
        store: host.store,
        audit: (event) => host.audit.record(event),
        server,
        tool,
        approver: cliActor(),
        now: host.clock(),
        ...(typeof input.values.digest === 'string' ? { digest: input.values.digest } : {}),
      })
      const state = changed ? 'approved' : 'was already approved'
      process.stdout.write(`${server}/${escapeHidden(tool)} ${state} (${pin.digest})\n`)
      return 0
    } finally {
      await host.close()
    }
  },
}

function pinForJson(pin: ToolPinRecord): Record<string, unknown> {
  const { definition, ...rest } = pin
  return { ...rest, definition: JSON.parse(definition) as unknown }
}

function formatPins(pins: ToolPinRecord[]): string {
  if (pins.length === 0)
    return 'no tools recorded yet; they are recorded when a client lists them\n'
  // Tool names come from upstream servers, so control and invisible characters are escaped.
  const rows = pins.map((pin) => [
    escapeHidden(pin.tool),
    pin.state,
    pin.digest.slice(0, 19),
    pin.approvedBy ?? '-',
    pin.findings.length === 0 ? '-' : [...new Set(pin.findings.map((f) => f.rule))].join(','),
  ])
  const header = ['TOOL', 'STATE', 'DIGEST', 'APPROVED BY', 'FLAGS']
  const widths = header.map((title, column) =>
    Math.max(title.length, ...rows.map((row) => (row[column] as string).length)),
  )
  const line = (cells: string[]) =>
    cells
      .map((cell, column) => cell.padEnd(widths[column] as number))
      .join('  ')
      .trimEnd()
  return `${[line(header), ...rows.map(line)].join('\n')}\n`
}

function cliActor(): string {
  try {
    return `cli:${userInfo().username}`
  } catch {
    // userInfo throws when the user id has no passwd entry, as in some containers.
    return `cli:uid-${process.getuid?.() ?? 'unknown'}`
  }
}
