/** Renewal starts when this fraction of the certificate's lifetime is left. */
export const RENEW_WHEN_LEFT = 1 / 3

/** Exponential backoff bounds for retrying an unreachable or failing server, in milliseconds. */
export interface BackoffPolicy {
  initialMs: number
  maxMs: number
}

/** 1 s doubling to 60 s: quick recovery from a restart without flooding a server that is down. */
export const DEFAULT_BACKOFF: BackoffPolicy = { initialMs: 1000, maxMs: 60_000 }

/**
 * Returns the time (ms since the epoch) at which to renew a certificate valid from `notBefore` to
 * `notAfter`: when a third of its lifetime is left. The authority backdates `notBefore` to allow
 * for clock skew, so for a certificate just received the lifetime counts from `receivedAt`;
 * otherwise a short-lived certificate would be due for renewal the moment it arrives.
 *
 * @example
 *   renewalTime(new Date(0), new Date(3_600_000)) // 2_400_000
 *   renewalTime(new Date(0), new Date(90_000), 60_000) // 80_000
 */
export function renewalTime(notBefore: Date, notAfter: Date, receivedAt?: number): number {
  const start = Math.max(notBefore.getTime(), receivedAt ?? Number.NEGATIVE_INFINITY)
  const lifetime = Math.max(0, notAfter.getTime() - start)
  return notAfter.getTime() - Math.floor(lifetime * RENEW_WHEN_LEFT)
}

/**
 * Returns the wait before retry number `attempt` (1 for the first retry): the exponential step
 * `initialMs * 2^(attempt-1)` capped at `maxMs`, then jittered to between half and all of it, so
 * many agents cut off by one outage do not all return at the same instant.
 *
 * @example
 *   backoffDelay(3, DEFAULT_BACKOFF, () => 1) // 4000
 */
export function backoffDelay(attempt: number, policy: BackoffPolicy, random: () => number): number {
  const step = Math.min(policy.maxMs, policy.initialMs * 2 ** Math.max(0, attempt - 1))
  return Math.round(step / 2 + random() * (step / 2))
}

/** The longest wait a single `setTimeout` supports; longer waits are split. */
const MAX_TIMER_MS = 2 ** 31 - 1

/** Waits `ms` milliseconds or until `signal` aborts, whichever comes first; never rejects. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) {
      resolve()
      return
    }
    const timer = setTimeout(done, Math.min(Math.max(0, ms), MAX_TIMER_MS))
    signal?.addEventListener('abort', done, { once: true })
    function done(): void {
      clearTimeout(timer)
      signal?.removeEventListener('abort', done)
      resolve()
    }
  })
}
