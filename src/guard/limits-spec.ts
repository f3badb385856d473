/** Manifest fields of the limits guard: their validators, and conversion to gateway settings. */

import {
  atField,
  expectKnownFields,
  expectMapping,
  expectPresent,
  expectStringList,
  FieldError,
  type FieldPath,
} from '../policy/fields.js'
import { compilePattern } from '../policy/pattern.js'
import type { Resource } from '../policy/resource.js'
import type { RateLimitConfig } from './limits.js'
import type { BucketRate } from './token-bucket.js'
import {
  type AddressAllowance,
  invalidAllowedAddress,
  refusalHint,
  urlRefusal,
} from './upstream-address.js'

/** 100,000: the largest `callsPerMinute` or `burst` accepted, since a higher rate limits nothing. */
const MAX_RATE = 100_000

/**
 * Validates a `limits` block: `{ callsPerMinute, burst?, tools?: { PATTERN: { callsPerMinute,
 * burst? } } }`, where each rate is a positive whole number.
 *
 * @example validateRateLimits({ callsPerMinute: 60, burst: 10 }, ['spec', 'limits'])
 */
export function validateRateLimits(value: unknown, path: FieldPath): RateLimitConfig {
  const limits = expectMapping(value, path)
  expectKnownFields(limits, path, ['callsPerMinute', 'burst', 'tools'])
  const config: RateLimitConfig = validateRate(limits, path)
  if (limits.tools !== undefined) {
    const toolsPath = [...path, 'tools']
    const tools = expectMapping(limits.tools, toolsPath)
    config.tools = {}
    for (const [pattern, rate] of Object.entries(tools)) {
      atField([...toolsPath, pattern], () => compilePattern(pattern))
      const ratePath = [...toolsPath, pattern]
      const mapping = expectMapping(rate, ratePath)
      expectKnownFields(mapping, ratePath, ['callsPerMinute', 'burst'])
      config.tools[pattern] = validateRate(mapping, ratePath)
    }
  }
  return config
}

function validateRate(mapping: Record<string, unknown>, path: FieldPath): BucketRate {
  const perMinute = expectPresent(mapping, 'callsPerMinute', path, 'a whole number of calls')
  const rate: BucketRate = { callsPerMinute: expectRate(perMinute, [...path, 'callsPerMinute']) }
  if (mapping.burst !== undefined) rate.burst = expectRate(mapping.burst, [...path, 'burst'])
  return rate
}

function expectRate(value: unknown, path: FieldPath): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > MAX_RATE) {
    throw new FieldError(
      path,
      `invalid rate ${JSON.stringify(value)}: expected a whole number from 1 to ${MAX_RATE}`,
    )
  }
  return value
}

/** Validates `http.allowPrivateNetwork`, `http.allowAddresses` and the URL's host against them. */
export function validateAddressAllowance(http: Record<string, unknown>, path: FieldPath): void {
  const flag = http.allowPrivateNetwork
  if (flag !== undefined && typeof flag !== 'boolean') {
    throw new FieldError(
      [...path, 'allowPrivateNetwork'],
      `invalid value ${JSON.stringify(flag)}: expected true or false`,
    )
  }
  if (http.allowAddresses !== undefined) {
    const listPath = [...path, 'allowAddresses']
    expectStringList(http.allowAddresses, listPath).forEach((entry, index) => {
      const problem = invalidAllowedAddress(entry)
      if (problem !== undefined) throw new FieldError([...listPath, index], problem)
    })
  }
  checkManifestUrl(http, path)
}

/**
 * Rejects a URL whose host is a literal address or name the gateway would refuse, so the mistake
 * shows when the manifest is applied. A URL with references, or one that does not parse, is left
 * to the other URL checks and to the check at session start.
 */
function checkManifestUrl(http: Record<string, unknown>, path: FieldPath): void {
  const url = http.url
  if (typeof url !== 'string' || url.includes('${') || !URL.canParse(url)) return
  const allowance: AddressAllowance = {
    allowPrivateNetwork: http.allowPrivateNetwork === true,
    ...(Array.isArray(http.allowAddresses) ? { allowAddresses: http.allowAddresses } : {}),
  }
  const reason = urlRefusal(url, allowance)
  if (reason === undefined || reason.endsWith('is not http or https')) return
  throw new FieldError(
    [...path, 'url'],
    `upstream URL ${JSON.stringify(url)} is not allowed: ${reason}; ${refusalHint(reason)}`,
  )
}

/** Collects the `limits` block of each role that sets one, keyed by role name. */
export function roleRateLimits(roles: readonly Resource[]): Map<string, RateLimitConfig> {
  const limits = new Map<string, RateLimitConfig>()
  for (const role of roles) {
    const config = (role.spec as { limits?: RateLimitConfig }).limits
    if (config !== undefined) limits.set(role.metadata.name, config)
  }
  return limits
}

/**
 * Combines the limits of a caller's roles into one, keeping the strictest rate for the principal
 * and for each tool pattern, so adding a role with limits never loosens another role's limits.
 * Returns undefined when none of the roles sets limits.
 */
export function strictestLimits(
  roleNames: readonly string[],
  limits: ReadonlyMap<string, RateLimitConfig>,
): RateLimitConfig | undefined {
  let combined: RateLimitConfig | undefined
  for (const name of roleNames) {
    const config = limits.get(name)
    if (config === undefined) continue
    if (combined === undefined) {
      combined = { ...config, tools: { ...config.tools } }
      continue
    }
    Object.assign(combined, stricter(combined, config))
    for (const [pattern, rate] of Object.entries(config.tools ?? {})) {
      const current = combined.tools?.[pattern]
      combined.tools = { ...combined.tools, [pattern]: current ? stricter(current, rate) : rate }
    }
  }
  return combined
}

function stricter(first: BucketRate, second: BucketRate): BucketRate {
  const callsPerMinute = Math.min(first.callsPerMinute, second.callsPerMinute)
  const burst = Math.min(first.burst ?? first.callsPerMinute, second.burst ?? second.callsPerMinute)
  return { callsPerMinute, burst }
}
