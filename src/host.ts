import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { type AuditWriter, createAuditWriter } from './audit/writer.js'
import { type CertificateAuthority, loadOrCreateCa } from './authority/ca.js'
import { type Clock, systemClock } from './clock.js'
import { WritError } from './errors.js'
import { type Logger, silentLogger } from './log.js'
import { openSqliteStore, type SynchronousMode } from './store/sqlite.js'
import type { Store } from './store/store.js'

/** The trust domain used when the data directory is created without one. */
export const DEFAULT_TRUST_DOMAIN = 'writ.local'

/** The listener address used when `--listen` is not given. */
export const DEFAULT_LISTEN = '127.0.0.1:7443'

/** The services that live in a Writ data directory: store, audit log and certificate authority. */
export interface Host {
  dataDir: string
  trustDomain: string
  store: Store
  audit: AuditWriter
  ca: CertificateAuthority
  clock: Clock
  logger: Logger
  close(): Promise<void>
}

/**
 * Opens the data directory, creating it, its database and its CA on first use. The trust domain
 * is fixed at creation: a later `--trust-domain` that differs is an error, because every issued
 * certificate already names the first one.
 */
export async function openHost(
  dataDir: string,
  options: {
    trustDomain?: string
    clock?: Clock
    logger?: Logger
    /** Whether every commit waits for the disk; see `SynchronousMode`. */
    synchronous?: SynchronousMode
  } = {},
): Promise<Host> {
  const clock = options.clock ?? systemClock
  const logger = options.logger ?? silentLogger
  mkdirSync(dataDir, { recursive: true, mode: 0o700 })
  const store = await openSqliteStore(join(dataDir, 'writ.db'), {
    logger,
    clock,
    synchronous: options.synchronous ?? 'normal',
  })
  try {
    const trustDomain = await settleTrustDomain(store, options.trustDomain)
    const ca = await loadOrCreateCa(dataDir, { trustDomain, clock })
    const audit = createAuditWriter({ store, clock, logger })
    return {
      dataDir,
      trustDomain,
      store,
      audit,
      ca,
      clock,
      logger,
      async close() {
        await audit.close()
        await store.close()
      },
    }
  } catch (error) {
    await store.close()
    throw error
  }
}

async function settleTrustDomain(store: Store, requested: string | undefined): Promise<string> {
  const stored = await store.getMeta('trust_domain')
  if (stored === undefined) {
    const trustDomain = requested ?? DEFAULT_TRUST_DOMAIN
    await store.setMeta('trust_domain', trustDomain)
    return trustDomain
  }
  if (requested !== undefined && requested !== stored) {
    throw new WritError(
      'host.trust_domain_mismatch',
      `data directory already uses trust domain "${stored}", not "${requested}"; drop --trust-domain or use a new --data-dir`,
      { stored, requested },
    )
  }
  return stored
}
