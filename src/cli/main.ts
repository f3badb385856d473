#!/usr/bin/env node
import { agentCommand } from './agent.js'
import { auditSearchCommand, auditVerifyCommand } from './audit.js'
import { botsAddCommand } from './bots.js'
import { type Command, runCommand } from './command.js'
import { demoCommand } from './demo.js'
import { mcpConfigCommand, mcpConnectCommand, mcpLsCommand } from './mcp.js'
import { applyCommand, deleteCommand, getCommand } from './resources.js'
import { startCommand } from './start.js'

type Entry = Command | { summary: string; commands: Record<string, Command> }

const REGISTRY: Record<string, Entry> = {
  start: startCommand,
  demo: demoCommand,
  apply: applyCommand,
  get: getCommand,
  delete: deleteCommand,
  bots: { summary: 'manage bots (agents and workloads)', commands: { add: botsAddCommand } },
  agent: agentCommand,
  mcp: {
    summary: 'connect MCP clients through the gateway',
    commands: { connect: mcpConnectCommand, ls: mcpLsCommand, config: mcpConfigCommand },
  },
  audit: {
    summary: 'search and verify the audit log',
    commands: { search: auditSearchCommand, verify: auditVerifyCommand },
  },
}

function isGroup(entry: Entry): entry is { summary: string; commands: Record<string, Command> } {
  return 'commands' in entry
}

function topHelp(): string {
  const lines = [
    'usage: writ COMMAND [options]',
    '',
    'Writ issues short-lived certificates to agents and people and fronts MCP servers with a',
    'gateway that enforces roles and writes a hash-chained audit log.',
    '',
    'commands:',
  ]
  for (const [name, entry] of Object.entries(REGISTRY)) {
    if (isGroup(entry)) {
      for (const [sub, command] of Object.entries(entry.commands)) {
        lines.push(`  ${`${name} ${sub}`.padEnd(14)}${command.summary}`)
      }
    } else {
      lines.push(`  ${name.padEnd(14)}${entry.summary}`)
    }
  }
  lines.push('', 'Run "writ COMMAND --help" for the options of a command.')
  return `${lines.join('\n')}\n`
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(topHelp())
    return name === undefined ? 2 : 0
  }
  if (name === '--version') {
    process.stdout.write('writ 0.1.0\n')
    return 0
  }
  const entry = REGISTRY[name]
  if (!entry) {
    process.stderr.write(`writ: unknown command "${name}"\nrun "writ --help" for the commands\n`)
    return 2
  }
  if (!isGroup(entry)) return runCommand(name, entry, rest)

  const [subName, ...subArgs] = rest
  const command = subName === undefined ? undefined : entry.commands[subName]
  if (!command) {
    const known = Object.keys(entry.commands).join(', ')
    if (subName === undefined || subName === '--help' || subName === '-h') {
      process.stdout.write(`usage: writ ${name} (${known.replaceAll(', ', '|')}) [options]\n`)
      return subName === undefined ? 2 : 0
    }
    process.stderr.write(
      `writ ${name}: unknown subcommand "${subName}" (expected one of: ${known})\n`,
    )
    return 2
  }
  return runCommand(`${name} ${subName}`, command, subArgs)
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code
  },
  (error: unknown) => {
    process.stderr.write(`writ: ${error instanceof Error ? error.message : String(error)}\n`)
    process.exitCode = 1
  },
)
