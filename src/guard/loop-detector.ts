import type { Clock } from '../clock.js'

/** How many identical failing calls are tolerated, and over what window. */
export interface LoopDetectorOptions {
  /** Identical failures allowed within the window; the next identical call is refused (default 5). */
  maxRepeats?: number
  /** The window, in ms (default 60 s). */
  windowMs?: number
}

export const DEFAULT_LOOP_MAX_REPEATS = 5
export const DEFAULT_LOOP_WINDOW_MS = 60_000
/** Distinct failing calls remembered at once; the oldest is forgotten first. */
const MAX_TRACKED_CALLS = 10_000

/**
 * Detects an agent stuck retrying the same failing call: one principal, one server, one tool and
 * the same argument digest. Once that call has failed `maxRepeats` times within `windowMs`,
 * `check` refuses it until the oldest failure leaves the window. A different argument, another
 * tool or another principal is unaffected.
 */
export class LoopDetector {
  readonly #clock: Clock
  readonly #maxRepeats: number
  readonly #windowMs: number
  readonly #failures = new Map<string, number[]>()

  constructor(clock: Clock, options: LoopDetectorOptions = {}) {
    this.#clock = clock
    this.#maxRepeats = options.maxRepeats ?? DEFAULT_LOOP_MAX_REPEATS
    this.#windowMs = options.windowMs ?? DEFAULT_LOOP_WINDOW_MS
    if (!Number.isInteger(this.#maxRepeats) || this.#maxRepeats < 1) {
      throw new TypeError(`maxRepeats must be a positive integer, got ${this.#maxRepeats}`)
    }
  }

  /** Returns the failures of this call within the window when it must be refused, else 0. */
  check(key: string): number {
    const times = this.#recent(key)
    return times.length >= this.#maxRepeats ? times.length : 0
  }

  /** Records one failure of the call identified by `key`. */
  failed(key: string): void {
    const times = this.#recent(key)
    times.push(this.#clock())
    this.#failures.delete(key)
    this.#failures.set(key, times)
    if (this.#failures.size > MAX_TRACKED_CALLS) {
      const oldest = this.#failures.keys().next().value
      if (oldest !== undefined) this.#failures.delete(oldest)
    }
  }

  /** Forgets the failures of a call that has now succeeded. */
  succeeded(key: string): void {
    this.#failures.delete(key)
  }

  get maxRepeats(): number {
    return this.#maxRepeats
  }

  #recent(key: string): number[] {
    const now = this.#clock()
    const times = (this.#failures.get(key) ?? []).filter((time) => now - time <= this.#windowMs)
    if (times.length === 0) this.#failures.delete(key)
    return times
  }
}

/** Builds the key of one call for the loop detector. */
export function loopKey(spiffeId: string, server: string, tool: string, argsDigest: string) {
  return JSON.stringify([spiffeId, server, tool, argsDigest])
}
