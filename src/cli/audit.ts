import { formatEventJson, formatEventLine } from '../audit/format.js'
import type { AuditOutcome, AuditQuery } from '../audit/types.js'
import { verifyAuditChain } from '../audit/verify.js'
import { openHost } from '../host.js'
import { type Command, DATA_DIR_OPTION, dataDirOption, JSON_OPTION, UsageError } from './command.js'

const OUTCOMES: AuditOutcome[] = ['success', 'denied', 'error']

export const auditSearchCommand: Command = {
  name: 'audit search',
  summary: 'list audit events, oldest first, filtered by time, principal, server, tool or outcome',
  options: {
    ...DATA_DIR_OPTION,
    since: {
      type: 'string',
      value: 'TIME',
      description:
        'only events after an ISO 8601 time or a duration ago, such as 2026-12-04T10:00:00Z or 1h',
    },
    principal: {
      type: 'string',
      value: 'ID',
      description: 'SPIFFE ID (or a prefix at a path boundary) or principal name',
    },
    server: { type: 'string', value: 'NAME', description: 'MCP server name' },
    tool: { type: 'string', value: 'NAME', description: 'tool name' },
    outcome: { type: 'string', value: 'OUTCOME', description: 'success, denied or error' },
    limit: {
      type: 'string',
      value: 'N',
      description: 'show at most the last N events (default 1000)',
    },
    ...JSON_OPTION,
  },
  async run(input) {
    const query = buildQuery(input.values)
    const host = await openHost(dataDirOption(input), { mustExist: true })
    try {
      const events = await host.store.queryAudit(query)
      for (const event of events) {
        process.stdout.write(
          `${input.values.json ? formatEventJson(event) : formatEventLine(event)}\n`,
        )
      }
      if (!input.values.json && events.length === 0) process.stderr.write('no matching events\n')
      return 0
    } finally {
      await host.close()
    }
  },
}

export const auditVerifyCommand: Command = {
  name: 'audit verify',
  summary: 'check the audit hash chain; exit 1 and name the first bad event when it is broken',
  options: { ...DATA_DIR_OPTION, ...JSON_OPTION },
  async run(input) {
    const host = await openHost(dataDirOption(input), { mustExist: true })
    try {
      const result = await verifyAuditChain(host.store)
      if (input.values.json) {
        process.stdout.write(`${JSON.stringify(result)}\n`)
      } else if (result.ok) {
        process.stdout.write(`audit chain intact: ${result.count} events verified\n`)
      } else {
        process.stdout.write(
          `audit chain broken after ${result.count} good events: ${result.reason} (event seq ${result.seq}, id ${result.id})\n`,
        )
      }
      return result.ok ? 0 : 1
    } finally {
      await host.close()
    }
  },
}

function buildQuery(values: Record<string, unknown>): AuditQuery {
  const query: AuditQuery = {}
  if (typeof values.since === 'string') query.since = values.since
  if (typeof values.principal === 'string') query.principal = values.principal
  if (typeof values.server === 'string') query.server = values.server
  if (typeof values.tool === 'string') query.tool = values.tool
  if (typeof values.outcome === 'string') {
    if (!OUTCOMES.includes(values.outcome as AuditOutcome)) {
      throw new UsageError(`invalid --outcome "${values.outcome}": use ${OUTCOMES.join(', ')}`)
    }
    query.outcome = values.outcome as AuditOutcome
  }
  if (typeof values.limit === 'string') {
    const limit = Number(values.limit)
    if (!Number.isInteger(limit) || limit < 1) {
      throw new UsageError(`invalid --limit "${values.limit}": use a whole number above 0`)
    }
    query.limit = limit
  }
  return query
}
