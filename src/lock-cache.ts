import { findLock, type Lock, lockedMessage, subjectOf } from './authority/locks.js'
import type { Clock } from './clock.js'
import type { McpHandler } from './gateway/mcp-handler.js'
import type { PeerIdentity } from './identity/types.js'
import type { Logger } from './log.js'
import type { Store } from './store/store.js'

/** How often the server reads the lock version when no option sets it, in ms. */
export const DEFAULT_LOCK_POLL_MS = 250

/**
 * How long the server keeps serving after its last successful read of the locks. Past this it
 * refuses every MCP request, because a lock created meanwhile would go unenforced.
 */
export const LOCK_STALE_AFTER_MS = 10_000

/** Why a request is refused: the covering lock, or no lock when the lock list is out of date. */
export interface LockRefusal {
  message: string
  lock?: Lock
}

/**
 * Keeps the server's copy of the locks in step with the store. The admin CLI writes locks from
 * another process, so `refresh` compares the lock version and reloads only when it moved.
 */
export class LockCache {
  #version = -1
  #locks: Lock[] = []
  #loadedAt = Number.NEGATIVE_INFINITY

  constructor(
    private readonly store: Store,
    private readonly clock: Clock,
    private readonly logger: Logger,
  ) {}

  /** Reloads the locks when the version changed; resolves true when it did. */
  async refresh(): Promise<boolean> {
    const version = await this.store.lockVersion()
    if (version === this.#version) {
      this.#loadedAt = this.clock()
      return false
    }
    const locks = await this.store.listLocks()
    this.#locks = locks
    this.#version = version
    this.#loadedAt = this.clock()
    this.logger.info({ version, locks: locks.length }, 'locks loaded')
    return true
  }

  /** Returns why the identity must be refused now, or undefined when no lock covers it. */
  check(identity: PeerIdentity): LockRefusal | undefined {
    const now = this.clock()
    if (now - this.#loadedAt > LOCK_STALE_AFTER_MS) {
      const seconds = Math.round(LOCK_STALE_AFTER_MS / 1000)
      return {
        message: `the gateway could not read its locks for more than ${seconds} s, so it refuses every request until it can; see the Writ server log`,
      }
    }
    // Most of the time there is no lock, so the per-request cost is this length check.
    if (this.#locks.length === 0) return undefined
    const lock = findLock(this.#locks, subjectOf(identity), now)
    if (lock === undefined) return undefined
    return { message: lockedMessage('access refused', lock), lock }
  }
}

/**
 * Polls the lock version and, whenever the locks change, ends every MCP session that a lock now
 * covers. With the default interval a new lock ends its sessions well within one second.
 *
 * @example
 *   const stop = watchLocks({ cache, mcp, logger })
 *   // on shutdown:
 *   stop()
 */
export function watchLocks(options: {
  cache: LockCache
  mcp: Pick<McpHandler, 'closeSessions'>
  logger: Logger
  intervalMs?: number
}): () => void {
  const { cache, mcp, logger } = options
  let running = false
  /** Failed polls in a row; only the first is logged, so a broken store does not flood the log. */
  let failures = 0

  async function poll(): Promise<void> {
    if (running) return
    running = true
    try {
      const changed = await cache.refresh()
      if (failures > 0) logger.info({ failures }, 'lock refresh recovered')
      failures = 0
      if (!changed) return
      const ended = await mcp.closeSessions((identity) => {
        const refusal = cache.check(identity)
        if (refusal?.lock === undefined) return undefined
        const lockId = refusal.lock.id
        return {
          reason: 'locked',
          denial: { reason: 'locked', message: refusal.message, details: { lockId } },
        }
      })
      if (ended > 0) logger.info({ sessions: ended }, 'sessions ended by a lock')
    } catch (error) {
      failures++
      if (failures === 1) logger.error({ error }, 'lock refresh failed')
    } finally {
      running = false
    }
  }

  const timer = setInterval(() => void poll(), options.intervalMs ?? DEFAULT_LOCK_POLL_MS)
  timer.unref()
  return () => clearInterval(timer)
}
