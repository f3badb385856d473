import type { Clock } from '../clock.js'

/** A refill rate and capacity: `callsPerMinute` tokens per minute, at most `burst` saved up. */
export interface BucketRate {
  callsPerMinute: number
  /** The bucket capacity; defaults to `callsPerMinute`, so a full minute's calls may come at once. */
  burst?: number
}

/** The outcome of taking one token: allowed, or refused with the wait until the next token. */
export type TakeResult = { ok: true } | { ok: false; retryAfterMs: number }

/** Buckets not touched for this long are full again, so they are dropped to bound memory. */
const IDLE_BUCKET_MS = 10 * 60_000
/** How many takes pass between sweeps of idle buckets. */
const SWEEP_EVERY = 1024

interface Bucket {
  tokens: number
  updatedAt: number
  capacity: number
  perMs: number
}

/**
 * Keeps one token bucket per key (such as a SPIFFE ID and tool pattern), refilled continuously
 * by the injected clock. A key's bucket never affects another key's.
 */
export class TokenBuckets {
  readonly #clock: Clock
  readonly #buckets = new Map<string, Bucket>()
  #takes = 0

  constructor(clock: Clock) {
    this.#clock = clock
  }

  /** Takes one token from the bucket of `key`, creating it full at `rate` on first use. */
  take(key: string, rate: BucketRate): TakeResult {
    const now = this.#clock()
    this.#sweep(now)
    const capacity = rate.burst ?? rate.callsPerMinute
    const perMs = rate.callsPerMinute / 60_000
    let bucket = this.#buckets.get(key)
    if (bucket === undefined || bucket.capacity !== capacity || bucket.perMs !== perMs) {
      // A new bucket, or one whose configured rate changed, starts full at the new rate.
      bucket = { tokens: capacity, updatedAt: now, capacity, perMs }
      this.#buckets.set(key, bucket)
    }
    const elapsed = Math.max(0, now - bucket.updatedAt)
    bucket.tokens = Math.min(capacity, bucket.tokens + elapsed * perMs)
    bucket.updatedAt = now
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1
      return { ok: true }
    }
    return { ok: false, retryAfterMs: Math.ceil((1 - bucket.tokens) / perMs) }
  }

  /** Returns a token taken for a call that was refused later, by another check. */
  refund(key: string): void {
    const bucket = this.#buckets.get(key)
    if (bucket !== undefined) bucket.tokens = Math.min(bucket.capacity, bucket.tokens + 1)
  }

  get size(): number {
    return this.#buckets.size
  }

  #sweep(now: number): void {
    this.#takes++
    if (this.#takes % SWEEP_EVERY !== 0) return
    for (const [key, bucket] of this.#buckets) {
      if (now - bucket.updatedAt > IDLE_BUCKET_MS) this.#buckets.delete(key)
    }
  }
}
