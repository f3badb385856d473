/**
 * Throttling of password logins, counted per user name and per source address. This module is
 * pure; the store keeps the counters and applies these rules inside one transaction.
 *
 * A key may fail `freeFailures` times. After that, each further failure locks the key for
 * `baseLockMs` doubled per extra failure, up to `maxLockMs`. A key that has not failed for
 * `resetAfterMs` starts again from zero. Attempts refused while a key is locked do not count.
 */
import type { LoginCounterRule, LoginFailureState } from '../store/people-store.js'

export interface ThrottleRule {
  freeFailures: number
  baseLockMs: number
  maxLockMs: number
  resetAfterMs: number
}

const MINUTE_MS = 60_000
const HOUR_MS = 60 * MINUTE_MS

/**
 * Per user name: five failures, then 1 min, 2 min, 4 min ... up to 1 h. Names are counted whether
 * or not the user exists, so the lock reveals nothing about which names are real.
 */
export const USER_THROTTLE: Readonly<ThrottleRule> = {
  freeFailures: 5,
  baseLockMs: MINUTE_MS,
  maxLockMs: HOUR_MS,
  resetAfterMs: 24 * HOUR_MS,
}

/**
 * Per source address: twenty failures across all names, then the same doubling, so one address
 * cannot try a few passwords on many users.
 */
export const ADDRESS_THROTTLE: Readonly<ThrottleRule> = {
  freeFailures: 20,
  baseLockMs: MINUTE_MS,
  maxLockMs: HOUR_MS,
  resetAfterMs: 24 * HOUR_MS,
}

/** Returns the counter as it is at `now`, treating one idle for `resetAfterMs` as empty. */
export function currentState(
  state: LoginFailureState | undefined,
  now: number,
  rule: ThrottleRule,
): LoginFailureState | undefined {
  if (!state || now - state.lastFailureAt >= rule.resetAfterMs) return undefined
  return state
}

/** Returns when the key's lock ends, or 0 when the key may try now. */
export function lockedUntil(
  state: LoginFailureState | undefined,
  now: number,
  rule: ThrottleRule,
): number {
  const current = currentState(state, now, rule)
  if (!current || current.failures < rule.freeFailures) return 0
  const extra = current.failures - rule.freeFailures
  // 2^extra overflows nothing here because the exponent is capped first.
  const lockMs = Math.min(rule.baseLockMs * 2 ** Math.min(extra, 40), rule.maxLockMs)
  const until = current.lastFailureAt + lockMs
  return until > now ? until : 0
}

/** Returns the counter after one more failure at `now`. */
export function addFailure(
  state: LoginFailureState | undefined,
  now: number,
  rule: ThrottleRule,
): LoginFailureState {
  const current = currentState(state, now, rule)
  return { failures: (current?.failures ?? 0) + 1, lastFailureAt: now }
}

/** Returns the throttle key of a user name, which counts failures whether or not the user exists. */
export function userThrottleKey(user: string): string {
  return `user:${user.toLowerCase()}`
}

/** Returns the throttle key of a source IP address. */
export function addressThrottleKey(address: string): string {
  return `address:${address}`
}

/** Returns the counter rules of one login attempt: per user name, then per source address. */
export function loginCounterRules(
  user: string,
  address: string,
  rules: { user: ThrottleRule; address: ThrottleRule } = {
    user: USER_THROTTLE,
    address: ADDRESS_THROTTLE,
  },
): LoginCounterRule[] {
  return [
    counterRule(userThrottleKey(user), rules.user),
    counterRule(addressThrottleKey(address), rules.address),
  ]
}

function counterRule(key: string, rule: ThrottleRule): LoginCounterRule {
  return {
    key,
    lockedUntil: (state, now) => lockedUntil(state, now, rule),
    addFailure: (state, now) => addFailure(state, now, rule),
  }
}
