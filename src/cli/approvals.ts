import { userInfo } from 'node:os'
import { decideApproval, listApprovals } from '../guard/approval-admin.js'
import { openHost } from '../host.js'
import type { ToolApprovalRecord } from '../store/store.js'
import {
  type Command,
  DATA_DIR_OPTION,
  dataDirOption,
  JSON_OPTION,
  stringOption,
  UsageError,
} from './command.js'

/** How many approvals `writ approvals ls` prints. */
const LIST_LIMIT = 200

export const approvalsLsCommand: Command = {
  name: 'ls',
  summary: 'list tool calls waiting for approval',
  details:
    'Shows the pending approvals with the caller, server, tool, arguments (secrets redacted) and\n' +
    'the time each expires. With --all, decided and used approvals are listed too.',
  options: {
    ...DATA_DIR_OPTION,
    all: { type: 'boolean', description: 'include approved, denied and used approvals' },
    ...JSON_OPTION,
  },
  async run(input) {
    const host = await openHost(dataDirOption(input), { mustExist: true })
    try {
      const approvals = await listApprovals(host.store, {
        all: input.values.all === true,
        limit: LIST_LIMIT,
        now: host.clock(),
      })
      if (input.values.json) {
        process.stdout.write(`${JSON.stringify(approvals.map(jsonOf), null, 2)}\n`)
      } else {
        process.stdout.write(formatApprovals(approvals, host.clock()))
      }
      return 0
    } finally {
      await host.close()
    }
  },
}

export const approvalsApproveCommand: Command = decideCommand('approve')
export const approvalsDenyCommand: Command = decideCommand('deny')

function decideCommand(action: 'approve' | 'deny'): Command {
  return {
    name: action,
    summary:
      action === 'approve'
        ? 'let one held tool call through, with exactly the arguments shown'
        : 'refuse a held tool call',
    args: 'ID',
    arity: [1, 1],
    details:
      'The ID is printed by writ approvals ls. A running server notices the decision within a\n' +
      'quarter second. The decision, the reason and who decided are written to the audit log.',
    options: {
      ...DATA_DIR_OPTION,
      reason: {
        type: 'string',
        value: 'TEXT',
        description: 'why the call is approved or denied; the audit record keeps it (required)',
      },
    },
    async run(input) {
      const id = input.positionals[0] as string
      if (!/^apr_[0-9a-f]{32}$/.test(id)) {
        throw new UsageError(
          `invalid approval id "${id}": use an id printed by writ approvals ls, such as apr_3f9c…`,
        )
      }
      const reason = stringOption(input, 'reason')
      const host = await openHost(dataDirOption(input), { mustExist: true })
      try {
        const decided = await decideApproval(host, {
          id,
          state: action === 'approve' ? 'approved' : 'denied',
          reason,
          decidedBy: cliActor(),
        })
        process.stdout.write(
          `${decided.id} ${decided.state}: ${decided.tool} on ${decided.server} for ${decided.spiffeId}\n`,
        )
        return 0
      } finally {
        await host.close()
      }
    },
  }
}

/** Names the person at the keyboard, such as `cli:alice`. */
function cliActor(): string {
  try {
    return `cli:${userInfo().username}`
  } catch {
    // userInfo throws when the user id has no passwd entry, as in some containers.
    return 'cli'
  }
}

function jsonOf(record: ToolApprovalRecord): Record<string, unknown> {
  return {
    ...record,
    created: new Date(record.created).toISOString(),
    expires: new Date(record.expires).toISOString(),
    ...(record.decided === undefined ? {} : { decided: new Date(record.decided).toISOString() }),
    ...(record.used === undefined ? {} : { used: new Date(record.used).toISOString() }),
  }
}

function formatApprovals(approvals: ToolApprovalRecord[], now: number): string {
  if (approvals.length === 0) return 'no tool calls are waiting for approval\n'
  const lines: string[] = []
  for (const approval of approvals) {
    const expired = approval.state === 'pending' && approval.expires <= now
    const state = expired ? 'expired' : approval.state
    lines.push(`${approval.id}  ${state}`)
    lines.push(`  caller:  ${approval.spiffeId} (${approval.binding})`)
    lines.push(`  call:    ${approval.tool} on ${approval.server}`)
    lines.push(`  args:    ${JSON.stringify(approval.args)}`)
    lines.push(`  rule:    ${approval.rule}`)
    lines.push(`  expires: ${new Date(approval.expires).toISOString()}`)
    if (approval.decidedBy !== undefined) {
      lines.push(`  decided: by ${approval.decidedBy}: ${approval.decisionReason ?? ''}`)
    }
  }
  return `${lines.join('\n')}\n`
}
