import { randomUUID } from 'node:crypto'
import type { Clock } from '../clock.js'
import { WritError } from '../errors.js'
import type { Logger } from '../log.js'
import type { Store } from '../store/store.js'
import { hashEvent } from './chain.js'
import type { AuditEvent, AuditEventInput } from './types.js'

/** Maximum number of events appended in one store transaction; a longer queue takes several. */
const MAX_BATCH = 500

/** Appends events to the hash-chained audit log. */
export interface AuditWriter {
  /** Resolves once the event is committed; rejects when the commit fails or the writer is closed. */
  record(event: AuditEventInput): Promise<{ id: string; seq: number }>
  /** Waits until every event recorded so far is committed or has failed. */
  flush(): Promise<void>
  /** Flushes, then rejects later `record` calls with `audit.closed`. Does not close the store. */
  close(): Promise<void>
}

interface PendingEvent {
  /** The event without its chain fields, already reduced to plain JSON. */
  content: Omit<AuditEvent, 'seq' | 'prevHash' | 'hash'>
  resolve(result: { id: string; seq: number }): void
  reject(error: unknown): void
}

/**
 * Creates a writer that group-commits: every event recorded while the event loop finishes its
 * current phase, or while a commit is running, goes into the next single `store.appendAudit`
 * transaction. A failed commit rejects every event in it, so callers fail closed.
 */
export function createAuditWriter({
  store,
  clock,
  logger,
}: {
  store: Store
  clock: Clock
  logger: Logger
}): AuditWriter {
  const queue: PendingEvent[] = []
  let draining: Promise<void> | undefined
  let closed = false

  function scheduleDrain(): void {
    if (draining !== undefined) return
    draining = new Promise<void>((resolve) => {
      setImmediate(async () => {
        await drain()
        draining = undefined
        resolve()
        // An event recorded between the loop's last empty check and the reset above saw a
        // drain in progress and did not schedule one. This starts the drain it needs.
        if (queue.length > 0) scheduleDrain()
      })
    })
  }

  async function drain(): Promise<void> {
    while (queue.length > 0) {
      const batch = queue.splice(0, MAX_BATCH)
      try {
        const committed = await store.appendAudit((last) => chainEvents(batch, last))
        batch.forEach((pending, index) => {
          const event = committed[index] as AuditEvent
          pending.resolve({ id: event.id, seq: event.seq })
        })
      } catch (error) {
        logger.error({ error, events: batch.length }, 'audit commit failed')
        const failure = new WritError(
          'audit.commit_failed',
          'failed to commit the audit event; the action was not performed',
          { events: batch.length },
          { cause: error },
        )
        for (const pending of batch) pending.reject(failure)
      }
    }
  }

  return {
    record(input) {
      if (closed) {
        return Promise.reject(
          new WritError('audit.closed', 'the audit writer is closed; no event was recorded', {
            type: input.type,
          }),
        )
      }
      // The JSON round trip copies the input and drops what JSON cannot hold (undefined, Date
      // objects become strings), so the hash covers exactly the stored text.
      const content = JSON.parse(
        JSON.stringify({ ...input, id: newEventId(), time: new Date(clock()).toISOString() }),
      ) as PendingEvent['content']
      return new Promise((resolve, reject) => {
        queue.push({ content, resolve, reject })
        scheduleDrain()
      })
    },
    async flush() {
      while (draining !== undefined) await draining
    },
    async close() {
      closed = true
      while (draining !== undefined) await draining
    },
  }
}

function chainEvents(batch: PendingEvent[], last: { hash: string; seq: number }): AuditEvent[] {
  let prevHash = last.hash
  return batch.map((pending, index) => {
    const unsigned = { ...pending.content, seq: last.seq + index + 1, prevHash }
    const event: AuditEvent = { ...unsigned, hash: hashEvent(unsigned) }
    prevHash = event.hash
    return event
  })
}

/**
 * Returns a random event id such as `ev_3f9c…`: a version 4 UUID (122 random bits) in hex.
 * `randomUUID` draws from a cached entropy pool, which is cheaper per event than `randomBytes`.
 */
function newEventId(): string {
  return `ev_${randomUUID().replaceAll('-', '')}`
}
