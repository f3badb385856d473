#!/usr/bin/env node
import { agentCommand } from './agent.js'
import { approvalsApproveCommand, approvalsDenyCommand, approvalsLsCommand } from './approvals.js'
import { auditSearchCommand, auditVerifyCommand } from './audit.js'
import { botsAddCommand } from './bots.js'
import { caRotateCommand, caStatusCommand } from './ca.js'
import { type Command, runCommand } from './command.js'
import { demoCommand } from './demo.js'
import { lockCommand, locksCommand, unlockCommand } from './locks.js'
import { loginCommand } from './login.js'
import { mcpConfigCommand, mcpConnectCommand, mcpLsCommand } from './mcp.js'
import {
  requestApproveCommand,
  requestAssumeCommand,
  requestCreateCommand,
  requestDenyCommand,
  requestLsCommand,
} from './requests.js'
import { applyCommand, deleteCommand, getCommand } from './resources.js'
import { startCommand } from './start.js'
import { taskCommand } from './task.js'
import { toolsApproveCommand, toolsLsCommand } from './tools.js'
import { usersAddCommand, usersEnrollCommand } from './users.js'

type Entry = Command | { summary: string; commands: Record<string, Command> }

const REGISTRY: Record<string, Entry> = {
  start: startCommand,
  demo: demoCommand,
  apply: applyCommand,
  get: getCommand,
  delete: deleteCommand,
  bots: { summary: 'manage bots (agents and workloads)', commands: { add: botsAddCommand } },
  users: {
    summary: 'manage people and enroll as one',
    commands: { add: usersAddCommand, enroll: usersEnrollCommand },
  },
  login: loginCommand,
  agent: agentCommand,
  ca: {
    summary: 'rotate the certificate authority and show its state',
    commands: { rotate: caRotateCommand, status: caStatusCommand },
  },
  task: taskCommand,
  lock: lockCommand,
  locks: locksCommand,
  unlock: unlockCommand,
  mcp: {
    summary: 'connect MCP clients through the gateway',
    commands: { connect: mcpConnectCommand, ls: mcpLsCommand, config: mcpConfigCommand },
  },
  audit: {
    summary: 'search and verify the audit log',
    commands: { search: auditSearchCommand, verify: auditVerifyCommand },
  },
  approvals: {
    summary: 'list, approve and deny tool calls held for approval',
    commands: {
      ls: approvalsLsCommand,
      approve: approvalsApproveCommand,
      deny: approvalsDenyCommand,
    },
  },
  tools: {
    summary: 'list pinned tool definitions and approve held tools',
    commands: { ls: toolsLsCommand, approve: toolsApproveCommand },
  },
  request: {
    summary: 'request, review and assume extra roles for a limited time',
    commands: {
      create: requestCreateCommand,
      ls: requestLsCommand,
      approve: requestApproveCommand,
      deny: requestDenyCommand,
      assume: requestAssumeCommand,
    },
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
  const names = Object.entries(REGISTRY).flatMap(([name, entry]) =>
    isGroup(entry) ? Object.keys(entry.commands).map((sub) => `${name} ${sub}`) : [name],
  )
  const width = Math.max(...names.map((name) => name.length)) + 2
  for (const [name, entry] of Object.entries(REGISTRY)) {
    if (isGroup(entry)) {
      for (const [sub, command] of Object.entries(entry.commands)) {
        lines.push(`  ${`${name} ${sub}`.padEnd(width)}${command.summary}`)
      }
    } else {
      lines.push(`  ${name.padEnd(width)}${entry.summary}`)
      for (const [sub, command] of Object.entries(entry.subcommands ?? {})) {
        lines.push(`  ${`${name} ${sub}`.padEnd(width)}${command.summary}`)
      }
    }
  }
  lines.push('', 'Run "writ COMMAND --help" for the options of a command.')
  return `${lines.join('\n')}\n`
}

function groupHelp(name: string, group: { summary: string; commands: Record<string, Command> }) {
  const lines = [`usage: writ ${name} SUBCOMMAND [options]`, '', group.summary, '', 'subcommands:']
  for (const [sub, command] of Object.entries(group.commands)) {
    lines.push(`  ${sub.padEnd(12)}${command.summary}`)
  }
  lines.push('', `Run "writ ${name} SUBCOMMAND --help" for its options.`)
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
  if (!isGroup(entry)) {
    const sub = rest[0] === undefined ? undefined : entry.subcommands?.[rest[0]]
    if (sub) return runCommand(`${name} ${rest[0]}`, sub, rest.slice(1))
    return runCommand(name, entry, rest)
  }

  const [subName, ...subArgs] = rest
  const command = subName === undefined ? undefined : entry.commands[subName]
  if (!command) {
    const known = Object.keys(entry.commands).join(', ')
    if (subName === undefined || subName === '--help' || subName === '-h') {
      process.stdout.write(groupHelp(name, entry))
      return subName === undefined ? 2 : 0
    }
    process.stderr.write(
      `writ ${name}: unknown subcommand "${subName}" (expected one of: ${known})\n`,
    )
    return 2
  }
  return runCommand(`${name} ${subName}`, command, subArgs)
}

// A reader that closes early (`writ mcp ls | head -1`) is not an error worth a stack trace.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code === 'EPIPE') process.exit(process.exitCode ?? 0)
  throw error
})

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code
  },
  (error: unknown) => {
    process.stderr.write(`writ: ${error instanceof Error ? error.message : String(error)}\n`)
    process.exitCode = 1
  },
)
