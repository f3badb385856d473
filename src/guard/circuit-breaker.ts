import type { Clock } from '../clock.js'

/** When a circuit opens and how long it stays open. */
export interface CircuitBreakerOptions {
  /** Consecutive failures that open the circuit (default 5). */
  failureThreshold?: number
  /** The failures must all fall within this window, in ms (default 60 s). */
  windowMs?: number
  /** How long an open circuit fails fast before one probe call may pass, in ms (default 30 s). */
  coolDownMs?: number
}

export const DEFAULT_FAILURE_THRESHOLD = 5
export const DEFAULT_FAILURE_WINDOW_MS = 60_000
export const DEFAULT_COOL_DOWN_MS = 30_000

/** Whether a call may go to the upstream; when not, the time at which a probe will be let through. */
export type CircuitVerdict =
  | { ok: true; probe: boolean }
  | { ok: false; retryAt: number; failures: number }

interface Circuit {
  /** Times of the consecutive failures since the last success, oldest first. */
  failures: number[]
  openUntil: number
  probing: boolean
}

/**
 * Keeps one circuit per upstream server. After `failureThreshold` consecutive failures within
 * `windowMs`, calls fail fast until `coolDownMs` has passed; then one probe call passes
 * (half-open), and its success closes the circuit while its failure opens it again.
 */
export class CircuitBreakers {
  readonly #clock: Clock
  readonly #threshold: number
  readonly #windowMs: number
  readonly #coolDownMs: number
  readonly #circuits = new Map<string, Circuit>()

  constructor(clock: Clock, options: CircuitBreakerOptions = {}) {
    this.#clock = clock
    this.#threshold = options.failureThreshold ?? DEFAULT_FAILURE_THRESHOLD
    this.#windowMs = options.windowMs ?? DEFAULT_FAILURE_WINDOW_MS
    this.#coolDownMs = options.coolDownMs ?? DEFAULT_COOL_DOWN_MS
    if (!Number.isInteger(this.#threshold) || this.#threshold < 1) {
      throw new TypeError(`failureThreshold must be a positive integer, got ${this.#threshold}`)
    }
  }

  /** Decides whether a call to `server` may pass; a passing half-open call becomes the probe. */
  check(server: string): CircuitVerdict {
    const circuit = this.#circuits.get(server)
    if (circuit === undefined || circuit.openUntil === 0) return { ok: true, probe: false }
    const now = this.#clock()
    if (now < circuit.openUntil || circuit.probing) {
      const retryAt = circuit.probing ? now + this.#coolDownMs : circuit.openUntil
      return { ok: false, retryAt, failures: circuit.failures.length }
    }
    circuit.probing = true
    return { ok: true, probe: true }
  }

  /** Records a successful call, which closes the circuit. */
  succeeded(server: string): void {
    this.#circuits.delete(server)
  }

  /** Records a failed call (an error response or a timeout); returns true if the circuit opened. */
  failed(server: string): boolean {
    const now = this.#clock()
    let circuit = this.#circuits.get(server)
    if (circuit === undefined) {
      circuit = { failures: [], openUntil: 0, probing: false }
      this.#circuits.set(server, circuit)
    }
    if (circuit.probing) {
      circuit.probing = false
      circuit.openUntil = now + this.#coolDownMs
      return true
    }
    circuit.failures.push(now)
    while (circuit.failures.length > 0 && now - circuit.failures[0]! > this.#windowMs) {
      circuit.failures.shift()
    }
    if (circuit.failures.length > this.#threshold) circuit.failures.shift()
    if (circuit.openUntil !== 0 || circuit.failures.length < this.#threshold) return false
    circuit.openUntil = now + this.#coolDownMs
    return true
  }

  /** Releases a probe whose call ended without an upstream verdict, such as a client cancel. */
  abandoned(server: string): void {
    const circuit = this.#circuits.get(server)
    if (circuit !== undefined) circuit.probing = false
  }
}
