import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { AuditCaller, AuditEventInput } from '../../src/audit/types.js'

/** Creates a temporary directory and returns a function that makes fresh database paths in it. */
export async function temporaryPaths(
  prefix: string,
): Promise<{ path: () => string; remove: () => Promise<void> }> {
  const root = await mkdtemp(join(tmpdir(), prefix))
  let counter = 0
  return {
    path: () => {
      counter += 1
      return join(root, `audit-${counter}.db`)
    },
    remove: () => rm(root, { recursive: true, force: true }),
  }
}

export function caller(spiffeId: string): AuditCaller {
  return { spiffeId, kind: 'bot', roles: ['reader'], serial: '0a' }
}

export function toolCall(
  spiffeId: string,
  server: string,
  tool: string,
  outcome: AuditEventInput['outcome'] = 'success',
): AuditEventInput {
  return {
    type: 'mcp.request',
    outcome,
    caller: caller(spiffeId),
    server,
    method: 'tools/call',
    tool,
    argsDigest: `sha256:${'0'.repeat(64)}`,
    args: { path: '/tmp/file.txt' },
    latencyMs: 3,
    sessionId: 'session-1',
  }
}
