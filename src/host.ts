import { existsSync, mkdirSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { type AuditWriter, createAuditWriter } from './audit/writer.js'
import { type CertificateAuthority, loadOrCreateCa } from './authority/ca.js'
import { type Clock, systemClock } from './clock.js'
import { WritError } from './errors.js'
import { SpiffeId } from './identity/spiffe-id.js'
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
    /** Fail with `host.not_found` instead of creating a missing data directory. */
    mustExist?: boolean
  } = {},
): Promise<Host> {
  const clock = options.clock ?? systemClock
  const logger = options.logger ?? silentLogger
  if (options.mustExist && !existsSync(join(dataDir, 'writ.db'))) {
    throw new WritError(
      'host.not_found',
      `no Writ data directory at ${dataDir} (it has no writ.db); pass the --data-dir that writ start uses`,
      { dataDir },
    )
  }
  mkdirSync(dataDir, { recursive: true, mode: 0o700 })
  const store = await openSqliteStore(join(dataDir, 'writ.db'), {
    logger,
    clock,
    synchronous: options.synchronous ?? 'normal',
  })
  try {
    const trustDomain = await settleTrustDomain(store, options.trustDomain)
    const ca = await loadOrCreateCa(dataDir, { trustDomain, clock, stateStore: store })
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
    // Validated before it is stored, so a bad value does not stick to the new data directory.
    const parsed = SpiffeId.tryParse(`spiffe://${trustDomain}`)
    if (!parsed.ok || parsed.id.path !== '') {
      const why = parsed.ok ? 'it must not contain a path' : parsed.reason
      throw new WritError(
        'host.invalid_trust_domain',
        `invalid trust domain "${trustDomain}": ${why}; use lowercase letters, digits, dots, dashes and underscores, such as writ.example.com`,
        { trustDomain },
      )
    }
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

/**
 * Claims the data directory for one server process by writing its pid to `writ.pid`. A second
 * server on the same directory would overwrite the stored listen address and race the first on
 * the CA files, so it fails with `host.in_use` instead. A pid file left by a process that no
 * longer runs is taken over. Returns the function that releases the claim.
 */
export function claimDataDir(dataDir: string): () => void {
  const path = join(dataDir, 'writ.pid')
  const mine = String(process.pid)
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      writeFileSync(path, mine, { flag: 'wx', mode: 0o600 })
      return () => {
        try {
          if (readFileSync(path, 'utf8') === mine) unlinkSync(path)
        } catch {
          // Already gone: nothing to release.
        }
      }
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error
    }
    const owner = Number(readFileSync(path, 'utf8').trim())
    if (Number.isInteger(owner) && owner > 0 && isRunning(owner)) {
      throw new WritError(
        'host.in_use',
        `another Writ server (pid ${owner}) is using data directory ${dataDir}; stop it or pass another --data-dir`,
        { dataDir, pid: owner },
      )
    }
    unlinkSync(path)
  }
  throw new WritError('host.in_use', `cannot claim data directory ${dataDir}`, { dataDir })
}

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    // EPERM means the process exists but belongs to another user.
    return (error as NodeJS.ErrnoException).code === 'EPERM'
  }
}
