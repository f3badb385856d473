import { createHash } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { AuditEventInput } from '../../src/audit/types.js'
import { type Authority, createAuthority } from '../../src/authority/authority.js'
import { type CertificateAuthority, loadOrCreateCa } from '../../src/authority/ca.js'
import { createLogger } from '../../src/log.js'
import { API_VERSION, type Resource } from '../../src/policy/resource.js'
import { openSqliteStore } from '../../src/store/sqlite.js'
import type { Store } from '../../src/store/store.js'

/** Records audit events in memory; the hash-chained writer has its own tests. */
export class AuditStub {
  readonly events: AuditEventInput[] = []

  async record(event: AuditEventInput): Promise<{ id: string; seq: number }> {
    this.events.push(event)
    return { id: `audit-${this.events.length}`, seq: this.events.length }
  }
}

/** An authority over a real SQLite store and CA in a temporary data directory. */
export interface AuthorityFixture {
  dir: string
  store: Store
  ca: CertificateAuthority
  audit: AuditStub
  authority: Authority
  /** Every log line the authority wrote, as text. */
  logLines: string[]
  now: number
  /** Stores a Role with `spec.maxTtl`. */
  addRole(name: string, maxTtl?: string): Promise<void>
  /** Stores a Bot with roles and an optional `spec.ttl`. */
  addBot(name: string, roles: string[], ttl?: string): Promise<void>
  /** Stores a JoinToken for the bot and returns its name; expiry is relative to `now`. */
  addToken(token: string, bot: string, expiresInMs?: number): Promise<string>
  close(): Promise<void>
}

/**
 * Opens a fixture whose clock reads `clock()` (the real time by default, so certificates work
 * with TLS).
 */
export async function openAuthorityFixture(
  clock: () => number = Date.now,
): Promise<AuthorityFixture> {
  const dir = mkdtempSync(join(tmpdir(), 'writ-authority-'))
  const store = await openSqliteStore(join(dir, 'writ.db'), { clock })
  const ca = await loadOrCreateCa(dir, { trustDomain: 'writ.test', clock })
  const audit = new AuditStub()
  const logLines: string[] = []
  const logger = createLogger({ level: 'debug', sink: (line) => logLines.push(line) })
  const authority = createAuthority({ ca, store, audit, clock, logger, trustDomain: 'writ.test' })

  async function put(kind: Resource['kind'], name: string, spec: Record<string, unknown>) {
    await store.putResource({ apiVersion: API_VERSION, kind, metadata: { name }, spec })
  }

  return {
    dir,
    store,
    ca,
    audit,
    authority,
    logLines,
    get now() {
      return clock()
    },
    addRole: (name, maxTtl) => put('Role', name, maxTtl === undefined ? {} : { maxTtl }),
    addBot: (name, roles, ttl) => put('Bot', name, ttl === undefined ? { roles } : { roles, ttl }),
    async addToken(token, bot, expiresInMs = 3_600_000) {
      const tokenHash = createHash('sha256').update(token).digest('hex')
      const name = `${bot}-${tokenHash.slice(0, 8)}`
      const expires = new Date(clock() + expiresInMs).toISOString()
      await put('JoinToken', name, { bot, method: 'token', expires, tokenHash })
      return name
    },
    async close() {
      await store.close()
      rmSync(dir, { recursive: true, force: true })
    },
  }
}
