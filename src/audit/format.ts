import type { AuditEvent } from './types.js'

/**
 * Formats an event as one line for a terminal, such as
 * `2025-01-31T12:00:00.000Z mcp.request denied spiffe://writ.local/bot/ci fs/write_file
 * reason=no_role_grants_tool rule=- id=ev_…` (on one line). Control characters in values are
 * escaped, because tool and server names can come from upstream servers.
 */
export function formatEventLine(event: AuditEvent): string {
  const fields = [
    event.time,
    event.type,
    event.outcome,
    event.caller?.spiffeId ?? '-',
    target(event),
    `reason=${event.reason ?? '-'}`,
    `rule=${event.rule ?? '-'}`,
    `id=${event.id}`,
  ]
  return fields.map(printable).join(' ')
}

/** Formats an event as one line of JSON. */
export function formatEventJson(event: AuditEvent): string {
  return JSON.stringify(event)
}

function target(event: AuditEvent): string {
  const action = event.tool ?? event.method
  if (event.server !== undefined && action !== undefined) return `${event.server}/${action}`
  return event.server ?? action ?? '-'
}

function printable(text: string): string {
  return text.replace(
    /[\u0000-\u001f\u007f-\u009f]/g,
    (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, '0')}`,
  )
}
